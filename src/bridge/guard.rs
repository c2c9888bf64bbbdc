//! Who may talk to the bridge: Origin / Host checks (DNS rebinding) and the per-client rate
//! limit (tokens: `access`). Pure decisions on strings and clocks, so each rule is unit-tested here;
//! `http` applies them and writes the status codes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::app::RateLimit;
use crate::locks::MutexExt;

/// `host` (no port) is a loopback name or address.
pub(crate) fn loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `host[:port]` → `host` (IPv6 literals keep their brackets).
pub(crate) fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Normalise an `--allow-origin` / `--allow-host` value: lower case, no trailing slash.
pub fn normalise(v: &str) -> String {
    v.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// docs/contracts.md + spec 2025-11-25: a request carrying an `Origin` is served only when that
/// origin is loopback, listed with `--allow-origin`, or an http(s) origin whose host[:port] is
/// listed with `--allow-host`. `Origin: null` and anything unparsable are foreign. A same-host
/// rule (Origin == Host) is deliberately absent: under DNS rebinding both name the attacker.
pub fn origin_allowed(origin: &str, allow_origins: &[String], allow_hosts: &[String]) -> bool {
    let o = normalise(origin);
    if allow_origins.contains(&o) {
        return true;
    }
    let Some((scheme, authority)) = o.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") || authority.is_empty() || authority.contains('/') {
        return false;
    }
    let host = host_of(authority);
    loopback(host) || allow_hosts.iter().any(|h| *h == authority || *h == host)
}

/// With `--allow-host` given, the `Host` header must be loopback or listed (`host` alone allows
/// any port). Without it, any Host passes (Origin still guards browsers).
pub fn host_allowed(host_header: Option<&str>, allow_hosts: &[String]) -> bool {
    if allow_hosts.is_empty() {
        return true;
    }
    let Some(h) = host_header else {
        return true; // HTTP/1.0 without Host: no browser sends that
    };
    let authority = normalise(h);
    let host = host_of(&authority);
    loopback(host) || allow_hosts.iter().any(|a| *a == authority || *a == host)
}

/// A single bearer token (the edge's admin token), kept only as its SHA-256: comparing two fixed-length digests in constant
/// time reveals neither the token's content nor its length through timing.
pub struct Token([u8; 32]);

impl Token {
    pub fn new(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }
    /// `Authorization` header value → whether it carries this token (`Bearer`, any case).
    pub fn matches(&self, authorization: Option<&str>) -> bool {
        let given = authorization
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
            })
            .unwrap_or("");
        let d: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        d.iter().zip(&self.0).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Whom a request's rate budget belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An authenticated caller (consumer name, or `jwt:<client>`).
    Consumer(std::sync::Arc<str>),
    Addr(IpAddr),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token bucket per client: `per_sec` refill, `burst` capacity (each client's own rate).
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

/// Buckets kept before idle ones are forgotten.
const MAX_BUCKETS: usize = 10_000;
/// A bucket idle this long is dropped when the table is full.
const IDLE_FORGET: Duration = Duration::from_secs(60);

impl RateLimiter {
    /// Whether `key`'s bucket holds less than one token now (nothing is taken): how long until
    /// it holds one. A key without a bucket is not exhausted.
    pub fn exhausted(&self, key: &ClientKey, cfg: RateLimit, now: Instant) -> Option<Duration> {
        let map = self.buckets.lock_ignore_poison();
        let b = map.get(key)?;
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        let tokens = (b.tokens + elapsed * cfg.per_sec).min(cfg.burst);
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / cfg.per_sec))
    }

    /// Take one token for `key` at rate `cfg`, or say how long until one is available.
    pub fn check(&self, key: ClientKey, cfg: RateLimit, now: Instant) -> Result<(), Duration> {
        let RateLimit { per_sec, burst } = cfg;
        let mut map = self.buckets.lock_ignore_poison();
        if map.len() >= MAX_BUCKETS {
            // Forget buckets idle long enough to be full again (at the slowest sane rate, 1/min,
            // after an hour at most); still full after that: forget everything (each starts full).
            map.retain(|_, b| now.saturating_duration_since(b.at) < IDLE_FORGET);
            if map.len() >= MAX_BUCKETS {
                map.clear();
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let none: &[String] = &[];
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://[::1]:8443/",
            "http://LOCALHOST",
        ] {
            assert!(origin_allowed(ok, none, none), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "null",
            "http://localhost.evil.example",
            "file://localhost",
            "http://127.0.0.1.evil.example:80",
            "",
        ] {
            assert!(!origin_allowed(bad, none, none), "{bad}");
        }
        let hosts = vec![normalise("mcp-fetch:8080")];
        assert!(origin_allowed("http://mcp-fetch:8080", none, &hosts));
        assert!(!origin_allowed("http://mcp-fetch:9090", none, &hosts));
        let origins = vec![normalise("https://app.example.com/")];
        assert!(origin_allowed("https://app.example.com", &origins, none));
        assert!(!origin_allowed("http://app.example.com", &origins, none));
    }

    #[test]
    fn hosts() {
        assert!(host_allowed(Some("evil.example"), &[]));
        let hosts = vec![normalise("mcp-fetch:8080"), normalise("gateway")];
        assert!(host_allowed(Some("127.0.0.1:8080"), &hosts));
        assert!(host_allowed(Some("localhost"), &hosts));
        assert!(host_allowed(Some("MCP-FETCH:8080"), &hosts));
        assert!(host_allowed(Some("gateway:1234"), &hosts));
        assert!(!host_allowed(Some("mcp-fetch:9999"), &hosts));
        assert!(!host_allowed(Some("evil.example:8080"), &hosts));
    }

    #[test]
    fn token_matches_only_the_exact_bearer() {
        let t = Token::new("s3cret");
        assert!(t.matches(Some("Bearer s3cret")));
        assert!(t.matches(Some("bearer s3cret")));
        assert!(!t.matches(Some("Bearer s3cre")));
        assert!(!t.matches(Some("Bearer s3cretX")));
        assert!(!t.matches(Some("Basic s3cret")));
        assert!(!t.matches(Some("s3cret")));
        assert!(!t.matches(None));
        assert!(!Token::new("x").matches(Some("Bearer ")));
    }

    #[test]
    fn rate_limit_refills_and_keys_apart() {
        let rl = RateLimiter::default();
        let cfg = RateLimit {
            per_sec: 2.0,
            burst: 3.0,
        };
        let t0 = Instant::now();
        let a = ClientKey::Addr("127.0.0.1".parse().unwrap());
        for _ in 0..3 {
            assert!(rl.check(a.clone(), cfg, t0).is_ok());
        }
        let wait = rl.check(a.clone(), cfg, t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(
            rl.check(ClientKey::Consumer("litellm".into()), cfg, t0)
                .is_ok(),
            "another key has its own bucket"
        );
        assert!(
            rl.exhausted(&a, cfg, t0).is_some(),
            "empty, and peeking takes nothing"
        );
        assert!(rl.exhausted(&a, cfg, t0).is_some());
        let other = ClientKey::Addr("10.0.0.9".parse().unwrap());
        assert!(rl.exhausted(&other, cfg, t0).is_none());
        assert!(rl
            .check(a.clone(), cfg, t0 + Duration::from_millis(500))
            .is_ok());
        assert!(rl.check(a, cfg, t0 + Duration::from_millis(500)).is_err());
    }
}
