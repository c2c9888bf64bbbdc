//! Resolved, validated start-up options, read from the environment once.
//!
//! `DATABASE_URL` is required (the bridge exports secret files as environment variables);
//! `DATABASE_URL_FILE` is accepted instead, for runtimes that mount secrets as files.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub pool_size: usize,
    /// Connecting, waiting for a pooled connection, and recycling one.
    pub connect_timeout: Duration,
    /// One attempt of one tool's database work.
    pub op_timeout: Duration,
    /// How long connection-class failures are retried before the call reports an error.
    pub retry_window: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let database_url = match (get("DATABASE_URL"), get("DATABASE_URL_FILE")) {
            (Some(url), _) if !url.trim().is_empty() => url.trim().to_string(),
            (_, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read DATABASE_URL_FILE {path}: {e}"))?
                .trim()
                .to_string(),
            _ => {
                return Err(
                    "DATABASE_URL is not set (postgres://user:password@host:5432/database)".into(),
                )
            }
        };
        let millis = |name: &str, default: u64| -> Result<Duration, String> {
            match get(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{name} must be a number of milliseconds, not {v:?}")),
            }
        };
        let pool_size = match get("MEMORY_DB_POOL_SIZE") {
            None => 4,
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("MEMORY_DB_POOL_SIZE must be a positive number, not {v:?}")
            })?,
        };
        Ok(Settings {
            database_url,
            pool_size,
            connect_timeout: millis("MEMORY_DB_CONNECT_TIMEOUT_MS", 3_000)?,
            op_timeout: millis("MEMORY_DB_OP_TIMEOUT_MS", 15_000)?,
            retry_window: millis("MEMORY_DB_RETRY_MS", 3_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_a_url_and_validates_numbers() {
        assert!(Settings::from_lookup(|_| None).is_err());
        let s = Settings::from_lookup(|k| (k == "DATABASE_URL").then(|| "postgres://h/db".into()))
            .unwrap();
        assert_eq!(s.pool_size, 4);
        assert_eq!(s.retry_window, Duration::from_secs(3));
        let bad = Settings::from_lookup(|k| match k {
            "DATABASE_URL" => Some("postgres://h/db".into()),
            "MEMORY_DB_RETRY_MS" => Some("soon".into()),
            _ => None,
        });
        assert!(bad.unwrap_err().contains("MEMORY_DB_RETRY_MS"));
    }
}
