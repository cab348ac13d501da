use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftgate_cluster::usage::{merge, UsageFilter, UsageRow};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use super::*;

fn observation(status: u16) -> Observation<'static> {
    Observation {
        route: None,
        status,
        consumer: None,
        error: None,
        cache: None,
        total: Duration::from_millis(3),
        upstream: None,
    }
}

/// The value of the sample line `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn requests_are_counted_by_route_status_and_reason() {
    let t = Telemetry::new(true);
    for _ in 0..3 {
        t.record(&observation(404));
    }
    t.record(&Observation {
        error: Some("rate_limited"),
        ..observation(429)
    });
    t.record(&Observation {
        error: Some("quota_exceeded"),
        ..observation(429)
    });
    // A status without a slot of its own.
    t.record(&observation(418));
    let text = t.render(|_| {});
    let r = |s| sample(&text, s);
    assert_eq!(
        r(r#"raftgate_requests_total{route="none",status="404"}"#),
        Some(3.0)
    );
    assert_eq!(
        r(r#"raftgate_requests_total{route="none",status="429"}"#),
        Some(2.0)
    );
    assert_eq!(
        r(r#"raftgate_requests_total{route="none",status="418"}"#),
        Some(1.0)
    );
    let limited = r#"raftgate_rate_limited_total{route="none",reason="rate_limited"}"#;
    assert_eq!(r(limited), Some(1.0));
    let quota = r#"raftgate_rate_limited_total{route="none",reason="quota_exceeded"}"#;
    assert_eq!(r(quota), Some(1.0));
    let count = r#"raftgate_request_duration_seconds_count{route="none"}"#;
    assert_eq!(r(count), Some(6.0));
    let bucket = r#"raftgate_request_duration_seconds_bucket{route="none",le="0.005"}"#;
    assert_eq!(r(bucket), Some(6.0), "{text}");
    assert!(
        text.contains("# TYPE raftgate_requests_total counter"),
        "{text}"
    );
    assert!(!text.contains("raftgate_cache_total"), "{text}");
}

#[test]
fn off_counts_nothing() {
    let t = Telemetry::new(false);
    t.record(&observation(200));
    assert!(!t.render(|_| {}).contains("raftgate_requests_total{"));
    assert!(t.usage(&UsageFilter::default()).is_empty());
}

#[test]
fn usage_is_counted_by_consumer_and_class() {
    let t = Telemetry::new(true);
    let alice: Arc<str> = Arc::from("alice");
    for status in [200, 204, 404, 503] {
        t.record(&Observation {
            consumer: Some(&alice),
            ..observation(status)
        });
    }
    t.record(&observation(200));
    let row = |consumer: Option<&str>, class: &str, count| UsageRow {
        consumer: consumer.map(str::to_string),
        route: "none".into(),
        status_class: class.into(),
        count,
    };
    let all = merge(t.usage(&UsageFilter::default()));
    assert_eq!(
        all,
        [
            row(None, "2xx", 1),
            row(Some("alice"), "2xx", 2),
            row(Some("alice"), "4xx", 1),
            row(Some("alice"), "5xx", 1),
        ]
    );
    let only_alice = UsageFilter {
        consumer: Some("alice".into()),
        route: None,
    };
    assert_eq!(merge(t.usage(&only_alice)).len(), 3);
    let other_route = UsageFilter {
        consumer: None,
        route: Some("users".into()),
    };
    assert!(t.usage(&other_route).is_empty());
}

#[test]
fn gauges_escape_label_values() {
    let t = Telemetry::new(true);
    let text = t.render(|w| {
        w.family("raftgate_upstream_healthy", "help");
        w.sample(
            "raftgate_upstream_healthy",
            &[("service", "a\"b"), ("target", "http://x\\y\n")],
            1.0,
        );
        w.sample("raftgate_raft_term", &[], 7.0);
    });
    assert!(
        text.contains("# TYPE raftgate_upstream_healthy gauge\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "raftgate_upstream_healthy{service=\"a\\\"b\",target=\"http://x\\\\y\\n\"} 1\n"
        ),
        "{text}"
    );
    assert!(text.contains("raftgate_raft_term 7\n"), "{text}");
}

/// Collects what the access log layer writes.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

#[test]
fn the_access_log_is_one_json_line_per_request() {
    let out = Buffer::default();
    let subscriber = tracing_subscriber::registry().with(access_log_layer(out.clone()));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "raftgate::proxy", "not an access log line");
        access_event(&AccessLine {
            request_id: "abc",
            method: "GET",
            path: "/users/7",
            route: "users",
            consumer: Some("alice"),
            client: Some("10.0.0.9".parse().unwrap()),
            status: 200,
            upstream: Some("http://10.0.0.5:9000"),
            error: None,
            cache: Some("MISS"),
            total: Duration::from_micros(2500),
            upstream_time: Some(Duration::from_millis(2)),
            bytes_in: None,
            bytes_out: Some(100),
        });
        access_event(&AccessLine {
            request_id: "def",
            method: "POST",
            path: "/nothing",
            route: "none",
            consumer: None,
            client: None,
            status: 404,
            upstream: None,
            error: Some("no_route"),
            cache: None,
            total: Duration::from_micros(100),
            upstream_time: None,
            bytes_in: Some(5),
            bytes_out: None,
        });
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let first = &lines[0];
    assert_eq!(first["target"], "raftgate::access");
    assert_eq!(first["level"], "INFO");
    assert!(first["timestamp"].is_string());
    for (field, want) in [
        ("request_id", serde_json::json!("abc")),
        ("method", "GET".into()),
        ("path", "/users/7".into()),
        ("route", "users".into()),
        ("consumer", "alice".into()),
        ("client", "10.0.0.9".into()),
        ("status", 200.into()),
        ("upstream", "http://10.0.0.5:9000".into()),
        ("cache", "MISS".into()),
        ("total_ms", 2.5.into()),
        ("upstream_ms", 2.0.into()),
        ("bytes_out", 100.into()),
    ] {
        assert_eq!(first[field], want, "{field} in {first}");
    }
    assert!(
        first.get("error").is_none() && first.get("bytes_in").is_none(),
        "{first}"
    );
    let second = &lines[1];
    assert_eq!(second["error"], "no_route");
    assert_eq!(second["route"], "none");
    assert_eq!(second["bytes_in"], 5);
    assert!(
        second.get("consumer").is_none() && second.get("upstream_ms").is_none(),
        "{second}"
    );
}
