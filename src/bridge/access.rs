//! Who is calling: the bridge's view of access control (docs/contracts.md "Access control").
//!
//! mcpctl writes one JSON [`AuthFile`] per service (`crate::auth::bridge_file`) and mounts it as
//! `/run/secrets/mcpctl_auth`; `--auth-file` reads it. It holds only SHA-256 digests of the
//! consumers' bearer tokens (a container never holds a token that works elsewhere), each
//! consumer's rate, and the JWT settings. [`Access::authenticate`] turns an `Authorization`
//! header into a consumer name, or says why not; digests are compared in constant time and every
//! consumer is compared (the time taken does not say which one nearly matched).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::app::RateLimit;
use super::jwt;

/// The auth file's format.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Bearer-token holders.
    pub consumers: Vec<ConsumerEntry>,
    /// Accept OAuth access tokens (JWT) from this issuer too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<jwt::JwtConfig>,
    /// Rate of each JWT identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_rate_limit: Option<Rate>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsumerEntry {
    /// `[a-z][a-z0-9_-]*`: a label value of the bridge's metrics and the audit lines.
    pub name: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Rate>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

impl From<Rate> for RateLimit {
    fn from(r: Rate) -> Self {
        RateLimit {
            per_sec: r.per_sec,
            burst: r.burst,
        }
    }
}

/// The label a JWT identity is counted under in metrics (their names are unbounded).
pub const JWT_LABEL: &str = "jwt";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// Consumer name, or `jwt:<client>` for an access token.
    pub name: Arc<str>,
    /// Bounded label for metrics: the consumer name, or [`JWT_LABEL`].
    pub label: Arc<str>,
    pub rate: Option<RateLimit>,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A bearer token no consumer holds (and not an acceptable JWT).
    InvalidToken,
    /// A JWT the verifier refused.
    Jwt(jwt::Refusal),
    /// A JWT not checked: the caller's address used up its budget of failed attempts.
    Throttled,
}

impl Failure {
    /// `reason` of `mcp_bridge_auth_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::InvalidToken => "invalid_token",
            Failure::Jwt(r) => r.label(),
            Failure::Throttled => "throttled",
        }
    }
}

struct Holder {
    name: Arc<str>,
    digest: [u8; 32],
    rate: Option<RateLimit>,
}

pub struct Access {
    holders: Vec<Holder>,
    /// `auth.jwt.resource`, for the metadata document and the challenge.
    resource: Option<String>,
    jwt: Option<jwt::Verifier>,
    jwt_rate: Option<RateLimit>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("consumers", &self.labels())
            .finish_non_exhaustive()
    }
}

impl Access {
    /// From the auth file's contents (a bad file is an error: a guard asked for must not be off).
    pub async fn load(text: &str) -> anyhow::Result<Access> {
        let file: AuthFile = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("the auth file is not valid: {e}"))?;
        let mut holders = Vec::new();
        for c in file.consumers {
            let digest: [u8; 32] = hex::decode(&c.sha256)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("consumer `{}`: sha256 is not 64 hex digits", c.name)
                })?;
            holders.push(Holder {
                name: c.name.into(),
                digest,
                rate: c.rate_limit.map(Into::into),
            });
        }
        if holders.is_empty() && file.jwt.is_none() {
            anyhow::bail!("the auth file names no consumer and no JWT issuer: nobody could call");
        }
        let resource = file.jwt.as_ref().and_then(|j| j.resource.clone());
        let jwt = match file.jwt {
            Some(cfg) => Some(jwt::Verifier::new(cfg).await?),
            None => None,
        };
        Ok(Access {
            holders,
            resource,
            jwt,
            jwt_rate: file.jwt_rate_limit.map(Into::into),
        })
    }

    /// One consumer holding `token` (the deprecated `--token-file` / `MCPCTL_BRIDGE_TOKEN`).
    pub fn single(name: &str, token: &str, rate: Option<RateLimit>) -> Access {
        Access {
            holders: vec![Holder {
                name: name.into(),
                digest: Sha256::digest(token.as_bytes()).into(),
                rate,
            }],
            resource: None,
            jwt: None,
            jwt_rate: None,
        }
    }

    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    pub fn jwt(&self) -> Option<&jwt::Verifier> {
        self.jwt.as_ref()
    }

    /// The consumers' names (bounded label values, pre-registered in the metrics).
    pub fn labels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.holders.iter().map(|h| h.name.to_string()).collect();
        if self.jwt.is_some() {
            v.push(JWT_LABEL.into());
        }
        v
    }

    /// `Authorization` header value → the caller, or why not. `may_verify` is asked before a JWT
    /// signature is checked (the expensive step); false → [`Failure::Throttled`].
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        may_verify: impl FnOnce() -> bool,
    ) -> Result<Caller, Failure> {
        let token = authorization
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Failure::Missing)?;
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every holder, whatever matched first.
        let mut found: Option<&Holder> = None;
        for h in &self.holders {
            let same = given
                .iter()
                .zip(&h.digest)
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0;
            if same {
                found = Some(h);
            }
        }
        if let Some(h) = found {
            return Ok(Caller {
                name: h.name.clone(),
                label: h.name.clone(),
                rate: h.rate,
            });
        }
        match &self.jwt {
            // Only something shaped like a JWT (three dot-separated parts) reaches the verifier.
            Some(v) if token.split('.').count() == 3 => {
                let verified = match v.cached(token) {
                    Some(id) => Ok(id),
                    None if !may_verify() => return Err(Failure::Throttled),
                    None => v.verify(token).await,
                };
                match verified {
                    Ok(id) => Ok(Caller {
                        name: id.consumer().into(),
                        label: JWT_LABEL.into(),
                        rate: self.jwt_rate,
                    }),
                    Err(r) => Err(Failure::Jwt(r)),
                }
            }
            _ => Err(Failure::InvalidToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> String {
        let d = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
        serde_json::to_string(&AuthFile {
            consumers: vec![
                ConsumerEntry {
                    name: "mcpctl".into(),
                    sha256: d("tok-m"),
                    rate_limit: None,
                },
                ConsumerEntry {
                    name: "litellm".into(),
                    sha256: d("tok-l"),
                    rate_limit: Some(Rate {
                        per_sec: 5.0,
                        burst: 10.0,
                    }),
                },
            ],
            jwt: None,
            jwt_rate_limit: None,
        })
        .unwrap()
    }

    impl Access {
        async fn authenticate_t(&self, a: Option<&str>) -> Result<Caller, Failure> {
            self.authenticate(a, || true).await
        }
    }

    #[tokio::test]
    async fn each_token_names_its_consumer_and_nothing_else_gets_in() {
        let a = Access::load(&file()).await.unwrap();
        let c = a.authenticate_t(Some("Bearer tok-l")).await.unwrap();
        assert_eq!(&*c.name, "litellm");
        assert_eq!(c.rate.unwrap().per_sec, 5.0);
        let c = a.authenticate_t(Some("bearer tok-m")).await.unwrap();
        assert_eq!(&*c.name, "mcpctl");
        assert!(c.rate.is_none());
        assert_eq!(a.authenticate_t(None).await, Err(Failure::Missing));
        assert_eq!(
            a.authenticate_t(Some("Bearer ")).await,
            Err(Failure::Missing)
        );
        assert_eq!(
            a.authenticate_t(Some("Basic tok-l")).await,
            Err(Failure::Missing)
        );
        for bad in ["Bearer tok-", "Bearer tok-lX", "Bearer a.b.c"] {
            assert_eq!(
                a.authenticate_t(Some(bad)).await,
                Err(Failure::InvalidToken),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_bad_file_is_an_error_not_an_open_door() {
        assert!(Access::load("{}").await.is_err());
        assert!(Access::load(r#"{"consumers":[]}"#).await.is_err());
        assert!(
            Access::load(r#"{"consumers":[{"name":"x","sha256":"abc"}]}"#)
                .await
                .is_err()
        );
        assert!(Access::load(r#"{"consumers":[],"extra":1}"#).await.is_err());
    }
}
