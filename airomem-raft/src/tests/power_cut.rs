//! A power cut before every storage operation of two short scenarios, each followed by
//! several crash images of the simulated disk: the log always reopens, never loses an entry
//! or vote whose write was acknowledged, and never brings back a truncated entry. One
//! scenario crosses segments at nearly every append (rollovers, a truncation that removes a
//! segment, purges, votes, a commit point); the other stays in one segment's prepared zeros
//! (appends over them, a truncation inside the segment, a purge past the log's end and the
//! appends that start a new segment after it).

use std::path::Path;
use std::sync::Arc;

use airomem_workspace::sim::SimStorage;
use openraft::RaftLogReader;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};

use super::normal;
use crate::log::{LogOptions, LogStore};
use crate::types::{Entry, LogId, StorageError, Vote, log_id};

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Entry>),
    Truncate(u64),
    Purge(LogId),
    Vote(Vote),
    Committed(LogId),
}

#[derive(Clone, Debug, Default)]
struct Model {
    entries: Vec<Entry>,
    purged: Option<LogId>,
    vote: Option<Vote>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(entries) => self.entries.extend(entries.iter().cloned()),
            Op::Truncate(index) => self.entries.retain(|e| e.log_id.index < *index),
            Op::Purge(upto) => {
                self.entries.retain(|e| e.log_id.index > upto.index);
                self.purged = Some(*upto);
            }
            Op::Vote(vote) => self.vote = Some(*vote),
            Op::Committed(_) => {}
        }
    }
}

fn appends(term: u64, range: std::ops::RangeInclusive<u64>) -> Op {
    Op::Append(range.map(|i| normal(term, i, i + 100 * term, i)).collect())
}

/// Segments of 150 bytes: nearly every append starts a segment.
fn scenario() -> Vec<Op> {
    vec![
        appends(1, 1..=3),
        Op::Vote(Vote::new(1, 1)),
        appends(1, 4..=5),
        Op::Committed(log_id(1, 1, 3)),
        appends(1, 6..=8),
        Op::Truncate(6),
        appends(2, 6..=7),
        Op::Vote(Vote::new(2, 2)),
        Op::Purge(log_id(1, 1, 2)),
        appends(2, 8..=8),
        Op::Purge(log_id(1, 1, 5)),
        appends(2, 9..=9),
    ]
}

async fn run(log: &mut LogStore, op: &Op) -> Result<(), StorageError> {
    match op {
        Op::Append(entries) => log.blocking_append(entries.clone()).await,
        Op::Truncate(index) => log.truncate(log_id(0, 0, *index)).await,
        Op::Purge(upto) => log.purge(*upto).await,
        Op::Vote(vote) => log.save_vote(vote).await,
        Op::Committed(committed) => log.save_committed(Some(*committed)).await,
    }
}

/// Segments of 4 KiB: appends go into the zeroed space prepared past the entries, a
/// truncation cuts inside the segment, and a purge past the log's end removes the segment
/// being appended to before the next append starts another.
fn scenario_in_prepared_space() -> Vec<Op> {
    vec![
        appends(1, 1..=3),
        appends(1, 4..=5),
        Op::Vote(Vote::new(1, 1)),
        appends(1, 6..=6),
        Op::Truncate(4),
        appends(2, 4..=6),
        Op::Committed(log_id(2, 1, 5)),
        Op::Purge(log_id(2, 1, 6)),
        appends(2, 7..=8),
        appends(2, 9..=9),
    ]
}

/// Each scenario with the segment size it is written for.
/// Each scenario with the segment size it is written for and the fewest storage operations
/// it must take to exercise the disk.
fn scenarios() -> [(Vec<Op>, u64, u64); 2] {
    [(scenario(), 150, 40), (scenario_in_prepared_space(), 4096, 25)]
}

fn open(storage: &SimStorage, max_segment_bytes: u64) -> LogStore {
    LogStore::open(Arc::new(storage.clone()), Path::new("/node/log"), LogOptions { max_segment_bytes })
        .expect("the log opens")
}

#[tokio::test]
async fn power_cut_at_every_operation_loses_nothing_acknowledged_and_resurrects_nothing() {
    for (ops, segment, least) in scenarios() {
        // How many storage operations the whole scenario takes.
        let total = {
            let sim = SimStorage::new();
            let mut log = open(&sim, segment);
            for op in &ops {
                run(&mut log, op).await.expect("runs without faults");
            }
            drop(log);
            sim.ops()
        };
        assert!(total > least, "the scenario exercises the disk ({total} operations)");

        for cut in 0..=total {
            let sim = SimStorage::new();
            let mut log = open(&sim, segment);
            let start = sim.ops();
            if cut + start > total {
                break;
            }
            sim.freeze_after(start + cut);
            let mut acked = Model::default();
            let mut failed = None;
            for op in &ops {
                if run(&mut log, op).await.is_ok() {
                    acked.apply(op);
                } else {
                    failed = Some(op.clone());
                    break;
                }
            }
            drop(log);
            sim.power_cut();
            for seed in 0..4 {
                let image = sim.crash(cut * 1000 + seed);
                let mut log =
                    LogStore::open(Arc::new(image), Path::new("/node/log"), LogOptions { max_segment_bytes: segment })
                        .unwrap_or_else(|e| {
                            panic!("segments of {segment}, cut {cut}, seed {seed}: the log does not reopen: {e}")
                        });
                check(&mut log, &acked, failed.as_ref(), cut, seed).await;
            }
        }
    }
}

async fn check(log: &mut LogStore, acked: &Model, failed: Option<&Op>, cut: u64, seed: u64) {
    let at = format!("cut {cut}, seed {seed}, failed op {failed:?}");
    let mut attempted = acked.clone();
    if let Some(op) = failed {
        attempted.apply(op);
    }
    let vote = log.read_vote().await.expect("reads");
    assert!(vote == acked.vote || vote == attempted.vote, "{at}: vote {vote:?}, acknowledged {:?}", acked.vote);
    let state = log.get_log_state().await.expect("reads");
    let purged = state.last_purged_log_id;
    assert!(purged == acked.purged || purged == attempted.purged, "{at}: purged {purged:?}");
    let purged_index = purged.map_or(0, |p| p.index + 1);

    let recovered = log.try_get_log_entries(..).await.expect("reads");
    // What may be there: the acknowledged log, plus what a failed append was writing.
    let mut may: Vec<Entry> = acked.entries.clone();
    if let Some(Op::Append(entries)) = failed {
        may.extend(entries.iter().cloned());
    }
    may.retain(|e| e.log_id.index >= purged_index);
    // What must be there: every acknowledged entry, but a failed truncation may have removed
    // part of what it was asked to.
    let mut must: Vec<Entry> = acked.entries.clone();
    if let Some(Op::Truncate(index)) = failed {
        must.retain(|e| e.log_id.index < *index);
    }
    must.retain(|e| e.log_id.index >= purged_index);

    assert!(
        recovered.len() <= may.len() && recovered[..] == may[..recovered.len()],
        "{at}: recovered {recovered:?}, may hold {may:?}"
    );
    assert!(recovered.len() >= must.len(), "{at}: recovered {recovered:?}, must hold {must:?}");
    let committed = log.read_committed().await.expect("reads");
    assert!(committed <= state.last_log_id, "{at}: committed {committed:?} past the log's end");
}

/// Runs the scenario on `sim` with the power cut before operation `cut` (counted from after
/// the open); `None` once `cut` is past the scenario's last operation.
async fn run_cut(sim: &SimStorage, ops: &[Op], segment: u64, cut: u64, total: u64) -> Option<()> {
    let mut log = open(sim, segment);
    let start = sim.ops();
    if start + cut > total {
        return None;
    }
    sim.freeze_after(start + cut);
    for op in ops {
        if run(&mut log, op).await.is_err() {
            break;
        }
    }
    drop(log);
    Some(())
}

#[tokio::test]
async fn what_a_reopen_after_a_killed_process_serves_survives_a_later_power_cut() {
    for (ops, segment, _) in scenarios() {
        let total = {
            let sim = SimStorage::new();
            run_cut(&sim, &ops, segment, u64::MAX / 2, u64::MAX).await.expect("runs");
            sim.ops()
        };
        for cut in 0..=total {
            let sim = SimStorage::new();
            if run_cut(&sim, &ops, segment, cut, total).await.is_none() {
                break;
            }
            sim.power_cut();
            // The process dies: its unsynced writes stay in the page cache, and the next open
            // reads them.
            let after_kill = sim.process_crash();
            let (served, state, vote) = {
                let mut log = open(&after_kill, segment);
                let served = log.try_get_log_entries(..).await.expect("reads");
                (served, log.get_log_state().await.expect("reads"), log.read_vote().await.expect("reads"))
            };
            after_kill.power_cut();
            for seed in 0..4 {
                let mut log = open(&after_kill.crash(cut * 1000 + seed), segment);
                let at = format!("segments of {segment}, cut {cut}, seed {seed}");
                assert_eq!(log.try_get_log_entries(..).await.expect("reads"), served, "{at}: entries");
                assert_eq!(log.get_log_state().await.expect("reads"), state, "{at}: log state");
                assert_eq!(log.read_vote().await.expect("reads"), vote, "{at}: vote");
            }
        }
    }
}
