//! Poisoned `std::sync` locks are handled one way in mcpctl: the guard is recovered
//! ([`PoisonError::into_inner`]) and the caller goes on. Every std `Mutex`/`RwLock` outside tests
//! is taken through these traits; tokio's locks do not poison and are not covered.
//!
//! Why recover rather than panic (`lock().unwrap()`): a lock is poisoned when a thread panicked
//! while holding it. Unwrapping then turns one panic into a panic on every later access — in the
//! edge, one failed request would take down every request after it through the route table. What
//! these locks guard is consistent at every statement boundary: counters, timestamps, `Option`s
//! that are set whole, and maps (sessions, routes, pins, pending requests, soak tallies) whose
//! entries are inserted, replaced or removed by single calls; no critical section leaves a
//! half-built invariant that a later reader could trip over. The panic itself still surfaces
//! where it happened (its task or thread fails); the data it left is as good as the data before.
//!
//! Why not `parking_lot` (which does not poison): the bridge already recovered this way, it would
//! be a new direct dependency for no other gain, and its guards are no more `Send` than std's.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex`] access that recovers the guard from a poisoned lock (see the module docs).
pub trait MutexExt<T: ?Sized> {
    /// `lock()`, taking the guard even if a holder panicked.
    fn lock_ignore_poison(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn lock_ignore_poison(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`Mutex::into_inner`] that recovers the value from a poisoned lock (see the module docs).
pub fn into_inner_ignore_poison<T>(m: Mutex<T>) -> T {
    m.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// [`RwLock`] access that recovers the guard from a poisoned lock (see the module docs).
pub trait RwLockExt<T: ?Sized> {
    /// `read()`, taking the guard even if a writer panicked.
    fn read_ignore_poison(&self) -> RwLockReadGuard<'_, T>;
    /// `write()`, taking the guard even if a writer panicked.
    fn write_ignore_poison(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_ignore_poison(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_ignore_poison(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_still_yields_its_data() {
        let m = Arc::new(Mutex::new(1));
        let rw = Arc::new(RwLock::new(vec![1]));
        let (m2, rw2) = (m.clone(), rw.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            let _w = rw2.write().unwrap();
            panic!("poison both");
        })
        .join();
        assert!(m.is_poisoned() && rw.is_poisoned());
        *m.lock_ignore_poison() += 1;
        rw.write_ignore_poison().push(2);
        assert_eq!(*rw.read_ignore_poison(), [1, 2]);
        let m = Arc::try_unwrap(m).unwrap();
        assert_eq!(into_inner_ignore_poison(m), 2);
    }
}
