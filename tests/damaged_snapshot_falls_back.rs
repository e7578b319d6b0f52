//! A damaged newest snapshot is passed over: recovery loads the older one and replays the
//! longer journal tail, reports the skipped file, and leaves it on disk. With every snapshot
//! damaged and the start of the journal pruned, open fails with `NoUsableSnapshot` and
//! changes no file; with the journal still complete it replays everything.
#![cfg(feature = "snapshot")]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use airomem::{JournalError, PostcardSerializer, PostcardStore, State, Store, StoreOptions};
use airomem_snapshot::format::{FOOTER_LEN, HEADER_LEN};
use airomem_workspace::{Sessions, SessionsCommand, token};

fn create(n: u64) -> SessionsCommand {
    SessionsCommand::CreateSession { token: token(n), user_id: n }
}

fn delete(n: u64) -> SessionsCommand {
    SessionsCommand::DeleteSession { token: token(n) }
}

fn snapshot_name(seq: u64) -> String {
    format!("{seq:020}.snapshot")
}

fn names(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Every file of `dir` with its content.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    names(dir, "").into_iter().map(|n| (n.clone(), fs::read(dir.join(&n)).expect("read"))).collect()
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in contents(from) {
        fs::write(to.path().join(name), bytes).expect("copy");
    }
    to
}

/// A closed store with two snapshots, commands before, between and after them.
struct Fixture {
    dir: tempfile::TempDir,
    model: Sessions,
    older: u64,
    newer: u64,
    last: u64,
}

async fn commit(store: &PostcardStore<Sessions>, model: &mut Sessions, command: SessionsCommand) -> u64 {
    let receipt = store.commit(command.clone()).await.expect("commit");
    model.execute(command);
    receipt.seq.get()
}

async fn fixture(options: StoreOptions) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = Sessions::default();
    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir.path(), options).await.expect("open");
    for n in 0..120 {
        commit(&store, &mut model, create(n)).await;
    }
    let older = store.snapshot().await.expect("older snapshot").seq.get();
    for n in 0..40 {
        commit(&store, &mut model, delete(n * 3)).await;
        commit(&store, &mut model, create(1000 + n)).await;
    }
    let newer = store.snapshot().await.expect("newer snapshot").seq.get();
    let mut last = 0;
    for n in 0..30 {
        commit(&store, &mut model, delete(1000 + n * 2)).await;
        last = commit(&store, &mut model, create(2000 + n)).await;
    }
    drop(store);
    assert_eq!((older, newer, last), (120, 200, 260));
    assert_eq!(names(dir.path(), ".snapshot"), vec![snapshot_name(older), snapshot_name(newer)]);
    Fixture { dir, model, older, newer, last }
}

/// One way to damage a snapshot file's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

fn truncate(len: usize) -> impl Fn(&mut Vec<u8>) {
    move |bytes: &mut Vec<u8>| bytes.truncate(len)
}

fn flip(at: usize) -> impl Fn(&mut Vec<u8>) {
    move |bytes: &mut Vec<u8>| bytes[at] ^= 0x40
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_newest_snapshot_falls_back_to_the_older_one() {
    // Small segments: retention after the newer snapshot removes those the older one covers.
    let options = || StoreOptions::default().segment_size(2048);
    let f = fixture(options()).await;
    let first_segment = names(f.dir.path(), ".journal")[0].clone();
    assert_ne!(first_segment, "00000000000000000001.journal", "retention pruned the start of the journal");

    let newest = snapshot_name(f.newer);
    let len = fs::metadata(f.dir.path().join(&newest)).expect("metadata").len() as usize;
    let body = len - HEADER_LEN - FOOTER_LEN;
    assert!(body > 16, "the snapshot has a real body ({len} bytes)");
    let damages: Vec<(&str, Damage)> = vec![
        ("truncated to 0 bytes", Box::new(truncate(0))),
        ("truncated to 1 byte", Box::new(truncate(1))),
        ("truncated inside the header", Box::new(truncate(HEADER_LEN / 2))),
        ("truncated after the header", Box::new(truncate(HEADER_LEN))),
        ("truncated to header plus footer length", Box::new(truncate(HEADER_LEN + FOOTER_LEN))),
        ("truncated mid-body", Box::new(truncate(HEADER_LEN + body / 2))),
        ("footer removed", Box::new(truncate(len - FOOTER_LEN))),
        ("last byte removed", Box::new(truncate(len - 1))),
        ("byte flipped at the start of the body", Box::new(flip(HEADER_LEN))),
        ("byte flipped mid-body", Box::new(flip(HEADER_LEN + body / 2))),
        ("byte flipped at the end of the body", Box::new(flip(HEADER_LEN + body - 1))),
        ("byte flipped in the header's sequence number", Box::new(flip(16))),
        ("byte flipped in the header's format version", Box::new(flip(8))),
        ("byte flipped in the next record's position", Box::new(flip(30))),
        ("byte flipped in the header's reserved bytes", Box::new(flip(41))),
        ("byte flipped in the header checksum", Box::new(flip(45))),
        ("byte flipped in the footer's raw length", Box::new(flip(len - FOOTER_LEN))),
        ("byte flipped in the footer checksum", Box::new(flip(len - 1))),
        ("wrong magic", Box::new(|bytes: &mut Vec<u8>| bytes[0..8].copy_from_slice(b"NOTMAGIC"))),
        (
            "garbage appended",
            Box::new(|bytes: &mut Vec<u8>| bytes.extend_from_slice(b"trailing garbage after the footer")),
        ),
    ];

    for (what, damage) in damages {
        let copy = copy_dir(f.dir.path());
        let path = copy.path().join(&newest);
        let mut bytes = fs::read(&path).expect("read snapshot");
        damage(&mut bytes);
        fs::write(&path, &bytes).expect("damage snapshot");

        let store: PostcardStore<Sessions> =
            Store::open_with(PostcardSerializer, copy.path(), options()).await.unwrap_or_else(|e| {
                panic!("{what}: open must fall back to the older snapshot, got {e}");
            });
        let report = store.recovery();
        assert_eq!(report.snapshot.map(|s| s.get()), Some(f.older), "{what}: {report:?}");
        assert_eq!(report.snapshots_skipped.len(), 1, "{what}: {report:?}");
        assert!(report.snapshots_skipped[0].contains(&newest), "{what}: the reason names the file: {report:?}");
        assert_eq!(report.records_replayed, f.last - f.older, "{what}: {report:?}");
        assert_eq!(report.next_seq.get(), f.last + 1, "{what}");
        assert_eq!(*store.query().expect("query"), f.model, "{what}: state after fallback");
        drop(store);
        assert_eq!(fs::read(&path).expect("damaged file is kept"), bytes, "{what}: the damaged file is left alone");
    }

    // The undamaged directory loads the newest snapshot.
    let store: PostcardStore<Sessions> =
        Store::open_with(PostcardSerializer, f.dir.path(), options()).await.expect("open intact");
    assert_eq!(store.recovery().snapshot.map(|s| s.get()), Some(f.newer));
    assert!(store.recovery().snapshots_skipped.is_empty());
    assert_eq!(store.recovery().records_replayed, f.last - f.newer);
    assert_eq!(*store.query().expect("query"), f.model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_snapshots_damaged_with_a_complete_journal_replays_everything() {
    // One large segment: nothing is pruned, the journal starts at record 1.
    let f = fixture(StoreOptions::default()).await;
    assert_eq!(names(f.dir.path(), ".journal"), vec!["00000000000000000001.journal".to_string()]);
    let copy = copy_dir(f.dir.path());
    for (seq, at) in [(f.newer, HEADER_LEN + 3), (f.older, 20)] {
        let path = copy.path().join(snapshot_name(seq));
        let mut bytes = fs::read(&path).expect("read");
        bytes[at] ^= 0x01;
        fs::write(&path, bytes).expect("damage");
    }
    let store: PostcardStore<Sessions> =
        Store::open_with(PostcardSerializer, copy.path(), StoreOptions::default()).await.expect("open");
    let report = store.recovery();
    assert_eq!(report.snapshot, None, "{report:?}");
    assert_eq!(report.snapshots_skipped.len(), 2, "{report:?}");
    assert!(report.snapshots_skipped[0].contains(&snapshot_name(f.newer)), "newest first: {report:?}");
    assert!(report.snapshots_skipped[1].contains(&snapshot_name(f.older)), "{report:?}");
    assert_eq!(report.records_replayed, f.last);
    assert_eq!(*store.query().expect("query"), f.model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_snapshots_damaged_and_journal_pruned_is_no_usable_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let options = || StoreOptions::default().segment_size(1024).snapshots_retained(2);
    let mut model = Sessions::default();
    let mut snapshots = Vec::new();
    {
        let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
        for round in 0..5u64 {
            for i in 0..60 {
                commit(&store, &mut model, create(round * 100 + i)).await;
            }
            commit(&store, &mut model, delete(round * 100)).await;
            snapshots.push(store.snapshot().await.expect("snapshot").seq.get());
        }
        for i in 0..10 {
            commit(&store, &mut model, create(9000 + i)).await;
        }
    }
    let kept: Vec<String> = snapshots[3..].iter().map(|&s| snapshot_name(s)).collect();
    assert_eq!(names(dir, ".snapshot"), kept);
    let segments = names(dir, ".journal");
    assert_ne!(segments[0], "00000000000000000001.journal", "early segments were pruned: {segments:?}");

    // Sanity: intact, the store opens from the newest snapshot.
    {
        let store: PostcardStore<Sessions> =
            Store::open_with(PostcardSerializer, dir, options()).await.expect("open intact");
        assert_eq!(store.recovery().snapshot.map(|s| s.get()), Some(snapshots[4]));
        assert_eq!(*store.query().expect("query"), model);
    }

    // Damage both kept snapshots: one truncated mid-body, one with a flipped body byte.
    let newest = dir.join(&kept[1]);
    let mut bytes = fs::read(&newest).expect("read");
    let half = bytes.len() / 2;
    bytes.truncate(half);
    fs::write(&newest, bytes).expect("truncate");
    let older = dir.join(&kept[0]);
    let mut bytes = fs::read(&older).expect("read");
    bytes[HEADER_LEN + 1] ^= 0xff;
    fs::write(&older, bytes).expect("flip");

    let before = contents(dir);
    for attempt in 0..2 {
        match Store::<Sessions, PostcardSerializer>::open_with(PostcardSerializer, dir, options()).await {
            Err(airomem::Error::NoUsableSnapshot { skipped, source }) => {
                assert_eq!(skipped.len(), 2, "{skipped:?}");
                assert!(skipped[0].contains(&kept[1]), "newest first: {skipped:?}");
                assert!(skipped[1].contains(&kept[0]), "{skipped:?}");
                assert!(matches!(*source, JournalError::MissingRecords { .. }), "{source}");
            }
            Err(e) => panic!("attempt {attempt}: expected NoUsableSnapshot, got {e}"),
            Ok(store) => panic!("attempt {attempt}: opened with state {:?}", store.recovery()),
        }
        assert_eq!(contents(dir), before, "attempt {attempt}: a failed open changes no file");
    }
}

/// A snapshot proves that every command up to it was committed. When the only snapshot is
/// damaged and no journal segment is left (the journal was lost, or the store was built
/// from a snapshot alone, as an import does), falling back to the empty state would serve a
/// store without those commands and then journal new ones under their numbers. The open
/// must refuse instead, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_only_snapshot_without_a_journal_is_refused_not_emptied() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut model = Sessions::default();
    {
        let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, dir).await.expect("open");
        for i in 0..40 {
            commit(&store, &mut model, create(i)).await;
        }
        store.snapshot().await.expect("snapshot");
        store.close().await.expect("close");
    }
    for segment in names(dir, ".journal") {
        fs::remove_file(dir.join(segment)).expect("remove the journal");
    }
    fs::remove_file(dir.join("journal.head")).expect("remove the head");
    let snapshot = dir.join(snapshot_name(40));
    let mut bytes = fs::read(&snapshot).expect("read");
    bytes[HEADER_LEN + 1] ^= 0xff;
    fs::write(&snapshot, bytes).expect("flip");

    let before = contents(dir);
    match Store::<Sessions, PostcardSerializer>::open(PostcardSerializer, dir).await {
        Err(airomem::Error::NoUsableSnapshot { skipped, .. }) => {
            assert!(skipped[0].contains(&snapshot_name(40)), "{skipped:?}");
        }
        Ok(store) => panic!(
            "opened with {} sessions although the snapshot proves 40 commands were committed",
            store.query().expect("query").tokens.len()
        ),
        Err(other) => panic!("expected NoUsableSnapshot, got {other}"),
    }
    assert_eq!(contents(dir), before, "a refused open changed the directory");
}
