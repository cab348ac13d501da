//! Cache purges (`POST /cache/purge`): replicated as log entries, so that every node drops the
//! same cached responses, in log order, a node that was down or cut off included.
//!
//! A purge is an internal entry: it does not move the configuration revision. The state keeps
//! the last [`PURGES_KEPT`] of them by log index, because the actors see states through a
//! `watch` channel that may skip intermediate ones: the cache actor applies every purge past the
//! last one it handled, and clears everything when it fell further behind than the window
//! ([`crate::ClusterState::purges_forgotten`]).

use serde::{Deserialize, Serialize};

use crate::spec::{invalid, validate_name, Invalid};

/// Purges the state remembers, newest last.
pub const PURGES_KEPT: usize = 1024;

/// What to drop: entries of `route`, entries whose request path is under `prefix`, both
/// (entries that match the two), or everything (neither).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    #[serde(default)]
    pub route: Option<String>,
    /// A normalised path prefix, matched at a segment boundary like a route's prefix:
    /// `/users` drops `/users`, `/users/7`, never `/usersfoo`.
    #[serde(default)]
    pub prefix: Option<String>,
}

impl Purge {
    /// Stateless validation; whether `route` exists is checked against the state.
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(route) = &self.route {
            validate_name(route).map_err(|e| invalid("route", e.message))?;
        }
        if let Some(prefix) = &self.prefix {
            let ok = prefix.starts_with('/')
                && prefix.len() <= 2048
                && !prefix
                    .bytes()
                    .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#');
            if !ok {
                return Err(invalid(
                    "prefix",
                    format!(
                        "{prefix:?} must be a path starting with `/`, without spaces, `?` or `#` \
                         (at most 2048 bytes)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether a cached response of `route` for the (normalised) request `path` is dropped.
    pub fn matches(&self, route: &str, path: &str) -> bool {
        self.route.as_deref().is_none_or(|r| r == route)
            && self.prefix.as_deref().is_none_or(|p| path_under(path, p))
    }

    pub fn is_everything(&self) -> bool {
        self.route.is_none() && self.prefix.is_none()
    }
}

impl std::fmt::Display for Purge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.route, &self.prefix) {
            (None, None) => f.write_str("everything"),
            (Some(r), None) => write!(f, "route {r}"),
            (None, Some(p)) => write!(f, "prefix {p}"),
            (Some(r), Some(p)) => write!(f, "route {r} under prefix {p}"),
        }
    }
}

/// `path` equals `prefix` or continues it at a segment boundary; a prefix ending in `/`
/// matches everything that starts with it.
pub fn path_under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        assert!(path_under("/users", "/users"));
        assert!(path_under("/users/7", "/users"));
        assert!(path_under("/users/", "/users"));
        assert!(!path_under("/usersfoo", "/users"));
        assert!(!path_under("/user", "/users"));
        assert!(path_under("/anything", "/"));
        assert!(path_under("/users/7", "/users/"));
        assert!(!path_under("/users", "/users/"));
    }

    #[test]
    fn a_purge_matches_by_route_prefix_both_or_everything() {
        let all = Purge::default();
        assert!(all.is_everything() && all.matches("a", "/x"));
        let route = Purge {
            route: Some("a".into()),
            prefix: None,
        };
        assert!(route.matches("a", "/x") && !route.matches("b", "/x"));
        let both = Purge {
            route: Some("a".into()),
            prefix: Some("/x".into()),
        };
        assert!(both.matches("a", "/x/1"));
        assert!(!both.matches("a", "/y") && !both.matches("b", "/x"));
    }

    #[test]
    fn bad_purges_name_their_field() {
        for (p, field) in [
            (
                Purge {
                    route: Some("no spaces".into()),
                    prefix: None,
                },
                "route",
            ),
            (
                Purge {
                    route: None,
                    prefix: Some("users".into()),
                },
                "prefix",
            ),
            (
                Purge {
                    route: None,
                    prefix: Some("/a?b".into()),
                },
                "prefix",
            ),
        ] {
            assert_eq!(p.validate().unwrap_err().field, field, "{p:?}");
        }
        assert!(Purge {
            route: Some("r".into()),
            prefix: Some("/a/b".into())
        }
        .validate()
        .is_ok());
    }

    fn purge(route: Option<&str>) -> crate::Command {
        crate::Command::Purge {
            purge: Purge {
                route: route.map(str::to_string),
                prefix: None,
            },
        }
    }

    #[test]
    fn purges_are_internal_entries_kept_in_a_window() {
        use crate::spec::{Route, Service};
        use crate::state::{Applied, ClusterState, StateError};
        use crate::Precondition;
        let mut st = ClusterState::default();
        st.apply(
            1,
            &crate::Command::PutService {
                service: Service::new("s", ["http://127.0.0.1:9"]),
                precondition: Precondition::None,
            },
        )
        .unwrap();
        st.apply(
            2,
            &crate::Command::PutRoute {
                route: Route::new("r", "s", &["/x"]),
                precondition: Precondition::None,
            },
        )
        .unwrap();
        // Purges never move the configuration revision.
        assert_eq!(st.apply(3, &purge(Some("r"))), Ok(Applied::Deleted));
        assert_eq!(st.apply(4, &purge(None)), Ok(Applied::Deleted));
        assert_eq!((st.revision, st.applied), (2, 4));
        assert_eq!(st.purges.keys().copied().collect::<Vec<_>>(), [3, 4]);
        assert_eq!(st.purges_forgotten, 0);
        // A purge of a route that does not exist is refused, deterministically.
        assert!(matches!(
            st.apply(5, &purge(Some("nope"))),
            Err(StateError::NotFound { .. })
        ));
        assert_eq!((st.revision, st.purges.len()), (2, 2));

        // Only the newest PURGES_KEPT stay; the newest one forgotten is remembered.
        let first = 10;
        for i in 0..PURGES_KEPT as u64 + 5 {
            st.apply(first + i, &purge(None)).unwrap();
        }
        assert_eq!(st.purges.len(), PURGES_KEPT);
        let oldest_kept = *st.purges.keys().next().unwrap();
        assert_eq!(st.purges_forgotten, oldest_kept - 1);
        assert_eq!(st.revision, 2);

        // Snapshots carry the window.
        let bytes = postcard::to_stdvec(&st).unwrap();
        let back = ClusterState::decode(&bytes).unwrap();
        assert_eq!(back.purges, st.purges);
        assert_eq!(back.purges_forgotten, st.purges_forgotten);
    }
}
