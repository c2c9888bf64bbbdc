//! Admission of request bodies before they cost memory: the shape of a JSON body is checked by a
//! streaming pass that allocates nothing (serde_json's own parser, so its verdict on syntax and
//! UTF-8 is the real one), and the bytes a request may hold in memory come from one budget shared by
//! every request of the bridge.
//!
//! Why: a 4 MB JSON array `[0,0,…]` parsed straight into a `serde_json::Value` becomes ~2 million
//! 32-byte values (plus vector growth): three at once OOM-killed a 64 MiB container. The scan bounds
//! the element count and the nesting depth first; the budget bounds how many such requests are held
//! at once, so N concurrent maximum-size requests can never exceed a set share of the container's
//! memory (503 + Retry-After beyond it).
//!
//! Owns no HTTP: `http` maps a [`Refusal`] to a status code.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a parsed `serde_json::Value` costs per JSON value, roughly (the 32-byte `Value`, its slot in
/// a vector or an ordered map with its key and hash, allocator overhead). Used to charge the budget
/// for the tree a body becomes, not only for its bytes.
pub const VALUE_COST: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most JSON values (scalars, arrays and objects, each counted once) in one body.
    pub max_values: usize,
    /// Deepest nesting of arrays/objects (the top-level object is depth 1).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_values: 100_000,
            max_depth: 64,
        }
    }
}

/// The shape of an admitted body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub values: usize,
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not JSON (syntax, invalid UTF-8, trailing data): JSON-RPC parse error.
    NotJson(String),
    /// A JSON-RPC batch (a top-level array): not supported by the bridge.
    Batch,
    /// JSON, but not one JSON-RPC message object.
    NotAnObject,
    TooManyValues(usize),
    TooDeep(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotJson(e) => write!(f, "Parse error: body is not JSON ({e})"),
            Refusal::Batch => f.write_str("JSON-RPC batches are not supported"),
            Refusal::NotAnObject => {
                f.write_str("Invalid Request: the body must be one JSON-RPC message object")
            }
            Refusal::TooManyValues(max) => write!(
                f,
                "Request Too Large: more than {max} JSON values in one message"
            ),
            Refusal::TooDeep(max) => {
                write!(f, "Request Too Large: JSON nested deeper than {max} levels")
            }
        }
    }
}

/// Check `body` without building it: one top-level object, at most `limits` values and depth.
/// Stops at the first value past a limit, so a refused body costs no more than the limit.
pub fn scan(body: &[u8], limits: Limits) -> Result<Shape, Refusal> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => return Err(Refusal::Batch),
        Some(b'{') => {}
        Some(_) => {
            // Let the parser say what is wrong with a non-object (or report NotAnObject if valid).
            return match serde_json::from_slice::<de::IgnoredAny>(body) {
                Ok(_) => Err(Refusal::NotAnObject),
                Err(e) => Err(Refusal::NotJson(e.to_string())),
            };
        }
        None => return Err(Refusal::NotJson("empty body".into())),
    }
    let mut counter = Counter {
        limits,
        values: 0,
        max_depth: 0,
        hit: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = Seed {
        counter: &mut counter,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Some(hit) = counter.hit {
        return Err(hit);
    }
    match result {
        Ok(()) => Ok(Shape {
            values: counter.values,
            depth: counter.max_depth,
        }),
        Err(e) => Err(Refusal::NotJson(e.to_string())),
    }
}

struct Counter {
    limits: Limits,
    values: usize,
    max_depth: usize,
    /// The limit that stopped the scan (the parser's error is then only the way out).
    hit: Option<Refusal>,
}

impl Counter {
    fn value<E: de::Error>(&mut self) -> Result<(), E> {
        self.values += 1;
        if self.values > self.limits.max_values {
            self.hit = Some(Refusal::TooManyValues(self.limits.max_values));
            return Err(E::custom("too many values"));
        }
        Ok(())
    }
    fn enter<E: de::Error>(&mut self, depth: usize) -> Result<(), E> {
        self.max_depth = self.max_depth.max(depth);
        if depth > self.limits.max_depth {
            self.hit = Some(Refusal::TooDeep(self.limits.max_depth));
            return Err(E::custom("too deep"));
        }
        Ok(())
    }
}

struct Seed<'c> {
    counter: &'c mut Counter,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.counter.value()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.counter.value()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.counter.value()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.counter.value()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.counter.value()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.counter.value()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.counter.value()?;
        let depth = self.depth + 1;
        self.counter.enter(depth)?;
        while seq
            .next_element_seed(Seed {
                counter: &mut *self.counter,
                depth,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.counter.value()?;
        let depth = self.depth + 1;
        self.counter.enter(depth)?;
        // Keys are strings held in the map: each costs like a value.
        while map.next_key::<de::IgnoredAny>()?.is_some() {
            self.counter.value()?;
            map.next_value_seed(Seed {
                counter: &mut *self.counter,
                depth,
            })?;
        }
        Ok(())
    }
}

/// Bytes the bridge may hold for request bodies and their parsed trees at once, shared by every
/// request. A request that does not fit right now is refused (503 + Retry-After), never queued:
/// queueing would hold the connection and its buffer anyway.
#[derive(Debug, Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    total: usize,
}

/// One request's share of the budget; returned when dropped.
#[derive(Debug)]
pub struct Charge {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// Permits are counted in KiB so that budgets beyond 4 GiB still fit the semaphore's u32 API.
const UNIT: usize = 1024;

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        let units = bytes.div_ceil(UNIT).max(1);
        Budget {
            sem: Arc::new(Semaphore::new(units)),
            total: units * UNIT,
        }
    }
    pub fn total(&self) -> usize {
        self.total
    }
    /// Bytes currently held by requests in flight.
    pub fn in_use(&self) -> usize {
        self.total - self.sem.available_permits() * UNIT
    }
    /// Take `bytes` now, or `None` when the budget cannot hold them at this moment (or ever).
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).ok()?;
        let p = self.sem.clone().try_acquire_many_owned(units).ok()?;
        Some(Charge { _permits: vec![p] })
    }
}

impl Charge {
    /// Add more to this request's share (e.g. the parsed tree, once its size is known).
    pub fn extend(&mut self, budget: &Budget, bytes: usize) -> bool {
        match budget.try_charge(bytes) {
            Some(mut more) => {
                self._permits.append(&mut more._permits);
                true
            }
            None => false,
        }
    }
}

/// The memory limit of the cgroup this process runs in (v2 `memory.max`, else v1), if any.
pub fn cgroup_memory_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let text = v2.or_else(v1)?;
    let n: u64 = text.trim().parse().ok()?;
    // v1 reports "no limit" as a huge number (close to i64::MAX rounded to the page size).
    (n < (1 << 60)).then_some(n)
}

/// The default in-flight budget: a quarter of the container's memory limit, between 8 and 256 MiB;
/// 64 MiB when no limit is set.
pub fn default_budget(limit: Option<u64>) -> usize {
    const MIB: u64 = 1 << 20;
    match limit {
        Some(l) => (l / 4).clamp(8 * MIB, 256 * MIB) as usize,
        None => (64 * MIB) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim(values: usize, depth: usize) -> Limits {
        Limits {
            max_values: values,
            max_depth: depth,
        }
    }

    #[test]
    fn counts_values_and_depth() {
        let s = scan(
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[1,2,{"b":null}]}}"#,
            Limits::default(),
        )
        .unwrap();
        // top object 1 + 4 keys + 3 scalars + params {1 + key a + array 1 + 2 numbers + object 1 + key b + null}
        assert_eq!(s.values, 1 + 4 + 3 + 1 + 1 + 1 + 2 + 1 + 1 + 1);
        assert_eq!(s.depth, 4);
    }

    #[test]
    fn refusals_say_what() {
        assert_eq!(scan(b"[{}]", Limits::default()), Err(Refusal::Batch));
        assert_eq!(scan(b"  [1]", Limits::default()), Err(Refusal::Batch));
        assert_eq!(scan(b"42", Limits::default()), Err(Refusal::NotAnObject));
        assert!(matches!(
            scan(b"", Limits::default()),
            Err(Refusal::NotJson(_))
        ));
        assert!(matches!(
            scan(b"{", Limits::default()),
            Err(Refusal::NotJson(_))
        ));
        assert!(matches!(
            scan(b"{} {}", Limits::default()),
            Err(Refusal::NotJson(_))
        ));
        assert!(matches!(
            scan(b"{\"a\":\"\xff\xfe\"}", Limits::default()),
            Err(Refusal::NotJson(_))
        ));
        let wide = format!("{{\"a\":[{}0]}}", "0,".repeat(1000));
        assert_eq!(
            scan(wide.as_bytes(), lim(500, 64)),
            Err(Refusal::TooManyValues(500))
        );
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            scan(deep.as_bytes(), lim(10_000, 64)),
            Err(Refusal::TooDeep(64))
        );
        // Deeper than serde_json's own recursion limit (128): still our refusal, no stack overflow.
        let deeper = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            scan(deeper.as_bytes(), lim(1 << 30, 64)),
            Err(Refusal::TooDeep(64))
        );
    }

    #[test]
    fn budget_refuses_beyond_its_total_and_returns_on_drop() {
        let b = Budget::new(10 * 1024);
        let a = b.try_charge(6 * 1024).unwrap();
        assert!(b.try_charge(6 * 1024).is_none());
        let mut c = b.try_charge(1024).unwrap();
        assert!(c.extend(&b, 3 * 1024));
        assert!(!c.extend(&b, 1));
        assert_eq!(b.in_use(), 10 * 1024);
        drop(a);
        drop(c);
        assert_eq!(b.in_use(), 0);
        assert!(b.try_charge(usize::MAX).is_none());
    }

    #[test]
    fn default_budget_is_a_bounded_share() {
        assert_eq!(default_budget(Some(64 << 20)), 16 << 20);
        assert_eq!(default_budget(Some(16 << 20)), 8 << 20);
        assert_eq!(default_budget(Some(8 << 30)), 256 << 20);
        assert_eq!(default_budget(None), 64 << 20);
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z\\\\\"\u{e9}\u{1F600}]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{0,4}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn count(v: &serde_json::Value, depth: usize, max_depth: &mut usize) -> usize {
        match v {
            serde_json::Value::Array(a) => {
                *max_depth = (*max_depth).max(depth + 1);
                1 + a
                    .iter()
                    .map(|x| count(x, depth + 1, max_depth))
                    .sum::<usize>()
            }
            serde_json::Value::Object(m) => {
                *max_depth = (*max_depth).max(depth + 1);
                1 + m
                    .values()
                    .map(|x| 1 + count(x, depth + 1, max_depth))
                    .sum::<usize>()
            }
            _ => 1,
        }
    }

    proptest! {
        /// The scan agrees with the tree serde_json builds: same value count and depth, and it
        /// refuses exactly when a limit is passed.
        #[test]
        fn scan_matches_the_parsed_tree(params in json_value(), max_values in 1usize..200, max_depth in 1usize..10) {
            let msg = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "m", "params": params});
            let body = serde_json::to_vec(&msg).unwrap();
            let mut depth = 0;
            let values = count(&msg, 0, &mut depth);
            match scan(&body, lim(max_values, max_depth)) {
                Ok(s) => {
                    prop_assert_eq!(s, Shape { values, depth });
                    prop_assert!(values <= max_values && depth <= max_depth);
                }
                Err(Refusal::TooManyValues(_)) => prop_assert!(values > max_values),
                Err(Refusal::TooDeep(_)) => prop_assert!(depth > max_depth),
                Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
            }
        }

        /// Arbitrary bytes never panic the scan, and whatever it admits serde_json parses.
        #[test]
        fn arbitrary_bytes_are_refused_or_parse(body in prop::collection::vec(any::<u8>(), 0..64)) {
            if scan(&body, Limits::default()).is_ok() {
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
            }
        }
    }
}
