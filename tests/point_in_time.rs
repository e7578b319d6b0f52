//! Point-in-time reads (`Past::open`): the state after any command, or at any commit time,
//! equals what a model reaches after exactly the commands up to that point (units whole or
//! not at all, panicked commands never), across snapshots, retention and segment rollover;
//! with `keep_history` every point stays reachable, without it the points retention removed
//! fail with `HistoryGone`. A read never changes a file, even beside a running store.
#![cfg(feature = "snapshot")]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use airomem::{At, Durability, Error, Past, PostcardSerializer, PostcardStore, Seq, Store, StoreOptions};
use airomem_workspace::{Append, SeqLog, quiet_deliberate_panics};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Commit(u64),
    Unit(Vec<u64>),
    Panic(u64),
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u16>().prop_map(|v| Op::Commit(u64::from(v))),
        2 => prop::collection::vec(any::<u16>().prop_map(u64::from), 1..5).prop_map(Op::Unit),
        1 => any::<u16>().prop_map(|v| Op::Panic(u64::from(v))),
        1 => Just(Op::Snapshot),
    ]
}

fn append(value: u64, panic: bool) -> Append {
    Append { value, pad: vec![0; (value % 40) as usize], panic }
}

/// What was applied, group by group (a lone command or a whole unit), with commit times.
#[derive(Default)]
struct Model {
    groups: Vec<(Vec<(u64, u64)>, u64)>,
}

impl Model {
    /// The state after every group whose last command is at or before `seq`.
    fn after(&self, seq: u64) -> Vec<(u64, u64)> {
        self.groups.iter().filter(|(g, _)| g.last().is_some_and(|l| l.0 <= seq)).flat_map(|(g, _)| g.clone()).collect()
    }

    /// The state of every group committed at or before `nanos`.
    fn at(&self, nanos: u64) -> Vec<(u64, u64)> {
        self.groups.iter().filter(|(_, t)| *t <= nanos).flat_map(|(g, _)| g.clone()).collect()
    }
}

fn options(keep_history: bool) -> StoreOptions {
    StoreOptions::default().segment_size(600).durability(Durability::OsBuffered).keep_history(keep_history)
}

async fn run(dir: &Path, ops: &[Op], keep_history: bool) -> Model {
    let store: PostcardStore<SeqLog> =
        Store::open_with(PostcardSerializer, dir, options(keep_history)).await.expect("open");
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Commit(v) => {
                let receipt = store.commit(append(*v, false)).await.expect("commit");
                model.groups.push((vec![(receipt.seq.0, *v)], receipt.unix_nanos));
            }
            Op::Unit(values) => {
                let unit = store.commit_all(values.iter().map(|&v| append(v, false))).await.expect("unit");
                let entries = (unit.first.0..=unit.last.0).zip(values.iter().copied()).collect();
                model.groups.push((entries, unit.unix_nanos));
            }
            Op::Panic(v) => {
                assert!(matches!(store.commit(append(*v, true)).await, Err(Error::CommandPanicked { .. })));
            }
            Op::Snapshot => {
                store.snapshot().await.expect("snapshot");
            }
        }
    }
    assert_eq!(store.query().expect("query").entries, model.after(u64::MAX));
    store.close().await.expect("close");
    model
}

fn read(dir: &Path, at: At) -> Result<Past<SeqLog>, Error> {
    Past::open(PostcardSerializer, dir, at)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_past_is_what_the_model_reached(ops in prop::collection::vec(op(), 1..60), keep_history: bool) {
        quiet_deliberate_panics();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("store");
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let model = runtime.block_on(run(&dir, &ops, keep_history));
        let latest = read(&dir, At::Latest).expect("latest");
        prop_assert_eq!(&latest.state().entries, &model.after(u64::MAX));
        let last = latest.seq().0;
        let mut earliest_ok = None;
        for seq in 0..=last + 1 {
            match read(&dir, At::Seq(Seq(seq))) {
                Ok(past) => {
                    prop_assert_eq!(&past.state().entries, &model.after(seq), "after #{}", seq);
                    earliest_ok.get_or_insert(seq);
                }
                Err(Error::HistoryGone { wanted, earliest, .. }) => {
                    prop_assert!(!keep_history, "history kept, yet #{} is gone", seq);
                    prop_assert_eq!(wanted, Seq(seq));
                    prop_assert!(earliest_ok.is_none(), "#{} gone after an earlier point was readable", seq);
                    prop_assert!(earliest > Seq(seq));
                }
                Err(Error::BeyondHistory { wanted, .. }) => prop_assert_eq!(wanted.0, last + 1),
                Err(e) => prop_assert!(false, "after #{}: {}", seq, e),
            }
        }
        if keep_history {
            prop_assert_eq!(earliest_ok, Some(0), "with history kept, the empty start is readable");
            for (group, nanos) in &model.groups {
                let past = read(&dir, At::Time(UNIX_EPOCH + Duration::from_nanos(*nanos))).expect("at a commit time");
                prop_assert_eq!(&past.state().entries, &model.at(*nanos));
                prop_assert!(past.seq().0 >= group.last().expect("non-empty").0);
                prop_assert_eq!(past.time(), Some(UNIX_EPOCH + Duration::from_nanos(*nanos)));
            }
            let before = read(&dir, At::Time(UNIX_EPOCH)).expect("before the first commit");
            prop_assert!(before.state().entries.is_empty());
            prop_assert_eq!(before.seq(), Seq(0));
        }
    }
}

/// The bytes and names of every file under `dir`.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in walk(dir) {
        files.insert(
            entry.strip_prefix(dir).expect("under dir").display().to_string(),
            std::fs::read(&entry).expect("read"),
        );
    }
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

/// Beside a running store (its lock held, a torn-looking tail being written): the read takes
/// no lock and changes no byte; and on a crashed store's torn tail it neither cuts nor
/// quarantines anything.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_changes_nothing_even_beside_a_live_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: PostcardStore<SeqLog> = Store::open_with(PostcardSerializer, &dir, options(true)).await.expect("open");
    for v in 0..50 {
        store.commit(append(v, false)).await.expect("commit");
        if v % 20 == 19 {
            store.snapshot().await.expect("snapshot");
        }
    }
    let before = tree(&dir);
    let past = read(&dir, At::Seq(Seq(30))).expect("read beside the live store");
    assert_eq!(past.state().entries.len(), 30);
    assert_eq!(tree(&dir), before, "a point-in-time read changed the directory");
    store.close().await.expect("close");

    // A torn tail, as a crash leaves it: the read leaves it in place, an open then cuts it.
    let newest = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .max()
        .expect("segment");
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes.extend_from_slice(&[0xA5; 7]);
    std::fs::write(&newest, &bytes).expect("tear");
    let before = tree(&dir);
    assert_eq!(read(&dir, At::Latest).expect("read a torn store").state().entries.len(), 50);
    assert_eq!(tree(&dir), before, "a point-in-time read repaired the torn tail");
    let store: PostcardStore<SeqLog> = Store::open(PostcardSerializer, &dir).await.expect("reopen");
    assert!(store.recovery().torn_tail.is_some(), "the open, not the read, cuts the tail");
    store.close().await.expect("close");
}

/// Retention without history removes what old points need, and says how far back one can
/// go; with history, the archive holds them and the store itself never reads it.
#[tokio::test(flavor = "multi_thread")]
async fn retention_and_the_archive() {
    for keep in [false, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("store");
        let store: PostcardStore<SeqLog> =
            Store::open_with(PostcardSerializer, &dir, options(keep)).await.expect("open");
        for v in 0..120 {
            store.commit(append(v, false)).await.expect("commit");
            if v % 30 == 29 {
                store.snapshot().await.expect("snapshot");
            }
        }
        store.close().await.expect("close");
        let archive = dir.join(airomem::ARCHIVE_DIR);
        match read(&dir, At::Seq(Seq(10))) {
            Ok(past) => {
                assert!(keep, "without kept history, #10 must be gone");
                assert_eq!(past.state().entries.iter().map(|e| e.1).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
                assert!(
                    archive.join("00000000000000000030.snapshot").exists(),
                    "retention archived the oldest snapshot"
                );
            }
            Err(Error::HistoryGone { wanted, earliest, .. }) => {
                assert!(!keep, "history kept, yet #10 is gone");
                // Snapshots at #30, #60, #90, #120; two are kept.
                assert_eq!((wanted, earliest), (Seq(10), Seq(90)), "the oldest kept snapshot is the earliest point");
                assert!(!archive.exists());
            }
            Err(e) => panic!("unexpected {e}"),
        }
        // The store opens from its own directory either way.
        let store: PostcardStore<SeqLog> = Store::open(PostcardSerializer, &dir).await.expect("reopen");
        assert_eq!(store.query().expect("query").entries.len(), 120);
        store.close().await.expect("close");
    }
}

#[test]
fn no_store_no_history() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing");
    assert!(matches!(read(&missing, At::Latest), Err(Error::NotAStore { .. })));
    assert!(!missing.exists(), "a read must not create the directory");
    std::fs::write(tmp.path().join("notes.txt"), "not a store").expect("write");
    assert!(matches!(read(tmp.path(), At::Latest), Err(Error::NotAStore { .. })));
}
