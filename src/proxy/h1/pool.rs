//! Kept-alive upstream connections of one proxy worker, by target authority.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// How long a connection may sit idle in the pool before it is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per authority and worker; past it the oldest is closed.
pub const MAX_IDLE: usize = 1024;
/// Authorities remembered before those without an idle connection are forgotten.
const MAX_HOSTS: usize = 256;

/// One upstream connection with its read buffer, which outlives each exchange so that a
/// kept-alive connection never allocates a buffer again.
pub struct Conn {
    pub io: TcpStream,
    pub buf: BytesMut,
    /// When it last went idle (meaningful while pooled).
    since: Instant,
}

impl Conn {
    pub fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            since: Instant::now(),
        }
    }

    /// Whether a pooled connection can carry a request: the upstream has neither closed it
    /// nor sent anything unasked. Asks the socket only when the reactor has seen it readable
    /// since the last read, so a quiet connection costs no system call.
    fn usable(&self) -> bool {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

struct Host {
    authority: Rc<str>,
    /// Oldest first: taken from the back, expired from the front.
    idle: Vec<Conn>,
}

/// The idle connections of one worker. Single-threaded, like the worker: a `RefCell`, never
/// held across an await.
#[derive(Default)]
pub struct Pool {
    hosts: RefCell<Vec<Host>>,
}

impl Pool {
    /// The pool's key for `authority` and, when one is idle and usable, a connection to it
    /// (the most recently used: the one least likely to have been closed by the upstream).
    pub fn take(&self, authority: &str) -> (Rc<str>, Option<Conn>) {
        let mut hosts = self.hosts.borrow_mut();
        let index = match hosts.iter().position(|h| &*h.authority == authority) {
            Some(i) => i,
            None => {
                if hosts.len() >= MAX_HOSTS {
                    hosts.retain(|h| !h.idle.is_empty());
                }
                hosts.push(Host {
                    authority: authority.into(),
                    idle: Vec::new(),
                });
                hosts.len() - 1
            }
        };
        let host = &mut hosts[index];
        let now = Instant::now();
        while let Some(conn) = host.idle.pop() {
            if now.duration_since(conn.since) > IDLE_TIMEOUT {
                // Every connection below it is older still.
                host.idle.clear();
                break;
            }
            if conn.usable() {
                return (host.authority.clone(), Some(conn));
            }
        }
        (host.authority.clone(), None)
    }

    /// Returns a connection whose last exchange ended cleanly, for the next request to `key`.
    pub fn put(&self, key: &Rc<str>, mut conn: Conn) {
        let mut hosts = self.hosts.borrow_mut();
        let Some(host) = hosts.iter_mut().find(|h| Rc::ptr_eq(&h.authority, key)) else {
            return; // forgotten meanwhile: the connection closes
        };
        let now = Instant::now();
        let expired = host
            .idle
            .iter()
            .take_while(|c| now.duration_since(c.since) > IDLE_TIMEOUT)
            .count();
        host.idle.drain(..expired);
        if host.idle.len() >= MAX_IDLE {
            host.idle.remove(0);
        }
        conn.since = now;
        host.idle.push(conn);
    }

    /// Idle connections to `authority` (tests).
    #[cfg(test)]
    pub fn idle(&self, authority: &str) -> usize {
        let hosts = self.hosts.borrow();
        hosts
            .iter()
            .find(|h| &*h.authority == authority)
            .map_or(0, |h| h.idle.len())
    }
}
