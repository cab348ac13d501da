//! The workload every scenario runs, and the observer: tasks on the actix system's thread that
//! send admin writes with unique ids, proxied and quota-limited requests and key create/revoke
//! to random live nodes, recording each operation and its outcome in the history.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::api::{self, CONSUMER};
use crate::history::{Down, History, Op, OpKind, Outcome, Sample};

/// A node as the clients see it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub id: u64,
    pub admin: String,
    pub proxy: String,
}

/// What the workload, the observer and the nemesis share.
pub struct Shared {
    pub started: Instant,
    /// Indexed by node id - 1; grows when a scenario adds a node.
    pub nodes: RefCell<Vec<Endpoint>>,
    pub history: RefCell<History>,
    /// Nodes the clients send to: not killed, paused or stopped on purpose.
    up: RefCell<Vec<bool>>,
    /// Open down intervals: node → since (ms).
    down_since: RefCell<Vec<Option<u64>>>,
    pub stop: Cell<bool>,
    rng: RefCell<StdRng>,
    seq: Cell<u64>,
    /// Keys created and acknowledged: (id, key).
    pub live_keys: RefCell<Vec<(String, String)>>,
    /// Keys whose revocation was acknowledged: (id, key).
    pub revoked: RefCell<Vec<(String, String)>>,
    seed: u64,
}

impl Shared {
    pub fn new(nodes: Vec<Endpoint>, seed: u64) -> Rc<Shared> {
        let n = nodes.len();
        Rc::new(Shared {
            started: Instant::now(),
            nodes: RefCell::new(nodes),
            history: RefCell::default(),
            up: RefCell::new(vec![true; n]),
            down_since: RefCell::new(vec![None; n]),
            stop: Cell::new(false),
            rng: RefCell::new(StdRng::seed_from_u64(seed)),
            seq: Cell::new(0),
            live_keys: RefCell::default(),
            revoked: RefCell::default(),
            seed,
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn next(&self) -> u64 {
        self.seq.set(self.seq.get() + 1);
        self.seq.get()
    }

    /// A random node among those up (`None` when every node is down).
    fn pick(&self) -> Option<Endpoint> {
        let up = self.up.borrow();
        let nodes = self.nodes.borrow();
        let live: Vec<&Endpoint> = nodes.iter().filter(|n| up[n.id as usize - 1]).collect();
        live.choose(&mut *self.rng.borrow_mut())
            .map(|e| (*e).clone())
    }

    pub fn fault(&self, what: impl Into<String>) {
        let f = crate::history::Fault {
            at_ms: self.now_ms(),
            what: what.into(),
        };
        println!("  [{:>6} ms] {}", f.at_ms, f.what);
        self.history.borrow_mut().faults.push(f);
    }

    /// The node goes down on purpose: clients stop sending to it, and failures of requests to
    /// it from now until [`Shared::mark_up`] are excused.
    pub fn mark_down(&self, id: u64) {
        self.up.borrow_mut()[id as usize - 1] = false;
        let mut since = self.down_since.borrow_mut();
        since[id as usize - 1].get_or_insert(self.now_ms());
    }

    pub fn mark_up(&self, id: u64) {
        self.up.borrow_mut()[id as usize - 1] = true;
        if let Some(from_ms) = self.down_since.borrow_mut()[id as usize - 1].take() {
            let to_ms = self.now_ms();
            self.history.borrow_mut().down.push(Down {
                node: id,
                from_ms,
                to_ms,
            });
        }
    }

    /// Excuses proxied failures on every node (the upstream itself is down): node 0.
    pub fn excuse_all(&self, from_ms: u64, to_ms: u64) {
        self.history.borrow_mut().down.push(Down {
            node: 0,
            from_ms,
            to_ms,
        });
    }

    /// A node added while the scenario runs; clients send to it once it is marked up.
    pub fn add_node(&self, e: Endpoint) {
        let id = e.id;
        self.nodes.borrow_mut().push(e);
        self.up.borrow_mut().push(false);
        self.down_since.borrow_mut().push(Some(self.now_ms()));
        debug_assert_eq!(self.nodes.borrow().len() as u64, id);
    }

    /// A node removed from the cluster for good: clients stop sending to it, and requests to it
    /// from now on are excused.
    pub fn retire(&self, id: u64) {
        self.mark_down(id);
        let from_ms = self.down_since.borrow()[id as usize - 1].unwrap_or(0);
        self.history.borrow_mut().down.push(Down {
            node: id,
            from_ms,
            to_ms: u64::MAX,
        });
    }

    pub fn is_up(&self, id: u64) -> bool {
        self.up.borrow()[id as usize - 1]
    }

    fn record(&self, kind: OpKind, node: u64, id: String, start_ms: u64, outcome: Outcome) {
        let end_ms = self.now_ms();
        self.history.borrow_mut().ops.push(Op {
            kind,
            node,
            id,
            start_ms,
            end_ms,
            outcome,
        });
    }

    fn rand_ms(&self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.borrow_mut().gen_range(lo..=hi))
    }
}

async fn idle(shared: &Shared) {
    tokio::time::sleep(shared.rand_ms(50, 100)).await;
}

/// Unique route writes (`PUT /routes/w-N`), one at a time.
async fn writer(shared: Rc<Shared>, client: awc::Client) {
    while !shared.stop.get() {
        let Some(node) = shared.pick() else {
            idle(&shared).await;
            continue;
        };
        let id = format!("w-{}", shared.next());
        let start = shared.now_ms();
        let body = format!(r#"{{"service":"up","paths":["/{id}"]}}"#);
        let (outcome, _) = api::admin_write(
            &client,
            "PUT",
            format!("{}/routes/{id}", node.admin),
            Some(body),
        )
        .await;
        shared.record(OpKind::RouteWrite, node.id, id, start, outcome);
        tokio::time::sleep(shared.rand_ms(10, 40)).await;
    }
}

/// Creates keys (ones it chose, so the value is known) and revokes acknowledged ones.
async fn keys(shared: Rc<Shared>, client: awc::Client) {
    while !shared.stop.get() {
        let Some(node) = shared.pick() else {
            idle(&shared).await;
            continue;
        };
        let n = shared.next();
        let revoke = n.is_multiple_of(3) && !shared.live_keys.borrow().is_empty();
        let start = shared.now_ms();
        if revoke {
            let (id, key) = {
                let mut live = shared.live_keys.borrow_mut();
                let i = shared.rng.borrow_mut().gen_range(0..live.len());
                live.swap_remove(i)
            };
            let url = format!("{}/consumers/{CONSUMER}/keys/{id}", node.admin);
            let (outcome, _) = api::admin_write(&client, "DELETE", url, None).await;
            if outcome == Outcome::Ok {
                shared.revoked.borrow_mut().push((id.clone(), key));
            }
            shared.record(OpKind::KeyRevoke, node.id, id, start, outcome);
        } else {
            let key = format!("chaos-key-{}-{n:08}", shared.seed);
            let url = format!("{}/consumers/{CONSUMER}/keys", node.admin);
            let body = format!(r#"{{"key":"{key}"}}"#);
            let (outcome, json) = api::admin_write(&client, "POST", url, Some(body)).await;
            let id = json
                .as_ref()
                .and_then(|j| j["id"].as_str())
                .map(str::to_string);
            let op_id = match (&outcome, id) {
                (Outcome::Ok, Some(id)) => {
                    shared.live_keys.borrow_mut().push((id.clone(), key));
                    id
                }
                _ => key,
            };
            shared.record(OpKind::KeyCreate, node.id, op_id, start, outcome);
        }
        tokio::time::sleep(shared.rand_ms(20, 60)).await;
    }
}

/// Proxied `GET`s on `path`: the plain route (`Proxy`) or the quota-limited one (`Quota`).
async fn proxied(shared: Rc<Shared>, client: awc::Client, kind: OpKind, path: &'static str) {
    while !shared.stop.get() {
        let Some(node) = shared.pick() else {
            idle(&shared).await;
            continue;
        };
        let start = shared.now_ms();
        let outcome = match api::proxy_get(&client, format!("{}{path}", node.proxy), None).await {
            Ok(200) => Outcome::Ok,
            Ok(status) => Outcome::Fail { status },
            Err(reason) => Outcome::Unknown { reason },
        };
        shared.record(kind.clone(), node.id, path.into(), start, outcome);
        tokio::time::sleep(shared.rand_ms(2, 10)).await;
    }
}

/// Polls `GET /cluster` on every node that is up, for the one-leader-per-term check.
async fn observer(shared: Rc<Shared>, client: awc::Client) {
    while !shared.stop.get() {
        let nodes = shared.nodes.borrow().clone();
        for n in nodes {
            if !shared.is_up(n.id) {
                continue;
            }
            if let Some(s) = api::status(&client, &n.admin).await {
                let at_ms = shared.now_ms();
                shared.history.borrow_mut().samples.push(Sample {
                    at_ms,
                    node: n.id,
                    term: s.term,
                    leader: s.leader,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the workload; it runs until `shared.stop` is set. Await the handles to drain it.
pub fn start(shared: &Rc<Shared>) -> Vec<actix_rt::task::JoinHandle<()>> {
    let admin = api::client(Duration::from_secs(5));
    let proxy = api::client(Duration::from_secs(5));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(actix_rt::spawn(writer(shared.clone(), admin.clone())));
    }
    tasks.push(actix_rt::spawn(keys(shared.clone(), admin.clone())));
    for _ in 0..3 {
        tasks.push(actix_rt::spawn(proxied(
            shared.clone(),
            proxy.clone(),
            OpKind::Proxy,
            "/base",
        )));
    }
    for _ in 0..2 {
        tasks.push(actix_rt::spawn(proxied(
            shared.clone(),
            proxy.clone(),
            OpKind::Quota,
            "/q",
        )));
    }
    tasks.push(actix_rt::spawn(observer(
        shared.clone(),
        api::client(Duration::from_millis(500)),
    )));
    tasks
}
