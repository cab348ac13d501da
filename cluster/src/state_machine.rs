//! The Raft state machine: applies committed entries to [`ClusterState`], keeps snapshots on disk
//! and publishes every new state on a `watch` channel for the actors that compile it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::state::ClusterState;
use crate::types::{
    Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.tmp";

pub struct StateMachine {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: Arc<ClusterState>,
    publish: watch::Sender<Arc<ClusterState>>,
    dir: PathBuf,
    /// Snapshots received from a leader and installed since this process started: the only
    /// evidence that a lagging node caught up through a snapshot, not the log.
    installed: Arc<AtomicU64>,
}

/// The snapshot file: openraft's metadata and the postcard-encoded state it describes.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

impl StateMachine {
    /// Restores from `dir/snapshot.bin` when there is one; openraft replays the log after it.
    pub fn open(
        dir: &Path,
    ) -> Result<(StateMachine, watch::Receiver<Arc<ClusterState>>), StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let _ = std::fs::remove_file(dir.join(SNAPSHOT_TMP));
        let mut sm = StateMachine {
            last_applied: None,
            membership: StoredMembership::default(),
            state: Arc::new(ClusterState::default()),
            publish: watch::channel(Arc::new(ClusterState::default())).0,
            dir: dir.to_path_buf(),
            installed: Arc::default(),
        };
        if let Some(file) = sm.read_snapshot_file()? {
            sm.restore(&file.meta, &file.data)?;
        }
        let rx = sm.publish.subscribe();
        sm.publish.send_replace(sm.state.clone());
        Ok((sm, rx))
    }

    /// The count of snapshots installed from a leader (shared: it stays readable once openraft
    /// owns the state machine).
    pub fn installed_snapshots(&self) -> Arc<AtomicU64> {
        self.installed.clone()
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let state = ClusterState::decode(data).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        self.state = Arc::new(state);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    fn read_snapshot_file(&self) -> Result<Option<SnapshotFile>, StorageError> {
        match std::fs::read(self.dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| sm_err(ErrorVerb::Read, format!("snapshot file is corrupt: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(sm_err(ErrorVerb::Read, e)),
        }
    }
}

/// Write temp, fsync, rename, fsync the directory: a crash leaves the old or the new snapshot,
/// never half of one.
fn write_snapshot_file(dir: &Path, file: &SnapshotFile) -> std::io::Result<()> {
    let tmp = dir.join(SNAPSHOT_TMP);
    // Encoded straight into the file: a second in-memory copy of a large state would double
    // the transient memory of every snapshot.
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    postcard::to_io(file, &mut w).map_err(std::io::Error::other)?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

pub struct SnapshotBuilder {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: Arc<ClusterState>,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = postcard::to_stdvec(&*self.state).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            data,
        };
        let dir = self.dir.clone();
        let file =
            tokio::task::spawn_blocking(move || write_snapshot_file(&dir, &file).map(|_| file))
                .await
                .map_err(|e| sm_err(ErrorVerb::Write, e))?
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(file.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let state = Arc::make_mut(&mut self.state);
        let mut responses = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            let outcome = match &entry.payload {
                EntryPayload::Normal(cmd) => Some(state.apply(index, cmd)),
                EntryPayload::Blank => None,
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    None
                }
            };
            state.applied = index;
            responses.push(Response {
                revision: state.revision,
                outcome: outcome.unwrap_or(Ok(crate::state::Applied::Unchanged)),
            });
        }
        self.publish.send_replace(self.state.clone());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            state: self.state.clone(),
            dir: self.dir.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        self.restore(meta, &data)?;
        let file = SnapshotFile {
            meta: meta.clone(),
            data,
        };
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_snapshot_file(&dir, &file))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.installed.fetch_add(1, Ordering::Relaxed);
        self.publish.send_replace(self.state.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.read_snapshot_file()?.map(|f| Snapshot {
            meta: f.meta,
            snapshot: Box::new(Cursor::new(f.data)),
        }))
    }
}
