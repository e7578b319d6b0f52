//! Random command sequences, interleaved with snapshots and reopens, on stores with small
//! segments: after every reopen the state loaded from the newest snapshot plus the journal
//! tail equals the model, and equals the state rebuilt by replaying the same journal bytes
//! from record 1 with every snapshot deleted. One store keeps (nearly) every snapshot, the
//! other keeps two, so retention prunes old snapshots and covered segments as it goes.
#![cfg(feature = "snapshot")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use airomem::{PostcardSerializer, PostcardStore, State, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};
use proptest::collection::vec;
use proptest::prelude::*;

/// Small enough that a store spans many segments (a record is about 60 bytes).
const SEGMENT_SIZE: u64 = 512;
/// Keys are drawn from a small space so that deletes often hit live sessions.
const KEYS: u64 = 10;

#[derive(Clone, Debug)]
enum Op {
    Create { key: u64, user_id: u64 },
    Delete { key: u64 },
    Snapshot,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KEYS, any::<u64>()).prop_map(|(key, user_id)| Op::Create { key, user_id }),
        3 => (0..KEYS).prop_map(|key| Op::Delete { key }),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Reopen),
    ]
}

fn names(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list directory")
        .map(|e| e.expect("directory entry").file_name().into_string().expect("utf-8 name"))
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

fn first_seq(name: &str, suffix: &str) -> u64 {
    name.strip_suffix(suffix).expect("suffix").parse().expect("numeric file name")
}

/// Copies every journal segment of `from` into `to`, replacing older copies: segments only
/// grow, so the latest copy of each is the most complete.
fn copy_segments(from: &Path, to: &Path) {
    for name in names(from, ".journal") {
        fs::copy(from.join(&name), to.join(&name)).expect("copy segment");
    }
}

/// One store under test and what it is expected to hold on disk.
struct Subject {
    dir: tempfile::TempDir,
    retain: usize,
    store: Option<PostcardStore<Sessions>>,
    /// Every distinct snapshot sequence number taken, in order.
    snapshots: BTreeSet<u64>,
    /// Every journal segment ever seen, as last copied before a snapshot could prune it.
    mirror: Option<tempfile::TempDir>,
    /// Whether a reopen found the journal's first segments removed by retention.
    pruned: bool,
}

impl Subject {
    async fn new(retain: usize, mirror: bool) -> Subject {
        let dir = tempfile::tempdir().expect("tempdir");
        let mirror = mirror.then(|| tempfile::tempdir().expect("mirror tempdir"));
        let mut subject = Subject { dir, retain, store: None, snapshots: BTreeSet::new(), mirror, pruned: false };
        subject.open(0, None).await;
        subject
    }

    fn options(&self) -> StoreOptions {
        StoreOptions::default().segment_size(SEGMENT_SIZE).snapshots_retained(self.retain)
    }

    fn store(&self) -> &PostcardStore<Sessions> {
        self.store.as_ref().expect("store is open")
    }

    /// Opens the store and checks that recovery used the newest snapshot and replayed exactly
    /// the records after it.
    async fn open(&mut self, committed: u64, model: Option<&Sessions>) {
        let store: PostcardStore<Sessions> =
            Store::open_with(PostcardSerializer, self.dir.path(), self.options()).await.expect("open");
        let newest = self.snapshots.last().copied().unwrap_or(0);
        let report = store.recovery();
        assert_eq!(report.snapshot.map(|s| s.get()), (newest > 0).then_some(newest), "{report:?}");
        assert!(report.snapshots_skipped.is_empty(), "{report:?}");
        assert_eq!(report.records_replayed, committed - newest, "{report:?}");
        assert_eq!(report.next_seq.get(), committed + 1, "{report:?}");
        if let Some(model) = model {
            assert_eq!(&*store.query().expect("query"), model, "state after reopen (retain {})", self.retain);
        }
        self.store = Some(store);
    }

    async fn snapshot(&mut self, committed: u64) {
        if let Some(mirror) = &self.mirror {
            // Commits are all acknowledged and none is in flight: these are the final bytes
            // of every segment this snapshot's retention may remove.
            copy_segments(self.dir.path(), mirror.path());
        }
        let info = self.store().snapshot().await.expect("snapshot");
        assert_eq!(info.seq.get(), committed, "a snapshot includes every acknowledged command");
        self.snapshots.insert(committed);
    }

    /// Closes the store, checks the files retention left, reopens from snapshot plus tail,
    /// and compares with a full replay of the same journal bytes.
    async fn reopen(&mut self, committed: u64, model: &Sessions) {
        drop(self.store.take());
        let dir = self.dir.path();

        let kept: Vec<String> =
            self.snapshots.iter().rev().take(self.retain).rev().map(|&s| snapshot_name(s)).collect();
        assert_eq!(names(dir, ".snapshot"), kept, "retention keeps the newest {} snapshots", self.retain);
        let segments = names(dir, ".journal");
        let first = first_seq(segments.first().expect("a segment"), ".journal");
        let oldest_kept = kept.first().map_or(0, |n| first_seq(n, ".snapshot"));
        assert!(first <= oldest_kept + 1, "the journal reaches back to the oldest kept snapshot: {segments:?}");
        self.pruned |= first > 1;

        if self.mirror.is_some() || first == 1 {
            // The same journal bytes, every snapshot deleted: replay from record 1.
            let full = tempfile::tempdir().expect("full-replay tempdir");
            if let Some(mirror) = &self.mirror {
                copy_segments(mirror.path(), full.path());
            }
            copy_segments(dir, full.path());
            assert_eq!(first_seq(&names(full.path(), ".journal")[0], ".journal"), 1, "the journal is complete");
            let replayed: PostcardStore<Sessions> =
                Store::open_with(PostcardSerializer, full.path(), self.options()).await.expect("open full replay");
            assert_eq!(replayed.recovery().snapshot, None);
            assert_eq!(replayed.recovery().records_replayed, committed);
            assert_eq!(&*replayed.query().expect("query"), model, "full replay equals the model");
        }
        if first == 1 {
            // The live directory itself still holds the whole journal: delete its snapshots
            // in a copy and replay that.
            let copy = tempfile::tempdir().expect("copy tempdir");
            for name in names(dir, "") {
                if !name.ends_with(".snapshot") {
                    fs::copy(dir.join(&name), copy.path().join(&name)).expect("copy file");
                }
            }
            let replayed: PostcardStore<Sessions> =
                Store::open_with(PostcardSerializer, copy.path(), self.options()).await.expect("open copy");
            assert_eq!(replayed.recovery().records_replayed, committed);
            assert_eq!(&*replayed.query().expect("query"), model, "replay of the copy equals the model");
        }

        self.open(committed, Some(model)).await;
    }
}

fn snapshot_name(seq: u64) -> String {
    format!("{seq:020}.snapshot")
}

/// Runs `ops` on both stores; returns whether each saw its journal pruned.
async fn run(ops: Vec<Op>) -> (bool, bool) {
    // Retains every snapshot this test can take: the journal is pruned only up to the first.
    let mut keep_all = Subject::new(1000, true).await;
    // The default retention: old snapshots and the segments they cover are removed.
    let mut keep_two = Subject::new(2, false).await;
    let mut model = Sessions::default();
    let mut committed = 0u64;
    let mut user_ids = BTreeMap::new();

    for op in ops {
        match op {
            Op::Create { key, user_id } => {
                let command = SessionsCommand::CreateSession { token: token(key), user_id };
                for subject in [&keep_all, &keep_two] {
                    let receipt = subject.store().commit(command.clone()).await.expect("commit");
                    assert_eq!(receipt.seq.get(), committed + 1);
                }
                model.execute(command);
                user_ids.insert(key, user_id);
                committed += 1;
            }
            Op::Delete { key } => {
                let command = SessionsCommand::DeleteSession { token: token(key) };
                for subject in [&keep_all, &keep_two] {
                    subject.store().commit(command.clone()).await.expect("commit");
                }
                model.execute(command);
                user_ids.remove(&key);
                committed += 1;
            }
            Op::Snapshot => {
                keep_all.snapshot(committed).await;
                keep_two.snapshot(committed).await;
            }
            Op::Reopen => {
                keep_all.reopen(committed, &model).await;
                keep_two.reopen(committed, &model).await;
            }
        }
        for subject in [&keep_all, &keep_two] {
            assert_eq!(&*subject.store().query().expect("query"), &model);
        }
    }
    keep_all.reopen(committed, &model).await;
    keep_two.reopen(committed, &model).await;

    // The model itself is what the commands mean.
    let expected: Vec<(String, u64)> = user_ids.iter().map(|(&k, &u)| (token(k), u)).collect();
    let mut actual: Vec<(String, u64)> = model.tokens.into_iter().collect();
    actual.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(actual, expected);
    (keep_all.pruned, keep_two.pruned)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn snapshot_plus_tail_equals_model_and_full_replay(ops in vec(op(), 1..150)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(run(ops));
    }
}

/// A fixed sequence that always exercises what the random ones usually do: several snapshots
/// across segment boundaries, pruning, and reopens with and without a tail.
#[test]
fn fixed_sequence_with_pruning() {
    let mut ops = Vec::new();
    for round in 0..6u64 {
        for i in 0..25 {
            ops.push(Op::Create { key: (round + i) % KEYS, user_id: round * 100 + i });
            if i % 4 == 3 {
                ops.push(Op::Delete { key: (round * 3 + i) % KEYS });
            }
        }
        ops.push(Op::Snapshot);
        if round % 2 == 1 {
            ops.push(Op::Reopen);
        }
    }
    ops.push(Op::Snapshot);
    ops.push(Op::Reopen);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (keep_all_pruned, keep_two_pruned) = runtime.block_on(run(ops));
    assert!(keep_all_pruned && keep_two_pruned, "the sequence is long enough for retention to remove segments");
}
