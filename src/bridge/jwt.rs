//! The bridge as an OAuth 2.1 resource server (MCP spec 2025-06-18 / 2025-11-25, "Authorization"):
//! checks a bearer access token that is a JWT signed by the configured issuer, and writes the two
//! things a client needs to get one — the RFC 9728 Protected Resource Metadata document and the
//! RFC 6750 `WWW-Authenticate` challenge.
//!
//! Owns: the JWKS (inline, or fetched from a URL and cached), key selection, the accepted
//! algorithms, claim checks (`iss`, `aud`, `exp`, `nbf`, scopes) and the reasons for refusal.
//! Does not: serve HTTP, pick the status line or count anything (the caller maps a [`Refusal`] to
//! [`Refusal::status`] and [`Refusal::label`]), or put token contents anywhere — a refusal says
//! *why*, never *what the token said*.
//!
//! Every token is hostile. Hence: only asymmetric algorithms, and only those a key in the set
//! declares (no `none`, no HS*: a public key must never become an HMAC secret); keys are chosen by
//! `kid` from the configured set only (header `jwk`/`jku`/`x5u` are never followed); input is
//! bounded before it is decoded; `exp` is required; an unknown `kid` can make the bridge refetch a
//! URL-sourced set at most once a minute, however many tokens carry one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::locks::RwLockExt;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// [`JwtConfig::leeway_s`] when the file does not say.
pub const DEFAULT_LEEWAY_S: u64 = 30;
/// More clock skew than this is a misconfiguration, not skew.
const MAX_LEEWAY_S: u64 = 600;
/// A fetched JWKS body larger than this is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// A JWKS with more keys than this is refused (real issuers publish a handful).
const MAX_JWKS_KEYS: usize = 64;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// An unknown `kid` (or a stale set) triggers at most one fetch per this interval.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// A URL-sourced set older than this is refetched in the background, so a key the issuer
/// withdrew stops being trusted without a restart.
const MAX_KEY_AGE: Duration = Duration::from_secs(10 * 60);
const MIN_RSA_BITS: usize = 2048;
/// `rsa::RsaPublicKey`'s own ceiling: a larger key could never verify anything.
const MAX_RSA_BITS: usize = 8192;
/// The longest [`Identity::consumer`].
const MAX_CONSUMER_CHARS: usize = 64;

/// How the bridge checks access tokens. Travels in the JSON file mcpctl writes for the bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The exact `iss` of accepted tokens; also the one entry of `authorization_servers` in the
    /// metadata document.
    pub issuer: String,
    /// `aud` must contain one of these (usually the resource URL, RFC 8707).
    pub audience: Vec<String>,
    pub jwks: JwksSource,
    /// The resource URL for the metadata document; `None`: the caller derives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Every one must be granted, in `scope` (space-separated) or `scp` (array or string).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Clock skew allowed for `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
}

fn default_leeway_s() -> u64 {
    DEFAULT_LEEWAY_S
}

/// Where the issuer's public keys come from: `{"inline": {"keys": [...]}}` or
/// `{"url": "https://issuer.example/jwks.json"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksSource {
    /// A JWKS document (`{"keys": [...]}`), parsed once at start.
    Inline(Value),
    /// `https://`, or `http://` to a loopback address; fetched at start, cached, refetched on an
    /// unknown `kid` (at most once a minute) and when older than ten minutes.
    Url(String),
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`, or the client id when the token has no `sub` (client-credentials tokens).
    pub subject: String,
    /// `client_id` (RFC 9068), else `azp` (OIDC).
    pub client_id: Option<String>,
    /// Granted scopes: `scope` split on spaces, then `scp`.
    pub scopes: Vec<String>,
}

impl Identity {
    /// A printable name for logs, metrics and audit: `jwt:<client_id or sub>`, with every
    /// character outside `[A-Za-z0-9._@:-]` replaced by `-`, at most 64 characters.
    pub fn consumer(&self) -> String {
        let id = self.client_id.as_deref().unwrap_or(&self.subject);
        let mut out = String::with_capacity(MAX_CONSUMER_CHARS);
        out.push_str("jwt:");
        for c in id.chars().take(MAX_CONSUMER_CHARS - out.len()) {
            let keep = c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | ':' | '-');
            out.push(if keep { c } else { '-' });
        }
        out
    }
}

/// Why a token was refused. Carries nothing from the token itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Not a compact JWS, over [`MAX_TOKEN_BYTES`], undecodable, or lacking `exp`/a subject.
    Malformed,
    /// `none`, HS*, an unknown `alg`, or one the selected key does not declare.
    UnsupportedAlgorithm,
    /// No key with the token's `kid`, or no `kid` while the set has more than one key.
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// The first required scope the token lacks (a configured name, not token text).
    MissingScope(String),
}

impl Refusal {
    /// snake_case, for a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnsupportedAlgorithm => "unsupported_algorithm",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::MissingScope(_) => "missing_scope",
        }
    }

    /// RFC 6750 §3.1: 401 for `invalid_token`, 403 for `insufficient_scope`.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::MissingScope(_) => 403,
            _ => 401,
        }
    }

    /// For `error_description`: fixed text per reason (the scope name is configuration), within
    /// RFC 6750's character set (printable ASCII without `"` and `\`).
    pub fn description(&self) -> String {
        let text = match self {
            Refusal::Malformed => {
                "the access token is not a well-formed signed JWT with an exp claim"
            }
            Refusal::UnsupportedAlgorithm => "the token's signing algorithm is not accepted here",
            Refusal::UnknownKey => "the token is not signed by a key of the trusted issuer",
            Refusal::BadSignature => "the token signature is invalid",
            Refusal::Expired => "the token has expired",
            Refusal::NotYetValid => "the token is not valid yet",
            Refusal::WrongIssuer => "the token is not from the trusted issuer",
            Refusal::WrongAudience => "the token is not meant for this resource",
            Refusal::MissingScope(scope) => {
                let scope: String = scope
                    .chars()
                    .filter(|c| matches!(c, ' '..='~') && !matches!(c, '"' | '\\'))
                    .take(128)
                    .collect();
                return format!("the token lacks the required scope {scope}");
            }
        };
        text.to_string()
    }
}

/// Checks access tokens against one issuer's keys. Cheap to share (`Arc<Verifier>`): `verify`
/// takes `&self`, and its future is `Send`.
pub struct Verifier {
    issuer: String,
    audience: Vec<String>,
    resource: Option<String>,
    required_scopes: Vec<String>,
    /// One per entry of [`SIGNATURE_ALGS`], same order: built once, not per token.
    validations: Vec<Validation>,
    keys: Keys,
    /// Tokens verified recently (by SHA-256), so a client reusing its access token pays for the
    /// signature once a minute, not per request (ES256 costs ~0.5 ms per check here).
    verified: std::sync::Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

/// How long a verified token is taken on trust (never beyond its `exp`): also how long a key the
/// issuer withdrew keeps working for a token checked just before.
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// Verified tokens remembered at once (then expired ones go, then all).
const VERIFIED_MAX: usize = 4096;

enum Keys {
    Fixed(Arc<KeySet>),
    Remote(Arc<Remote>),
}

impl Keys {
    fn current(&self) -> Arc<KeySet> {
        match self {
            Keys::Fixed(set) => Arc::clone(set),
            Keys::Remote(remote) => remote.current(),
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.keys {
            Keys::Fixed(_) => "inline".to_string(),
            Keys::Remote(r) => r.url.to_string(),
        };
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks", &source)
            .field("keys", &self.keys.current().keys.len())
            .field("required_scopes", &self.required_scopes)
            .finish()
    }
}

impl Verifier {
    /// Checks the settings and loads the keys. Inline: every key is parsed now, and a key that
    /// cannot be used is an error naming it (its `kid` or position). Url: fetched once now; a
    /// failed fetch is an error (the bridge must not start unable to verify anything).
    pub async fn new(cfg: JwtConfig) -> anyhow::Result<Verifier> {
        Self::build(cfg, MIN_REFRESH_INTERVAL, MAX_KEY_AGE).await
    }

    /// [`Verifier::new`] with the refresh timings as parameters (tests shorten them).
    async fn build(
        cfg: JwtConfig,
        min_refresh: Duration,
        max_age: Duration,
    ) -> anyhow::Result<Verifier> {
        check_config(&cfg)?;
        let keys = match &cfg.jwks {
            JwksSource::Inline(doc) => {
                let parsed = parse_jwks(doc).context("jwks.inline")?;
                if !parsed.rejected.is_empty() {
                    bail!(
                        "jwks.inline: {}; remove or fix the key (only RSA ≥ {MIN_RSA_BITS} bits, \
                         EC P-256/P-384 and OKP Ed25519 signing keys are accepted)",
                        parsed.rejected.join("; ")
                    );
                }
                if parsed.set.keys.is_empty() {
                    bail!("jwks.inline holds no signing key (keys with \"use\" other than \"sig\" are skipped)");
                }
                Keys::Fixed(Arc::new(parsed.set))
            }
            JwksSource::Url(raw) => {
                let url = jwks_url(raw)?;
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(FETCH_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("mcpctl-bridge/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .context("building the JWKS HTTP client")?;
                let set = fetch_jwks(&http, &url).await.with_context(|| {
                    format!("fetching the issuer's keys (jwks.url {url}) at start")
                })?;
                Keys::Remote(Arc::new(Remote {
                    url,
                    http,
                    loaded: RwLock::new(Loaded {
                        set: Arc::new(set),
                        at: Instant::now(),
                    }),
                    last_refresh: Arc::new(tokio::sync::Mutex::new(None)),
                    min_refresh,
                    max_age,
                }))
            }
        };
        let validations = SIGNATURE_ALGS
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                v.set_issuer(&[&cfg.issuer]);
                v.set_audience(&cfg.audience);
                v.validate_exp = true;
                v.validate_nbf = true;
                v.validate_aud = true;
                v.leeway = cfg.leeway_s;
                v
            })
            .collect();
        let verifier = Verifier {
            issuer: cfg.issuer,
            audience: cfg.audience,
            resource: cfg.resource,
            required_scopes: cfg.required_scopes,
            validations,
            keys,
            verified: std::sync::Mutex::new(HashMap::new()),
        };
        tracing::info!(
            issuer = %verifier.issuer,
            keys = verifier.keys.current().keys.len(),
            "JWT access-token verifier ready"
        );
        Ok(verifier)
    }

    /// The configured resource URL, if any (see [`JwtConfig::resource`]).
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// Checks `token` (the bearer value, without `Bearer `). Signature first, then claims: an
    /// unsigned token learns nothing about which claim would have failed.
    /// The identity of `token` if it was verified within [`VERIFIED_FOR`] (and has not expired
    /// since): no signature check.
    pub fn cached(&self, token: &str) -> Option<Identity> {
        use crate::locks::MutexExt as _;
        use sha2::Digest as _;
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let cache = self.verified.lock_ignore_poison();
        let (id, until) = cache.get(&digest)?;
        (Instant::now() < *until).then(|| id.clone())
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, Refusal> {
        use crate::locks::MutexExt as _;
        use sha2::Digest as _;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Malformed);
        }
        if let Some(id) = self.cached(token) {
            return Ok(id);
        }
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        let (identity, exp) = self.verify_uncached(token).await?;
        let left = exp.saturating_sub(unix_now());
        let until = now + VERIFIED_FOR.min(Duration::from_secs(left));
        let mut cache = self.verified.lock_ignore_poison();
        if cache.len() >= VERIFIED_MAX {
            cache.retain(|_, (_, u)| now < *u);
            if cache.len() >= VERIFIED_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, (identity.clone(), until));
        Ok(identity)
    }

    async fn verify_uncached(&self, token: &str) -> Result<(Identity, u64), Refusal> {
        if token.len() > MAX_TOKEN_BYTES
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(Refusal::Malformed);
        }
        let header = read_header(token)?;
        let kid = header.kid.as_deref();
        let mut set = self.keys.current();
        if set.pick(kid).is_none() {
            match (&self.keys, kid) {
                (Keys::Remote(remote), Some(kid)) => set = remote.refresh_for(kid).await,
                _ => return Err(Refusal::UnknownKey),
            }
        }
        let key = set.pick(kid).ok_or(Refusal::UnknownKey)?;
        if !key.algs.contains(&header.alg) {
            return Err(Refusal::UnsupportedAlgorithm);
        }
        let validation = SIGNATURE_ALGS
            .iter()
            .position(|a| *a == header.alg)
            .and_then(|i| self.validations.get(i))
            .ok_or(Refusal::UnsupportedAlgorithm)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, validation)
            .map_err(|e| refusal_of(e.kind()))?
            .claims;
        if let Keys::Remote(remote) = &self.keys {
            remote.refresh_if_stale();
        }
        let exp = claims.exp;
        Ok((self.identity(claims)?, exp))
    }

    fn identity(&self, claims: Claims) -> Result<Identity, Refusal> {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let client_id = non_empty(claims.client_id).or(non_empty(claims.azp));
        let subject = non_empty(claims.sub)
            .or_else(|| client_id.clone())
            .ok_or(Refusal::Malformed)?;
        let mut scopes = Vec::new();
        for claim in [claims.scope, claims.scp].into_iter().flatten() {
            match claim {
                ScopeClaim::Text(s) => {
                    scopes.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_string))
                }
                ScopeClaim::List(list) => scopes.extend(list),
            }
        }
        if let Some(missing) = self.required_scopes.iter().find(|r| !scopes.contains(r)) {
            return Err(Refusal::MissingScope(missing.clone()));
        }
        Ok(Identity {
            subject,
            client_id,
            scopes,
        })
    }

    /// The RFC 9728 Protected Resource Metadata document for `resource` (serve it at
    /// `/.well-known/oauth-protected-resource`).
    pub fn metadata(&self, resource: &str) -> Value {
        let mut doc = json!({
            "resource": resource,
            "authorization_servers": [self.issuer],
            "bearer_methods_supported": ["header"],
        });
        if !self.required_scopes.is_empty() {
            doc["scopes_supported"] = json!(self.required_scopes);
        }
        doc
    }

    /// The `WWW-Authenticate` value. No refusal (no token was sent): `Bearer
    /// resource_metadata="…"`, per the MCP spec, without an error code (RFC 6750 §3.1). A refusal
    /// adds `error="invalid_token"` (401) or `error="insufficient_scope"` (403) and its
    /// `error_description`. `scope` lists the required scopes whenever there are any.
    pub fn challenge(&self, resource_metadata_url: &str, refusal: Option<&Refusal>) -> String {
        let mut params: Vec<(&str, String)> = Vec::with_capacity(4);
        if let Some(r) = refusal {
            let code = match r {
                Refusal::MissingScope(_) => "insufficient_scope",
                _ => "invalid_token",
            };
            params.push(("error", code.to_string()));
            params.push(("error_description", r.description()));
        }
        params.push(("resource_metadata", resource_metadata_url.to_string()));
        if !self.required_scopes.is_empty() {
            params.push(("scope", self.required_scopes.join(" ")));
        }
        let mut out = String::from("Bearer ");
        for (i, (name, value)) in params.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(name);
            out.push('=');
            push_quoted(&mut out, value);
        }
        out
    }
}

/// An RFC 9110 quoted-string: `"` and `\` escaped; control and non-ASCII characters dropped (they
/// cannot travel in a header value).
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out.push('"');
}

fn check_config(cfg: &JwtConfig) -> anyhow::Result<()> {
    if cfg.issuer.trim().is_empty() {
        bail!("jwt.issuer is empty: set it to the exact `iss` of the authorization server");
    }
    if cfg.audience.is_empty() || cfg.audience.iter().any(|a| a.trim().is_empty()) {
        bail!(
            "jwt.audience must list at least one non-empty audience (usually this resource's URL)"
        );
    }
    if cfg.leeway_s > MAX_LEEWAY_S {
        bail!(
            "jwt.leeway_s is {}; at most {MAX_LEEWAY_S} seconds of clock skew is allowed",
            cfg.leeway_s
        );
    }
    // RFC 6749 §3.3 scope-token: printable ASCII without space, `"` and `\`.
    for scope in &cfg.required_scopes {
        if scope.is_empty()
            || !scope
                .chars()
                .all(|c| matches!(c, '!'..='~') && !matches!(c, '"' | '\\'))
        {
            bail!("jwt.required_scopes: {scope:?} is not an OAuth scope token (printable ASCII, no space, quote or backslash)");
        }
    }
    if let Some(resource) = &cfg.resource {
        let url = reqwest::Url::parse(resource)
            .with_context(|| format!("jwt.resource {resource:?} is not an absolute URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.fragment().is_some() {
            bail!(
                "jwt.resource {resource:?} must be an http(s) URL without a fragment (RFC 9728 §2)"
            );
        }
    }
    Ok(())
}

/// `https://…`, or `http://` to 127.0.0.0/8, ::1 or localhost; no credentials in the URL.
fn jwks_url(raw: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(raw).with_context(|| format!("jwks.url {raw:?} is not a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!("jwks.url must not carry credentials");
    }
    let host = url.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" if !host.is_empty() => Ok(url),
        "http" if loopback => Ok(url),
        "http" => {
            bail!("jwks.url {raw:?}: plain http is allowed only to a loopback address; use https")
        }
        _ => bail!("jwks.url {raw:?} must be an https:// URL (or http:// to a loopback address)"),
    }
}

/// The asymmetric algorithms this module ever accepts. HS* and `none` are absent on purpose.
const SIGNATURE_ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// A JWS `alg` name → one of [`SIGNATURE_ALGS`]; `None` for `none`, HS* and anything unknown.
fn signature_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
}

/// The protected header of a compact JWS, just `alg` and `kid` (the crate parses it again, with
/// its `crit`/`b64` rules; both parses must agree on `alg` or the token is refused).
fn read_header(token: &str) -> Result<TokenHeader, Refusal> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        alg: Cow<'a, str>,
        #[serde(default)]
        kid: Option<String>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Refusal::Malformed)?;
    let raw: Raw = serde_json::from_slice(&bytes).map_err(|_| Refusal::Malformed)?;
    let alg = signature_alg(&raw.alg).ok_or(Refusal::UnsupportedAlgorithm)?;
    Ok(TokenHeader { alg, kid: raw.kid })
}

#[derive(Deserialize)]
struct Claims {
    /// Required (the validation says so); kept to bound how long a verified token is cached.
    exp: u64,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    scope: Option<ScopeClaim>,
    #[serde(default)]
    scp: Option<ScopeClaim>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn refusal_of(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::InvalidSignature => Refusal::BadSignature,
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
        ErrorKind::InvalidAudience => Refusal::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => match c.as_str() {
            "iss" => Refusal::WrongIssuer,
            "aud" => Refusal::WrongAudience,
            _ => Refusal::Malformed,
        },
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => Refusal::UnsupportedAlgorithm,
        // Keys are checked when loaded; a key the backend still rejects cannot vouch for a token.
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {
            Refusal::BadSignature
        }
        _ => Refusal::Malformed,
    }
}

/// One usable verification key.
struct Key {
    /// The algorithms this key may verify: its family, or just the `alg` it states.
    algs: Vec<Algorithm>,
    decoding: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    by_kid: HashMap<String, usize>,
}

impl KeySet {
    /// By `kid`; without one, only when the set holds exactly one key.
    fn pick(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.by_kid.get(kid).and_then(|i| self.keys.get(*i)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

struct ParsedJwks {
    set: KeySet,
    /// "key #2 (kid \"a\"): why" for every key that claims to be a signing key but cannot be used.
    rejected: Vec<String>,
}

fn parse_jwks(doc: &Value) -> anyhow::Result<ParsedJwks> {
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        bail!("not a JWKS document: expected {{\"keys\": [...]}}");
    };
    if keys.len() > MAX_JWKS_KEYS {
        bail!(
            "the JWKS holds {} keys; at most {MAX_JWKS_KEYS} are accepted",
            keys.len()
        );
    }
    let mut parsed = ParsedJwks {
        set: KeySet::default(),
        rejected: Vec::new(),
    };
    for (i, jwk) in keys.iter().enumerate() {
        let kid = jwk.get("kid").and_then(Value::as_str);
        let name = match kid {
            Some(kid) => format!(
                "key #{} (kid {:?})",
                i + 1,
                kid.chars().take(64).collect::<String>()
            ),
            None => format!("key #{} (no kid)", i + 1),
        };
        match parse_key(jwk) {
            Ok(None) => {}
            Ok(Some(key)) => {
                if let Some(kid) = kid {
                    if parsed.set.by_kid.contains_key(kid) {
                        parsed.rejected.push(format!("{name}: duplicate kid"));
                        continue;
                    }
                    parsed
                        .set
                        .by_kid
                        .insert(kid.to_string(), parsed.set.keys.len());
                }
                parsed.set.keys.push(key);
            }
            Err(why) => parsed.rejected.push(format!("{name}: {why}")),
        }
    }
    Ok(parsed)
}

/// One JWK → `Ok(Some)` usable signing key, `Ok(None)` not a signing key (skipped: `use` ≠ `sig`,
/// `key_ops` without `verify`, an encryption `alg`, an X25519/X448 key), `Err` unusable.
fn parse_key(jwk: &Value) -> Result<Option<Key>, String> {
    let Some(obj) = jwk.as_object() else {
        return Err("not a JSON object".into());
    };
    text(obj, "kid")?;
    match text(obj, "use")? {
        None | Some("sig") => {}
        Some(_) => return Ok(None),
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or("\"key_ops\" is not an array")?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    let stated = text(obj, "alg")?;
    if stated.is_some_and(is_encryption_alg) {
        return Ok(None);
    }
    let kty = text(obj, "kty")?.ok_or("\"kty\" is missing")?;
    let (family, decoding): (&[Algorithm], DecodingKey) = match kty {
        "RSA" => {
            let (n, e) = (b64_field(obj, "n")?, b64_field(obj, "e")?);
            let (n, e) = (strip_leading_zeros(&n), strip_leading_zeros(&e));
            let bits = n
                .first()
                .map_or(0, |b| (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize));
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(format!(
                    "RSA modulus of {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted"
                ));
            }
            if n.last().is_some_and(|b| b % 2 == 0) {
                return Err("RSA modulus is even".into());
            }
            let e_value =
                (e.len() <= 8).then(|| e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)));
            if !e_value.is_some_and(|e| e >= 3 && e % 2 == 1 && e < (1 << 33)) {
                return Err("RSA exponent is not an odd number between 3 and 2^33".into());
            }
            (RSA_ALGS, DecodingKey::from_rsa_raw_components(n, e))
        }
        "EC" => {
            let (family, size): (&[Algorithm], usize) = match text(obj, "crv")? {
                Some("P-256") => (&[Algorithm::ES256], 32),
                Some("P-384") => (&[Algorithm::ES384], 48),
                Some(other) => {
                    return Err(format!("curve {other:?} is not supported (P-256, P-384)"))
                }
                None => return Err("\"crv\" is missing".into()),
            };
            if b64_field(obj, "x")?.len() != size || b64_field(obj, "y")?.len() != size {
                return Err(format!("EC coordinates must be {size} bytes each"));
            }
            let (x, y) = (text(obj, "x")?.unwrap_or(""), text(obj, "y")?.unwrap_or(""));
            let key = DecodingKey::from_ec_components(x, y).map_err(|e| e.to_string())?;
            (family, key)
        }
        "OKP" => match text(obj, "crv")? {
            Some("Ed25519") => {
                if b64_field(obj, "x")?.len() != 32 {
                    return Err("Ed25519 public key must be 32 bytes".into());
                }
                let x = text(obj, "x")?.unwrap_or("");
                let key = DecodingKey::from_ed_components(x).map_err(|e| e.to_string())?;
                (&[Algorithm::EdDSA], key)
            }
            Some("X25519" | "X448") => return Ok(None),
            Some(other) => return Err(format!("curve {other:?} is not supported (Ed25519)")),
            None => return Err("\"crv\" is missing".into()),
        },
        "oct" => {
            return Err("symmetric (oct) key refused: HS* tokens are never accepted".into());
        }
        other => {
            return Err(format!(
                "key type {other:?} is not supported (RSA, EC, OKP)"
            ))
        }
    };
    let algs = match stated {
        None => family.to_vec(),
        // RFC 9864's fully specified name for EdDSA over Ed25519.
        Some("Ed25519") if kty == "OKP" => vec![Algorithm::EdDSA],
        Some(name) => match signature_alg(name) {
            Some(alg) if family.contains(&alg) => vec![alg],
            Some(_) => return Err(format!("alg {name:?} does not fit a {kty} key")),
            None => {
                return Err(format!(
                    "alg {name:?} is not accepted (asymmetric signatures only)"
                ))
            }
        },
    };
    // The backend parses EC points and Ed25519 keys when it builds a verifier: do it once now, so
    // a key that is not on its curve is reported here rather than failing every token.
    if kty != "RSA" {
        let provider = jsonwebtoken::crypto::CryptoProvider::try_get_default()
            .ok_or("no jsonwebtoken crypto provider in this build")?;
        if (provider.verifier_factory)(&algs[0], &decoding).is_err() {
            return Err("not a valid public key for its curve".into());
        }
    }
    Ok(Some(Key { algs, decoding }))
}

/// A string member, `None` when absent, an error when of another type.
fn text<'a>(
    obj: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, String> {
    match obj.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("\"{field}\" is not a string")),
    }
}

/// A required base64url member, decoded.
fn b64_field(obj: &serde_json::Map<String, Value>, field: &str) -> Result<Vec<u8>, String> {
    let s = text(obj, field)?.ok_or_else(|| format!("\"{field}\" is missing"))?;
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("\"{field}\" is not base64url"))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

/// JWE key-management algorithms: a key stating one is an encryption key, skipped.
fn is_encryption_alg(alg: &str) -> bool {
    alg == "dir"
        || alg.starts_with("RSA-OAEP")
        || alg == "RSA1_5"
        || alg.starts_with("ECDH-ES")
        || (alg.starts_with('A') && (alg.ends_with("KW") || alg.ends_with("GCMKW")))
        || alg.starts_with("PBES2")
}

struct Loaded {
    set: Arc<KeySet>,
    at: Instant,
}

/// A URL-sourced key set: cached, refetched on an unknown `kid` or when stale, at most once per
/// `min_refresh`; concurrent refreshes wait on one lock and the first one fetches.
struct Remote {
    url: reqwest::Url,
    http: reqwest::Client,
    loaded: RwLock<Loaded>,
    /// When the last refresh was attempted; held for the whole fetch.
    last_refresh: Arc<tokio::sync::Mutex<Option<Instant>>>,
    min_refresh: Duration,
    /// [`MAX_KEY_AGE`] outside tests.
    max_age: Duration,
}

impl Remote {
    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.loaded.read_ignore_poison().set)
    }

    /// The set to use for a token whose `kid` is not in the cached one.
    async fn refresh_for(&self, kid: &str) -> Arc<KeySet> {
        let mut last = self.last_refresh.lock().await;
        let current = self.current();
        // A refresh that ran while this call waited may have brought the key.
        if current.by_kid.contains_key(kid) || last.is_some_and(|t| t.elapsed() < self.min_refresh)
        {
            return current;
        }
        *last = Some(Instant::now());
        self.fetch_and_store().await.unwrap_or(current)
    }

    /// Starts a background refetch when the set is older than `max_age`, unless one is
    /// running or the rate limit says not yet. Never waits: a token with a known key is not held
    /// up by a slow issuer.
    fn refresh_if_stale(self: &Arc<Self>) {
        if self.loaded.read_ignore_poison().at.elapsed() < self.max_age {
            return;
        }
        let Ok(mut last) = Arc::clone(&self.last_refresh).try_lock_owned() else {
            return; // a refresh is under way
        };
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        *last = Some(Instant::now());
        let this = Arc::clone(self);
        runtime.spawn(async move {
            this.fetch_and_store().await;
            drop(last);
        });
    }

    /// Fetches and installs the set; on failure logs and keeps the cached one (`None`).
    async fn fetch_and_store(&self) -> Option<Arc<KeySet>> {
        match fetch_jwks(&self.http, &self.url).await {
            Ok(set) => {
                let set = Arc::new(set);
                tracing::info!(url = %self.url, keys = set.keys.len(), "JWKS refreshed");
                *self.loaded.write_ignore_poison() = Loaded {
                    set: Arc::clone(&set),
                    at: Instant::now(),
                };
                Some(set)
            }
            Err(e) => {
                tracing::warn!(url = %self.url, "JWKS refresh failed, keeping the cached keys: {e:#}");
                None
            }
        }
    }
}

/// GET the JWKS: status 200, at most [`MAX_JWKS_BYTES`], within [`FETCH_TIMEOUT`], no redirects,
/// at least one usable signing key. Unusable keys are skipped with a warning (an issuer may add a
/// key type this bridge does not know; that must not lock everyone out).
async fn fetch_jwks(http: &reqwest::Client, url: &reqwest::Url) -> anyhow::Result<KeySet> {
    let mut resp = http
        .get(url.clone())
        .header(
            reqwest::header::ACCEPT,
            "application/jwk-set+json, application/json",
        )
        .send()
        .await
        .context("request failed")?;
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        bail!(
            "answered {status} (redirects are not followed: point jwks.url at the final location)"
        );
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        bail!("the JWKS is larger than {} KiB", MAX_JWKS_BYTES / 1024);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("reading the JWKS")? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            bail!("the JWKS is larger than {} KiB", MAX_JWKS_BYTES / 1024);
        }
        body.extend_from_slice(&chunk);
    }
    let doc: Value = serde_json::from_slice(&body).context("the JWKS is not JSON")?;
    let parsed = parse_jwks(&doc)?;
    for why in &parsed.rejected {
        tracing::warn!(url = %url, "JWKS key skipped: {why}");
    }
    if parsed.set.keys.is_empty() {
        bail!("the JWKS holds no usable signing key");
    }
    Ok(parsed.set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const ISSUER: &str = "https://issuer.test";
    const AUDIENCE: &str = "https://mcp.test/mcp";
    const RSA_PEM: &str = include_str!("../../tests/fixtures/jwt/rsa2048-test-only.pem");

    /// A signing key and its public JWK.
    struct TestKey {
        alg: Algorithm,
        enc: EncodingKey,
        jwk: Value,
    }

    fn with_kid(mut jwk: Value, kid: &str) -> Value {
        jwk["kid"] = json!(kid);
        jwk
    }

    fn rsa_key(kid: &str) -> TestKey {
        let enc = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap();
        let jwk =
            serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap()).unwrap();
        TestKey {
            alg: Algorithm::RS256,
            enc,
            jwk: with_kid(jwk, kid),
        }
    }

    fn ed_key(kid: &str) -> TestKey {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let sk = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let enc = EncodingKey::from_ed_der(sk.to_pkcs8_der().unwrap().as_bytes());
        let x = URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "use": "sig"});
        TestKey {
            alg: Algorithm::EdDSA,
            enc,
            jwk: with_kid(jwk, kid),
        }
    }

    fn ec_key(kid: &str) -> TestKey {
        use p256::pkcs8::EncodePrivateKey;
        let sk = loop {
            if let Ok(sk) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break sk;
            }
        };
        let enc = EncodingKey::from_ec_der(sk.to_pkcs8_der().unwrap().as_bytes());
        let jwk =
            serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap()).unwrap();
        TestKey {
            alg: Algorithm::ES256,
            enc,
            jwk: with_kid(jwk, kid),
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> Value {
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "exp": now() + 300, "iat": now()})
    }

    fn mint_as(key: &TestKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &key.enc).unwrap()
    }

    fn mint(key: &TestKey, claims: &Value) -> String {
        let kid = key.jwk["kid"].as_str();
        mint_as(key, key.alg, kid, claims)
    }

    fn config(keys: &[&TestKey]) -> JwtConfig {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        JwtConfig {
            issuer: ISSUER.into(),
            audience: vec![AUDIENCE.into()],
            jwks: JwksSource::Inline(json!({ "keys": keys })),
            resource: None,
            required_scopes: vec![],
            leeway_s: DEFAULT_LEEWAY_S,
        }
    }

    async fn verifier(keys: &[&TestKey]) -> Verifier {
        Verifier::new(config(keys)).await.unwrap()
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[tokio::test]
    async fn valid_tokens_of_each_key_type_are_accepted() {
        let (rsa, ed, ec) = (rsa_key("rsa"), ed_key("ed"), ec_key("ec"));
        let v = verifier(&[&rsa, &ed, &ec]).await;
        for key in [&rsa, &ed, &ec] {
            let id = v.verify(&mint(key, &claims())).await.unwrap();
            assert_eq!(id.subject, "user-1");
            assert_eq!(id.client_id, None);
            assert_eq!(id.consumer(), "jwt:user-1");
        }
    }

    #[tokio::test]
    async fn identity_comes_from_client_id_then_azp_then_sub() {
        let ed = ed_key("ed");
        let v = verifier(&[&ed]).await;
        let mut c = claims();
        c["client_id"] = json!("agent-7");
        c["azp"] = json!("other");
        let id = v.verify(&mint(&ed, &c)).await.unwrap();
        assert_eq!(
            (id.subject.as_str(), id.client_id.as_deref()),
            ("user-1", Some("agent-7"))
        );
        assert_eq!(id.consumer(), "jwt:agent-7");

        let mut c = claims();
        c["azp"] = json!("web app");
        assert_eq!(
            v.verify(&mint(&ed, &c)).await.unwrap().consumer(),
            "jwt:web-app"
        );

        // Client-credentials token: no sub, the client is the subject.
        let mut c = claims();
        c.as_object_mut().unwrap().remove("sub");
        c["client_id"] = json!("svc");
        assert_eq!(v.verify(&mint(&ed, &c)).await.unwrap().subject, "svc");

        // Neither: nobody to name.
        let mut c = claims();
        c.as_object_mut().unwrap().remove("sub");
        assert_eq!(v.verify(&mint(&ed, &c)).await, Err(Refusal::Malformed));
    }

    #[test]
    fn consumer_is_sanitised_and_bounded() {
        let id = Identity {
            subject: "s".into(),
            client_id: Some(format!("a_b\"c\n{}é", "x".repeat(100))),
            scopes: vec![],
        };
        let c = id.consumer();
        assert!(c.starts_with("jwt:a-b-c-xxx"), "{c}");
        assert_eq!(c.chars().count(), 64);
        assert!(
            c.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._@:-".contains(c)),
            "{c}"
        );
        let id = Identity {
            subject: "user@example.com".into(),
            client_id: None,
            scopes: vec![],
        };
        assert_eq!(id.consumer(), "jwt:user@example.com");
    }

    #[tokio::test]
    async fn a_different_key_with_the_same_kid_is_a_bad_signature() {
        let (ed, impostor) = (ed_key("ed"), ed_key("ed"));
        let v = verifier(&[&ed]).await;
        assert_eq!(
            v.verify(&mint(&impostor, &claims())).await,
            Err(Refusal::BadSignature)
        );
        let (rsa, ec, ec2) = (rsa_key("rsa"), ec_key("ec"), ec_key("ec"));
        let v = verifier(&[&rsa, &ec]).await;
        assert_eq!(
            v.verify(&mint(&ec2, &claims())).await,
            Err(Refusal::BadSignature)
        );
        // A flipped signature byte on a valid RS256 token.
        let token = mint(&rsa, &claims());
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[10] ^= 1;
        let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(v.verify(&tampered).await, Err(Refusal::BadSignature));
    }

    #[tokio::test]
    async fn expiry_and_not_before_honour_the_leeway() {
        let ed = ed_key("ed");
        let v = verifier(&[&ed]).await;
        let mut c = claims();
        c["exp"] = json!(now() - DEFAULT_LEEWAY_S - 10);
        assert_eq!(v.verify(&mint(&ed, &c)).await, Err(Refusal::Expired));
        c["exp"] = json!(now() - 5);
        assert!(v.verify(&mint(&ed, &c)).await.is_ok(), "within leeway");

        let mut c = claims();
        c["nbf"] = json!(now() + 120);
        assert_eq!(v.verify(&mint(&ed, &c)).await, Err(Refusal::NotYetValid));
        c["nbf"] = json!(now() + 5);
        assert!(v.verify(&mint(&ed, &c)).await.is_ok(), "within leeway");
    }

    #[tokio::test]
    async fn issuer_and_audience_must_match() {
        let ed = ed_key("ed");
        let v = verifier(&[&ed]).await;
        let mut c = claims();
        c["iss"] = json!("https://evil.test");
        assert_eq!(v.verify(&mint(&ed, &c)).await, Err(Refusal::WrongIssuer));
        c.as_object_mut().unwrap().remove("iss");
        assert_eq!(v.verify(&mint(&ed, &c)).await, Err(Refusal::WrongIssuer));

        let mut c = claims();
        c["aud"] = json!(["https://other.test", "api"]);
        assert_eq!(v.verify(&mint(&ed, &c)).await, Err(Refusal::WrongAudience));
        c["aud"] = json!("https://other.test");
        assert_eq!(v.verify(&mint(&ed, &c)).await, Err(Refusal::WrongAudience));
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(v.verify(&mint(&ed, &c)).await, Err(Refusal::WrongAudience));
        c["aud"] = json!(["https://other.test", AUDIENCE]);
        assert!(
            v.verify(&mint(&ed, &c)).await.is_ok(),
            "one of several audiences is ours"
        );
    }

    #[tokio::test]
    async fn alg_none_and_hmac_are_refused() {
        let rsa = rsa_key("rsa");
        let v = verifier(&[&rsa]).await;
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "rsa"})),
            b64(&claims())
        );
        assert_eq!(v.verify(&none).await, Err(Refusal::UnsupportedAlgorithm));
        let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims()));
        assert_eq!(v.verify(&none).await, Err(Refusal::UnsupportedAlgorithm));

        // The classic confusion attack: HS256 keyed with the public key the attacker can read.
        let public = serde_json::to_vec(&rsa.jwk).unwrap();
        for secret in [
            public.as_slice(),
            RSA_PEM.as_bytes(),
            rsa.jwk["n"].as_str().unwrap().as_bytes(),
        ] {
            let hs = TestKey {
                alg: Algorithm::HS256,
                enc: EncodingKey::from_secret(secret).unwrap(),
                jwk: json!({}),
            };
            for kid in [Some("rsa"), None] {
                let token = mint_as(&hs, Algorithm::HS256, kid, &claims());
                assert_eq!(v.verify(&token).await, Err(Refusal::UnsupportedAlgorithm));
            }
        }
        let hs = TestKey {
            alg: Algorithm::HS512,
            enc: EncodingKey::from_secret(b"k").unwrap(),
            jwk: json!({}),
        };
        let token = mint_as(&hs, Algorithm::HS512, Some("rsa"), &claims());
        assert_eq!(v.verify(&token).await, Err(Refusal::UnsupportedAlgorithm));
    }

    #[tokio::test]
    async fn the_header_alg_must_fit_the_selected_key() {
        let rsa = rsa_key("rsa"); // its JWK states "alg": "RS256"
        let ed = ed_key("ed"); // states no alg: EdDSA only, by key type
        let v = verifier(&[&rsa, &ed]).await;
        // Same RSA key, PS256 instead of the declared RS256.
        let token = mint_as(&rsa, Algorithm::PS256, Some("rsa"), &claims());
        assert_eq!(v.verify(&token).await, Err(Refusal::UnsupportedAlgorithm));
        // An ES256 token naming the Ed25519 key.
        let ec = ec_key("x");
        let token = mint_as(&ec, Algorithm::ES256, Some("ed"), &claims());
        assert_eq!(v.verify(&token).await, Err(Refusal::UnsupportedAlgorithm));

        // Without a stated alg, an RSA key verifies any RSA algorithm.
        let mut open = rsa_key("rsa");
        open.jwk.as_object_mut().unwrap().remove("alg");
        let v = verifier(&[&open]).await;
        for alg in [
            Algorithm::RS256,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
        ] {
            assert!(
                v.verify(&mint_as(&open, alg, Some("rsa"), &claims()))
                    .await
                    .is_ok(),
                "{alg:?}"
            );
        }
    }

    #[tokio::test]
    async fn keys_are_selected_by_kid() {
        let (a, b) = (ed_key("a"), ed_key("b"));
        let one = verifier(&[&a]).await;
        assert_eq!(
            one.verify(&mint_as(&a, a.alg, Some("zzz"), &claims()))
                .await,
            Err(Refusal::UnknownKey)
        );
        // No kid: fine while the set holds exactly one key...
        assert!(one
            .verify(&mint_as(&a, a.alg, None, &claims()))
            .await
            .is_ok());
        // ...ambiguous with two.
        let two = verifier(&[&a, &b]).await;
        assert_eq!(
            two.verify(&mint_as(&a, a.alg, None, &claims())).await,
            Err(Refusal::UnknownKey)
        );
        assert!(two.verify(&mint(&b, &claims())).await.is_ok());
    }

    #[tokio::test]
    async fn malformed_input_is_refused_before_work() {
        let ed = ed_key("ed");
        let v = verifier(&[&ed]).await;
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            v.verify(&mint(&ed, &c)).await,
            Err(Refusal::Malformed),
            "exp is required"
        );
        let mut c = claims();
        c["exp"] = json!("tomorrow");
        assert_eq!(v.verify(&mint(&ed, &c)).await, Err(Refusal::Malformed));

        let mut c = claims();
        c["pad"] = json!("x".repeat(9 * 1024));
        let big = mint(&ed, &c);
        assert!(big.len() > MAX_TOKEN_BYTES);
        assert_eq!(v.verify(&big).await, Err(Refusal::Malformed));

        let good = mint(&ed, &claims());
        for bad in [
            String::new(),
            "abc".into(),
            format!("{good}.x"),
            format!(" {good}"),
            good.replacen('.', "=.", 1),
            format!("{}.{}.sig", b64(&json!("not an object")), b64(&claims())),
            format!("{}.{}.sig", b64(&json!({"kid": "ed"})), b64(&claims())),
            format!("e30.{}.sig", b64(&claims())),
        ] {
            assert_eq!(v.verify(&bad).await, Err(Refusal::Malformed), "{bad:.40}");
        }
    }

    #[tokio::test]
    async fn scopes_are_checked_from_scope_or_scp() {
        let ed = ed_key("ed");
        let mut cfg = config(&[&ed]);
        cfg.required_scopes = vec!["mcp:tools".into(), "read".into()];
        let v = Verifier::new(cfg).await.unwrap();

        let mut c = claims();
        c["scope"] = json!("read mcp:tools extra");
        let id = v.verify(&mint(&ed, &c)).await.unwrap();
        assert_eq!(id.scopes, ["read", "mcp:tools", "extra"]);

        let mut c = claims();
        c["scp"] = json!(["mcp:tools", "read"]);
        assert!(v.verify(&mint(&ed, &c)).await.is_ok());

        let mut c = claims();
        c["scope"] = json!("read");
        let refusal = v.verify(&mint(&ed, &c)).await.unwrap_err();
        assert_eq!(refusal, Refusal::MissingScope("mcp:tools".into()));
        assert_eq!((refusal.status(), refusal.label()), (403, "missing_scope"));
        assert_eq!(
            refusal.description(),
            "the token lacks the required scope mcp:tools"
        );

        // A lookalike (prefix match) does not count.
        let mut c = claims();
        c["scope"] = json!("read mcp:tools2");
        assert_eq!(
            v.verify(&mint(&ed, &c)).await,
            Err(Refusal::MissingScope("mcp:tools".into()))
        );
    }

    #[tokio::test]
    async fn metadata_document_has_the_rfc_9728_shape() {
        let ed = ed_key("ed");
        let v = verifier(&[&ed]).await;
        assert_eq!(
            v.metadata(AUDIENCE),
            json!({
                "resource": AUDIENCE,
                "authorization_servers": [ISSUER],
                "bearer_methods_supported": ["header"],
            })
        );
        let mut cfg = config(&[&ed]);
        cfg.required_scopes = vec!["mcp".into()];
        cfg.resource = Some(AUDIENCE.into());
        let v = Verifier::new(cfg).await.unwrap();
        assert_eq!(v.resource(), Some(AUDIENCE));
        assert_eq!(v.metadata(AUDIENCE)["scopes_supported"], json!(["mcp"]));
    }

    #[tokio::test]
    async fn challenges_follow_rfc_6750_and_the_mcp_spec() {
        let ed = ed_key("ed");
        let v = verifier(&[&ed]).await;
        let meta = "https://mcp.test/.well-known/oauth-protected-resource";
        assert_eq!(
            v.challenge(meta, None),
            format!("Bearer resource_metadata=\"{meta}\"")
        );
        assert_eq!(
            v.challenge(meta, Some(&Refusal::Expired)),
            format!(
                "Bearer error=\"invalid_token\", error_description=\"the token has expired\", \
                 resource_metadata=\"{meta}\""
            )
        );
        // Quotes and backslashes escaped; CR/LF dropped (no header injection).
        assert_eq!(
            v.challenge("https://x/\"a\\b\r\nSet-Cookie: c", None),
            "Bearer resource_metadata=\"https://x/\\\"a\\\\bSet-Cookie: c\""
        );

        let mut cfg = config(&[&ed]);
        cfg.required_scopes = vec!["read".into(), "mcp:tools".into()];
        let v = Verifier::new(cfg).await.unwrap();
        assert_eq!(
            v.challenge(meta, None),
            format!("Bearer resource_metadata=\"{meta}\", scope=\"read mcp:tools\"")
        );
        assert_eq!(
            v.challenge(meta, Some(&Refusal::MissingScope("mcp:tools".into()))),
            format!(
                "Bearer error=\"insufficient_scope\", error_description=\"the token lacks the \
                 required scope mcp:tools\", resource_metadata=\"{meta}\", scope=\"read mcp:tools\""
            )
        );
        let odd = Refusal::MissingScope("a\"b\\c\nd".into());
        assert_eq!(odd.description(), "the token lacks the required scope abcd");
    }

    #[test]
    fn every_refusal_has_a_label_status_and_safe_description() {
        let all = [
            Refusal::Malformed,
            Refusal::UnsupportedAlgorithm,
            Refusal::UnknownKey,
            Refusal::BadSignature,
            Refusal::Expired,
            Refusal::NotYetValid,
            Refusal::WrongIssuer,
            Refusal::WrongAudience,
            Refusal::MissingScope("s".into()),
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(Refusal::label).collect();
        assert_eq!(labels.len(), all.len());
        for r in &all {
            assert!(r
                .label()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
            assert_eq!(
                r.status(),
                if matches!(r, Refusal::MissingScope(_)) {
                    403
                } else {
                    401
                }
            );
            let d = r.description();
            assert!(
                d.chars()
                    .all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\'),
                "{d}"
            );
        }
    }

    #[tokio::test]
    async fn inline_key_errors_name_the_key() {
        let ed = ed_key("good");
        let cases = [
            (
                json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
                "kid \"hmac\"",
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short"}),
                "32 bytes",
            ),
            (
                json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"}),
                "P-521",
            ),
            (
                json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xc3u8; 128]), "e": "AQAB", "kid": "r1024"}),
                "2048",
            ),
            (
                json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "HS256"}),
                "key #2 (no kid)",
            ),
            (with_kid(ed.jwk.clone(), "good"), "duplicate kid"),
        ];
        for (bad, expect) in cases {
            let cfg = JwtConfig {
                jwks: JwksSource::Inline(json!({"keys": [ed.jwk, bad]})),
                ..config(&[])
            };
            let err = format!("{:#}", Verifier::new(cfg).await.unwrap_err());
            assert!(err.contains(expect), "{expect:?} not in {err}");
        }
        // An EC point that is not on the curve.
        let mut off = ec_key("off").jwk;
        off["y"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
        let err = format!("{:#}", Verifier::new(config(&[])).await.unwrap_err());
        assert!(err.contains("no signing key"), "{err}");
        let cfg = JwtConfig {
            jwks: JwksSource::Inline(json!({"keys": [off]})),
            ..config(&[])
        };
        let err = format!("{:#}", Verifier::new(cfg).await.unwrap_err());
        assert!(
            err.contains("kid \"off\"") && err.contains("curve"),
            "{err}"
        );

        // Encryption keys are skipped, not errors.
        let enc = json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "enc"});
        let cfg = JwtConfig {
            jwks: JwksSource::Inline(json!({"keys": [ed.jwk, enc]})),
            ..config(&[])
        };
        let v = Verifier::new(cfg).await.unwrap();
        assert!(v.verify(&mint(&ed, &claims())).await.is_ok());
        assert!(Verifier::new(JwtConfig {
            jwks: JwksSource::Inline(json!([])),
            ..config(&[])
        })
        .await
        .is_err());
    }

    #[tokio::test]
    async fn settings_are_checked() {
        let ed = ed_key("ed");
        let bad = [
            JwtConfig {
                issuer: " ".into(),
                ..config(&[&ed])
            },
            JwtConfig {
                audience: vec![],
                ..config(&[&ed])
            },
            JwtConfig {
                leeway_s: 3600,
                ..config(&[&ed])
            },
            JwtConfig {
                required_scopes: vec!["a b".into()],
                ..config(&[&ed])
            },
            JwtConfig {
                resource: Some("/relative".into()),
                ..config(&[&ed])
            },
            JwtConfig {
                jwks: JwksSource::Url("http://issuer.example/jwks".into()),
                ..config(&[&ed])
            },
            JwtConfig {
                jwks: JwksSource::Url("ftp://127.0.0.1/jwks".into()),
                ..config(&[&ed])
            },
            JwtConfig {
                jwks: JwksSource::Url("https://u:p@issuer.example/jwks".into()),
                ..config(&[&ed])
            },
        ];
        for cfg in bad {
            assert!(Verifier::new(cfg.clone()).await.is_err(), "{cfg:?}");
        }
        for ok in [
            "https://issuer.example/jwks",
            "http://127.0.0.1:9/j",
            "http://[::1]/j",
            "http://localhost/j",
        ] {
            assert!(jwks_url(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn config_file_shape() {
        let cfg: JwtConfig = serde_json::from_value(json!({
            "issuer": ISSUER,
            "audience": [AUDIENCE],
            "jwks": {"url": "https://issuer.test/jwks"},
        }))
        .unwrap();
        assert_eq!(cfg.leeway_s, 30);
        assert_eq!(cfg.jwks, JwksSource::Url("https://issuer.test/jwks".into()));
        assert_eq!(
            serde_json::to_value(&cfg).unwrap(),
            json!({"issuer": ISSUER, "audience": [AUDIENCE], "jwks": {"url": "https://issuer.test/jwks"}, "leeway_s": 30})
        );
        let inline = json!({"issuer": "i", "audience": ["a"], "jwks": {"inline": {"keys": []}}, "required_scopes": ["s"]});
        let cfg: JwtConfig = serde_json::from_value(inline).unwrap();
        assert_eq!(cfg.jwks, JwksSource::Inline(json!({"keys": []})));
        assert!(serde_json::from_value::<JwtConfig>(
            json!({"issuer": "i", "audience": ["a"], "jwks": {"url": "u"}, "leway_s": 1})
        )
        .is_err());
    }

    #[test]
    fn verify_is_send() {
        fn send<T: Send>(_: T) {}
        let v: Option<&Verifier> = None;
        if let Some(v) = v {
            send(v.verify("t"));
        }
    }

    /// A loopback HTTP server serving a JWKS (`None`: answers 500) and counting GETs.
    struct JwksServer {
        url: String,
        fetches: Arc<AtomicUsize>,
        doc: Arc<Mutex<Option<Value>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl JwksServer {
        async fn start(doc: Value) -> JwksServer {
            use axum::response::IntoResponse;
            let fetches = Arc::new(AtomicUsize::new(0));
            let doc = Arc::new(Mutex::new(Some(doc)));
            let (f, d) = (Arc::clone(&fetches), Arc::clone(&doc));
            let app = axum::Router::new().route(
                "/jwks",
                axum::routing::get(move || {
                    let (f, d) = (Arc::clone(&f), Arc::clone(&d));
                    async move {
                        f.fetch_add(1, Ordering::SeqCst);
                        match d.lock().unwrap().clone() {
                            Some(doc) => axum::Json(doc).into_response(),
                            None => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                        }
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks", listener.local_addr().unwrap());
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            JwksServer {
                url,
                fetches,
                doc,
                task,
            }
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        fn serve(&self, doc: Option<Value>) {
            *self.doc.lock().unwrap() = doc;
        }

        fn config(&self) -> JwtConfig {
            JwtConfig {
                jwks: JwksSource::Url(self.url.clone()),
                ..config(&[])
            }
        }
    }

    impl Drop for JwksServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    #[tokio::test]
    async fn url_source_refetches_on_unknown_kid_at_most_once_a_minute() {
        let (a, b) = (ed_key("a"), ed_key("b"));
        let server = JwksServer::start(json!({"keys": [a.jwk]})).await;
        let v = Verifier::new(server.config()).await.unwrap();
        assert_eq!(server.fetches(), 1, "fetched once at start");
        assert!(v.verify(&mint(&a, &claims())).await.is_ok());
        assert_eq!(server.fetches(), 1, "a known kid costs no fetch");

        // Rotation: the issuer publishes "b"; the first token naming it triggers one refetch.
        server.serve(Some(json!({"keys": [a.jwk, b.jwk]})));
        assert!(v.verify(&mint(&b, &claims())).await.is_ok());
        assert_eq!(server.fetches(), 2);

        // A flood of random kids, concurrently: no further fetch inside the minute.
        let tokens: Vec<String> = (0..50)
            .map(|_| {
                mint_as(
                    &a,
                    a.alg,
                    Some(&format!("k{}", rand::random::<u64>())),
                    &claims(),
                )
            })
            .collect();
        let results = futures::future::join_all(tokens.iter().map(|t| v.verify(t))).await;
        assert!(results.iter().all(|r| *r == Err(Refusal::UnknownKey)));
        assert!(server.fetches() <= 2, "{} fetches", server.fetches());
        assert!(v.verify(&mint(&a, &claims())).await.is_ok());
    }

    #[tokio::test]
    async fn concurrent_refreshes_collapse_and_failures_keep_the_cache() {
        let (a, b) = (ed_key("a"), ed_key("b"));
        let server = JwksServer::start(json!({"keys": [a.jwk]})).await;
        // No rate limit, to see the collapsing and the failure path in isolation.
        let v = Verifier::build(server.config(), Duration::ZERO, MAX_KEY_AGE)
            .await
            .unwrap();
        server.serve(Some(json!({"keys": [a.jwk, b.jwk]})));
        let token = mint(&b, &claims());
        let results = futures::future::join_all((0..20).map(|_| v.verify(&token))).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            server.fetches(),
            2,
            "20 concurrent unknown-kid tokens, one refetch"
        );

        server.serve(None);
        assert_eq!(
            v.verify(&mint_as(&a, a.alg, Some("c"), &claims())).await,
            Err(Refusal::UnknownKey)
        );
        assert_eq!(server.fetches(), 3, "the refresh was tried");
        assert!(
            v.verify(&mint(&a, &claims())).await.is_ok(),
            "cached keys still in use"
        );
        assert!(v.verify(&mint(&b, &claims())).await.is_ok());
    }

    #[tokio::test]
    async fn a_stale_set_is_refetched_in_the_background_so_withdrawn_keys_stop_working() {
        let (a, b) = (ed_key("a"), ed_key("b"));
        let server = JwksServer::start(json!({"keys": [a.jwk, b.jwk]})).await;
        // Every set is stale at once; no rate limit.
        let v = Verifier::build(server.config(), Duration::ZERO, Duration::ZERO)
            .await
            .unwrap();
        server.serve(Some(json!({"keys": [b.jwk]})));
        // Accepted from the cache: the refetch runs behind it, not in front.
        assert!(v.verify(&mint(&a, &claims())).await.is_ok());
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.fetches() < 2 {
            assert!(Instant::now() < deadline, "no background refetch");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while v.keys.current().pick(Some("a")).is_some() {
            assert!(Instant::now() < deadline, "refetched set not installed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A token not verified before (the one above stays trusted for VERIFIED_FOR at most).
        let mut fresh = claims();
        fresh["jti"] = json!("after-withdrawal");
        assert_eq!(v.verify(&mint(&a, &fresh)).await, Err(Refusal::UnknownKey));
        assert!(v.verify(&mint(&b, &claims())).await.is_ok());
    }

    #[tokio::test]
    async fn url_source_fails_at_start_when_unusable() {
        let server = JwksServer::start(json!({"keys": []})).await;
        let err = format!("{:#}", Verifier::new(server.config()).await.unwrap_err());
        assert!(err.contains("no usable signing key"), "{err}");
        server.serve(Some(json!({"keys": [], "pad": "x".repeat(MAX_JWKS_BYTES)})));
        let err = format!("{:#}", Verifier::new(server.config()).await.unwrap_err());
        assert!(err.contains("256 KiB"), "{err}");
        server.serve(None);
        let err = format!("{:#}", Verifier::new(server.config()).await.unwrap_err());
        assert!(err.contains("500"), "{err}");
        // Unknown key types from a URL are skipped with a warning, not fatal.
        let ed = ed_key("ed");
        server.serve(Some(
            json!({"keys": [{"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}, ed.jwk]}),
        ));
        let v = Verifier::new(server.config()).await.unwrap();
        assert!(v.verify(&mint(&ed, &claims())).await.is_ok());
    }
}
