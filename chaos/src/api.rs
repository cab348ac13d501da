//! The admin and proxy calls the workload, the observers and the final checks make, over awc
//! (single-threaded: everything here runs on the actix system's thread).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::history::Outcome;
use crate::local::TOKEN;

/// The consumer whose keys the workload creates and revokes.
pub const CONSUMER: &str = "chaos";

pub fn client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .timeout(timeout)
        .disable_redirects()
        .finish()
}

fn bearer() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

/// An admin write: 2xx acknowledged, 4xx refused, anything else unknown (a 503 may come after
/// the entry was proposed, and a timeout says nothing).
pub async fn admin_write(
    c: &awc::Client,
    method: &str,
    url: String,
    body: Option<String>,
) -> (Outcome, Option<Value>) {
    let req = c
        .request(method.parse().expect("method"), url)
        .insert_header(bearer())
        .insert_header(("content-type", "application/json"));
    let sent = match body {
        Some(b) => req.send_body(b).await,
        None => req.send().await,
    };
    match sent {
        Err(e) => {
            let reason = e.to_string();
            // Refused before anything was sent: the node is down. Nothing was written.
            if reason.contains("Connection refused") {
                (Outcome::Fail { status: 0 }, None)
            } else {
                (Outcome::Unknown { reason }, None)
            }
        }
        Ok(mut r) => {
            let status = r.status().as_u16();
            let json = r.json::<Value>().await.ok();
            match status {
                200..=299 => (Outcome::Ok, json),
                400..=499 => (Outcome::Fail { status }, json),
                _ => (
                    Outcome::Unknown {
                        reason: format!("status {status}"),
                    },
                    json,
                ),
            }
        }
    }
}

/// A proxied `GET`, optionally with an API key: its status, 0 when no answer came.
pub async fn proxy_get(c: &awc::Client, url: String, key: Option<&str>) -> Result<u16, String> {
    let mut req = c.get(url);
    if let Some(k) = key {
        req = req.insert_header(("apikey", k));
    }
    match req.send().await {
        Ok(mut r) => {
            let _ = r.body().await;
            Ok(r.status().as_u16())
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn admin_get(c: &awc::Client, url: String) -> Option<Value> {
    let mut r = c.get(url).insert_header(bearer()).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<Value>().limit(64 << 20).await.ok()
}

#[derive(Clone, Copy, Debug)]
pub struct Status {
    pub leader: Option<u64>,
    pub term: u64,
    pub revision: u64,
}

/// `GET /cluster` on one node.
pub async fn status(c: &awc::Client, admin: &str) -> Option<Status> {
    let v = admin_get(c, format!("{admin}/cluster")).await?;
    Some(Status {
        leader: v["leader_id"].as_u64(),
        term: v["term"].as_u64()?,
        revision: v["revision"].as_u64()?,
    })
}

/// The names in a `{"data": [...]}` list, read from this node's state.
async fn names(c: &awc::Client, url: String, field: &str) -> Option<BTreeSet<String>> {
    let v = admin_get(c, url).await?;
    Some(
        v["data"]
            .as_array()?
            .iter()
            .filter_map(|x| x[field].as_str().map(str::to_string))
            .collect(),
    )
}

pub async fn routes(c: &awc::Client, admin: &str) -> Option<BTreeSet<String>> {
    names(c, format!("{admin}/routes?stale=true"), "name").await
}

pub async fn keys(c: &awc::Client, admin: &str) -> Option<BTreeSet<String>> {
    names(
        c,
        format!("{admin}/consumers/{CONSUMER}/keys?stale=true"),
        "id",
    )
    .await
}

/// SHA-256 of this node's exported config (`GET /config?stale=true`, keys sorted).
pub async fn config_hash(c: &awc::Client, admin: &str) -> Option<String> {
    let v = admin_get(c, format!("{admin}/config?stale=true")).await?;
    let digest = Sha256::digest(serde_json::to_vec(&v).ok()?);
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// The membership `GET /cluster` on one node reports: (voters, learners).
pub async fn members(c: &awc::Client, admin: &str) -> Option<(BTreeSet<u64>, BTreeSet<u64>)> {
    let v = admin_get(c, format!("{admin}/cluster")).await?;
    let (mut voters, mut learners) = (BTreeSet::new(), BTreeSet::new());
    for m in v["members"].as_array()? {
        let id = m["id"].as_u64()?;
        if m["voter"].as_bool()? {
            voters.insert(id);
        } else {
            learners.insert(id);
        }
    }
    Some((voters, learners))
}

/// One unlabelled series of `GET /metrics` on one node (e.g. `raftgate_raft_applied_index`).
pub async fn metric(c: &awc::Client, admin: &str, series: &str) -> Option<f64> {
    let mut r = c
        .get(format!("{admin}/metrics"))
        .insert_header(bearer())
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let body = r.body().limit(16 << 20).await.ok()?;
    std::str::from_utf8(&body).ok()?.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
