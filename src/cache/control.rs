//! The HTTP caching rules the response cache follows: the shared-cache subset of RFC 9111 that
//! needs no revalidation. What a request may take from the cache, whether an upstream answer may
//! be stored, and for how long.

use std::time::{Duration, SystemTime};

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue, HttpDate};

/// Statuses stored (RFC 9110 §15.1 "heuristically cacheable", less those an API gateway has no
/// business keeping: 206 partial content, 300, 405, 414, 501).
pub const STORABLE_STATUSES: [u16; 7] = [200, 203, 204, 301, 308, 404, 410];

/// The `Cache-Control` directives the cache acts on. Unknown directives are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    /// Also set by the field-named form (`no-cache="set-cookie"`): the cache does not
    /// revalidate, so it does not store.
    pub no_cache: bool,
    /// Also set by the field-named form (`private="x"`).
    pub private: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

/// Parses every `Cache-Control` value: comma-separated, case-insensitive names, values bare or
/// quoted. A repeated age keeps the smallest; a malformed one counts as 0 (stale, RFC 9111
/// §1.2.2).
pub fn directives<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Directives {
    let mut d = Directives::default();
    for value in values {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in value.split(',') {
            let item = item.trim();
            let (name, arg) = match item.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (item, None),
            };
            let age = || arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
            if name.eq_ignore_ascii_case("no-store") {
                d.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case("private") {
                d.private = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                d.max_age = Some(d.max_age.map_or(age(), |m| m.min(age())));
            } else if name.eq_ignore_ascii_case("s-maxage") {
                d.s_maxage = Some(d.s_maxage.map_or(age(), |m| m.min(age())));
            }
        }
    }
    d
}

/// Whether a client's request may be answered from the cache (and its answer stored):
/// not with `Cache-Control: no-store`, `no-cache` or `max-age=0` (a browser's reload), nor,
/// without `Cache-Control`, with `Pragma: no-cache`. Such requests bypass the cache.
pub fn request_allows_cache(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::CACHE_CONTROL) {
        let d = directives(headers.get_all(header::CACHE_CONTROL));
        return !(d.no_store || d.no_cache || d.max_age == Some(0));
    }
    !headers.get_all(header::PRAGMA).any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("no-cache"))
        })
    })
}

/// How an upstream answer is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// How long it stays fresh from now: never more than the route's `ttl_s`.
    pub ttl: Duration,
    /// The request headers its `Vary` names (lowercase): the entry is kept per their values.
    pub vary: Vec<HeaderName>,
    /// The upstream's `Age`, added to the time the entry spent here in the `Age` of a hit.
    pub age: u64,
}

/// Whether an upstream answer may be stored, and for how long (`None`: not stored). Not
/// stored: a status outside [`STORABLE_STATUSES`], `Set-Cookie`, `Cache-Control: no-store`,
/// `no-cache` or `private`, `Vary: *`, or a freshness lifetime of 0. The lifetime is
/// `s-maxage`, else `max-age`, else `Expires` − `Date`, less the upstream's `Age`, capped by
/// `route_ttl_s`; with none of them it is `route_ttl_s`.
pub fn decide(
    status: u16,
    headers: &HeaderMap,
    route_ttl_s: u64,
    now: SystemTime,
) -> Option<Decision> {
    if !STORABLE_STATUSES.contains(&status) || headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    let d = directives(headers.get_all(header::CACHE_CONTROL));
    if d.no_store || d.no_cache || d.private {
        return None;
    }
    let vary = vary_names(headers)?;
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let upstream = match d.s_maxage.or(d.max_age) {
        Some(s) => Some(s.saturating_sub(age)),
        // An invalid Expires (`0`, `-1`) means already expired (RFC 9111 §5.3).
        None => (headers.get(header::EXPIRES))
            .map(|expires| expires_in(expires, headers.get(header::DATE), now)),
    };
    let ttl = upstream.map_or(route_ttl_s, |s| s.min(route_ttl_s));
    if ttl == 0 {
        return None;
    }
    Some(Decision {
        ttl: Duration::from_secs(ttl),
        vary,
        age,
    })
}

/// Seconds from `Date` (else now) to `Expires`: 0 when it has passed or is not a date.
fn expires_in(expires: &HeaderValue, date: Option<&HeaderValue>, now: SystemTime) -> u64 {
    let parse = |v: &HeaderValue| {
        v.to_str()
            .ok()
            .and_then(|s| s.parse::<HttpDate>().ok())
            .map(SystemTime::from)
    };
    let Some(expires) = parse(expires) else {
        return 0;
    };
    let base = date.and_then(parse).unwrap_or(now);
    expires.duration_since(base).map_or(0, |d| d.as_secs())
}

/// The header names an answer's `Vary` lists, lowercased and deduplicated; `None` for
/// `Vary: *` (or a name that is not a header name): such an answer is not stored.
fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::VARY) {
        let value = value.to_str().ok()?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn cc(values: &[&str]) -> Directives {
        let h = headers(
            &values
                .iter()
                .map(|v| ("cache-control", *v))
                .collect::<Vec<_>>(),
        );
        directives(h.get_all(header::CACHE_CONTROL))
    }

    fn ttl(status: u16, pairs: &[(&str, &str)], route_ttl: u64) -> Option<u64> {
        decide(status, &headers(pairs), route_ttl, SystemTime::now()).map(|d| d.ttl.as_secs())
    }

    #[test]
    fn cache_control_directives_parse_case_insensitively_with_quotes_and_repeats() {
        assert_eq!(
            cc(&["Public, MAX-AGE=60", "s-maxage=\"30\""]),
            Directives {
                max_age: Some(60),
                s_maxage: Some(30),
                ..Directives::default()
            }
        );
        let d = cc(&["no-store,private=\"set-cookie\" , no-cache"]);
        assert!(d.no_store && d.private && d.no_cache);
        // The smallest of repeated ages; a malformed age is stale.
        assert_eq!(cc(&["max-age=60, max-age=10"]).max_age, Some(10));
        assert_eq!(cc(&["max-age=soon"]).max_age, Some(0));
        assert_eq!(cc(&["max-age"]).max_age, Some(0));
        assert_eq!(cc(&["immutable, must-revalidate"]), Directives::default());
    }

    #[test]
    fn upstream_answers_are_stored_for_the_lifetime_they_allow_capped_by_the_route() {
        assert_eq!(ttl(200, &[], 60), Some(60));
        assert_eq!(ttl(200, &[("cache-control", "max-age=10")], 60), Some(10));
        assert_eq!(ttl(200, &[("cache-control", "max-age=600")], 60), Some(60));
        // s-maxage is the shared cache's own, and wins over max-age.
        assert_eq!(
            ttl(200, &[("cache-control", "max-age=5, s-maxage=20")], 60),
            Some(20)
        );
        // Time already spent in caches upstream counts.
        assert_eq!(
            ttl(200, &[("cache-control", "max-age=30"), ("age", "25")], 60),
            Some(5)
        );
        assert_eq!(
            ttl(200, &[("cache-control", "max-age=30"), ("age", "30")], 60),
            None
        );
        assert_eq!(ttl(200, &[("cache-control", "max-age=0")], 60), None);
        assert_eq!(ttl(404, &[], 60), Some(60));
        assert_eq!(ttl(301, &[], 60), Some(60));
    }

    #[test]
    fn private_no_store_no_cache_cookies_and_other_statuses_are_not_stored() {
        for pairs in [
            vec![("cache-control", "private")],
            vec![("cache-control", "private, max-age=60")],
            vec![("cache-control", "no-store")],
            vec![("cache-control", "no-cache")],
            vec![("cache-control", "public"), ("set-cookie", "a=b")],
            vec![("vary", "accept, *")],
        ] {
            assert_eq!(ttl(200, &pairs, 60), None, "{pairs:?}");
        }
        for status in [201, 206, 302, 304, 400, 401, 500, 502, 503] {
            assert_eq!(ttl(status, &[], 60), None, "{status}");
        }
    }

    #[test]
    fn expires_counts_from_date_when_there_is_no_max_age() {
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let fmt = |t: SystemTime| HttpDate::from(t).to_string();
        let h = [
            ("date", fmt(date)),
            ("expires", fmt(date + Duration::from_secs(30))),
        ];
        let pairs: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(ttl(200, &pairs, 60), Some(30));
        assert_eq!(ttl(200, &pairs, 10), Some(10));
        // max-age wins over Expires; an Expires in the past or not a date is stale.
        let mut with_max_age = pairs.clone();
        with_max_age.push(("cache-control", "max-age=45"));
        assert_eq!(ttl(200, &with_max_age, 60), Some(45));
        assert_eq!(ttl(200, &[("expires", "0")], 60), None);
        let past = fmt(SystemTime::now() - Duration::from_secs(5));
        assert_eq!(ttl(200, &[("expires", &past)], 60), None);
    }

    #[test]
    fn vary_is_kept_lowercase_and_deduplicated() {
        let d = decide(
            200,
            &headers(&[("vary", "Accept, accept-encoding"), ("vary", "ACCEPT")]),
            60,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(d.vary, ["accept", "accept-encoding"]);
    }

    #[test]
    fn clients_bypass_the_cache_with_no_store_no_cache_or_a_reload() {
        assert!(request_allows_cache(&headers(&[])));
        assert!(request_allows_cache(&headers(&[(
            "cache-control",
            "max-age=60"
        )])));
        for pairs in [
            vec![("cache-control", "no-cache")],
            vec![("cache-control", "No-Store")],
            vec![("cache-control", "max-age=0")],
            vec![("pragma", "no-cache")],
        ] {
            assert!(!request_allows_cache(&headers(&pairs)), "{pairs:?}");
        }
        // Cache-Control wins over Pragma.
        assert!(request_allows_cache(&headers(&[
            ("cache-control", "max-age=5"),
            ("pragma", "no-cache")
        ])));
    }
}
