//! The replicated configuration resources (services, routes) and their stateless validation.
//!
//! These types travel in three encodings: JSON on the admin API, postcard in the Raft log and in
//! snapshots. postcard is not self-describing, so no field here may be skipped conditionally
//! (`skip_serializing_if`); optional values are `Option` and always written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An upstream pool: `PUT /services/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Taken from the URL path; a body may repeat it but not contradict it.
    #[serde(default)]
    pub name: String,
    /// Read-only: the log index of this resource's last change. Ignored on input.
    #[serde(default)]
    pub version: u64,
    pub targets: Vec<Target>,
    #[serde(default)]
    pub balancer: Balancer,
    #[serde(default)]
    pub hash_on: Option<String>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub passive: Option<Passive>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retries on connect failure, idempotent methods only.
    #[serde(default)]
    pub retries: u32,
    /// `https://` targets: a PEM file of CA certificates to verify them with instead of the
    /// public web roots. Read by each node when it builds the client, so it must exist on every
    /// node; checked on the node that takes the write.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `https://` targets: the same as inline PEM text, replicated with the service.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub url: String,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balancer {
    #[default]
    RoundRobin,
    Weighted,
    LeastConn,
    P2cEwma,
    ConsistentHash,
}

impl Balancer {
    pub fn as_str(self) -> &'static str {
        match self {
            Balancer::RoundRobin => "round_robin",
            Balancer::Weighted => "weighted",
            Balancer::LeastConn => "least_conn",
            Balancer::P2cEwma => "p2c_ewma",
            Balancer::ConsistentHash => "consistent_hash",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passive {
    pub max_failures: u32,
    pub eject_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    #[serde(default = "default_request_ms")]
    pub request_ms: u64,
}

fn default_connect_ms() -> u64 {
    1_000
}

fn default_request_ms() -> u64 {
    30_000
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: default_connect_ms(),
            request_ms: default_request_ms(),
        }
    }
}

/// A routing rule: `PUT /routes/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: u64,
    pub service: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub strip_path: bool,
    /// Overrides the service's timeouts for this route.
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    #[serde(default)]
    pub auth: AuthMode,
    #[serde(default)]
    pub allow_groups: Vec<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub quota: Option<Quota>,
    #[serde(default)]
    pub cache: Option<CacheSpec>,
    #[serde(default)]
    pub websocket: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    #[default]
    None,
    ApiKey,
    Jwt,
    Any,
}

pub use crate::rate_limit::{RateLimit, RateLimitBy, RateLimitPer};

pub use crate::quota::Quota;

/// A route's response cache: GET and HEAD answers are kept up to `ttl_s` seconds (less when
/// the upstream's `Cache-Control` says so), one entry per value of the `vary` request headers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    pub ttl_s: u64,
    /// Lowercase request header names whose values key separate entries.
    #[serde(default)]
    pub vary: Vec<String>,
}

/// The longest a response may be cached: a year.
pub const MAX_CACHE_TTL_S: u64 = 31_536_000;

impl CacheSpec {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.ttl_s == 0 || self.ttl_s > MAX_CACHE_TTL_S {
            return Err(invalid(
                "cache.ttl_s",
                format!("must be between 1 and {MAX_CACHE_TTL_S} (a year)"),
            ));
        }
        if self.vary.len() > 16 {
            return Err(invalid("cache.vary", "at most 16 headers"));
        }
        for (i, name) in self.vary.iter().enumerate() {
            let ok = !name.is_empty()
                && name.len() <= 128
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(invalid(
                    format!("cache.vary.{i}"),
                    format!("{name:?} is not a lowercase header name"),
                ));
            }
            if self.vary[..i].contains(name) {
                return Err(invalid(
                    format!("cache.vary.{i}"),
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

/// A configuration value that is well-formed JSON but not a valid configuration (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// Dotted path of the offending field, e.g. `targets.0.url`.
    pub field: String,
    pub message: String,
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Resource names appear in URLs, metric labels and log lines: keep them plain.
pub fn validate_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!("{name:?} is not a valid name: use 1-128 characters of [A-Za-z0-9._-]"),
        ))
    }
}

/// The parts of an upstream URL the proxy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetUrl {
    pub scheme: &'static str,
    /// `host:port`, the port always explicit.
    pub authority: String,
    /// Path prefix prepended to forwarded paths; empty or starting with `/`, never ending in `/`.
    pub base_path: String,
}

pub fn parse_target_url(url: &str) -> Result<TargetUrl, String> {
    let (scheme, rest, default_port) = if let Some(rest) = url.strip_prefix("http://") {
        ("http", rest, 80)
    } else if let Some(rest) = url.strip_prefix("https://") {
        ("https", rest, 443)
    } else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no valid host"));
    }
    if path.contains('?') || path.contains('#') {
        return Err(format!("{url:?} may not carry a query or fragment"));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let authority = if has_port {
        let port = &authority[authority.rfind(':').unwrap_or(0) + 1..];
        match port.parse::<u16>() {
            Ok(p) if p > 0 => authority.to_string(),
            _ => return Err(format!("{url:?} has an invalid port")),
        }
    } else {
        format!("{authority}:{default_port}")
    };
    if authority.parse::<http_authority::Check>().is_err() {
        return Err(format!("{url:?} has an invalid host"));
    }
    Ok(TargetUrl {
        scheme,
        authority,
        base_path: path.trim_end_matches('/').to_string(),
    })
}

/// A tiny host syntax check (the proxy's HTTP client does the real parsing).
mod http_authority {
    pub struct Check;
    impl std::str::FromStr for Check {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let host = s.rsplit_once(':').map(|(h, _)| h).unwrap_or(s);
            let ok = if let Some(v6) = host.strip_prefix('[') {
                v6.strip_suffix(']')
                    .map(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
                    .unwrap_or(false)
            } else {
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            };
            if ok {
                Ok(Check)
            } else {
                Err(())
            }
        }
    }
}

impl Service {
    /// A service with the defaults: round robin over `urls` (weight 1), default timeouts, no
    /// health checks, no retries.
    pub fn new(
        name: impl Into<String>,
        urls: impl IntoIterator<Item = impl Into<String>>,
    ) -> Service {
        Service {
            name: name.into(),
            version: 0,
            targets: urls
                .into_iter()
                .map(|u| Target {
                    url: u.into(),
                    weight: 1,
                })
                .collect(),
            balancer: Balancer::RoundRobin,
            hash_on: None,
            health_check: None,
            passive: None,
            timeouts: Timeouts::default(),
            retries: 0,
            ca_file: None,
            ca_pem: None,
        }
    }

    /// Stateless validation: everything that can be checked without the rest of the config.
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name(&self.name)?;
        if self.targets.is_empty() {
            return Err(invalid("targets", "a service needs at least one target"));
        }
        for (i, t) in self.targets.iter().enumerate() {
            parse_target_url(&t.url).map_err(|m| invalid(format!("targets.{i}.url"), m))?;
            if t.weight == 0 && self.balancer == Balancer::Weighted {
                return Err(invalid(
                    format!("targets.{i}.weight"),
                    "weight must be at least 1",
                ));
            }
        }
        if let Some(hash_on) = &self.hash_on {
            if self.balancer != Balancer::ConsistentHash {
                return Err(invalid(
                    "hash_on",
                    "hash_on applies to consistent_hash only",
                ));
            }
            validate_hash_on(hash_on)?;
        }
        if let Some(check) = &self.health_check {
            validate_health_check(check)?;
        }
        if let Some(passive) = &self.passive {
            if passive.max_failures == 0 {
                return Err(invalid("passive.max_failures", "must be at least 1"));
            }
            if passive.eject_ms == 0 || passive.eject_ms > MAX_CHECK_MS {
                return Err(invalid(
                    "passive.eject_ms",
                    format!("must be between 1 and {MAX_CHECK_MS}"),
                ));
            }
        }
        validate_timeouts("timeouts", &self.timeouts)?;
        if self.retries > 10 {
            return Err(invalid("retries", "at most 10 retries"));
        }
        crate::tls::validate_ca(self)
    }

    /// Whether any target is `https://`.
    pub fn has_tls_targets(&self) -> bool {
        self.targets.iter().any(|t| t.url.starts_with("https://"))
    }
}

/// The longest health-check interval and ejection accepted: a day.
const MAX_CHECK_MS: u64 = 86_400_000;

/// `ip`, `consumer` or `header:NAME` with NAME a lowercase header name.
fn validate_hash_on(hash_on: &str) -> Result<(), Invalid> {
    let ok = match hash_on {
        "ip" | "consumer" => true,
        other => other.strip_prefix("header:").is_some_and(|name| {
            !name.is_empty()
                && name.len() <= 128
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        }),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "hash_on",
            format!(
                "{hash_on:?} is not `ip`, `consumer` or `header:NAME` (NAME a lowercase header name)"
            ),
        ))
    }
}

fn validate_health_check(check: &HealthCheck) -> Result<(), Invalid> {
    // The path goes into a request line as is: printable ASCII without spaces only.
    let path_ok = check.path.starts_with('/')
        && check.path.len() <= 1024
        && check
            .path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'#');
    if !path_ok {
        return Err(invalid(
            "health_check.path",
            format!(
                "{:?} must start with `/` and hold printable ASCII only (no spaces or `#`)",
                check.path
            ),
        ));
    }
    if check.interval_ms == 0 || check.interval_ms > MAX_CHECK_MS {
        return Err(invalid(
            "health_check.interval_ms",
            format!("must be between 1 and {MAX_CHECK_MS}"),
        ));
    }
    if check.timeout_ms == 0 || check.timeout_ms >= check.interval_ms {
        return Err(invalid(
            "health_check.timeout_ms",
            "must be at least 1 and less than interval_ms",
        ));
    }
    if check.healthy_threshold == 0 {
        return Err(invalid(
            "health_check.healthy_threshold",
            "must be at least 1",
        ));
    }
    if check.unhealthy_threshold == 0 {
        return Err(invalid(
            "health_check.unhealthy_threshold",
            "must be at least 1",
        ));
    }
    Ok(())
}

fn validate_timeouts(field: &str, t: &Timeouts) -> Result<(), Invalid> {
    if t.connect_ms == 0 || t.connect_ms > 600_000 {
        return Err(invalid(
            format!("{field}.connect_ms"),
            "must be between 1 and 600000",
        ));
    }
    if t.request_ms == 0 || t.request_ms > 3_600_000 {
        return Err(invalid(
            format!("{field}.request_ms"),
            "must be between 1 and 3600000",
        ));
    }
    Ok(())
}

/// One entry of a route's `paths`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPattern<'a> {
    Prefix(&'a str),
    Exact(&'a str),
    Regex(&'a str),
}

pub fn parse_path_pattern(p: &str) -> PathPattern<'_> {
    if let Some(exact) = p.strip_prefix('=') {
        PathPattern::Exact(exact)
    } else if let Some(re) = p.strip_prefix('~') {
        PathPattern::Regex(re)
    } else {
        PathPattern::Prefix(p)
    }
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl Route {
    /// A route with the defaults to `service` for `paths`: any host and method, no auth.
    pub fn new(name: impl Into<String>, service: impl Into<String>, paths: &[&str]) -> Route {
        Route {
            name: name.into(),
            version: 0,
            service: service.into(),
            hosts: vec![],
            paths: paths.iter().map(|p| p.to_string()).collect(),
            methods: vec![],
            headers: BTreeMap::new(),
            priority: 0,
            strip_path: false,
            timeouts: None,
            auth: AuthMode::None,
            allow_groups: vec![],
            rate_limit: None,
            quota: None,
            cache: None,
            websocket: false,
        }
    }

    /// Stateless validation; whether `service` exists is checked against the state.
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name(&self.name)?;
        validate_name(&self.service).map_err(|e| invalid("service", e.message))?;
        for (i, h) in self.hosts.iter().enumerate() {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            let ok = !bare.is_empty()
                && bare.len() <= 253
                && bare.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && !bare.contains('*');
            if !ok {
                return Err(invalid(
                    format!("hosts.{i}"),
                    format!("{h:?} is not a lowercase host name or a leading `*.` wildcard"),
                ));
            }
        }
        for (i, p) in self.paths.iter().enumerate() {
            let field = format!("paths.{i}");
            match parse_path_pattern(p) {
                PathPattern::Prefix(s) | PathPattern::Exact(s) => {
                    if !s.starts_with('/') {
                        return Err(invalid(
                            field,
                            format!("{p:?} must start with `/` (or `=/`, `~`)"),
                        ));
                    }
                    if s.bytes()
                        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
                    {
                        return Err(invalid(
                            field,
                            format!("{p:?} contains a character not allowed in a path"),
                        ));
                    }
                }
                PathPattern::Regex(re) => {
                    if let Err(e) = regex::RegexBuilder::new(re).size_limit(1 << 20).build() {
                        return Err(invalid(field, format!("invalid regex {re:?}: {e}")));
                    }
                }
            }
        }
        for (i, m) in self.methods.iter().enumerate() {
            if !METHODS.contains(&m.as_str()) {
                return Err(invalid(
                    format!("methods.{i}"),
                    format!("{m:?} is not an HTTP method (use upper case, e.g. \"GET\")"),
                ));
            }
        }
        for name in self.headers.keys() {
            let ok = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(invalid(
                    format!("headers.{name}"),
                    "header names must be lowercase tokens",
                ));
            }
        }
        if let Some(t) = &self.timeouts {
            validate_timeouts("timeouts", t)?;
        }
        if !self.allow_groups.is_empty() && self.auth == AuthMode::None {
            return Err(invalid(
                "allow_groups",
                "allow_groups needs an authenticated route: set auth to api_key, jwt or any",
            ));
        }
        for (i, g) in self.allow_groups.iter().enumerate() {
            validate_name(g).map_err(|e| invalid(format!("allow_groups.{i}"), e.message))?;
        }
        if let Some(l) = &self.rate_limit {
            l.validate(self.auth)?;
        }
        if let Some(q) = &self.quota {
            q.validate(self.auth)?;
        }
        if let Some(cache) = &self.cache {
            cache.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "spec_test.rs"]
mod tests;
