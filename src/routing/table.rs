//! The compiled route table: built once per config revision from the cluster state, then read
//! without locks by every request to pick its route in the order of API.md §3.2.
//!
//! No request scans every route. Routes are indexed by host (exact, `*.` wildcard suffix, none),
//! and under each host by exact path and by prefix in hash maps; a request looks up its own path
//! and its segment-boundary prefixes, stopping at the first that no prefix pattern starts with.
//! A host's regexes run as one `RegexSet` pass once there are enough of them. The best candidate
//! from every index is compared under one ordering key, so priority wins across indexes.

use std::borrow::Cow;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use raftgate_cluster::spec::{parse_path_pattern, PathPattern, Route, Service, TargetUrl};
use raftgate_cluster::OrdMap;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::normalize::normalize_path;
use crate::balancing::{HealthTable, ServiceRuntime};

/// The same compile budget `Route::validate` allowed.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// From this many regexes in one host group on, a miss runs them as one `RegexSet` pass instead
/// of one by one: below it, the few separate searches cost less than the set's two passes.
const REGEX_SET_MIN: usize = 4;

/// A route ready to serve: its spec, its service and the service's runtime (parsed targets,
/// their health and the balancer over them).
#[derive(Debug)]
pub struct CompiledRoute {
    route: Arc<Route>,
    service: Arc<Service>,
    /// Shared by every route of the service, and with the balancer actor that checks it.
    upstream: Arc<ServiceRuntime>,
    methods: MethodSet,
    /// This route's counters, found by name on its first request and kept for the life of
    /// this compiled route (a table belongs to one node, so to one registry).
    telemetry: std::sync::OnceLock<Arc<crate::telemetry::RouteMetrics>>,
}

impl CompiledRoute {
    pub fn name(&self) -> &str {
        &self.route.name
    }

    pub fn route(&self) -> &Arc<Route> {
        &self.route
    }

    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// The service's targets, parsed; index `i` is `service().targets[i]` (and its weight).
    /// Shared by every route of the service.
    pub fn targets(&self) -> &Arc<[TargetUrl]> {
        self.upstream.urls()
    }

    /// Where [`crate::telemetry::Telemetry::record`] caches this route's counters.
    pub fn telemetry(&self) -> &std::sync::OnceLock<Arc<crate::telemetry::RouteMetrics>> {
        &self.telemetry
    }

    /// The service's live targets: pick with `pick`, count attempts with `begin`.
    pub fn upstream(&self) -> &Arc<ServiceRuntime> {
        &self.upstream
    }

    fn accepts<'h>(&self, req: &Request<'_, impl Fn(&str) -> Option<&'h str>>) -> bool {
        self.methods
            .allows(req.method, req.method_bit, &self.route.methods)
            && self
                .route
                .headers
                .iter()
                .all(|(name, want)| (req.headers)(name) == Some(want.as_str()))
    }
}

/// Which kind of path pattern matched; exact beats prefix beats regex at equal priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MatchKind {
    Exact,
    Prefix,
    Regex,
}

/// The route chosen for a request, borrowed from the table it was found in.
#[derive(Clone, Copy, Debug)]
pub struct Match<'t> {
    route: &'t Arc<CompiledRoute>,
    kind: MatchKind,
    strip_len: usize,
}

impl<'t> Match<'t> {
    /// Clone the `Arc` to keep the route beyond the table snapshot.
    pub fn route(&self) -> &'t Arc<CompiledRoute> {
        self.route
    }

    pub fn kind(&self) -> MatchKind {
        self.kind
    }

    /// How many leading bytes of the request path `strip_path` removes: the matched prefix
    /// without its trailing `/` (0 for `/`, regex and exact matches).
    pub fn strip_len(&self) -> usize {
        self.strip_len
    }

    /// The path to forward (before the target's base path), given the path `find` was called
    /// with. With `strip_path`, a prefix match drops the prefix (`/api` from `/api/x` gives `/x`,
    /// from `/api` gives `/`) and an exact match drops the whole path (`/`); a regex match
    /// strips nothing.
    pub fn forward_path<'p>(&self, path: &'p str) -> Cow<'p, str> {
        if !self.route.route.strip_path {
            return Cow::Borrowed(path);
        }
        match self.kind {
            MatchKind::Regex => Cow::Borrowed(path),
            MatchKind::Exact => Cow::Borrowed("/"),
            MatchKind::Prefix => match path.get(self.strip_len..) {
                Some(rest) if rest.starts_with('/') => Cow::Borrowed(rest),
                // The matched prefix is the whole path.
                _ => Cow::Borrowed("/"),
            },
        }
    }
}

/// The routes of one config revision, indexed for `find`.
#[derive(Debug, Default)]
pub struct RouteTable {
    revision: u64,
    /// Every compiled route, by name.
    by_name: BTreeMap<String, Arc<CompiledRoute>>,
    /// Routes without `hosts`.
    any_host: PathIndex,
    exact_hosts: HashMap<Box<str>, PathIndex>,
    /// Keyed by the suffix after `*.`: `*.example.com` is under `example.com`.
    wildcard_hosts: HashMap<Box<str>, PathIndex>,
}

impl RouteTable {
    /// Compiles validated routes. A route that still cannot be compiled (unknown service,
    /// unparsable target, pattern that does not compile or normalise) is skipped with a warning
    /// rather than failing the whole revision.
    ///
    /// Each service's runtime comes from `health` when it was built for the service as it is
    /// here; otherwise (the balancer already moved past this revision, or a test without one)
    /// the routes get a fresh runtime of their own, every target healthy.
    pub fn compile<'a>(
        routes: impl IntoIterator<Item = &'a Arc<Route>>,
        services: &OrdMap<String, Arc<Service>>,
        health: &HealthTable,
        revision: u64,
    ) -> RouteTable {
        let mut table = RouteTable {
            revision,
            ..RouteTable::default()
        };
        let mut runtimes: HashMap<&str, Option<Arc<ServiceRuntime>>> = HashMap::new();
        for route in routes {
            let Some(service) = services.get(&route.service) else {
                tracing::warn!(route = %route.name, service = %route.service, "route skipped: unknown service");
                continue;
            };
            let upstream = runtimes
                .entry(route.service.as_str())
                .or_insert_with(|| match health.get(&route.service) {
                    Some(rt) if rt.fits(service) => Some(Arc::clone(rt)),
                    _ => ServiceRuntime::new(service).map(Arc::new),
                })
                .clone();
            let Some(upstream) = upstream else {
                tracing::warn!(route = %route.name, service = %route.service, "route skipped: its service has an unparsable target");
                continue;
            };
            let patterns = match compile_patterns(route) {
                Ok(patterns) => patterns,
                Err(error) => {
                    tracing::warn!(route = %route.name, %error, "route skipped");
                    continue;
                }
            };
            let compiled = Arc::new(CompiledRoute {
                route: Arc::clone(route),
                service: Arc::clone(service),
                upstream,
                methods: MethodSet::new(&route.methods),
                telemetry: std::sync::OnceLock::new(),
            });
            table.insert(&compiled, &patterns);
            table.by_name.insert(route.name.clone(), compiled);
        }
        table.any_host.finish();
        for index in table.exact_hosts.values_mut() {
            index.finish();
        }
        for index in table.wildcard_hosts.values_mut() {
            index.finish();
        }
        table
    }

    /// The config revision this table was compiled from.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How many routes compiled.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<CompiledRoute>> {
        self.by_name.get(name)
    }

    /// Picks the route for a request. `host` is lower case without a port, `path` is normalised
    /// (`normalize_path`) without the query, and `headers` looks a header up by lower-case name.
    pub fn find<'h>(
        &self,
        host: &str,
        method: &str,
        path: &str,
        headers: impl Fn(&str) -> Option<&'h str>,
    ) -> Option<Match<'_>> {
        let req = Request {
            method,
            method_bit: method_bit(method),
            path,
            headers,
        };
        let mut best = None;
        self.any_host.search(&req, &mut best);
        if let Some(index) = self.exact_hosts.get(host) {
            index.search(&req, &mut best);
        }
        if !self.wildcard_hosts.is_empty() {
            // `*.example.com` covers `a.example.com` and `a.b.example.com`, not `example.com`:
            // look up every suffix that follows a dot.
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(index) = self.wildcard_hosts.get(rest) {
                    index.search(&req, &mut best);
                }
            }
        }
        best.map(|c: Candidate<'_>| Match {
            route: c.route,
            kind: c.kind,
            strip_len: c.strip_len,
        })
    }

    fn insert(&mut self, route: &Arc<CompiledRoute>, patterns: &[Pattern]) {
        let mut hosts: Vec<&str> = route.route.hosts.iter().map(String::as_str).collect();
        hosts.sort_unstable();
        hosts.dedup();
        if hosts.is_empty() {
            self.any_host.insert(route, patterns);
        }
        for host in hosts {
            let index = match host.strip_prefix("*.") {
                Some(suffix) => self.wildcard_hosts.entry(suffix.into()).or_default(),
                None => self.exact_hosts.entry(host.into()).or_default(),
            };
            index.insert(route, patterns);
        }
    }
}

/// A route's path pattern, compiled. Exact and prefix patterns are normalised like request
/// paths, so `/a//b` as a pattern still matches.
#[derive(Clone, Debug)]
enum Pattern {
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Regex),
}

fn compile_patterns(route: &Route) -> Result<Vec<Pattern>, String> {
    if route.paths.is_empty() {
        return Ok(vec![Pattern::Prefix("/".into())]);
    }
    let normal = |p: &str| {
        normalize_path(p)
            .map(|n| n.into())
            .map_err(|e| format!("path {p:?}: {e}"))
    };
    route
        .paths
        .iter()
        .map(|p| match parse_path_pattern(p) {
            PathPattern::Exact(s) => normal(s).map(Pattern::Exact),
            PathPattern::Prefix(s) => normal(s).map(Pattern::Prefix),
            PathPattern::Regex(re) => RegexBuilder::new(re)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map(Pattern::Regex)
                .map_err(|e| format!("regex {re:?}: {e}")),
        })
        .collect()
}

/// What `find` matches against, bundled so each index gets one argument.
struct Request<'a, H> {
    method: &'a str,
    method_bit: u16,
    path: &'a str,
    headers: H,
}

/// A route that matched, with what the matching order needs.
#[derive(Clone, Copy)]
struct Candidate<'t> {
    route: &'t Arc<CompiledRoute>,
    kind: MatchKind,
    /// Length of the matched prefix pattern, the "longest prefix" of the matching order.
    prefix_len: usize,
    strip_len: usize,
}

impl Candidate<'_> {
    /// Smaller is better: priority, then kind, then prefix length, then name.
    fn key(&self) -> (Reverse<i32>, MatchKind, Reverse<usize>, &str) {
        (
            Reverse(self.route.route.priority),
            self.kind,
            Reverse(self.prefix_len),
            &self.route.route.name,
        )
    }

    fn beats(&self, best: &Option<Candidate<'_>>) -> bool {
        match best {
            None => true,
            Some(best) => self.key().cmp(&best.key()) == Ordering::Less,
        }
    }
}

/// The routes of one host group, by path.
#[derive(Debug, Default)]
struct PathIndex {
    exact: HashMap<Box<str>, Vec<Arc<CompiledRoute>>>,
    /// The routes with the prefix `/`.
    root: Vec<Arc<CompiledRoute>>,
    /// Keyed by every segment-boundary prefix of every prefix pattern, without a trailing `/`
    /// (`/a/b/` is under `/a/b`, and `/a` is a node too): a request path whose prefix is not a
    /// key has no longer prefix that is one, so the lookups stop there, however big the table.
    prefix: HashMap<Box<str>, PrefixNode>,
    regex: RegexIndex,
}

/// The prefix routes ending at one node: `bare` routes have the pattern `/a/b`, `slash` routes
/// `/a/b/` (which does not match the path `/a/b`).
#[derive(Debug, Default)]
struct PrefixNode {
    bare: Vec<Arc<CompiledRoute>>,
    slash: Vec<Arc<CompiledRoute>>,
}

/// The regexes of one host group, best-first.
#[derive(Debug, Default)]
struct RegexIndex {
    entries: Vec<RegexEntry>,
    /// Pattern `i` is `entries[i]`'s, so a pass over it names the regexes that match, in order.
    /// `None` below `REGEX_SET_MIN`, or when the set does not compile within its budget
    /// (each regex alone did): the entries are then tried one by one.
    set: Option<RegexSet>,
}

#[derive(Debug)]
struct RegexEntry {
    regex: Regex,
    route: Arc<CompiledRoute>,
}

/// Route order inside one bucket, where kind and prefix length are equal.
fn bucket_order(r: &Arc<CompiledRoute>) -> (Reverse<i32>, &str) {
    (Reverse(r.route.priority), &r.route.name)
}

impl PathIndex {
    fn insert(&mut self, route: &Arc<CompiledRoute>, patterns: &[Pattern]) {
        for pattern in patterns {
            match pattern {
                Pattern::Exact(path) => self
                    .exact
                    .entry(path.clone())
                    .or_default()
                    .push(Arc::clone(route)),
                Pattern::Prefix(prefix) => self.insert_prefix(prefix, route),
                Pattern::Regex(regex) => self.regex.entries.push(RegexEntry {
                    regex: regex.clone(),
                    route: Arc::clone(route),
                }),
            }
        }
    }

    /// Files a prefix route under its node, and adds the nodes of the shorter prefixes (`/a`
    /// for `/a/b`) that a lookup walks through.
    fn insert_prefix(&mut self, prefix: &str, route: &Arc<CompiledRoute>) {
        let key = prefix.strip_suffix('/').unwrap_or(prefix);
        if key.is_empty() {
            self.root.push(Arc::clone(route));
            return;
        }
        for (i, _) in key.match_indices('/').skip(1) {
            if !self.prefix.contains_key(&key[..i]) {
                self.prefix.insert(key[..i].into(), PrefixNode::default());
            }
        }
        let node = self.prefix.entry(key.into()).or_default();
        let routes = if key.len() < prefix.len() {
            &mut node.slash
        } else {
            &mut node.bare
        };
        routes.push(Arc::clone(route));
    }

    /// Sorts every bucket best-first, so a search can stop at the first route that passes its
    /// filters, and drops duplicates (a route listing a path or host twice).
    fn finish(&mut self) {
        self.exact.values_mut().for_each(sort_bucket);
        sort_bucket(&mut self.root);
        for node in self.prefix.values_mut() {
            sort_bucket(&mut node.bare);
            sort_bucket(&mut node.slash);
        }
        self.regex.finish();
    }

    fn search<'t, 'h>(
        &'t self,
        req: &Request<'_, impl Fn(&str) -> Option<&'h str>>,
        best: &mut Option<Candidate<'t>>,
    ) {
        let path = req.path;
        if !self.exact.is_empty() {
            if let Some(routes) = self.exact.get(path) {
                offer(routes, MatchKind::Exact, path.len(), 0, req, best);
            }
        }
        offer(&self.root, MatchKind::Prefix, 1, 0, req, best);
        if !self.prefix.is_empty() {
            self.search_prefixes(req, best);
        }
        self.regex.search(req, best);
    }

    /// Offers the routes of every prefix pattern the path starts with, shortest first. A prefix
    /// matches at a segment boundary: `/users` matches when the path is `/users` or goes on
    /// with `/`; `/users/` matches when the path starts with it.
    fn search_prefixes<'t, 'h>(
        &'t self,
        req: &Request<'_, impl Fn(&str) -> Option<&'h str>>,
        best: &mut Option<Candidate<'t>>,
    ) {
        let path = req.path;
        // Each segment end: the next `/` after the segment's own, or the end of the path.
        let ends = path
            .match_indices('/')
            .skip(1)
            .map(|(i, _)| i)
            .chain(std::iter::once(path.len()));
        for end in ends {
            let Some(node) = self.prefix.get(&path[..end]) else {
                return;
            };
            offer(&node.bare, MatchKind::Prefix, end, end, req, best);
            if end < path.len() {
                // `/users/` strips like `/users`, so the rest keeps its leading `/`.
                offer(&node.slash, MatchKind::Prefix, end + 1, end, req, best);
            }
        }
    }
}

/// Sorts a bucket best-first and drops duplicates (a route listing a path or host twice).
fn sort_bucket(routes: &mut Vec<Arc<CompiledRoute>>) {
    routes.sort_by(|a, b| bucket_order(a).cmp(&bucket_order(b)));
    routes.dedup_by(|a, b| Arc::ptr_eq(a, b));
}

impl RegexIndex {
    /// Sorts the entries best-first (dropping a route's repeated regex) and compiles the set.
    fn finish(&mut self) {
        self.entries
            .sort_by(|a, b| bucket_order(&a.route).cmp(&bucket_order(&b.route)));
        self.entries.dedup_by(|a, b| {
            Arc::ptr_eq(&a.route, &b.route) && a.regex.as_str() == b.regex.as_str()
        });
        if self.entries.len() < REGEX_SET_MIN {
            return;
        }
        let patterns = self.entries.iter().map(|e| e.regex.as_str());
        match RegexSetBuilder::new(patterns)
            .size_limit(REGEX_SIZE_LIMIT.saturating_mul(self.entries.len()))
            .build()
        {
            Ok(set) => self.set = Some(set),
            Err(error) => {
                tracing::warn!(regexes = self.entries.len(), %error, "regex routes of one host are tried one by one: they do not compile as one set")
            }
        }
    }

    /// Offers the best regex route that matches and passes its filters. The set, when there is
    /// one, rejects a path no regex matches in one pass, then names the ones that do, in the
    /// entries' order, so the outcome is the one-by-one scan's.
    fn search<'t, 'h>(
        &'t self,
        req: &Request<'_, impl Fn(&str) -> Option<&'h str>>,
        best: &mut Option<Candidate<'t>>,
    ) {
        // Sorted best-first: when the first cannot win, none can, and no regex needs to run.
        match self.entries.first() {
            Some(first) if regex_candidate(&first.route).beats(best) => {}
            _ => return,
        }
        let path = req.path;
        match &self.set {
            Some(set) if !set.is_match(path) => {}
            Some(set) => self.offer(set.matches(path).iter(), |_| true, req, best),
            None => self.offer(0..self.entries.len(), |e| e.regex.is_match(path), req, best),
        }
    }

    /// Offers the first of `indices` (ascending) whose route passes its filters and whose regex
    /// `matches`, unless a better candidate comes first.
    fn offer<'t, 'h>(
        &'t self,
        indices: impl Iterator<Item = usize>,
        matches: impl Fn(&RegexEntry) -> bool,
        req: &Request<'_, impl Fn(&str) -> Option<&'h str>>,
        best: &mut Option<Candidate<'t>>,
    ) {
        for entry in indices.map(|i| &self.entries[i]) {
            let candidate = regex_candidate(&entry.route);
            // Once one cannot win, none after it can.
            if !candidate.beats(best) {
                return;
            }
            if entry.route.accepts(req) && matches(entry) {
                *best = Some(candidate);
                return;
            }
        }
    }
}

fn regex_candidate(route: &Arc<CompiledRoute>) -> Candidate<'_> {
    Candidate {
        route,
        kind: MatchKind::Regex,
        prefix_len: 0,
        strip_len: 0,
    }
}

/// Offers the best route of a sorted bucket that passes the method and header filters.
fn offer<'t, 'h>(
    routes: &'t [Arc<CompiledRoute>],
    kind: MatchKind,
    prefix_len: usize,
    strip_len: usize,
    req: &Request<'_, impl Fn(&str) -> Option<&'h str>>,
    best: &mut Option<Candidate<'t>>,
) {
    for route in routes {
        let candidate = Candidate {
            route,
            kind,
            prefix_len,
            strip_len,
        };
        if !candidate.beats(best) {
            return;
        }
        if route.accepts(req) {
            *best = Some(candidate);
            return;
        }
    }
}

/// The methods a route allows, as bits of `METHODS`, so the check costs no string compare.
#[derive(Clone, Copy, Debug)]
struct MethodSet(u16);

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];
/// Any method not in `METHODS`.
const OTHER_METHOD: u16 = 1 << 15;
const ANY_METHOD: u16 = u16::MAX;

fn method_bit(method: &str) -> u16 {
    match METHODS.iter().position(|m| *m == method) {
        Some(i) => 1 << i,
        None => OTHER_METHOD,
    }
}

impl MethodSet {
    fn new(methods: &[String]) -> MethodSet {
        if methods.is_empty() {
            return MethodSet(ANY_METHOD);
        }
        MethodSet(methods.iter().fold(0, |set, m| set | method_bit(m)))
    }

    fn allows(self, method: &str, bit: u16, listed: &[String]) -> bool {
        match self.0 {
            ANY_METHOD => true,
            // Validation only admits `METHODS`; compare names for anything else.
            set if bit == OTHER_METHOD => {
                set & OTHER_METHOD != 0 && listed.iter().any(|m| m == method)
            }
            set => set & bit != 0,
        }
    }
}

#[cfg(test)]
#[path = "table_test.rs"]
mod tests;
