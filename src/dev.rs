//! `raftgate dev`: an N-node cluster on loopback, a built-in demo upstream, and the routes of
//! config/demo.toml; prints what to try and stops everything on Ctrl-C.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::config::{Config, Listen, Member};
use crate::{start, Gateway, Listeners};

/// The demo upstream's address, named by config/demo.toml.
pub const DEMO_UPSTREAM: &str = "127.0.0.1:9900";
pub const DEV_TOKEN: &str = "raftgate-dev";
const DEMO: &str = include_str!("../config/demo.toml");

/// The document config/demo.toml holds: the same shape as `GET /config`.
pub use raftgate_cluster::declarative::Document;

pub struct DevOptions {
    pub nodes: u8,
    pub data: Option<PathBuf>,
}

/// Config of dev node `i` (1-based): proxy 808i, admin 908i, cluster 708i on 127.0.0.1.
pub fn node_config(i: u8, n: u8, data: &std::path::Path, secret: &str) -> Config {
    let addr = |base: u16| {
        format!("127.0.0.1:{}", base + i as u16)
            .parse()
            .expect("loopback address")
    };
    let listen = Listen {
        proxy: addr(8080),
        admin: addr(9080),
        cluster: addr(7080),
        proxy_tls: None,
    };
    let mut c = Config::new(i as u64, data.join(format!("node{i}")), listen);
    c.members = (1..=n)
        .map(|j| Member {
            id: j as u64,
            addr: format!("127.0.0.1:{}", 7080 + j as u16),
        })
        .collect();
    c.secret = Some(secret.to_string());
    c.admin_token = Some(DEV_TOKEN.to_string());
    c.workers = 1;
    c
}

pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=9).contains(&opts.nodes),
        "--nodes must be between 1 and 9 (dev ports are 808N)"
    );
    let document: Document = toml::from_str(DEMO)
        .map_err(anyhow::Error::from)
        .and_then(|d: Document| Ok(d.named()?))
        .map_err(|e| anyhow::anyhow!("config/demo.toml: {e}"))?;
    let (data, temporary) = match opts.data {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("raftgate-dev-{}", std::process::id())),
            true,
        ),
    };
    let secret = format!("{:032x}", rand::random::<u128>());
    let configs: Vec<Config> = (1..=opts.nodes)
        .map(|i| node_config(i, opts.nodes, &data, &secret))
        .collect();
    // Bind everything first: a busy port fails before anything starts.
    let mut listeners = Vec::new();
    for c in &configs {
        listeners.push(Listeners::bind(c)?);
    }
    let upstream = demo_upstream(std::net::TcpListener::bind(DEMO_UPSTREAM).map_err(|e| {
        anyhow::anyhow!("cannot listen on {DEMO_UPSTREAM} for the demo upstream: {e}")
    })?)?;
    let upstream_handle = upstream.handle();
    actix_rt::spawn(upstream);

    let mut gateways: Vec<Gateway> = Vec::new();
    for (c, l) in configs.iter().zip(listeners) {
        gateways.push(start(c.clone(), l).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateways[0].node.leader().is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no leader was elected within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for cmd in document.commands() {
        let what = cmd.to_string();
        gateways[0]
            .node
            .write(cmd)
            .await
            .map_err(|e| anyhow::anyhow!("loading config/demo.toml: {what}: {e}"))?;
    }

    println!(
        "raftgate dev: {} nodes, data in {}",
        opts.nodes,
        data.display()
    );
    for c in &configs {
        println!(
            "  node {}: proxy http://{}  admin http://{}  (cluster port {})",
            c.node_id, c.listen.proxy, c.listen.admin, c.listen.cluster
        );
    }
    println!("  demo upstream: http://{DEMO_UPSTREAM}   admin token: {DEV_TOKEN}");
    println!(
        "  dashboard: http://{}/#token={DEV_TOKEN}   (any node's admin port)",
        configs[0].listen.admin
    );
    println!(
        "  metrics:   http://{}/metrics   (Prometheus; bearer token as above)",
        configs[0].listen.admin
    );
    println!();
    println!("try:");
    println!("  curl -i http://127.0.0.1:8081/demo/hello");
    println!("  curl -s -H 'Authorization: Bearer {DEV_TOKEN}' http://127.0.0.1:9082/cluster");
    println!(
        "  curl -s -X PUT -H 'Authorization: Bearer {DEV_TOKEN}' http://127.0.0.1:9082/routes/mine -d '{{\"service\":\"demo\",\"paths\":[\"/mine\"]}}' && curl -i http://127.0.0.1:8083/mine"
    );
    println!("Ctrl-C (or SIGTERM) stops everything.");

    crate::shutdown_signal().await;
    println!("stopping…");
    for g in gateways {
        g.stop().await;
    }
    upstream_handle.stop(true).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(())
}

/// The built-in upstream: echoes what it received as JSON.
pub fn demo_upstream(listener: std::net::TcpListener) -> std::io::Result<actix_web::dev::Server> {
    demo_upstream_named(listener, None)
}

/// The demo upstream alone, for `raftgate demo-upstream` (docker-compose.yml runs two): listens
/// on `listen` until SIGTERM or Ctrl-C; with a name, every answer carries `"name"` so a client
/// can tell which upstream served it.
pub async fn run_demo_upstream(listen: &str, name: Option<String>) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} for the demo upstream: {e}"))?;
    let server = demo_upstream_named(listener, name)?;
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!("demo upstream listening on {listen}");
    crate::shutdown_signal().await;
    handle.stop(true).await;
    Ok(())
}

fn demo_upstream_named(
    listener: std::net::TcpListener,
    name: Option<String>,
) -> std::io::Result<actix_web::dev::Server> {
    let name = web::Data::new(DemoName(name));
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(name.clone())
            .default_service(web::to(echo))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

struct DemoName(Option<String>);

async fn echo(req: HttpRequest, body: web::Bytes, name: web::Data<DemoName>) -> HttpResponse {
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut answer = serde_json::json!({
        "upstream": "raftgate demo",
        "method": req.method().as_str(),
        "path": req.path(),
        "query": req.query_string(),
        "headers": headers,
        "body_bytes": body.len(),
    });
    if let Some(name) = &name.0 {
        answer["name"] = serde_json::Value::from(name.as_str());
    }
    HttpResponse::Ok().json(answer)
}
