//! The Raft log, vote and committed index in one redb file, durable before acknowledged.
//!
//! Every mutation goes through one writer thread, in the order openraft issued it. The writer
//! drains whatever has queued up and commits it in one fsynced transaction (group commit), then
//! fires the flush callbacks: many concurrent admin writes share one fsync. Entries handed to
//! `append` are readable at once from an in-memory overlay (replication may read them before they
//! are flushed; Raft only counts this node's copy once the callback has fired).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
/// redb's page cache for the log.
const LOG_CACHE_BYTES: usize = 16 << 20;

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    writer: mpsc::Sender<Op>,
    mirror: Arc<Mutex<Mirror>>,
}

/// What readers need without touching the disk: entries not yet flushed, and the log bounds.
#[derive(Default)]
struct Mirror {
    pending: BTreeMap<u64, Entry>,
    last_log_id: Option<LogId>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
}

enum Op {
    Append(Vec<Entry>, LogFlushed<TypeConfig>),
    Vote(Vote<NodeId>, oneshot::Sender<Result<(), String>>),
    Committed(Option<LogId>),
    Truncate(u64, oneshot::Sender<Result<(), String>>),
    Purge(LogId, oneshot::Sender<Result<(), String>>),
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Store, ErrorVerb::Read, e)
}

fn write_err(e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Store, ErrorVerb::Write, e)
}

impl LogStore {
    /// Opens (or creates) `dir/raft.redb`.
    pub fn open(dir: &Path) -> Result<LogStore, StorageError> {
        std::fs::create_dir_all(dir).map_err(write_err)?;
        // redb caches up to 1 GiB of pages by default; the log is written once and read back
        // rarely (replication catch-up reads recent entries, mostly still in the overlay), so
        // a small cache keeps a node's memory to its state.
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(LOG_CACHE_BYTES)
                .create(dir.join("raft.redb"))
                .map_err(write_err)?,
        );
        {
            let tx = db.begin_write().map_err(write_err)?;
            tx.open_table(LOGS).map_err(write_err)?;
            tx.open_table(META).map_err(write_err)?;
            tx.commit().map_err(write_err)?;
        }
        demote_vote(&db)?;
        // Both are written as `Option<LogId>` (see `write_batch`): read them back as such.
        // Read as a bare `LogId`, the `Some` tag was taken for the term: a garbage purge point
        // that made a node whose log was ever purged fail to start ("try to get log at index").
        let mut mirror = Mirror {
            last_purged: read_meta::<Option<LogId>>(&db, PURGED)?.flatten(),
            committed: read_meta::<Option<LogId>>(&db, COMMITTED)?.flatten(),
            ..Mirror::default()
        };
        mirror.last_log_id = {
            let tx = db.begin_read().map_err(read_err)?;
            let table = tx.open_table(LOGS).map_err(read_err)?;
            let last = match table.last().map_err(read_err)? {
                Some((_, v)) => Some(decode::<Entry>(v.value())?.log_id),
                None => mirror.last_purged,
            };
            last
        };
        let mirror = Arc::new(Mutex::new(mirror));
        let (tx, rx) = mpsc::channel();
        let (writer_db, writer_mirror) = (db.clone(), mirror.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(writer_db, writer_mirror, rx))
            .map_err(write_err)?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                db,
                writer: tx,
                mirror,
            }),
        })
    }

    /// The committed log id saved by the last run, if any.
    pub fn saved_committed(&self) -> Option<LogId> {
        self.mirror().committed
    }

    fn send(&self, op: Op) -> Result<(), StorageError> {
        self.inner
            .writer
            .send(op)
            .map_err(|_| write_err("the log writer thread has stopped"))
    }

    async fn call(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await
            .map_err(|_| write_err("the log writer thread has stopped"))?
            .map_err(write_err)
    }

    fn mirror(&self) -> MutexGuard<'_, Mirror> {
        lock(&self.inner.mirror)
    }
}

/// A poisoned lock means a panic mid-update elsewhere; every update of the mirror is a few
/// assignments that leave it consistent, so keep going.
fn lock(m: &Mutex<Mirror>) -> MutexGuard<'_, Mirror> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("raft types always serialise")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(read_err)
}

fn read_meta<T: serde::de::DeserializeOwned>(
    db: &Database,
    key: &str,
) -> Result<Option<T>, StorageError> {
    let tx = db.begin_read().map_err(read_err)?;
    let table = tx.open_table(META).map_err(read_err)?;
    let value = table.get(key).map_err(read_err)?;
    value.map(|v| decode(v.value())).transpose()
}

/// Saves the vote of the last run as not committed. openraft 0.9 restarts a node whose saved
/// vote is its own committed one as the leader of the same term at once (`Engine::startup`).
/// But a leader replicates entries before its own fsync of them, so a crash can cost it a log
/// tail its followers hold; leading the same term again, it would write new entries under the
/// same log ids: two different entries with one id, and followers that never converge. With
/// an uncommitted vote the node has to win an election first, in a new term. (A follower's
/// vote loses nothing: its leader's committed vote still supersedes it.)
fn demote_vote(db: &Database) -> Result<(), StorageError> {
    let Some(mut vote) = read_meta::<Vote<NodeId>>(db, VOTE)? else {
        return Ok(());
    };
    if !vote.committed {
        return Ok(());
    }
    vote.committed = false;
    let tx = db.begin_write().map_err(write_err)?;
    tx.open_table(META)
        .map_err(write_err)?
        .insert(VOTE, encode(&vote).as_slice())
        .map_err(write_err)?;
    tx.commit().map_err(write_err)
}

/// Applies every queued op in one transaction, fsyncs once, then answers them all.
fn writer_loop(db: Arc<Database>, mirror: Arc<Mutex<Mirror>>, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 1024 {
                break;
            }
        }
        let result = write_batch(&db, &batch).map_err(|e| e.to_string());
        if result.is_ok() {
            // On disk now: leave the overlay, unless re-appended since with another log id.
            let mut m = lock(&mirror);
            for op in &batch {
                if let Op::Append(entries, _) = op {
                    for e in entries {
                        if m.pending.get(&e.log_id.index).map(|p| p.log_id) == Some(e.log_id) {
                            m.pending.remove(&e.log_id.index);
                        }
                    }
                }
            }
        }
        for op in batch {
            let r = result.clone();
            match op {
                Op::Append(_, cb) => cb.log_io_completed(r.map_err(std::io::Error::other)),
                Op::Vote(_, tx) | Op::Truncate(_, tx) | Op::Purge(_, tx) => {
                    let _ = tx.send(r);
                }
                Op::Committed(_) => {}
            }
        }
    }
}

fn write_batch(db: &Database, batch: &[Op]) -> Result<(), redb::Error> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate);
    {
        let mut logs = tx.open_table(LOGS)?;
        let mut meta = tx.open_table(META)?;
        for op in batch {
            match op {
                Op::Append(entries, _) => {
                    for e in entries {
                        logs.insert(e.log_id.index, encode(e).as_slice())?;
                    }
                }
                Op::Vote(v, _) => {
                    meta.insert(VOTE, encode(v).as_slice())?;
                }
                Op::Committed(c) => {
                    meta.insert(COMMITTED, encode(c).as_slice())?;
                }
                Op::Truncate(from, _) => {
                    logs.retain_in(*from.., |_, _| false)?;
                }
                Op::Purge(upto, _) => {
                    logs.retain_in(..=upto.index, |_, _| false)?;
                    meta.insert(PURGED, encode(&Some(*upto)).as_slice())?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => Some(e + 1),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        // Overlay first, disk second: an entry the writer flushes in between leaves the overlay
        // but is then already in the newer read transaction, so nothing falls through the gap.
        let upper = end.map(Bound::Excluded).unwrap_or(Bound::Unbounded);
        let (pending, last, purged) = {
            let m = self.mirror();
            let pending: Vec<Entry> = m
                .pending
                .range((Bound::Included(start), upper))
                .map(|(_, e)| e.clone())
                .collect();
            (
                pending,
                m.last_log_id.map(|l| l.index),
                m.last_purged.map(|l| l.index),
            )
        };
        let mut out: BTreeMap<u64, Entry> = BTreeMap::new();
        {
            let tx = self.inner.db.begin_read().map_err(read_err)?;
            let table = tx.open_table(LOGS).map_err(read_err)?;
            let iter = match end {
                Some(end) => table.range(start..end),
                None => table.range(start..),
            }
            .map_err(read_err)?;
            for item in iter {
                let (k, v) = item.map_err(read_err)?;
                out.insert(k.value(), decode(v.value())?);
            }
        }
        // The overlay wins: it holds what was appended after a truncate the disk has not seen yet.
        for e in pending {
            out.insert(e.log_id.index, e);
        }
        // Drop anything outside (purged, last]: the disk may still hold entries a queued
        // truncate or purge is about to remove.
        Ok(out
            .into_values()
            .filter(|e| Some(e.log_id.index) <= last && Some(e.log_id.index) > purged)
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let m = self.mirror();
        Ok(LogState {
            last_purged_log_id: m.last_purged,
            last_log_id: m.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.call(|tx| Op::Vote(vote, tx)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        read_meta(&self.inner.db, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.mirror().committed = committed;
        // Not awaited: losing the committed index only means re-applying from the snapshot.
        self.send(Op::Committed(committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.mirror().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut m = self.mirror();
            for e in &entries {
                m.pending.insert(e.log_id.index, e.clone());
            }
            if let Some(last) = entries.last() {
                m.last_log_id = Some(last.log_id);
            }
        }
        self.send(Op::Append(entries, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        let prev = match from {
            0 => None,
            _ => self
                .try_get_log_entries(from - 1..from)
                .await?
                .pop()
                .map(|e| e.log_id),
        };
        {
            let mut m = self.mirror();
            let _ = m.pending.split_off(&from);
            m.last_log_id = prev.or(m.last_purged);
        }
        self.call(|tx| Op::Truncate(from, tx)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut m = self.mirror();
            m.last_purged = Some(log_id);
            let keep = m.pending.split_off(&(log_id.index + 1));
            m.pending = keep;
            if m.last_log_id < Some(log_id) {
                m.last_log_id = Some(log_id);
            }
        }
        self.call(|tx| Op::Purge(log_id, tx)).await
    }
}
