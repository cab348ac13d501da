//! One active health probe: `GET path` over a fresh TCP connection (TLS for `https://`
//! targets, verified as the proxy verifies them), HTTP/1.0 so the answer ends with the
//! connection and needs no body framing. Healthy means a 2xx or 3xx status line within the
//! timeout, connect and handshake included.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ServiceRuntime;
use crate::tls::upstream::{client_config, Trust};

/// A target as its checker probes it.
pub struct ProbeTarget {
    authority: String,
    /// `https://` targets: the service's client config and the name to verify; `Err` when the
    /// service's CA cannot be used on this node (every probe fails).
    tls: Option<Result<(Arc<ClientConfig>, ServerName<'static>), String>>,
}

/// The targets of `runtime`, each with what its probe needs (a CA file is read here, once per
/// checker).
pub fn targets_of(runtime: &ServiceRuntime) -> Vec<ProbeTarget> {
    runtime
        .urls
        .iter()
        .map(|url| ProbeTarget {
            authority: url.authority.clone(),
            tls: (url.scheme == "https").then(|| {
                let config = client_config(&Trust::of(&runtime.spec))?;
                let host = url.authority.rsplit_once(':').map_or("", |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
                Ok((config, name))
            }),
        })
        .collect()
}

/// Probes one target of a checker.
pub async fn probe_target(target: &ProbeTarget, path: &str, timeout: Duration) -> bool {
    let Some(tls) = &target.tls else {
        return probe(&target.authority, path, timeout).await;
    };
    let (config, name) = match tls {
        Ok(tls) => tls,
        Err(e) => {
            tracing::debug!(target = %target.authority, error = %e, "TLS probe not possible");
            return false;
        }
    };
    let connect = async {
        let tcp = TcpStream::connect(&target.authority).await.ok()?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let stream = connector.connect(name.clone(), tcp).await.ok()?;
        status(stream, &target.authority, path).await
    };
    matches!(
        tokio::time::timeout(timeout, connect).await,
        Ok(Some(200..=399))
    )
}

/// The status line never needs more than this.
const MAX_HEAD: usize = 1024;

/// Probes `authority` (`host:port`) at `path` (validated: starts with `/`, no spaces or control
/// characters, so it cannot break the request line).
pub async fn probe(authority: &str, path: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, connect_status(authority, path)).await,
        Ok(Some(200..=399))
    )
}

async fn connect_status(authority: &str, path: &str) -> Option<u16> {
    let stream = TcpStream::connect(authority).await.ok()?;
    status(stream, authority, path).await
}

async fn status(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    authority: &str,
    path: &str,
) -> Option<u16> {
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: raftgate-health-check\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head)
}

/// `HTTP/1.x NNN ...` → NNN.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 302\r\n"), Some(302));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[tokio::test]
    async fn a_probe_is_healthy_on_2xx_and_3xx_only() {
        async fn serve(answer: &'static str) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                }
            });
            addr
        }
        let t = Duration::from_secs(10);
        assert!(probe(&serve("HTTP/1.1 204 No Content\r\n\r\n").await, "/h", t).await);
        assert!(probe(&serve("HTTP/1.0 301 Moved\r\n\r\n").await, "/h", t).await);
        assert!(!probe(&serve("HTTP/1.1 500 Oops\r\n\r\n").await, "/h", t).await);
        assert!(!probe(&serve("garbage\r\n").await, "/h", t).await);
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!probe(&dead.to_string(), "/h", t).await);
        // A listener that never answers: the timeout decides.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        assert!(!probe(&addr, "/h", Duration::from_millis(50)).await);
        drop(silent);
    }
}
