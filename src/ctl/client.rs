//! The admin API over HTTP: one request at a time, errors turned into [`CtlError`]s that print
//! as one line.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::CtlError;

/// Path segments keep names readable: only what is not a name character is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// A path segment (a resource name, a key id) made safe for a URL.
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

pub struct Admin {
    base: String,
    token: Option<String>,
    client: awc::Client,
}

/// A successful answer.
pub struct Answer {
    pub status: u16,
    /// `X-Raftgate-Revision`, when the node sent one.
    pub revision: Option<u64>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl Admin {
    /// `base` is the admin URL (`http://host:port`, a scheme-less `host:port` means http);
    /// `cacert` a PEM file to verify an `https://` admin listener with instead of the web roots.
    pub fn new(base: &str, token: Option<String>, cacert: Option<&str>) -> Result<Admin, CtlError> {
        let base = base.trim_end_matches('/');
        let base = if base.starts_with("http://") || base.starts_with("https://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        let mut connector = awc::Connector::new().timeout(Duration::from_secs(10));
        if base.starts_with("https://") {
            use raftgate::tls::upstream::{client_config, Trust};
            let trust = cacert.map(Trust::File).unwrap_or(Trust::WebRoots);
            let tls = client_config(&trust).map_err(CtlError::Usage)?;
            connector = connector.rustls_0_23(tls);
        }
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_secs(60))
            .disable_redirects()
            .finish();
        Ok(Admin {
            base,
            token: token.filter(|t| !t.is_empty()),
            client,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Answer, CtlError> {
        self.call("GET", path, None, &[]).await
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, CtlError> {
        self.call(method, path, body, &[]).await
    }

    /// One call; any status but 2xx is an [`CtlError::Api`] carrying the API's error.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Answer, CtlError> {
        let url = format!("{}{path}", self.base);
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut req = self.client.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        for (name, value) in headers {
            req = req.insert_header((*name, value.as_str()));
        }
        let sent = match body {
            Some(b) => {
                req.insert_header(("content-type", "application/json"))
                    .send_body(b.to_string())
                    .await
            }
            None => req.send().await,
        };
        let mut resp = sent.map_err(|e| CtlError::Transport(format!("{method} {url}: {e}")))?;
        let bytes = (resp.body().limit(256 << 20).await)
            .map_err(|e| CtlError::Transport(format!("{method} {url}: reading the answer: {e}")))?;
        let status = resp.status();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(api_error(status, &body, &bytes));
        }
        let revision = (resp.headers().get("x-raftgate-revision"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Answer {
            status: status.as_u16(),
            revision,
            body,
        })
    }
}

/// `{"error": {"code", "message", "field"}}` when the API sent one, else the status and the
/// start of whatever came back.
fn api_error(status: awc::http::StatusCode, body: &Value, bytes: &[u8]) -> CtlError {
    let error = &body["error"];
    let text = |v: &Value| v.as_str().map(str::to_string);
    let (code, message) = match (text(&error["code"]), text(&error["message"])) {
        (Some(code), Some(message)) => (code, message),
        _ => {
            let raw = String::from_utf8_lossy(bytes);
            let first = raw.lines().next().unwrap_or("").trim();
            let reason = status.canonical_reason().unwrap_or("error");
            (
                reason.to_lowercase().replace(' ', "_"),
                if first.is_empty() {
                    "(empty answer)".to_string()
                } else {
                    first.chars().take(200).collect()
                },
            )
        }
    };
    CtlError::Api {
        status: status.as_u16(),
        code,
        message,
        field: text(&error["field"]),
    }
}
