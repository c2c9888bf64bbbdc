//! The one HTTP client: every call has a deadline, and every failure says which component, which
//! URL and what went wrong, in words a tool result can carry as-is.
//!
//! Owns: timeouts, error wording, body size caps. Must not: know Docker or Prometheus shapes.

use std::time::Duration;

use serde::de::DeserializeOwned;

/// Bodies larger than this are refused (a stats sample or 1000 log lines are far smaller).
const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

/// A failed GET: `component` names what was asked (e.g. "the docker proxy").
#[derive(Debug)]
pub struct FetchError {
    pub component: String,
    pub url: String,
    pub kind: FetchErrorKind,
}

#[derive(Debug)]
pub enum FetchErrorKind {
    Timeout(Duration),
    Unreachable(String),
    Status { status: u16, body: String },
    BadBody(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (c, u) = (&self.component, &self.url);
        match &self.kind {
            FetchErrorKind::Timeout(d) => {
                write!(f, "{c} did not answer GET {u} within {}s", d.as_secs_f64())
            }
            FetchErrorKind::Unreachable(e) => write!(f, "{c} could not be reached at {u}: {e}"),
            FetchErrorKind::Status { status, body } if body.is_empty() => {
                write!(f, "{c} answered GET {u} with HTTP {status}")
            }
            FetchErrorKind::Status { status, body } => {
                write!(f, "{c} answered GET {u} with HTTP {status}: {body}")
            }
            FetchErrorKind::BadBody(e) => {
                write!(f, "{c} sent an unreadable answer to GET {u}: {e}")
            }
        }
    }
}

/// Status and body of a GET that reached the server.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Http {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Everything we talk to is on the stack network: never go through HTTP(S)_PROXY.
            .no_proxy()
            .user_agent(concat!("mcp-monitoring/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Http { client, timeout })
    }

    /// GET `url`; any HTTP status is a `Response`, only transport failures are errors.
    pub async fn get(&self, component: &str, url: &str) -> Result<Response, FetchError> {
        let err = |kind| FetchError {
            component: component.to_string(),
            url: url.to_string(),
            kind,
        };
        // reqwest's own timeout covers connect + request + body; this outer one is a belt for
        // anything (DNS on a blocking thread) that might not observe it.
        let fut = async {
            let mut resp = self.client.get(url).send().await?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Ok(Err(format!("body larger than {MAX_BODY} bytes")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok(Response { status, body }))
        };
        match tokio::time::timeout(self.timeout + Duration::from_millis(250), fut).await {
            Err(_) => Err(err(FetchErrorKind::Timeout(self.timeout))),
            Ok(Err(e)) if e.is_timeout() => Err(err(FetchErrorKind::Timeout(self.timeout))),
            Ok(Err(e)) => Err(err(FetchErrorKind::Unreachable(describe(&e)))),
            Ok(Ok(Err(e))) => Err(err(FetchErrorKind::BadBody(e))),
            Ok(Ok(Ok(r))) => Ok(r),
        }
    }

    /// GET `url`, require a 2xx answer and decode it as JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        component: &str,
        url: &str,
    ) -> Result<T, FetchError> {
        let r = self.get(component, url).await?;
        let err = |kind| FetchError {
            component: component.to_string(),
            url: url.to_string(),
            kind,
        };
        if !(200..300).contains(&r.status) {
            return Err(err(FetchErrorKind::Status {
                status: r.status,
                body: snippet(&r.text(), 300),
            }));
        }
        serde_json::from_slice(&r.body).map_err(|e| err(FetchErrorKind::BadBody(e.to_string())))
    }
}

/// reqwest's Display stops at "error sending request"; the cause chain says what really failed
/// (connection refused, DNS name not found, ...).
fn describe(e: &reqwest::Error) -> String {
    let mut parts = vec![];
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        // reqwest repeats the URL in its own message; the caller already names it.
        let s = match err.downcast_ref::<reqwest::Error>() {
            Some(re) => match re.url() {
                Some(u) => s.replace(&format!(" for url ({u})"), ""),
                None => s,
            },
            None => s,
        };
        // Wrapper layers that add words but no information.
        let noise = s == "error sending request" || s.starts_with("client error (");
        if !noise && !parts.iter().any(|p: &String| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        return e.to_string();
    }
    parts.join(": ")
}

/// At most `max` characters of `s` on one line, with an ellipsis when cut.
pub fn snippet(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_line_and_bounded() {
        assert_eq!(snippet("a\n  b\tc", 10), "a b c");
        assert_eq!(snippet("abcdef", 3), "abc…");
    }

    #[tokio::test]
    async fn refused_connection_names_component_and_url() {
        // Bind then drop: nothing listens on that port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let http = Http::new(Duration::from_secs(2)).unwrap();
        let url = format!("http://127.0.0.1:{port}/containers/json");
        let e = http.get("the docker proxy", &url).await.err().unwrap();
        let msg = e.to_string();
        assert!(
            msg.starts_with("the docker proxy could not be reached at http://127.0.0.1:"),
            "{msg}"
        );
        assert!(
            msg.ends_with("tcp connect error: Connection refused (os error 111)"),
            "{msg}"
        );
    }
}
