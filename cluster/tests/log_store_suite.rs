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
#[allow(clippy::result_large_err)] // the error type is openraft's Suite's
fn redb_store_passes_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}

/// A vote saved as committed comes back uncommitted after a reopen, so a restarted leader
/// must win a new term before it writes (see `demote_vote`).
#[test]
fn a_reopened_store_holds_the_vote_uncommitted() {
    use openraft::storage::RaftLogStorage;
    use openraft::Vote;
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut log = LogStore::open(dir.path()).expect("open");
        let mut vote = Vote::new(3, 1);
        vote.commit();
        log.save_vote(&vote).await.expect("save the vote");
        assert_eq!(log.read_vote().await.expect("read"), Some(vote));
        drop(log);
        let mut log = reopen(dir.path());
        assert_eq!(log.read_vote().await.expect("read"), Some(Vote::new(3, 1)));
    })
}

/// Opens the store at `dir` again once the dropped one has let go of the file (its writer
/// thread closes it when it sees the store dropped).
fn reopen(dir: &std::path::Path) -> LogStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match LogStore::open(dir) {
            Ok(log) => return log,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("the store did not reopen within 30 s: {e}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// The purge point and the committed index survive a reopen as written. (They were once read
/// back with the `Some` tag taken for the term, and a node whose log had been purged could not
/// start: found by the chaos scenarios `follower-crash-loop` and `rolling-restart`.)
#[test]
fn a_reopened_store_holds_its_purge_point_and_committed_index() {
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, LogId};
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut log = LogStore::open(dir.path())?;
        let committed = LogId::new(CommittedLeaderId::new(7, 2), 650);
        let purged = LogId::new(CommittedLeaderId::new(7, 2), 579);
        log.save_committed(Some(committed)).await?;
        // Awaited: the writer has flushed the committed index (queued first) by now.
        log.purge(purged).await?;
        drop(log);
        let mut log = reopen(dir.path());
        let state = log.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(purged));
        assert_eq!(log.read_committed().await?, Some(committed));
        Ok::<(), StorageError>(())
    })
    .expect("log store operations");
}
