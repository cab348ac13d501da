//! The upstream behind every route: a minimal HTTP/1.1 server the nemesis can take down (its
//! listener closed, its connections dropped: clients see refused connections) or slow down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Upstream {
    pub addr: SocketAddr,
    rt: tokio::runtime::Handle,
    /// Extra time before each answer.
    slow_ms: Arc<AtomicU64>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Upstream {
    pub fn start(rt: &tokio::runtime::Handle) -> anyhow::Result<Upstream> {
        let std = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = std.local_addr()?;
        let up = Upstream {
            addr,
            rt: rt.clone(),
            slow_ms: Arc::default(),
            task: Mutex::new(None),
        };
        up.serve(Some(std));
        Ok(up)
    }

    fn serve(&self, std: Option<std::net::TcpListener>) {
        let (addr, slow) = (self.addr, self.slow_ms.clone());
        let task = self.rt.spawn(async move {
            let listener = match std {
                Some(l) => {
                    l.set_nonblocking(true).expect("nonblocking");
                    TcpListener::from_std(l).expect("upstream listener")
                }
                None => loop {
                    // mio sets SO_REUSEADDR: the port comes back at once.
                    match TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                },
            };
            // Connections live in a JoinSet owned by this task: aborting it drops them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    Ok((s, _)) = listener.accept() => { conns.spawn(conn(s, slow.clone())); }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Closes the listener and every connection: the gateway's connects are refused.
    pub fn down(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    pub fn up(&self) {
        if self
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            self.serve(None);
        }
    }

    pub fn set_slow(&self, ms: u64) {
        self.slow_ms.store(ms, Ordering::Relaxed);
    }
}

/// Answers `200 ok` to each request (bodies are not expected: the workload sends GETs).
async fn conn(mut s: TcpStream, slow: Arc<AtomicU64>) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let ms = slow.load(Ordering::Relaxed);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let resp =
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
            if s.write_all(resp).await.is_err() {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
