//! Getting at what is intact in a damaged store: a point-in-time read before the damage,
//! an export of the intact prefix that says what it left behind, and a salvage that builds
//! a new store from exactly that prefix, over a corpus of damage (flipped bytes, cut and
//! missing segments, a damaged snapshot, a damaged `journal.head`), leaving the damaged
//! directory byte-identical.
#![cfg(feature = "snapshot")]

mod segment_files;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use airomem::inspect::{intact_prefix, salvage};
use airomem::tool::{export, export_intact};
use airomem::{At, Error, Past, PostcardSerializer, PostcardStore, Seq, Store, StoreOptions};
use airomem_workspace::Log;
use segment_files::{read_segment, segment_names};

const TOTAL: u64 = 300;

fn options() -> StoreOptions {
    StoreOptions::default().segment_size(2048)
}

/// A closed store of commands 1..=TOTAL (each value its sequence number), snapshots after
/// 100 and 200.
async fn store(dir: &Path) {
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
    for value in 1..=TOTAL {
        assert_eq!(store.commit(value).await.expect("commit").seq, Seq(value));
        if value == 100 || value == 200 {
            store.snapshot().await.expect("snapshot");
        }
    }
    store.close().await.expect("close");
}

fn log_through(last: u64) -> Log {
    Log { values: (1..=last).collect() }
}

/// The segment holding record `seq`, and the record.
fn find(dir: &Path, seq: u64) -> (PathBuf, segment_files::RawRecord) {
    for name in segment_names(dir) {
        let path = dir.join(&name);
        if let Some(record) = read_segment(&path).records.into_iter().find(|r| r.seq == seq) {
            return (path, record);
        }
    }
    panic!("no record #{seq}");
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).expect("read");
    bytes[at] ^= 0x10;
    fs::write(path, bytes).expect("write");
}

fn flip_record(dir: &Path, seq: u64) {
    let (path, record) = find(dir, seq);
    flip(&path, record.end - 1);
}

/// Every file under `dir`, recursively, with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = BTreeMap::new();
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            all.extend(contents(&path));
        } else {
            all.insert(path.clone(), fs::read(&path).expect("read"));
        }
    }
    all
}

#[tokio::test]
async fn a_point_before_the_damage_reads_and_the_intact_prefix_exports_with_what_it_left_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    store(&dir).await;
    flip_record(&dir, 250);
    let before = contents(&dir);

    let past: Past<Log> = Past::open(PostcardSerializer, &dir, At::Seq(Seq(240))).expect("a point before the damage");
    assert_eq!(*past.state(), log_through(240));

    let mut out = Vec::new();
    let refused = export::<Log, _>(PostcardSerializer, &dir, At::Latest, &mut out);
    assert!(matches!(refused, Err(Error::Journal(_))), "a plain export still refuses damage: {refused:?}");

    let mut out = Vec::new();
    let exported = export_intact::<Log, _>(PostcardSerializer, &dir, &mut out).expect("export the intact prefix");
    assert_eq!(exported.seq, Seq(249));
    let left = exported.left_behind.expect("what was left behind is reported");
    assert_eq!(left.first_lost, Seq(250));
    assert_eq!(left.segment, find(&dir, 250).0);
    assert_eq!(left.offset, find(&dir, 250).1.offset as u64);
    let document: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(document["seq"], 249);
    assert_eq!(document["state"]["values"].as_array().expect("values").len(), 249);
    assert_eq!(contents(&dir), before, "reads change nothing");
}

#[tokio::test]
async fn an_intact_store_exports_whole_with_nothing_left_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    store(&dir).await;
    let exported = export_intact::<Log, _>(PostcardSerializer, &dir, Vec::new()).expect("export");
    assert_eq!((exported.seq, exported.left_behind), (Seq(TOTAL), None));
}

/// One kind of damage, and the last record the intact prefix keeps.
struct Case {
    name: &'static str,
    damage: fn(&Path),
    last: u64,
}

fn corpus() -> Vec<Case> {
    vec![
        Case { name: "flipped byte after the newest snapshot", damage: |d| flip_record(d, 250), last: 249 },
        Case {
            name: "flipped byte in a record's header",
            damage: |d| {
                let (path, record) = find(d, 230);
                flip(&path, record.offset + 9);
            },
            last: 229,
        },
        Case { name: "flipped byte in the last record", damage: |d| flip_record(d, TOTAL), last: TOTAL - 1 },
        Case {
            name: "flipped byte in history the newest snapshot covers",
            damage: |d| flip_record(d, 150),
            last: TOTAL,
        },
        Case {
            name: "segment cut inside a record",
            damage: |d| {
                let (path, record) = find(d, 260);
                let bytes = fs::read(&path).expect("read");
                fs::write(&path, &bytes[..record.offset + 10]).expect("cut");
            },
            last: 259,
        },
        Case {
            name: "segment missing",
            damage: |d| {
                // The segment that holds the newest snapshot's next record: only the
                // snapshot is left.
                let (path, _) = find(d, 210);
                assert_ne!(path, segment_files::newest_segment(d), "not the newest");
                fs::remove_file(path).expect("remove");
            },
            last: 200,
        },
        Case {
            name: "damaged newest snapshot",
            damage: |d| {
                let path = d.join(format!("{:020}.snapshot", 200));
                let len = fs::metadata(&path).expect("meta").len() as usize;
                flip(&path, len / 2);
            },
            last: TOTAL,
        },
        Case {
            name: "damaged newest snapshot and damaged history after the older one",
            damage: |d| {
                let path = d.join(format!("{:020}.snapshot", 200));
                let len = fs::metadata(&path).expect("meta").len() as usize;
                flip(&path, len / 2);
                flip_record(d, 150);
            },
            last: 149,
        },
        Case { name: "damaged journal.head", damage: |d| flip(&d.join("journal.head"), 9), last: TOTAL },
        Case {
            name: "flipped byte before the snapshot in the segment that spans it",
            damage: |d| {
                let (spanning, _) = find(d, 201);
                let (path, record) = find(d, 195);
                assert_eq!(path, spanning, "the layout this case needs");
                flip(&path, record.end - 1);
            },
            last: TOTAL,
        },
        Case {
            name: "damaged segment header",
            damage: |d| {
                let (path, _) = find(d, 250);
                let first = read_segment(&path).first_seq;
                flip(&path, 3);
                // Checked here rather than in `last`: the segment's first record depends on
                // where rollovers fell.
                assert!(first > 201 && first <= 250, "{first}");
            },
            last: 0,
        },
        Case {
            name: "older segment cut inside a record",
            damage: |d| {
                let (path, record) = find(d, 210);
                assert_ne!(path, segment_files::newest_segment(d), "not the newest");
                let bytes = fs::read(&path).expect("read");
                fs::write(&path, &bytes[..record.offset + 10]).expect("cut");
            },
            last: 209,
        },
    ]
}

#[tokio::test]
async fn salvage_builds_exactly_the_intact_prefix_and_leaves_the_damaged_store_as_it_was() {
    for case in corpus() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("store");
        store(&dir).await;
        let last = if case.last == 0 { read_segment(&find(&dir, 250).0).first_seq - 1 } else { case.last };
        (case.damage)(&dir);
        let before = contents(&dir);

        let dest = tmp.path().join("salvaged");
        let salvaged = salvage(&dir, &dest).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(salvaged.prefix.last, Seq(last), "{}", case.name);
        assert_eq!(intact_prefix(&dir).expect("prefix").last, Seq(last), "{}", case.name);
        let left = salvaged.prefix.left_behind.as_ref().map(|l| l.first_lost);
        assert_eq!(left, (last < TOTAL).then_some(Seq(last + 1)), "{}: what was left behind", case.name);
        assert_eq!(contents(&dir), before, "{}: the damaged store is byte-identical", case.name);

        let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, &dest, options())
            .await
            .unwrap_or_else(|e| panic!("{}: the salvaged store opens: {e}", case.name));
        assert_eq!(*store.query().expect("query"), log_through(last), "{}", case.name);
        assert!(store.recovery().torn_tail.is_none(), "{}: nothing to cut", case.name);
        assert_eq!(store.commit(last + 1).await.expect("commit").seq, Seq(last + 1), "{}", case.name);
        store.close().await.expect("close");
    }
}

#[tokio::test]
async fn salvage_refuses_a_destination_that_is_not_empty_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    store(&dir).await;
    flip_record(&dir, 250);
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).expect("mkdir");
    fs::write(dest.join("keep.txt"), b"mine").expect("write");
    let before = (contents(&dir), contents(&dest));
    let refused = salvage(&dir, &dest);
    assert!(matches!(refused, Err(Error::SalvageRefused { .. })), "{refused:?}");
    assert_eq!((contents(&dir), contents(&dest)), before);
    let refused = salvage(&dir, &dir);
    assert!(matches!(refused, Err(Error::SalvageRefused { .. })), "{refused:?}");
}
