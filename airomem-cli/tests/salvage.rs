//! `airomem salvage DIR DEST`, run as a process: the new store holds exactly the intact
//! prefix and opens with the application's own types, the damaged directory is
//! byte-identical afterwards, a non-empty DEST is refused, and the report names the first
//! lost record, the damaged segment and offset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airomem::{PostcardSerializer, Store, StoreOptions};
use serde::{Deserialize, Serialize};

mod common;
use common::run;

#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq)]
struct Numbers(Vec<u64>);

impl airomem::State for Numbers {
    type Command = u64;
    fn execute(&mut self, n: u64) {
        self.0.push(n);
    }
}

fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).expect("list") {
            let entry = entry.expect("entry").path();
            if entry.is_dir() {
                pending.push(entry);
            } else {
                files.insert(entry.clone(), std::fs::read(&entry).expect("read"));
            }
        }
    }
    files
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

/// 200 commands (value = sequence number), a snapshot after 80, segments of 1 KiB.
fn write_store(dir: &Path) {
    runtime().block_on(async {
        let store: Store<Numbers, _> =
            Store::open_with(PostcardSerializer, dir, StoreOptions::default().segment_size(1024)).await.expect("open");
        for n in 1..=200 {
            store.commit(n).await.expect("commit");
            if n == 80 {
                store.snapshot().await.expect("snapshot");
            }
        }
        store.close().await.expect("close");
    });
}

/// The segment holding record `seq` and the record's offset and end (parsed by the layout:
/// 32-byte header, 25-byte record headers).
fn locate(dir: &Path, seq: u64) -> (PathBuf, usize, usize) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    names.sort();
    for path in names {
        let bytes = std::fs::read(&path).expect("read");
        let mut at = 32;
        while at + 25 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
            let found = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8"));
            if len == 0 && found == 0 {
                break;
            }
            if found == seq {
                return (path, at, at + 25 + len);
            }
            at += 25 + len;
        }
    }
    panic!("no record #{seq}");
}

fn open(dir: &Path) -> Vec<u64> {
    runtime().block_on(async {
        let store: Store<Numbers, _> = Store::open(PostcardSerializer, dir).await.expect("open the salvaged store");
        let values = store.query().expect("query").0.clone();
        store.close().await.expect("close");
        values
    })
}

#[test]
fn salvage_rebuilds_the_intact_prefix_reports_what_it_left_and_changes_nothing_in_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    write_store(&dir);
    let (segment, offset, end) = locate(&dir, 150);
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[end - 1] ^= 0x08;
    std::fs::write(&segment, bytes).expect("damage");
    let before = tree(&dir);

    let dest = tmp.path().join("salvaged");
    let (code, out, err) = run(&["salvage", dir.to_str().expect("utf-8"), dest.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "records were left behind: {out}{err}");
    assert!(out.contains("every record through #149"), "{out}");
    assert!(out.contains("LEFT BEHIND every record from #150 on"), "{out}");
    assert!(out.contains(&format!("{} at byte {offset}", segment.display())), "{out}");
    assert_eq!(tree(&dir), before, "the damaged store is byte-identical");
    assert_eq!(open(&dest), (1..=149).collect::<Vec<_>>());

    // A second salvage into the now non-empty DEST is refused and writes nothing.
    let after = tree(&dest);
    let (code, _, err) = run(&["salvage", dir.to_str().expect("utf-8"), dest.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(tree(&dest), after);
    assert_eq!(tree(&dir), before);
}

#[test]
fn salvage_of_an_intact_store_copies_it_whole_and_reports_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    write_store(&dir);
    let dest = tmp.path().join("copy");
    let (code, out, err) = run(&["salvage", "--json", dir.to_str().expect("utf-8"), dest.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["last"], 200);
    assert_eq!(report["snapshot"], 80);
    assert!(report["left_behind"].is_null());
    assert_eq!(open(&dest), (1..=200).collect::<Vec<_>>());
}
