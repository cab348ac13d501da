//! Request counts by consumer, route and status class (`GET /usage`): the rows a node answers
//! to [`RpcRequest::Usage`](crate::rpc::RpcRequest::Usage), and their sum over the cluster.
//!
//! The counts themselves live in the gateway (they are per node, never in the log); it hands
//! the node a [`UsageSource`] with [`ClusterNode::set_usage_source`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::node::ClusterNode;
use crate::rpc::{RpcRequest, RpcResponse};
use crate::types::NodeId;

/// One count, in the shape `GET /usage` answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The authenticated consumer; `None` for requests without one.
    pub consumer: Option<String>,
    /// The route's name, `none` when nothing matched.
    pub route: String,
    /// `1xx` … `5xx`.
    pub status_class: String,
    pub count: u64,
}

/// `?consumer=&route=`: exact names; `None` keeps every value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageFilter {
    pub consumer: Option<String>,
    pub route: Option<String>,
}

impl UsageFilter {
    pub fn keeps(&self, consumer: Option<&str>, route: &str) -> bool {
        self.route.as_deref().is_none_or(|r| r == route)
            && self.consumer.as_deref().is_none_or(|c| consumer == Some(c))
    }
}

/// What a node counted, filtered: the gateway's side of the RPC.
pub type UsageSource = Arc<dyn Fn(&UsageFilter) -> Vec<UsageRow> + Send + Sync>;

/// `GET /usage?cluster=true`: the rows summed over the members that answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterUsage {
    /// The members whose counts are included, ascending.
    pub nodes: Vec<NodeId>,
    /// The members that did not answer in time (down, partitioned, or too old to know the call).
    pub missing: Vec<NodeId>,
    pub data: Vec<UsageRow>,
}

/// Sums rows with the same route, consumer and class, sorted by route, then consumer
/// (requests without one first), then class.
pub fn merge(rows: impl IntoIterator<Item = UsageRow>) -> Vec<UsageRow> {
    let mut sums: BTreeMap<(String, Option<String>, String), u64> = BTreeMap::new();
    for row in rows {
        *sums
            .entry((row.route, row.consumer, row.status_class))
            .or_default() += row.count;
    }
    sums.into_iter()
        .map(|((route, consumer, status_class), count)| UsageRow {
            consumer,
            route,
            status_class,
            count,
        })
        .collect()
}

impl ClusterNode {
    /// Every member's counts (this node's included) over the cluster port, summed. A member
    /// that does not answer within `timeout` is listed in `missing`.
    pub async fn cluster_usage(&self, filter: &UsageFilter, timeout: Duration) -> ClusterUsage {
        let me = self.id();
        let members: Vec<(NodeId, String)> = {
            let m = self.raft().metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect()
        };
        let calls = members.into_iter().map(|(id, addr)| async move {
            if id == me {
                return (id, Some(self.local_usage(filter)));
            }
            let req = RpcRequest::Usage(filter.clone());
            match self.call_member(&addr, &req, timeout).await {
                Some(RpcResponse::Usage(rows)) => (id, Some(rows)),
                _ => (id, None),
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut usage = ClusterUsage::default();
        let mut rows = Vec::new();
        for (id, answer) in answers {
            match answer {
                Some(r) => {
                    usage.nodes.push(id);
                    rows.extend(r);
                }
                None => usage.missing.push(id),
            }
        }
        usage.nodes.sort_unstable();
        usage.missing.sort_unstable();
        usage.data = merge(rows);
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(consumer: Option<&str>, route: &str, class: &str, count: u64) -> UsageRow {
        UsageRow {
            consumer: consumer.map(str::to_string),
            route: route.into(),
            status_class: class.into(),
            count,
        }
    }

    #[test]
    fn merge_sums_equal_keys_and_sorts_by_route_consumer_class() {
        let merged = merge([
            row(Some("bob"), "b", "2xx", 1),
            row(Some("alice"), "b", "4xx", 2),
            row(None, "b", "2xx", 3),
            row(Some("alice"), "a", "2xx", 4),
            row(Some("alice"), "b", "2xx", 5),
            row(Some("alice"), "b", "4xx", 6),
        ]);
        assert_eq!(
            merged,
            [
                row(Some("alice"), "a", "2xx", 4),
                row(None, "b", "2xx", 3),
                row(Some("alice"), "b", "2xx", 5),
                row(Some("alice"), "b", "4xx", 8),
                row(Some("bob"), "b", "2xx", 1),
            ]
        );
    }

    #[test]
    fn filters_keep_exact_names() {
        let all = UsageFilter::default();
        assert!(all.keeps(None, "r") && all.keeps(Some("a"), "r"));
        let alice = UsageFilter {
            consumer: Some("alice".into()),
            route: None,
        };
        assert!(alice.keeps(Some("alice"), "r"));
        assert!(!alice.keeps(None, "r") && !alice.keeps(Some("alicia"), "r"));
        let route = UsageFilter {
            consumer: None,
            route: Some("r".into()),
        };
        assert!(route.keeps(None, "r") && !route.keeps(None, "r2"));
    }

    #[test]
    fn rows_serialise_in_the_api_shape() {
        let json = serde_json::to_value(row(None, "none", "4xx", 2)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"consumer": null, "route": "none", "status_class": "4xx", "count": 2})
        );
    }
}
