//! A recorded history of commits and reads against a replicated store, and the checker that
//! decides whether it is linearizable.
//!
//! Each write appends a unique value to a list, and a receipt's `seq` is the value's place in
//! the list, so the order the cluster chose is visible and the check needs no search (the
//! research note's O(n log n) method):
//!
//! * every replica ends with the same list, and no value appears twice in it;
//! * every acknowledged value is in it exactly once, at its receipt's `seq`;
//! * every value in it was written, by a write acknowledged or of unknown outcome (never by
//!   one that was refused before it could have reached the log);
//! * if A was acknowledged before B was invoked, `seq(A) < seq(B)`, also when B's outcome is
//!   unknown but its value is in the list;
//! * a linearizable read returns a prefix of the final list that holds every value
//!   acknowledged before the read began, and a read that began after another ended sees at
//!   least as much.
//!
//! Time is a logical clock: one atomic counter ticked at every invocation and completion, so
//! "before" means before in the order the test threads observed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// How a write ended, as its caller saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged with this sequence number.
    Acked(u64),
    /// The caller cannot know whether it was applied (a timeout, a lost answer).
    Unknown,
    /// Refused before it could reach the log (no leader, the store closed): never applied.
    Refused,
}

#[derive(Clone, Debug)]
struct Write {
    value: u64,
    invoked: u64,
    completed: u64,
    outcome: Outcome,
}

#[derive(Clone, Debug)]
struct Read {
    invoked: u64,
    completed: u64,
    seen: Vec<u64>,
}

/// The history of one test run, shared by its client tasks.
#[derive(Debug, Default)]
pub struct History {
    clock: AtomicU64,
    writes: Mutex<Vec<Write>>,
    reads: Mutex<Vec<Read>>,
    acked: AtomicUsize,
    /// The invocation tick of the newest acknowledged write's invocation, plus one (0: none).
    newest_acked_invocation: AtomicU64,
    /// Woken at every acknowledgement.
    progress: Notify,
}

/// A write in progress: its invocation is already on the clock.
#[must_use = "finish the write with `History::wrote`"]
pub struct Pending {
    value: u64,
    invoked: u64,
}

impl History {
    /// Ticks the clock: the moment something was invoked or observed.
    pub fn now(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Records that a write of `value` is about to be invoked.
    pub fn invoke(&self, value: u64) -> Pending {
        Pending { value, invoked: self.now() }
    }

    /// Records how the write ended.
    pub fn wrote(&self, pending: Pending, outcome: Outcome) {
        let completed = self.now();
        let write = Write { value: pending.value, invoked: pending.invoked, completed, outcome };
        self.writes.lock().expect("history lock").push(write);
        if let Outcome::Acked(_) = outcome {
            self.acked.fetch_add(1, Ordering::SeqCst);
            self.newest_acked_invocation.fetch_max(pending.invoked + 1, Ordering::SeqCst);
            self.progress.notify_waiters();
        }
    }

    /// Waits until at least `count` writes were acknowledged.
    pub async fn wait_acked(&self, count: usize) {
        loop {
            let notified = self.progress.notified();
            if self.acked() >= count {
                return;
            }
            notified.await;
        }
    }

    /// Waits until a write invoked after tick `after` was acknowledged.
    pub async fn wait_acked_invoked_after(&self, after: u64) {
        loop {
            let notified = self.progress.notified();
            if self.newest_acked_invocation.load(Ordering::SeqCst) > after + 1 {
                return;
            }
            notified.await;
        }
    }

    /// Records a linearizable read invoked at `invoked` (from [`History::now`]) that returned
    /// the list `seen`.
    pub fn read(&self, invoked: u64, seen: Vec<u64>) {
        let completed = self.now();
        self.reads.lock().expect("history lock").push(Read { invoked, completed, seen });
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Checks the history against every replica's final list; the error names the first
    /// violation found.
    pub fn check(&self, replicas: &[Vec<u64>]) -> Result<Summary, String> {
        let writes = self.writes.lock().expect("history lock").clone();
        let reads = self.reads.lock().expect("history lock").clone();
        check(&writes, &reads, replicas)
    }
}

/// What a passing history held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Writes acknowledged.
    pub acked: usize,
    /// Writes of unknown outcome, and how many of them were applied.
    pub unknown: usize,
    /// Of those, applied.
    pub unknown_applied: usize,
    /// Writes refused.
    pub refused: usize,
    /// Reads checked.
    pub reads: usize,
    /// The length of the final list.
    pub applied: usize,
}

impl Summary {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &Summary) {
        self.acked += other.acked;
        self.unknown += other.unknown;
        self.unknown_applied += other.unknown_applied;
        self.refused += other.refused;
        self.reads += other.reads;
        self.applied += other.applied;
    }
}

fn check(writes: &[Write], reads: &[Read], replicas: &[Vec<u64>]) -> Result<Summary, String> {
    let list = replicas.first().ok_or("no replica to check")?;
    for (i, other) in replicas.iter().enumerate().skip(1) {
        if other != list {
            let at = list.iter().zip(other).position(|(a, b)| a != b).unwrap_or(list.len().min(other.len()));
            return Err(format!(
                "replica {i} differs from replica 0 at seq {}: {} entries against {}",
                at + 1,
                other.len(),
                list.len()
            ));
        }
    }
    // Where each value sits: seq = position + 1.
    let mut seq_of: HashMap<u64, u64> = HashMap::with_capacity(list.len());
    for (position, &value) in list.iter().enumerate() {
        if let Some(first) = seq_of.insert(value, position as u64 + 1) {
            return Err(format!("value {value} applied twice: at seq {first} and {}", position + 1));
        }
    }
    let mut by_value: HashMap<u64, &Write> = HashMap::with_capacity(writes.len());
    for write in writes {
        if by_value.insert(write.value, write).is_some() {
            return Err(format!("the test wrote value {} twice: values must be unique", write.value));
        }
    }
    for &value in list {
        match by_value.get(&value) {
            None => return Err(format!("value {value} was applied but never written")),
            Some(write) if write.outcome == Outcome::Refused => {
                return Err(format!("value {value} was applied although its write was refused"));
            }
            Some(_) => {}
        }
    }
    let mut summary =
        Summary { acked: 0, unknown: 0, unknown_applied: 0, refused: 0, reads: reads.len(), applied: list.len() };
    // (invoked, completed or MAX, seq) of every write whose place is known.
    let mut placed: Vec<(u64, u64, u64)> = Vec::new();
    for write in writes {
        match write.outcome {
            Outcome::Acked(seq) => {
                summary.acked += 1;
                match seq_of.get(&write.value) {
                    None => return Err(format!("acknowledged value {} (seq {seq}) is lost", write.value)),
                    Some(&at) if at != seq => {
                        return Err(format!(
                            "value {} was acknowledged as seq {seq} but applied as seq {at}",
                            write.value
                        ));
                    }
                    Some(_) => placed.push((write.invoked, write.completed, seq)),
                }
            }
            Outcome::Unknown => {
                summary.unknown += 1;
                if let Some(&at) = seq_of.get(&write.value) {
                    summary.unknown_applied += 1;
                    placed.push((write.invoked, u64::MAX, at));
                }
            }
            Outcome::Refused => summary.refused += 1,
        }
    }
    // Real-time order: sweep invocations in order, knowing the highest seq acknowledged
    // before each one.
    let mut completions: Vec<(u64, u64)> =
        placed.iter().filter(|p| p.1 != u64::MAX).map(|&(_, completed, seq)| (completed, seq)).collect();
    completions.sort_unstable();
    let mut invocations: Vec<(u64, u64)> = placed.iter().map(|&(invoked, _, seq)| (invoked, seq)).collect();
    invocations.sort_unstable();
    let mut done = 0;
    let mut highest: Option<u64> = None;
    for &(invoked, seq) in &invocations {
        while done < completions.len() && completions[done].0 < invoked {
            highest = highest.max(Some(completions[done].1));
            done += 1;
        }
        if let Some(before) = highest
            && before >= seq
        {
            return Err(format!("seq {seq} was invoked after seq {before} was acknowledged, yet ordered before it"));
        }
    }
    // Reads: a prefix of the final list, holding everything acknowledged before they began,
    // and never less than a read that ended before they began.
    let mut by_invocation: Vec<&Read> = reads.iter().collect();
    by_invocation.sort_unstable_by_key(|r| r.invoked);
    let mut read_ends: Vec<(u64, usize)> = reads.iter().map(|r| (r.completed, r.seen.len())).collect();
    read_ends.sort_unstable();
    let (mut acked_done, mut reads_done) = (0, 0);
    let (mut highest_acked, mut longest_read) = (0u64, 0usize);
    for read in by_invocation {
        if read.seen.len() > list.len() || read.seen[..] != list[..read.seen.len()] {
            return Err(format!("a read returned {} values that are not a prefix of the final list", read.seen.len()));
        }
        while acked_done < completions.len() && completions[acked_done].0 < read.invoked {
            highest_acked = highest_acked.max(completions[acked_done].1);
            acked_done += 1;
        }
        while reads_done < read_ends.len() && read_ends[reads_done].0 < read.invoked {
            longest_read = longest_read.max(read_ends[reads_done].1);
            reads_done += 1;
        }
        if (read.seen.len() as u64) < highest_acked {
            return Err(format!(
                "a read saw {} values although seq {highest_acked} was acknowledged before it began",
                read.seen.len()
            ));
        }
        if read.seen.len() < longest_read {
            return Err(format!("a read saw {} values although an earlier read saw {longest_read}", read.seen.len()));
        }
    }
    Ok(summary)
}

/// Values per writer: writer `w`'s `i`-th value, unique across writers.
pub fn value(writer: u64, i: u64) -> u64 {
    writer << 32 | i
}

/// The checker against histories with a known verdict: a checker that passes everything
/// would make the cluster tests pass vacuously.
mod verdicts {
    use super::*;

    fn acked(h: &History, value: u64, seq: u64) {
        let p = h.invoke(value);
        h.wrote(p, Outcome::Acked(seq));
    }

    #[test]
    fn a_sequential_history_passes() {
        let h = History::default();
        acked(&h, 10, 1);
        acked(&h, 11, 2);
        let t = h.now();
        h.read(t, vec![10, 11]);
        let unknown = h.invoke(12);
        h.wrote(unknown, Outcome::Unknown);
        let refused = h.invoke(13);
        h.wrote(refused, Outcome::Refused);
        let summary = h.check(&[vec![10, 11, 12], vec![10, 11, 12]]).expect("linearizable");
        assert_eq!((summary.acked, summary.unknown, summary.unknown_applied, summary.refused), (2, 1, 1, 1));
    }

    #[test]
    fn every_kind_of_violation_is_caught() {
        let lost = History::default();
        acked(&lost, 10, 1);
        acked(&lost, 11, 2);
        assert!(lost.check(&[vec![10]]).expect_err("lost").contains("lost"));

        let twice = History::default();
        acked(&twice, 10, 1);
        assert!(twice.check(&[vec![10, 10]]).expect_err("twice").contains("twice"));

        let diverged = History::default();
        acked(&diverged, 10, 1);
        let u = diverged.invoke(11);
        diverged.wrote(u, Outcome::Unknown);
        assert!(diverged.check(&[vec![10, 11], vec![10]]).expect_err("diverged").contains("differs"));

        let phantom = History::default();
        acked(&phantom, 10, 1);
        assert!(phantom.check(&[vec![10, 99]]).expect_err("phantom").contains("never written"));

        let refused = History::default();
        let r = refused.invoke(10);
        refused.wrote(r, Outcome::Refused);
        assert!(refused.check(&[vec![10]]).expect_err("refused").contains("refused"));

        let misplaced = History::default();
        acked(&misplaced, 10, 2);
        acked(&misplaced, 11, 1);
        assert!(misplaced.check(&[vec![10, 11]]).expect_err("misplaced").contains("applied as seq"));

        // 11 was invoked after 10 was acknowledged, yet ordered first.
        let reordered = History::default();
        acked(&reordered, 10, 2);
        acked(&reordered, 11, 1);
        assert!(reordered.check(&[vec![11, 10]]).expect_err("reordered").contains("invoked after"));

        // The same for a write of unknown outcome that was applied.
        let reordered_unknown = History::default();
        acked(&reordered_unknown, 10, 2);
        let u = reordered_unknown.invoke(11);
        reordered_unknown.wrote(u, Outcome::Unknown);
        assert!(reordered_unknown.check(&[vec![11, 10]]).expect_err("reordered").contains("invoked after"));

        let stale = History::default();
        acked(&stale, 10, 1);
        let t = stale.now();
        stale.read(t, vec![]);
        assert!(stale.check(&[vec![10]]).expect_err("stale").contains("acknowledged before it began"));

        let backwards = History::default();
        let u = backwards.invoke(10);
        backwards.wrote(u, Outcome::Unknown);
        let t = backwards.now();
        backwards.read(t, vec![10]);
        let t = backwards.now();
        backwards.read(t, vec![]);
        assert!(backwards.check(&[vec![10]]).expect_err("backwards").contains("earlier read"));

        let foreign = History::default();
        acked(&foreign, 10, 1);
        let t = foreign.now();
        foreign.read(t, vec![12]);
        assert!(foreign.check(&[vec![10]]).expect_err("foreign").contains("prefix"));
    }

    #[test]
    fn concurrent_writes_may_land_in_either_order() {
        let h = History::default();
        let a = h.invoke(10);
        let b = h.invoke(11);
        h.wrote(b, Outcome::Acked(1));
        h.wrote(a, Outcome::Acked(2));
        h.check(&[vec![11, 10]]).expect("overlapping writes may be ordered either way");
    }
}
