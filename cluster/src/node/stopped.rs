//! Why a node's Raft stopped: shut down, or failed (a full disk, an IO error, a panic). A
//! failed node keeps proxying from its last state, so the admin API and `/readyz` say so.

use super::ClusterNode;
use crate::rpc::WriteError;
use crate::types::NodeId;

impl ClusterNode {
    /// Why this node's Raft no longer runs: its storage failed (a full disk, an IO error), or it
    /// is shutting down. The storage case says what to do, since the node keeps serving
    /// traffic but takes no part in the cluster until it is restarted.
    pub(super) fn stopped(&self) -> WriteError {
        WriteError::Unavailable(stopped_reason(
            &self.inner.raft.metrics().borrow().running_state,
        ))
    }

    /// Why this node's Raft stopped on an error (a storage failure such as a full disk), if it
    /// did: the node then keeps proxying from a state that no longer follows the cluster, so
    /// `/readyz` reports it until the node is restarted.
    pub fn failure(&self) -> Option<String> {
        let m = self.inner.raft.metrics();
        let running = &m.borrow().running_state;
        match running {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
            Err(_) => Some(stopped_reason(running)),
        }
    }
}

/// What a stopped Raft's running state says, for the admin API's 503.
fn stopped_reason(running: &Result<(), openraft::error::Fatal<NodeId>>) -> String {
    match running {
        Err(openraft::error::Fatal::StorageError(e)) => format!(
            "this node's storage failed ({e}), so it stopped taking part in the cluster; free \
             disk space or fix its data_dir, then restart it (it recovers from what it had \
             persisted)"
        ),
        Err(openraft::error::Fatal::Panicked) => {
            "this node's Raft task panicked; restart it (see its log)".into()
        }
        _ => "this node is shutting down".into(),
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::Fatal;
    use openraft::{ErrorSubject, ErrorVerb, StorageError};

    use super::stopped_reason;

    #[test]
    fn a_storage_failure_says_what_failed_and_what_to_do() {
        let enospc = std::io::Error::from_raw_os_error(28);
        let e = StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, enospc);
        let why = stopped_reason(&Err(Fatal::StorageError(e)));
        assert!(why.contains("No space left on device"), "{why}");
        assert!(why.contains("free disk space"), "{why}");
        assert_eq!(
            stopped_reason(&Err(Fatal::Stopped)),
            "this node is shutting down"
        );
    }
}
