//! The fault-injecting TCP relay: one listener in front of each node's cluster port, and the
//! network faults every relay obeys (partitions, one-way cuts, delay, loss).
//!
//! Every node's `[cluster] members` lists the relays, not the real cluster ports, so every
//! node-to-node connection crosses a relay. The relay in front of node `dst` learns the source
//! node from raftgate's handshake (the client's hello carries its node id at bytes 20..28, see
//! cluster/src/rpc.rs), so one listener per target is enough to cut any ordered pair.
//!
//! A cut link is a black hole, like a dropped packet: the relay stops forwarding and holds both
//! sockets open until the link heals, then closes them; the nodes see timeouts, not resets.
//! Delay keeps TCP's pipelining (each chunk is delivered `delay` after it was read, in order).
//! Loss is modelled at the level TCP shows it: a lost segment costs a retransmission, so a chunk
//! that is "lost" arrives 200 ms late (Linux's minimum RTO).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a lost segment costs: Linux's minimum retransmission timeout.
const RETRANSMIT: Duration = Duration::from_millis(200);
/// raftgate's handshake: the server's hello (magic + nonce), then the client's (magic, nonce,
/// node id, proof).
const SERVER_HELLO: usize = 20;
const CLIENT_HELLO: usize = 60;

/// The network faults in force, shared by every relay.
#[derive(Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

#[derive(Clone, Debug, Default)]
struct FaultState {
    /// Ordered pairs `(from, to)`: bytes from `from` never reach `to`.
    cut: BTreeSet<(u64, u64)>,
    delay_ms: u64,
    jitter_ms: u64,
    /// Probability that a chunk pays a retransmission.
    loss: f64,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Splits the nodes into groups that cannot reach each other (both directions). Nodes not
    /// named in any group keep every link.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        let mut s = self.lock();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for x in a {
                        for y in b {
                            s.cut.insert((*x, *y));
                        }
                    }
                }
            }
        }
    }

    #[allow(dead_code)] // for the one-way and ring/bridge scenarios (#4), not built yet
    /// Cuts one direction only: `from` cannot reach `to`.
    pub fn cut_one_way(&self, from: u64, to: u64) {
        self.lock().cut.insert((from, to));
    }

    /// Cuts both directions between two nodes (bridge and ring partitions are built from this).
    pub fn cut(&self, a: u64, b: u64) {
        let mut s = self.lock();
        s.cut.insert((a, b));
        s.cut.insert((b, a));
    }

    pub fn set_network(&self, delay_ms: u64, jitter_ms: u64, loss: f64) {
        let mut s = self.lock();
        s.delay_ms = delay_ms;
        s.jitter_ms = jitter_ms;
        s.loss = loss.clamp(0.0, 1.0);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        *self.lock() = FaultState::default();
    }

    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        from != to && self.lock().cut.contains(&(from, to))
    }

    /// How long a chunk read now on `from → to` waits before delivery.
    fn latency(&self) -> Duration {
        let s = self.lock().clone();
        let mut rng = rand::thread_rng();
        let mut ms = s.delay_ms;
        if s.jitter_ms > 0 {
            ms += rng.gen_range(0..=s.jitter_ms);
        }
        let mut d = Duration::from_millis(ms);
        if s.loss > 0.0 && rng.gen_bool(s.loss) {
            d += RETRANSMIT;
        }
        d
    }
}

/// Starts the relay in front of node `dst` (whose real cluster port is `target`) on `listener`.
/// Runs until the runtime stops.
pub fn spawn(
    rt: &tokio::runtime::Handle,
    listener: std::net::TcpListener,
    dst: u64,
    target: SocketAddr,
    faults: Arc<Faults>,
) {
    rt.spawn(async move {
        listener
            .set_nonblocking(true)
            .expect("nonblocking relay listener");
        let listener = TcpListener::from_std(listener).expect("relay listener");
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let faults = faults.clone();
            tokio::spawn(async move {
                let _ = relay(client, dst, target, faults).await;
            });
        }
    });
}

async fn relay(
    mut client: TcpStream,
    dst: u64,
    target: SocketAddr,
    faults: Arc<Faults>,
) -> std::io::Result<()> {
    // A node that is down refuses the connection: so does its relay (the client sees a reset).
    let mut server = TcpStream::connect(target).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let mut hello = [0u8; SERVER_HELLO];
    server.read_exact(&mut hello).await?;
    client.write_all(&hello).await?;
    let mut reply = [0u8; CLIENT_HELLO];
    client.read_exact(&mut reply).await?;
    let src = u64::from_be_bytes(reply[20..28].try_into().expect("8 bytes"));
    // The handshake needs both directions, as TCP itself does.
    if faults.is_cut(src, dst) || faults.is_cut(dst, src) {
        black_hole(&faults, src, dst).await;
        return Ok(());
    }
    server.write_all(&reply).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cut = tokio::select! {
        r = pipe(&mut cr, &mut sw, src, dst, &faults) => r,
        r = pipe(&mut sr, &mut cw, dst, src, &faults) => r,
    };
    if cut {
        // Keep both sockets open (nothing forwarded) until the link heals.
        black_hole(&faults, src, dst).await;
    }
    Ok(())
}

async fn black_hole(faults: &Faults, a: u64, b: u64) {
    while faults.is_cut(a, b) || faults.is_cut(b, a) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Forwards `from → to` until either side closes (false) or the link is cut (true).
async fn pipe(
    r: &mut OwnedReadHalf,
    w: &mut OwnedWriteHalf,
    from: u64,
    to: u64,
    faults: &Faults,
) -> bool {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if faults.is_cut(from, to) {
                return true;
            }
            // In order: a chunk never overtakes the one before it.
            let at = (Instant::now() + faults.latency()).max(last);
            last = at;
            if tx.send((at, buf[..n].to_vec())).is_err() {
                return false;
            }
        }
    };
    let writer = async {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if faults.is_cut(from, to) {
                return true;
            }
            if w.write_all(&chunk).await.is_err() {
                return false;
            }
        }
        false
    };
    // The reader owns the sender: when it ends, the writer delivers what is queued, then ends.
    let (cut_reading, cut_writing) = tokio::join!(reader, writer);
    cut_reading || cut_writing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_cuts_across_groups_only() {
        let f = Faults::default();
        f.partition(&[vec![1, 2], vec![3]]);
        assert!(f.is_cut(1, 3) && f.is_cut(3, 1) && f.is_cut(2, 3) && f.is_cut(3, 2));
        assert!(!f.is_cut(1, 2) && !f.is_cut(2, 1));
        f.heal();
        assert!(!f.is_cut(1, 3));
    }

    #[test]
    fn one_way_cut_keeps_the_other_direction() {
        let f = Faults::default();
        f.cut_one_way(1, 2);
        assert!(f.is_cut(1, 2));
        assert!(!f.is_cut(2, 1));
        assert!(!f.is_cut(1, 1), "a node always reaches itself");
    }
}
