//! Integration harness: a mock upstream on port 0 and `Cluster::bootstrap(n)`, n raftgate nodes
//! in this process on port 0, plus a small admin/proxy client. Everything polls with deadlines.
#![allow(dead_code)]

pub mod tls;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use raftgate::config::{Config, Listen, Member};
use raftgate::{Gateway, Listeners};
use serde_json::{json, Value};

pub const TOKEN: &str = "test-token";
pub const SECRET: &str = "test-secret";
/// Generous: the suite must pass on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `f` until it returns `Some`, failing the test at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn bind0() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind port 0")
}

/// One node's fixed identity: its addresses and data dir survive restarts.
pub struct NodeSlot {
    pub config: Config,
    pub gateway: Option<Gateway>,
}

pub struct Cluster {
    pub nodes: Vec<NodeSlot>,
    pub dir: tempfile::TempDir,
    pub client: awc::Client,
}

pub struct Reply {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn revision(&self) -> u64 {
        self.headers
            .get("x-raftgate-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("X-Raftgate-Revision header")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish()
}

/// Tunes a node config for tests: fast Raft, one worker, small snapshots when asked.
pub type Tune = fn(&mut Config);

impl Cluster {
    pub async fn bootstrap(n: usize) -> Cluster {
        Cluster::bootstrap_with(n, |_| {}).await
    }

    pub async fn bootstrap_with(n: usize, tune: impl Fn(&mut Config)) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(Listeners {
                proxy: bind0(),
                admin: bind0(),
                cluster: bind0(),
                proxy_tls: Some(bind0()),
            });
        }
        let members: Vec<Member> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| Member {
                id: i as u64 + 1,
                addr: l.cluster.local_addr().unwrap().to_string(),
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            let mut c = test_config(i as u64 + 1, &dir, l);
            c.members = members.clone();
            tune(&mut c);
            nodes.push(NodeSlot {
                config: c,
                gateway: None,
            });
        }
        for (slot, l) in nodes.iter_mut().zip(listeners) {
            slot.gateway = Some(
                raftgate::start(slot.config.clone(), l)
                    .await
                    .expect("node starts"),
            );
        }
        let cluster = Cluster {
            nodes,
            dir,
            client: client(),
        };
        cluster.wait_leader().await;
        // As an operator would: every node answers `/readyz` 200 (it has caught up with what
        // the cluster had committed when it started) before the test talks to it.
        for i in 0..n {
            eventually("every node ready", || async {
                let r = cluster.admin_raw(i, "GET", "/readyz", "", None).await;
                (r.status == 200).then_some(())
            })
            .await;
        }
        cluster
    }

    /// Starts one more node with `join = true` (node id = its index + 1) on port 0: it waits
    /// until `POST /cluster/members` adds it. Its index.
    pub async fn add_node(&mut self) -> usize {
        self.add_node_with(|_| {}).await
    }

    pub async fn add_node_with(&mut self, tune: impl Fn(&mut Config)) -> usize {
        let i = self.nodes.len();
        let l = Listeners {
            proxy: bind0(),
            admin: bind0(),
            cluster: bind0(),
            proxy_tls: Some(bind0()),
        };
        let mut c = test_config(i as u64 + 1, &self.dir, &l);
        c.join = true;
        tune(&mut c);
        let gateway = raftgate::start(c.clone(), l)
            .await
            .expect("joining node starts");
        self.nodes.push(NodeSlot {
            config: c,
            gateway: Some(gateway),
        });
        i
    }

    /// Node `i`'s cluster address, as `POST /cluster/members` takes it.
    pub fn cluster_addr(&self, i: usize) -> String {
        self.nodes[i].config.listen.cluster.to_string()
    }

    pub fn gateway(&self, i: usize) -> &Gateway {
        self.nodes[i].gateway.as_ref().expect("node is running")
    }

    pub fn proxy_url(&self, i: usize, path: &str) -> String {
        format!("http://{}{}", self.nodes[i].config.listen.proxy, path)
    }

    pub fn admin_url(&self, i: usize, path: &str) -> String {
        format!("http://{}{}", self.nodes[i].config.listen.admin, path)
    }

    /// Node `i`'s TLS listener (`listen.proxy_tls`; every test node has one).
    pub fn proxy_tls_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i]
            .config
            .listen
            .proxy_tls
            .expect("test nodes listen for TLS")
    }

    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.gateway.is_some())
            .map(|(i, _)| i)
    }

    /// Waits until the running nodes agree on a leader that is one of them; its index.
    pub async fn wait_leader(&self) -> usize {
        eventually("a leader among the running nodes", || async {
            let leaders: Vec<Option<u64>> = self
                .running()
                .map(|i| self.gateway(i).node.leader())
                .collect();
            let first = leaders[0]?;
            let idx = first as usize - 1;
            (leaders.iter().all(|l| *l == Some(first)) && self.nodes[idx].gateway.is_some())
                .then_some(idx)
        })
        .await
    }

    pub fn follower(&self, leader: usize) -> usize {
        self.running()
            .find(|i| *i != leader)
            .expect("a running follower")
    }

    /// Stops node `i` abruptly; its data dir stays.
    pub async fn kill(&mut self, i: usize) {
        if let Some(g) = self.nodes[i].gateway.take() {
            g.kill().await;
        }
    }

    /// Stops node `i` gracefully (as on SIGTERM).
    pub async fn stop(&mut self, i: usize) {
        if let Some(g) = self.nodes[i].gateway.take() {
            g.stop().await;
        }
    }

    /// Starts node `i` again on its old addresses and data dir.
    pub async fn restart(&mut self, i: usize) {
        let c = self.nodes[i].config.clone();
        let listeners = eventually("the node's old ports to be free", || async {
            Listeners::bind(&c).ok()
        })
        .await;
        self.nodes[i].gateway = Some(raftgate::start(c, listeners).await.expect("node restarts"));
    }

    pub async fn admin(&self, i: usize, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.admin_with(i, method, path, body, &[]).await
    }

    pub async fn admin_with(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .client
            .request(method.parse().unwrap(), self.admin_url(i, path))
            .insert_header(("authorization", format!("Bearer {TOKEN}")));
        for h in headers {
            req = req.insert_header(*h);
        }
        let resp = match body {
            Some(b) => {
                req.insert_header(("content-type", "application/json"))
                    .send_body(b.to_string())
                    .await
            }
            None => req.send().await,
        };
        into_reply(resp.expect("admin request")).await
    }

    pub async fn admin_raw(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method.parse().unwrap(), self.admin_url(i, path));
        if let Some(t) = token {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        into_reply(
            req.send_body(body.to_string())
                .await
                .expect("admin request"),
        )
        .await
    }

    pub async fn get(&self, i: usize, path: &str) -> Reply {
        into_reply(
            self.client
                .get(self.proxy_url(i, path))
                .send()
                .await
                .expect("proxy request"),
        )
        .await
    }

    /// Creates a service pointing at `upstream` and a prefix route for `path` on node `i`.
    pub async fn route_to(&self, i: usize, name: &str, path: &str, upstream: SocketAddr) -> Reply {
        self.route_with(i, name, path, upstream, json!({})).await
    }

    /// As [`Cluster::route_to`], with `extra` fields merged into the route.
    pub async fn route_with(
        &self,
        i: usize,
        name: &str,
        path: &str,
        upstream: SocketAddr,
        extra: Value,
    ) -> Reply {
        let s = self
            .admin(
                i,
                "PUT",
                &format!("/services/{name}"),
                Some(json!({"targets": [{"url": format!("http://{upstream}")}]})),
            )
            .await;
        assert!(
            s.status == 200 || s.status == 201,
            "service: {} {}",
            s.status,
            s.text
        );
        let mut route = json!({"service": name, "paths": [path]});
        if let (Some(route), Value::Object(extra)) = (route.as_object_mut(), extra) {
            route.extend(extra);
        }
        let r = self
            .admin(i, "PUT", &format!("/routes/{name}"), Some(route))
            .await;
        assert!(
            r.status == 200 || r.status == 201,
            "route: {} {}",
            r.status,
            r.text
        );
        r
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if let Some(g) = self.nodes[i].gateway.take() {
                g.kill().await;
            }
        }
    }
}

/// A test node's config: fast Raft, one worker, the test secret and token.
fn test_config(id: u64, dir: &tempfile::TempDir, l: &Listeners) -> Config {
    let listen = Listen {
        proxy: l.proxy.local_addr().unwrap(),
        admin: l.admin.local_addr().unwrap(),
        cluster: l.cluster.local_addr().unwrap(),
        proxy_tls: l.proxy_tls.as_ref().map(|t| t.local_addr().unwrap()),
    };
    let mut c = Config::new(id, dir.path().join(format!("node{id}")), listen);
    c.secret = Some(SECRET.into());
    c.admin_token = Some(TOKEN.into());
    c.workers = 1;
    c.raft.heartbeat_ms = 100;
    c.raft.election_timeout_ms = 600;
    c
}

pub async fn into_reply(
    mut resp: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    >,
) -> Reply {
    let bytes = resp.body().limit(64 << 20).await.expect("response body");
    let text = String::from_utf8_lossy(&bytes).to_string();
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

/// A mock upstream on port 0. `GET /slow?ms=N` sleeps first; `/big?bytes=N` streams N bytes;
/// `/cc…?cc=…&vary=…` answers with the caching headers asked for ([`CacheableQuery`]);
/// `GET /health…` answers [`HealthMock`]'s status; a WebSocket upgrade on any path is [`ws_echo`]; everything else echoes method, path, query,
/// headers and the body length as JSON, tagged with the upstream's name.
pub struct Upstream {
    pub addr: SocketAddr,
    /// What `GET /health…` answers, and how often each such path was asked.
    pub health: std::sync::Arc<HealthMock>,
    /// What the WebSocket endpoint saw.
    pub ws: std::sync::Arc<WsLog>,
    /// Requests currently inside `/slow`.
    pub slow_inflight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Request heads that reached the mock, whatever became of their bodies.
    pub received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Requests the mock answered with a 2xx: their whole body arrived.
    pub completed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The path of every request head that reached the mock, in order.
    paths: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Upstream {
    pub fn start(name: &'static str) -> Upstream {
        Upstream::serve(name, bind0())
    }

    /// Like `start`, on a given address: an upstream coming back where it was.
    pub async fn start_on(name: &'static str, addr: SocketAddr) -> Upstream {
        let listener = eventually("the upstream's old port to be free", || async {
            TcpListener::bind(addr).ok()
        })
        .await;
        Upstream::serve(name, listener)
    }

    fn serve(name: &'static str, listener: TcpListener) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let health = std::sync::Arc::new(HealthMock::default());
        let health_data = web::Data::from(health.clone());
        let slow_inflight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = web::Data::from(slow_inflight.clone());
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let completed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen, done) = (received.clone(), completed.clone());
        let paths = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen_paths = paths.clone();
        let ws = std::sync::Arc::new(WsLog::default());
        let ws_data = web::Data::from(ws.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(name))
                .app_data(counter.clone())
                .wrap_fn({
                    let (seen, done) = (seen.clone(), done.clone());
                    let seen_paths = seen_paths.clone();
                    move |req, srv| {
                        use std::sync::atomic::Ordering;
                        seen_paths.lock().unwrap().push(req.path().to_string());
                        seen.fetch_add(1, Ordering::SeqCst);
                        let call = actix_web::dev::Service::call(srv, req);
                        let done = done.clone();
                        async move {
                            let res = call.await?;
                            if res.status().is_success() {
                                done.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(res)
                        }
                    }
                })
                .app_data(ws_data.clone())
                .app_data(web::PayloadConfig::new(256 << 20))
                .route("/slow", web::to(slow))
                .route("/big", web::to(big))
                .route("/cc{rest:.*}", web::to(cacheable))
                .app_data(health_data.clone())
                .route("/health{rest:.*}", web::get().to(health_endpoint))
                .route(
                    "/{any:.*}",
                    web::get()
                        .guard(actix_web::guard::Header("upgrade", "websocket"))
                        .to(ws_echo),
                )
                .default_service(web::to(echo))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Upstream {
            addr,
            health,
            ws,
            slow_inflight,
            received,
            completed,
            paths,
            handle,
        }
    }

    /// Request heads that reached the mock so far.
    pub fn received(&self) -> usize {
        self.received.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Request heads for `path` that reached the mock so far.
    pub fn saw(&self, path: &str) -> usize {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    /// Requests the mock answered with a 2xx so far.
    pub fn completed(&self) -> usize {
        self.completed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn echo(req: HttpRequest, body: web::Bytes, name: web::Data<&'static str>) -> HttpResponse {
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    HttpResponse::Ok()
        .insert_header(("x-upstream", *name.get_ref()))
        .insert_header(("connection", "x-secret-hop"))
        .insert_header(("x-secret-hop", "must not reach the client"))
        .json(json!({
            "upstream": *name.get_ref(),
            "method": req.method().as_str(),
            "path": req.path(),
            "query": req.query_string(),
            "headers": headers,
            "body_len": body.len(),
            "body_sum": body.iter().map(|b| *b as u64).sum::<u64>(),
        }))
}

/// The mock's health endpoint: `GET /health…` answers `status` (200 until set) and counts
/// requests per path.
pub struct HealthMock {
    pub status: std::sync::atomic::AtomicU16,
    hits: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Default for HealthMock {
    fn default() -> Self {
        HealthMock {
            status: std::sync::atomic::AtomicU16::new(200),
            hits: Default::default(),
        }
    }
}

impl HealthMock {
    pub fn set_status(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many requests `path` got.
    pub fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn health_endpoint(req: HttpRequest, health: web::Data<HealthMock>) -> HttpResponse {
    *health
        .hits
        .lock()
        .unwrap()
        .entry(req.path().to_string())
        .or_default() += 1;
    let status = health.status.load(std::sync::atomic::Ordering::SeqCst);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body("health")
}

#[derive(serde::Deserialize)]
struct SlowQuery {
    ms: u64,
}

async fn slow(
    q: web::Query<SlowQuery>,
    inflight: web::Data<std::sync::atomic::AtomicUsize>,
) -> HttpResponse {
    use std::sync::atomic::Ordering;
    inflight.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    inflight.fetch_sub(1, Ordering::SeqCst);
    HttpResponse::Ok().body("slow done")
}

#[derive(serde::Deserialize)]
struct BigQuery {
    bytes: usize,
}

/// What `/cc…` answers with, from its query: `cc` (`Cache-Control`), `vary`, `cookie=true`
/// (a `Set-Cookie`), `status`, `ms` (sleep first), `pad` (body bytes of padding), `chunked=true`
/// (no `Content-Length`).
#[derive(serde::Deserialize)]
struct CacheableQuery {
    cc: Option<String>,
    vary: Option<String>,
    #[serde(default)]
    cookie: bool,
    status: Option<u16>,
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    pad: usize,
    #[serde(default)]
    chunked: bool,
}

/// Numbers every `/cc…` answer, so a test can tell a cached answer from a fresh one.
static CACHEABLE_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// `/cc…`: an answer whose caching headers the query picks (see [`CacheableQuery`]). The JSON
/// body carries a serial number unique to this answer, the path, the `accept` header and the
/// `x-consumer` the upstream saw.
async fn cacheable(req: HttpRequest, name: web::Data<&'static str>) -> HttpResponse {
    let q = web::Query::<CacheableQuery>::from_query(req.query_string())
        .expect("a /cc query the mock understands")
        .into_inner();
    if q.ms > 0 {
        tokio::time::sleep(Duration::from_millis(q.ms)).await;
    }
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let body = json!({
        "serial": CACHEABLE_SERIAL.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        "upstream": *name.get_ref(),
        "path": req.path(),
        "accept": header("accept"),
        "consumer": header("x-consumer"),
        "pad": "x".repeat(q.pad),
    })
    .to_string();
    let status = actix_web::http::StatusCode::from_u16(q.status.unwrap_or(200)).unwrap();
    let mut resp = HttpResponse::build(status);
    resp.content_type("application/json");
    if let Some(cc) = &q.cc {
        resp.insert_header(("cache-control", cc.as_str()));
    }
    if let Some(vary) = &q.vary {
        resp.insert_header(("vary", vary.as_str()));
    }
    if q.cookie {
        resp.insert_header(("set-cookie", "session=abc"));
    }
    if q.chunked {
        let body = bytes::Bytes::from(body);
        return resp.streaming(futures_util::stream::once(async move {
            Ok::<_, actix_web::Error>(body)
        }));
    }
    resp.body(body)
}

async fn big(q: web::Query<BigQuery>) -> HttpResponse {
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let n = q.bytes;
    let stream = futures_util::stream::unfold(0usize, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= n {
                return None;
            }
            let take = (n - sent).min(chunk.len());
            Some((Ok::<_, actix_web::Error>(chunk.slice(..take)), sent + take))
        }
    });
    HttpResponse::Ok().streaming(stream)
}

/// What the mock's WebSocket endpoint saw.
#[derive(Default)]
pub struct WsLog {
    /// Sockets currently open.
    pub open: std::sync::atomic::AtomicUsize,
    /// Close frames received, as (code, reason); 1005 for a close without a code.
    pub closes: std::sync::Mutex<Vec<(u16, String)>>,
}

impl WsLog {
    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn closes(&self) -> Vec<(u16, String)> {
        self.closes.lock().unwrap().clone()
    }
}

/// The mock's WebSocket endpoint (subprotocol `echo.v2` when offered): echoes text and binary,
/// answers a ping with a pong and a close with a close of the same code and reason. Text
/// commands: `whoami` answers the upstream's name, `headers` the handshake's headers as JSON,
/// `ping-me` sends a ping with payload `up`, `close:CODE:REASON` closes from this side.
async fn ws_echo(
    req: HttpRequest,
    body: web::Payload,
    name: web::Data<&'static str>,
    log: web::Data<WsLog>,
) -> actix_web::Result<HttpResponse> {
    use actix_ws::{CloseReason, Message};
    use std::sync::atomic::Ordering;
    let (response, mut session, messages) =
        actix_ws::handle_with_protocols(&req, body, &["echo.v2"])?;
    let mut messages = messages.max_frame_size(8 << 20);
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    let headers = Value::Object(headers).to_string();
    let name = *name.get_ref();
    let log = log.into_inner();
    log.open.fetch_add(1, Ordering::SeqCst);
    actix_rt::spawn(async move {
        let mut close: Option<CloseReason> = None;
        while let Some(Ok(msg)) = messages.recv().await {
            let sent = match msg {
                Message::Text(t) => match &*t {
                    "whoami" => session.text(name).await,
                    "headers" => session.text(headers.clone()).await,
                    "ping-me" => session.ping(b"up").await,
                    cmd if cmd.starts_with("close:") => {
                        let mut parts = cmd.splitn(3, ':').skip(1);
                        let code: u16 = parts.next().unwrap().parse().unwrap();
                        let reason = parts.next().unwrap_or("").to_string();
                        close = Some((code.into(), reason).into());
                        break;
                    }
                    _ => session.text(t).await,
                },
                Message::Binary(b) => session.binary(b).await,
                Message::Ping(b) => session.pong(&b).await,
                Message::Close(reason) => {
                    let seen = match &reason {
                        Some(r) => (u16::from(r.code), r.description.clone().unwrap_or_default()),
                        None => (1005, String::new()),
                    };
                    log.closes.lock().unwrap().push(seen);
                    close = reason;
                    break;
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = session.close(close).await;
        log.open.fetch_sub(1, Ordering::SeqCst);
    });
    Ok(response)
}

/// A fresh data dir path for tests that build configs by hand.
pub fn temp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Sends raw bytes (for requests an HTTP client would refuse or rewrite) and reads the whole
/// answer; the request should carry `Connection: close`.
pub async fn raw_request(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&out).to_string()
}

/// An upstream that answers every request with the same raw bytes, then closes: for responses
/// an HTTP server library would not produce (a hop-by-hop header named in `Connection`).
pub async fn raw_upstream(response: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            actix_rt::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}
