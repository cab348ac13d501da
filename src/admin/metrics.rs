//! `GET /metrics`: the node's counters and histograms in the Prometheus text format, then the
//! gauges read from the node's state at scrape time (Raft, config revision, upstream health,
//! quotas). Labels and names: API.md §5; what each means: README, "Metrics, access log and usage".

use actix_web::{web, HttpResponse};
use raftgate_cluster::quota::QuotaBy;

use super::AdminState;
use crate::actors::limiter::unix_now;
use crate::balancing::now_ms;
use crate::telemetry::GaugeWriter;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    let body = state.telemetry.render(|w| gauges(&state, w));
    HttpResponse::Ok().content_type(CONTENT_TYPE).body(body)
}

fn gauges(state: &AdminState, w: &mut GaugeWriter) {
    let (term, leader, applied) = {
        let m = state.node.raft().metrics();
        let m = m.borrow();
        let applied = m.last_applied.map_or(0, |l| l.index);
        (m.current_term, m.current_leader.unwrap_or(0), applied)
    };
    let st = state.node.state();
    let raft = [
        ("raftgate_raft_term", "The Raft term this node is in.", term),
        (
            "raftgate_raft_leader_id",
            "The node id of the leader this node knows (0: none).",
            leader,
        ),
        (
            "raftgate_raft_applied_index",
            "The last Raft log index applied on this node.",
            applied,
        ),
        (
            "raftgate_config_revision",
            "The log index at which the configuration last changed, as applied here.",
            st.revision,
        ),
    ];
    for (name, help, value) in raft {
        w.family(name, help);
        w.sample(name, &[], value as f64);
    }
    const INSTALLED: &str = "raftgate_raft_snapshots_installed_total";
    w.counter_family(
        INSTALLED,
        "Snapshots a leader sent this node and it installed, since the node started.",
    );
    w.sample(INSTALLED, &[], state.node.snapshots_installed() as f64);

    const HEALTHY: &str = "raftgate_upstream_healthy";
    w.family(
        HEALTHY,
        "1 when this node may send requests to the target (active check passed, not ejected).",
    );
    let now = now_ms();
    for (service, runtime) in state.health.load().iter() {
        for t in runtime.targets() {
            let up = if t.is_eligible(now) { 1.0 } else { 0.0 };
            w.sample(HEALTHY, &[("service", service), ("target", t.url())], up);
        }
    }

    // Counted by consumer: quotas whose window has a usage record (a consumer that has not
    // spent from a quota in its current window has its whole limit and no series).
    const REMAINING: &str = "raftgate_quota_remaining";
    w.family(
        REMAINING,
        "Requests a consumer may still make this window, cluster-wide, by consumer and route.",
    );
    let now = unix_now();
    for (key, usage) in st.quotas.iter() {
        let Some(route) = st.routes.get(&key.route) else {
            continue;
        };
        let Some(spec) = route.quota.as_ref() else {
            continue;
        };
        if spec.by(route.auth) != QuotaBy::Consumer || spec.per.window(now).0 != usage.window_start
        {
            continue;
        }
        let remaining = spec.requests.saturating_sub(usage.used);
        w.sample(
            REMAINING,
            &[("consumer", &key.subject), ("route", &key.route)],
            remaining as f64,
        );
    }
}
