//! Telemetry: the node's Prometheus registry (`GET /metrics`), its per-request counts by
//! consumer, route and status class (`GET /usage`), and the access log's JSON layer.
//!
//! Counters and histograms are kept by the `metrics-exporter-prometheus` recorder, one per node
//! (never the process-global one: tests run several nodes in one process). The request path
//! never builds a label: each route's handles ([`RouteMetrics`]) are registered once and cached
//! in its compiled route, so counting a request is a few atomic adds. Gauges that mirror state
//! (Raft, health, quotas) are not kept at all: `/metrics` reads them from the state when it is
//! scraped ([`GaugeWriter`]), so a deleted target or an ended window leaves no stale series.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use metrics::{Counter, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use raftgate_cluster::usage::{UsageFilter, UsageRow};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::routing::CompiledRoute;

/// The tracing target of the access log: one event per request, at INFO
/// (`RUST_LOG=info,raftgate::access=off` turns it off).
pub const ACCESS_TARGET: &str = "raftgate::access";

pub const REQUESTS_TOTAL: &str = "raftgate_requests_total";
pub const REQUEST_DURATION: &str = "raftgate_request_duration_seconds";
pub const UPSTREAM_DURATION: &str = "raftgate_upstream_duration_seconds";
pub const RATE_LIMITED_TOTAL: &str = "raftgate_rate_limited_total";
pub const CACHE_TOTAL: &str = "raftgate_cache_total";

/// Seconds: from 0.5 ms (a cache hit) to 30 s (the default request timeout).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram samples wait in lock-free buckets until drained; a node nobody scrapes drains
/// them this often so they cannot pile up.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// Statuses with a lock-free counter slot on every route; others take a mutex (rarely).
const COMMON_STATUSES: [u16; 24] = [
    200, 201, 202, 204, 206, 101, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 413, 429,
    431, 500, 502, 503, 504,
];
const CACHE_RESULTS: [&str; 3] = ["HIT", "MISS", "BYPASS"];

/// One node's telemetry; shared by the proxy workers and the admin API.
pub struct Telemetry {
    /// `[telemetry] metrics`: when off, requests are not counted at all.
    enabled: bool,
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// Every route that has served a request since the node started, by name, kept when the
    /// route is deleted (counters only grow); the compiled routes cache their entry.
    routes: RwLock<HashMap<Box<str>, Arc<RouteMetrics>>>,
    /// Requests no route matched (`route="none"`).
    none: Arc<RouteMetrics>,
}

/// What `log` knows about a finished request.
pub struct Observation<'a> {
    pub route: Option<&'a CompiledRoute>,
    pub status: u16,
    pub consumer: Option<&'a Arc<str>>,
    /// The gateway's error code when it answered with one (`rate_limited`, …).
    pub error: Option<&'static str>,
    /// `X-Cache` on a cached route.
    pub cache: Option<&'static str>,
    /// To the response head (bodies stream afterwards).
    pub total: Duration,
    pub upstream: Option<Duration>,
}

impl Telemetry {
    pub fn new(enabled: bool) -> Arc<Telemetry> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let describe = [
            (REQUESTS_TOTAL, "Requests answered, by route and status."),
            (REQUEST_DURATION, "Time to the response head, by route."),
            (
                UPSTREAM_DURATION,
                "Time from sending upstream to its response head, by route.",
            ),
            (
                RATE_LIMITED_TOTAL,
                "Requests refused with 429, by route and reason.",
            ),
            (
                CACHE_TOTAL,
                "Answers of cached routes, by route and X-Cache result.",
            ),
        ];
        for (name, help) in describe {
            let (key, help) = (KeyName::from(name), help.into());
            if name.ends_with("_seconds") {
                recorder.describe_histogram(key, Some(metrics::Unit::Seconds), help);
            } else {
                recorder.describe_counter(key, None, help);
            }
        }
        let recorder = Arc::new(recorder);
        let handle = recorder.handle();
        Arc::new(Telemetry {
            enabled,
            none: Arc::new(RouteMetrics::new("none", &recorder)),
            recorder,
            handle,
            routes: RwLock::new(HashMap::new()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Drains histogram samples every few seconds while this telemetry lives.
    pub fn start_upkeep(self: &Arc<Self>) {
        let weak: Weak<Telemetry> = Arc::downgrade(self);
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(t) => t.handle.run_upkeep(),
                    None => return,
                }
            }
        });
    }

    /// Counts one request. Allocation-free once its route, status and consumer were seen.
    pub fn record(&self, o: &Observation<'_>) {
        if !self.enabled {
            return;
        }
        let m = match o.route {
            Some(route) => route.telemetry().get_or_init(|| self.route(route.name())),
            None => &self.none,
        };
        m.count_status(o.status);
        m.duration.record(o.total.as_secs_f64());
        if let Some(up) = o.upstream {
            m.upstream.record(up.as_secs_f64());
        }
        match o.error {
            Some("rate_limited") => m.lazy(
                &m.rate_limited,
                RATE_LIMITED_TOTAL,
                "reason",
                "rate_limited",
            ),
            Some("quota_exceeded") => m.lazy(
                &m.quota_exceeded,
                RATE_LIMITED_TOTAL,
                "reason",
                "quota_exceeded",
            ),
            _ => {}
        }
        if let Some(result) = o.cache {
            if let Some(i) = CACHE_RESULTS.iter().position(|r| *r == result) {
                m.lazy(&m.cache[i], CACHE_TOTAL, "result", CACHE_RESULTS[i]);
            }
        }
        m.count_usage(o.consumer, o.status);
    }

    /// The metrics of the route named `name`, registered on first use.
    fn route(&self, name: &str) -> Arc<RouteMetrics> {
        if let Some(m) = self.routes.read().expect("telemetry lock").get(name) {
            return m.clone();
        }
        let mut routes = self.routes.write().expect("telemetry lock");
        routes
            .entry(name.into())
            .or_insert_with(|| Arc::new(RouteMetrics::new(name, &self.recorder)))
            .clone()
    }

    /// This node's counts by consumer, route and status class, filtered, unsorted.
    pub fn usage(&self, filter: &UsageFilter) -> Vec<UsageRow> {
        let routes: Vec<Arc<RouteMetrics>> = {
            let map = self.routes.read().expect("telemetry lock");
            map.values().cloned().chain([self.none.clone()]).collect()
        };
        let mut rows = Vec::new();
        for m in routes {
            let mut push = |consumer: Option<&str>, counts: &ClassCounts| {
                if !filter.keeps(consumer, &m.name) {
                    return;
                }
                for (i, n) in counts.0.iter().enumerate() {
                    let count = n.load(Ordering::Relaxed);
                    if count > 0 {
                        rows.push(UsageRow {
                            consumer: consumer.map(str::to_string),
                            route: m.name.to_string(),
                            status_class: format!("{}xx", i + 1),
                            count,
                        });
                    }
                }
            };
            push(None, &m.anonymous);
            for (consumer, counts) in m.consumers.read().expect("telemetry lock").iter() {
                push(Some(consumer), counts);
            }
        }
        rows
    }

    /// The Prometheus text: the recorder's counters and histograms, then the gauges `gauges`
    /// reads from the state now.
    pub fn render(&self, gauges: impl FnOnce(&mut GaugeWriter)) -> String {
        let mut w = GaugeWriter {
            out: self.handle.render(),
        };
        gauges(&mut w);
        w.out
    }
}

/// One route's handles and usage counts.
pub struct RouteMetrics {
    name: Arc<str>,
    recorder: Arc<PrometheusRecorder>,
    duration: Histogram,
    upstream: Histogram,
    statuses: [OnceLock<Counter>; COMMON_STATUSES.len()],
    other_statuses: Mutex<Vec<(u16, Counter)>>,
    rate_limited: OnceLock<Counter>,
    quota_exceeded: OnceLock<Counter>,
    cache: [OnceLock<Counter>; 3],
    /// Requests without a consumer.
    anonymous: ClassCounts,
    consumers: RwLock<HashMap<Arc<str>, Arc<ClassCounts>>>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Requests by status class: index 0 is 1xx, 4 is 5xx.
#[derive(Default)]
struct ClassCounts([AtomicU64; 5]);

impl ClassCounts {
    fn add(&self, status: u16) {
        let i = usize::from((status / 100).clamp(1, 5)) - 1;
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }
}

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

impl RouteMetrics {
    fn new(name: &str, recorder: &Arc<PrometheusRecorder>) -> RouteMetrics {
        let route = || vec![Label::new("route", name.to_string())];
        RouteMetrics {
            name: name.into(),
            recorder: recorder.clone(),
            duration: recorder
                .register_histogram(&Key::from_parts(REQUEST_DURATION, route()), &METADATA),
            upstream: recorder
                .register_histogram(&Key::from_parts(UPSTREAM_DURATION, route()), &METADATA),
            statuses: Default::default(),
            other_statuses: Mutex::new(Vec::new()),
            rate_limited: OnceLock::new(),
            quota_exceeded: OnceLock::new(),
            cache: Default::default(),
            anonymous: ClassCounts::default(),
            consumers: RwLock::new(HashMap::new()),
        }
    }

    fn counter(&self, name: &'static str, label: &'static str, value: String) -> Counter {
        let labels = vec![
            Label::new("route", self.name.to_string()),
            Label::new(label, value),
        ];
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// Increments a counter registered on first use: a route that never rate-limits has no
    /// `raftgate_rate_limited_total` series.
    fn lazy(&self, slot: &OnceLock<Counter>, name: &'static str, label: &'static str, value: &str) {
        slot.get_or_init(|| self.counter(name, label, value.to_string()))
            .increment(1);
    }

    fn count_status(&self, status: u16) {
        if let Some(i) = COMMON_STATUSES.iter().position(|s| *s == status) {
            let slot = &self.statuses[i];
            slot.get_or_init(|| self.counter(REQUESTS_TOTAL, "status", status.to_string()))
                .increment(1);
            return;
        }
        let mut others = self.other_statuses.lock().expect("telemetry lock");
        match others.iter().find(|(s, _)| *s == status) {
            Some((_, c)) => c.increment(1),
            None => {
                let c = self.counter(REQUESTS_TOTAL, "status", status.to_string());
                c.increment(1);
                others.push((status, c));
            }
        }
    }

    fn count_usage(&self, consumer: Option<&Arc<str>>, status: u16) {
        let Some(consumer) = consumer else {
            self.anonymous.add(status);
            return;
        };
        if let Some(c) = self
            .consumers
            .read()
            .expect("telemetry lock")
            .get(&**consumer)
        {
            c.add(status);
            return;
        }
        let mut map = self.consumers.write().expect("telemetry lock");
        map.entry(consumer.clone()).or_default().add(status);
    }
}

/// Writes gauge families in the Prometheus text format, after the recorder's output.
pub struct GaugeWriter {
    out: String,
}

impl GaugeWriter {
    /// Starts a family: its `# HELP` and `# TYPE` lines. Samples of it follow.
    pub fn family(&mut self, name: &str, help: &str) {
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
    }

    /// Starts a counter family kept outside the recorder (in the node's state); samples follow.
    pub fn counter_family(&mut self, name: &str, help: &str) {
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} counter\n");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for ch in v.chars() {
                    match ch {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// One access log line's fields.
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// As the client sent it.
    pub path: &'a str,
    pub route: &'a str,
    pub consumer: Option<&'a str>,
    pub client: Option<IpAddr>,
    pub status: u16,
    /// The target's URL as configured in its service.
    pub upstream: Option<&'a str>,
    pub error: Option<&'static str>,
    pub cache: Option<&'static str>,
    pub total: Duration,
    pub upstream_time: Option<Duration>,
    /// The request's `Content-Length`; the response body's size when known up front.
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
}

/// Emits the access log event (the layer of [`access_log_layer`] writes it as one JSON line).
pub fn access_event(l: &AccessLine<'_>) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    tracing::info!(
        target: ACCESS_TARGET,
        request_id = l.request_id,
        method = l.method,
        path = l.path,
        route = l.route,
        consumer = l.consumer,
        client = l.client.map(tracing::field::display),
        status = l.status,
        upstream = l.upstream,
        error = l.error,
        cache = l.cache,
        total_ms = ms(l.total),
        upstream_ms = l.upstream_time.map(ms),
        bytes_in = l.bytes_in,
        bytes_out = l.bytes_out,
    );
}

/// Whether an event or span belongs to the access log.
pub fn is_access(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == ACCESS_TARGET
}

/// The access log: events of [`ACCESS_TARGET`] only, one flat JSON object per line
/// (`timestamp`, `level`, `target`, then the fields of [`access_event`]; absent ones left out).
pub fn access_log_layer<S, W>(writer: W) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
        .with_filter(filter_fn(is_access))
}

#[cfg(test)]
#[path = "telemetry_test.rs"]
mod tests;
