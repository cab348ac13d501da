use std::time::Duration;

use openraft::raft::{AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{CommittedLeaderId, LogId, Vote};

use super::{refused_for_log, LeaderContact};

fn log_id(term: u64, index: u64) -> Option<LogId<u64>> {
    Some(LogId::new(CommittedLeaderId::new(term, 0), index))
}

fn request(last: Option<LogId<u64>>) -> VoteRequest<u64> {
    VoteRequest::new(Vote::new(5, 1), last)
}

fn response(granted: bool, last: Option<LogId<u64>>) -> VoteResponse<u64> {
    VoteResponse::new(Vote::new(4, 3), last, granted)
}

#[test]
fn only_a_refusal_of_a_shorter_log_is_a_doomed_candidacy() {
    // Refused, and our log is longer: the candidate cannot win.
    assert!(refused_for_log(
        &request(log_id(4, 10)),
        &response(false, log_id(4, 12))
    ));
    assert!(refused_for_log(
        &request(None),
        &response(false, log_id(1, 1))
    ));
    // Refused with logs equal (by lease or an earlier vote): nothing to outbid.
    assert!(!refused_for_log(
        &request(log_id(4, 12)),
        &response(false, log_id(4, 12))
    ));
    // Granted: the candidate wins.
    assert!(!refused_for_log(
        &request(log_id(4, 12)),
        &response(true, log_id(4, 12))
    ));
}

#[test]
fn a_node_that_never_heard_a_leader_leaves_elections_to_the_timers() {
    let c = LeaderContact::default();
    assert!(!c.lease_expired(Duration::ZERO));
}

#[test]
fn the_lease_runs_from_the_last_append_a_leader_sent() {
    let c = LeaderContact::default();
    c.appended(&AppendEntriesResponse::Success);
    assert!(!c.lease_expired(Duration::from_secs(60)), "just heard");
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        c.lease_expired(Duration::from_millis(1)),
        "silent for longer than the lease"
    );
}

#[test]
fn an_append_refused_for_a_higher_vote_is_not_a_leader_heard() {
    let c = LeaderContact::default();
    c.appended(&AppendEntriesResponse::HigherVote(Vote::new(9, 2)));
    assert_eq!(c.heard_ms.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn a_snapshot_chunk_accepted_from_a_leader_counts_as_heard() {
    let c = LeaderContact::default();
    // Refused: the follower holds a higher vote than the sender's.
    c.installed(&Vote::new(3, 1), &Vote::new(4, 2));
    assert_eq!(c.heard_ms.load(std::sync::atomic::Ordering::Relaxed), 0);
    c.installed(&Vote::new(4, 2), &Vote::new(4, 2));
    assert_ne!(c.heard_ms.load(std::sync::atomic::Ordering::Relaxed), 0);
}
