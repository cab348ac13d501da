//! openraft's storage conformance suite against the redb log store and the state machine.

use openraft::testing::{StoreBuilder, Suite};
use raftgate_cluster::log_store::LogStore;
use raftgate_cluster::state_machine::StateMachine;
use raftgate_cluster::types::{StorageError, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("log"))?;
        let (sm, _rx) = StateMachine::open(&dir.path().join("sm"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn redb_store_passes_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}
