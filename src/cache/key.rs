//! Cache keys: what makes two requests share one cached answer.
//!
//! A key is one byte string: route name, route version, method, normalised request path, query,
//! the values of the route's `vary` headers, and the consumer (authenticated routes: one
//! consumer's answer is never served to another). Each variable field ends in a byte that cannot
//! occur in it (NUL: names, paths, queries and header values never hold one), so distinct
//! requests never share a key. An answer whose `Vary` names more headers is stored under a
//! secondary key: the primary key, `0x03`, and those headers' values.
//!
//! The route version is part of the key, so a changed route never serves what its previous
//! version cached, even before the cache actor drops those entries.

use std::hash::{Hash, Hasher};

use actix_web::http::header::{HeaderMap, HeaderName};

/// Ends every variable field.
const END: u8 = 0;
/// A vary header the request did not send (distinct from one sent empty).
const ABSENT: u8 = 1;
/// Between the values of a header sent more than once.
const NEXT: u8 = 2;
/// Starts the part of a secondary key built from the answer's `Vary`.
const SECONDARY: u8 = 3;

#[derive(Clone, Debug)]
pub struct Key {
    bytes: Box<[u8]>,
    route_end: u32,
    path: (u32, u32),
    version: u64,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state)
    }
}

/// The parts of a request a primary key is made of.
pub struct Request<'a> {
    pub route: &'a str,
    pub version: u64,
    pub method: &'a str,
    /// The normalised path the client asked for (before `strip_path`).
    pub path: &'a str,
    /// The query forwarded upstream (without a consumed `apikey`).
    pub query: Option<&'a str>,
    /// The route's `cache.vary` header names, lowercase.
    pub vary: &'a [String],
    pub headers: &'a HeaderMap,
    pub consumer: Option<&'a str>,
}

impl Key {
    pub fn primary(r: &Request<'_>) -> Key {
        let mut bytes = Vec::with_capacity(
            r.route.len()
                + r.method.len()
                + r.path.len()
                + r.query.map_or(0, str::len)
                + r.consumer.map_or(0, str::len)
                + 16
                + 24 * r.vary.len(),
        );
        bytes.extend_from_slice(r.route.as_bytes());
        bytes.push(END);
        let route_end = r.route.len() as u32;
        bytes.extend_from_slice(&r.version.to_le_bytes());
        bytes.extend_from_slice(r.method.as_bytes());
        bytes.push(END);
        let path_start = bytes.len() as u32;
        bytes.extend_from_slice(r.path.as_bytes());
        let path = (path_start, bytes.len() as u32);
        bytes.push(END);
        bytes.extend_from_slice(r.query.unwrap_or("").as_bytes());
        bytes.push(END);
        for name in r.vary {
            push_values(&mut bytes, r.headers, name.as_str());
        }
        bytes.extend_from_slice(r.consumer.unwrap_or("").as_bytes());
        bytes.push(END);
        Key {
            bytes: bytes.into_boxed_slice(),
            route_end,
            path,
            version: r.version,
        }
    }

    /// The key of the variant an answer with `Vary: names` is stored under.
    pub fn secondary(&self, names: &[HeaderName], headers: &HeaderMap) -> Key {
        let mut bytes = Vec::with_capacity(self.bytes.len() + 1 + 24 * names.len());
        bytes.extend_from_slice(&self.bytes);
        bytes.push(SECONDARY);
        for name in names {
            push_values(&mut bytes, headers, name);
        }
        Key {
            bytes: bytes.into_boxed_slice(),
            ..*self
        }
    }

    pub fn route(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.route_end as usize]).unwrap_or("")
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The normalised request path.
    pub fn path(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.path.0 as usize..self.path.1 as usize]).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A hash for the single-flight table. Two keys that collide only share a wait: the waiter
    /// finds no entry for its own key and goes upstream itself.
    pub fn flight_hash(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.bytes.hash(&mut h);
        h.finish()
    }
}

/// Appends a header's values (in order, separated by [`NEXT`]) or [`ABSENT`], then [`END`].
fn push_values<K: actix_web::http::header::AsHeaderName>(
    bytes: &mut Vec<u8>,
    headers: &HeaderMap,
    name: K,
) {
    let mut values = headers.get_all(name).peekable();
    if values.peek().is_none() {
        bytes.push(ABSENT);
    }
    for (i, v) in values.enumerate() {
        if i > 0 {
            bytes.push(NEXT);
        }
        bytes.extend_from_slice(v.as_bytes());
    }
    bytes.push(END);
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

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

    static EMPTY: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);

    fn key<'a>(f: impl FnOnce(&mut Request<'a>)) -> Key {
        let mut r = Request {
            route: "users",
            version: 7,
            method: "GET",
            path: "/users/1",
            query: Some("a=1"),
            vary: &[],
            headers: &EMPTY,
            consumer: None,
        };
        f(&mut r);
        Key::primary(&r)
    }

    #[test]
    fn every_part_of_the_request_keys_its_own_entry() {
        let base = key(|_| {});
        assert_eq!(base, key(|_| {}));
        assert_eq!(
            (base.route(), base.version(), base.path()),
            ("users", 7, "/users/1")
        );
        let h = headers(&[("accept", "text/html")]);
        let vary = ["accept".to_string()];
        let variants = [
            key(|r| r.route = "users2"),
            key(|r| r.version = 8),
            key(|r| r.method = "HEAD"),
            key(|r| r.path = "/users/2"),
            key(|r| r.query = Some("a=2")),
            key(|r| r.query = None),
            key(|r| r.consumer = Some("alice")),
            key(|r| {
                r.vary = &vary;
                r.headers = &h;
            }),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(&base, v, "variant {i}");
            for w in &variants[i + 1..] {
                assert_ne!(v, w);
            }
        }
        // An empty query and none are the same request.
        assert_eq!(key(|r| r.query = None), key(|r| r.query = Some("")));
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        // The same bytes, cut differently, are different keys.
        assert_ne!(
            key(|r| {
                r.path = "/a";
                r.query = Some("b");
            }),
            key(|r| {
                r.path = "/ab";
                r.query = None;
            })
        );
        let vary = ["accept".to_string()];
        let sent_empty = headers(&[("accept", "")]);
        let none = HeaderMap::new();
        let two = headers(&[("accept", "a"), ("accept", "b")]);
        let one = headers(&[("accept", "ab")]);
        let with = |h: &HeaderMap| {
            Key::primary(&Request {
                route: "r",
                version: 1,
                method: "GET",
                path: "/",
                query: None,
                vary: &vary,
                headers: h,
                consumer: None,
            })
        };
        assert_ne!(with(&sent_empty), with(&none));
        assert_ne!(with(&two), with(&one));
    }

    #[test]
    fn secondary_keys_add_the_answers_vary_values() {
        let base = key(|_| {});
        let names = [HeaderName::from_static("accept-language")];
        let en = base.secondary(&names, &headers(&[("accept-language", "en")]));
        let fr = base.secondary(&names, &headers(&[("accept-language", "fr")]));
        assert_ne!(en, fr);
        assert_ne!(en, base);
        assert_eq!(
            en,
            base.secondary(&names, &headers(&[("accept-language", "en")]))
        );
        assert_eq!(
            (en.route(), en.path(), en.version()),
            ("users", "/users/1", 7)
        );
        assert_ne!(en.flight_hash(), fr.flight_hash());
    }
}
