//! The dashboard (`GET /` on the admin port): the page is public, what it calls is not, target
//! health is served by `GET /health/upstreams`, and in a real headless browser (Debian's
//! `chromium`) the page shows the members, the leader and the routes.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{eventually, Cluster, Upstream, DEADLINE, TOKEN};

#[actix_rt::test]
async fn the_page_needs_no_token_but_its_api_calls_do() {
    let c = Cluster::bootstrap(1).await;

    // The page: HTML, with or without a token, even a wrong one.
    for token in [None, Some("wrong"), Some(TOKEN)] {
        let page = c.admin_raw(0, "GET", "/", "", token).await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert!(
            page.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{:?}",
            page.header("content-type")
        );
        assert!(page.text.contains("<title>raftgate dashboard</title>"));
        assert_eq!(page.header("cache-control"), Some("no-store"));
        assert!(page
            .header("content-security-policy")
            .is_some_and(|p| p.contains("connect-src 'self'")));
    }

    // What it calls still needs the token.
    for path in [
        "/cluster",
        "/routes",
        "/services",
        "/health/upstreams",
        "/usage",
    ] {
        let r = c.admin_raw(0, "GET", path, "", None).await;
        assert_eq!(r.status, 401, "GET {path} without a token: {}", r.text);
        assert_eq!(r.error_code(), "unauthorized");
    }
    // Only GET is open on `/`.
    assert_eq!(c.admin_raw(0, "POST", "/", "", None).await.status, 401);
    assert_eq!(c.admin_raw(0, "DELETE", "/", "", None).await.status, 401);
    c.shutdown().await;
}

#[actix_rt::test]
async fn upstream_health_lists_every_target_up_or_down() {
    let c = Cluster::bootstrap(1).await;
    let (good, bad) = (Upstream::start("good"), Upstream::start("bad"));
    bad.health.set_status(500);
    let (good_url, bad_url) = (
        format!("http://{}", good.addr),
        format!("http://{}", bad.addr),
    );
    let s = c
        .admin(
            0,
            "PUT",
            "/services/pool",
            Some(json!({
                "targets": [{"url": good_url}, {"url": bad_url}],
                "health_check": {"path": "/health", "interval_ms": 100, "timeout_ms": 50,
                                 "healthy_threshold": 1, "unhealthy_threshold": 1},
            })),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.text);

    let pool = eventually("the failing target reported down", || async {
        let r = c.admin(0, "GET", "/health/upstreams", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let pool = r.body["data"]
            .as_array()?
            .iter()
            .find(|s| s["service"] == "pool")?
            .clone();
        (pool["up"] == 1).then_some(pool)
    })
    .await;
    let target = |url: &str| -> Value {
        pool["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["url"] == url)
            .cloned()
            .unwrap_or_else(|| panic!("{url} in {pool}"))
    };
    assert_eq!(target(&good_url)["up"], true, "{pool}");
    assert_eq!(target(&bad_url)["up"], false, "{pool}");
    assert_eq!(target(&bad_url)["active_up"], false, "{pool}");
    assert_eq!(target(&bad_url)["ejected"], false, "{pool}");
    c.shutdown().await;
    good.stop().await;
    bad.stop().await;
}

#[actix_rt::test]
async fn a_headless_browser_shows_members_leader_and_routes() {
    let c = Cluster::bootstrap(3).await;
    let upstream = Upstream::start("shop");
    c.route_to(0, "shop-route", "/shop", upstream.addr).await;

    let leader = c.wait_leader().await;
    let node = c.follower(leader);
    // Traffic through the node the page watches, while it watches: 2xx and 404s for the charts.
    let traffic = {
        let urls = [c.proxy_url(node, "/shop/1"), c.proxy_url(node, "/nowhere")];
        let client = crate::support::client();
        actix_rt::spawn(async move {
            loop {
                for url in &urls {
                    let _ = client.get(url.as_str()).send().await;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let url = format!("{}#token={TOKEN}", c.admin_url(node, "/"));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let leader_id = c.gateway(node).node.leader();
        let (target, profile) = (url.clone(), tempfile::tempdir().expect("profile dir"));
        let dom = tokio::task::spawn_blocking(move || dump_dom(&target, profile.path()))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let missing = match &dom {
            Ok(dom) => missing_from(dom, leader_id),
            Err(e) => vec![e.clone()],
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard never showed the cluster: missing {missing:?} in\n{}",
            dom.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    traffic.abort();
    c.shutdown().await;
    upstream.stop().await;
}

/// What the dumped DOM lacks: the 3 members by id, the leader, the route and its service, and
/// live request and 4xx rates (unless this build has no `GET /usage`: then "no data").
fn missing_from(dom: &str, leader_id: Option<u64>) -> Vec<String> {
    let mut wanted: Vec<String> = (1..=3).map(|id| format!("data-member=\"{id}\"")).collect();
    match leader_id {
        Some(id) => wanted.push(format!("id=\"leader-id\">{id}<")),
        None => wanted.push("a leader (the cluster has none right now)".into()),
    }
    wanted.push("data-route=\"shop-route\"".into());
    wanted.push("<b>shop-route</b>".into());
    wanted.push("data-service=\"shop-route\"".into());
    let mut missing: Vec<String> = wanted.into_iter().filter(|w| !dom.contains(w)).collect();
    // As drawn into the chart (the page's script holds the same words).
    if !dom.contains(">no data: this node has no GET /usage<") {
        for (id, what) in [("rate-now", "requests/s"), ("e4-now", "4xx/s")] {
            if !shown_number(dom, id).is_some_and(|rate| rate > 0.0) {
                missing.push(format!("a {what} rate above 0 in #{id}"));
            }
        }
        if !dom.contains("<polyline") {
            missing.push("a chart line".into());
        }
    }
    missing
}

/// The number an element with this id shows, as `<b id="ID">12.5</b>`.
fn shown_number(dom: &str, id: &str) -> Option<f64> {
    let start = dom.find(&format!("id=\"{id}\">"))? + id.len() + 6;
    let text = &dom[start..];
    text[..text.find('<')?].trim().parse().ok()
}

/// The browser: `chromium` (Debian's package; `.ci/run` installs it when missing), or `$CHROMIUM`.
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Loads `url` in headless chromium, lets the page run for a few seconds of virtual time (its
/// polls included: virtual time waits for pending fetches) and returns the serialized DOM.
/// Blocking: call it off the actix runtime, which must keep serving the page meanwhile.
fn dump_dom(url: &str, profile: &Path) -> Result<String, String> {
    let browser = chromium();
    let mut child = Command::new(&browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "this test drives a headless browser and cannot run `{browser}`: {e}. Install \
                 it (Debian/Ubuntu: `apt-get install -y chromium`; .ci/run does this) or point \
                 $CHROMIUM at a Chrome/Chromium binary"
            )
        });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // A browser that hangs must not hang the suite.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match child.try_wait().expect("waiting for chromium") {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{browser} did not finish within 60 s"));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if !status.success() {
        return Err(format!("{browser} failed ({status}): {err}"));
    }
    Ok(out)
}
