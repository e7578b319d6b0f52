//! The `airomem` binary, run as a process on real stores written by the library: intact,
//! damaged in every way a file can be, torn by a crash, beside a running store, and not a
//! store at all. Every read-only subcommand leaves the directory byte-identical.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airomem::{Durability, JsonSerializer, PostcardSerializer, Store, StoreOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default)]
struct Notes {
    items: Vec<String>,
}

#[derive(Serialize, Deserialize)]
enum Note {
    Add(String),
    Fail,
}

impl airomem::State for Notes {
    type Command = Note;
    fn execute(&mut self, note: Note) {
        match note {
            Note::Add(text) => self.items.push(text),
            Note::Fail => panic!("{DELIBERATE}"),
        }
    }
}

fn airomem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airomem")).args(args).output().expect("run the airomem binary")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = airomem(args);
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every file under `dir`, by relative name, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).expect("list") {
            let entry = entry.expect("entry").path();
            if entry.is_dir() {
                pending.push(entry);
            } else {
                files.insert(
                    entry.strip_prefix(dir).expect("inside").to_path_buf(),
                    std::fs::read(&entry).expect("read"),
                );
            }
        }
    }
    files
}

/// A store with several segments, two snapshots, an atomic unit and a cancelled command:
/// 400 commands of which the last 50 are after the newest snapshot.
fn write_store(dir: &Path, json: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    quiet_deliberate_panics();
    let options = StoreOptions::default().segment_size(1024).durability(Durability::OsBuffered);
    runtime.block_on(async {
        macro_rules! fill {
            ($serializer:expr) => {{
                let store: Store<Notes, _> = Store::open_with($serializer, dir, options).await.expect("open");
                for i in 0..400 {
                    store.commit(Note::Add(format!("note {i}"))).await.expect("commit");
                    if i == 380 {
                        store.commit_all([Note::Add("a".into()), Note::Add("b".into())]).await.expect("unit");
                        assert!(store.commit(Note::Fail).await.is_err());
                    }
                    if i == 250 || i == 349 {
                        store.snapshot().await.expect("snapshot");
                    }
                }
                store.close().await.expect("close");
            }};
        }
        if json { fill!(JsonSerializer) } else { fill!(PostcardSerializer) }
    });
}

/// Keeps the deliberate panic of `Note::Fail` out of the test output, and only it.
fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message =
                payload.downcast_ref::<String>().map(String::as_str).or(payload.downcast_ref::<&str>().copied());
            if message != Some(DELIBERATE) {
                default(info);
            }
        }));
    });
}

const DELIBERATE: &str = "a deliberately failing note";

/// The files of `dir` (not its subdirectories) with extension `ext`, sorted by name.
fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    found
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, "journal")
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, "snapshot")
}

#[test]
fn an_intact_store_reads_clean_and_stays_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("notes");
    write_store(&dir, true);
    let before = tree(&dir);

    let out = info_once_free(&dir);
    assert!(out.contains("serializer  json"), "{out}");
    assert!(out.contains("snapshots   2"), "{out}");

    let (code, out, _) = run(&["info", "--json", path(&dir)]);
    assert_eq!(code, 0);
    let info: serde_json::Value = serde_json::from_str(&out).expect("info --json is JSON");
    assert_eq!(info["snapshots"].as_array().expect("snapshots").len(), 2);
    assert!(info["segments"].as_array().expect("segments").len() > 2, "the store spans several segments");
    assert_eq!(info["lock"]["held"], false);

    let (code, out, err) = run(&["verify", path(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("intact"), "{out}");

    let (code, out, err) = run(&["dump", path(&dir)]);
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    // Segments before the oldest kept snapshot are pruned; the dump starts where the journal does.
    let first = records[0]["seq"].as_u64().expect("seq");
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>(), "every record, in order");
    assert_eq!(*seqs.last().expect("records"), 404, "400 notes, a unit of 2, a cancelled command and its marker");
    let last = records.last().expect("records");
    assert_eq!(last["payload"], serde_json::json!({"Add": "note 399"}), "JSON payloads print as JSON");
    assert_eq!(last["kind"], "command");
    assert!(last["time"].as_str().expect("time").ends_with('Z'), "RFC 3339 in UTC");

    assert_eq!(tree(&dir), before, "a read-only subcommand changed the store");
}

#[test]
fn dump_marks_units_aborts_and_encodes_postcard_as_base64() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("notes");
    write_store(&dir, false);
    // Record 382 and 383 are the unit; 384 panicked; 385 is its abort marker.
    let (code, out, err) = run(&["dump", path(&dir), "--from", "381", "--to", "386"]);
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, [381, 382, 383, 384, 385, 386]);
    assert_eq!(records[1]["unit_continues"], true);
    assert_eq!(records[2]["unit_continues"], false);
    assert_eq!(records[3]["cancelled"], true);
    assert_eq!(records[4]["kind"], "abort");
    assert_eq!(records[4]["cancels"], 384);
    assert!(records[0]["payload_base64"].as_str().is_some_and(|p| !p.is_empty()), "postcard payloads are base64");
}

/// Each kind of damage, done to a copy of one intact store: `verify` exits 1 and names the
/// file whenever `Store::open` refuses the store, and never changes a byte.
#[test]
fn verify_finds_what_open_refuses_and_names_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pristine = tmp.path().join("pristine");
    write_store(&pristine, false);
    type Damage = fn(&Path) -> PathBuf;
    let damages: [(&str, Damage); 10] = [
        ("a flipped bit in an older segment", |dir| {
            let file = segments(dir)[0].clone();
            flip(&file, 200);
            file
        }),
        ("an older segment cut short", |dir| {
            let file = segments(dir)[0].clone();
            let len = std::fs::metadata(&file).expect("meta").len();
            std::fs::OpenOptions::new().write(true).open(&file).expect("open").set_len(len / 2).expect("cut");
            file
        }),
        ("a middle segment deleted (the report names the segment after the gap)", |dir| {
            let all = segments(dir);
            std::fs::remove_file(&all[1]).expect("remove");
            all[2].clone()
        }),
        ("the newest segment deleted", |dir| {
            let file = segments(dir).last().expect("segments").clone();
            std::fs::remove_file(&file).expect("remove");
            file
        }),
        ("a segment header that is not ours", |dir| {
            let file = segments(dir)[1].clone();
            flip(&file, 0);
            file
        }),
        ("a segment of a newer format version", |dir| {
            let file = segments(dir)[1].clone();
            flip(&file, 8);
            file
        }),
        ("a flipped bit in the newest snapshot", |dir| {
            let file = snapshots(dir).last().expect("snapshots").clone();
            let len = std::fs::metadata(&file).expect("meta").len();
            flip(&file, len / 2);
            file
        }),
        ("both snapshots damaged", |dir| {
            for file in snapshots(dir) {
                flip(&file, 40);
            }
            snapshots(dir)[0].clone()
        }),
        ("a damaged journal head", |dir| {
            let file = dir.join("journal.head");
            flip(&file, 3);
            file
        }),
        ("a flipped bit in a record of the newest segment, before its last batch", |dir| {
            let file = segments(dir).last().expect("segments").clone();
            flip(&file, 100);
            file
        }),
    ];
    for (what, damage) in damages {
        let dir = tmp.path().join("damaged");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clean");
        }
        copy(&pristine, &dir);
        let file = damage(&dir);
        let before = tree(&dir);
        let (code, out, err) = run(&["verify", path(&dir)]);
        assert_eq!(code, 1, "{what}: verify must exit 1\n{out}{err}");
        let name = file.file_name().expect("name").to_str().expect("utf-8");
        assert!(out.contains(name), "{what}: the report must name {name}\n{out}");
        let (code, out, _) = run(&["verify", "--json", path(&dir)]);
        assert_eq!(code, 1, "{what}");
        let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(report["intact"], false, "{what}");
        assert_eq!(tree(&dir), before, "{what}: verify changed the store");
        let (code, _, _) = run(&["info", path(&dir)]);
        assert!(code == 0 || code == 1, "{what}: info must report, not fail");
        assert_eq!(tree(&dir), before, "{what}: info changed the store");
    }
}

/// For every damage above that makes `Store::open` refuse: verify had reported it. (Kept
/// apart so the refusal itself is checked on a store `verify` was just run on.)
/// Damage in the part of the journal an open reads (after the newest snapshot) makes
/// `Store::open` refuse the store; `verify` reports each of them.
#[test]
fn open_refusals_are_all_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pristine = tmp.path().join("pristine");
    write_store(&pristine, false);
    type Damage = fn(&[PathBuf]);
    let damages: [(&str, Damage); 4] = [
        ("the newest segment's magic", |s| flip(&s[s.len() - 1], 0)),
        ("the newest segment's format version", |s| flip(&s[s.len() - 1], 8)),
        ("a record of the segment before it", |s| flip(&s[s.len() - 2], 100)),
        ("the segment before it deleted", |s| std::fs::remove_file(&s[s.len() - 2]).expect("remove")),
    ];
    for (what, damage) in damages {
        let dir = tmp.path().join("damaged");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clean");
        }
        copy(&pristine, &dir);
        damage(&segments(&dir));
        assert!(open_refuses(&dir), "{what}: the open must refuse this store");
        let (code, out, err) = run(&["verify", path(&dir)]);
        assert_eq!(code, 1, "{what}: open refuses, verify must report it\n{out}{err}");
    }
}

fn open_refuses(dir: &Path) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let copy_dir = dir.with_extension("opened");
    if copy_dir.exists() {
        std::fs::remove_dir_all(&copy_dir).expect("clean");
    }
    copy(dir, &copy_dir);
    runtime.block_on(async {
        match Store::<Notes, PostcardSerializer>::open(PostcardSerializer, &copy_dir).await {
            Ok(store) => {
                store.close().await.expect("close");
                false
            }
            Err(_) => true,
        }
    })
}

#[test]
fn a_torn_tail_is_reported_as_such_and_quarantine_is_managed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("notes");
    write_store(&dir, false);
    let newest = segments(&dir).last().expect("segments").clone();
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes.extend_from_slice(&[0x5A; 11]);
    std::fs::write(&newest, &bytes).expect("tear");
    let before = tree(&dir);
    let (code, out, err) = run(&["verify", path(&dir)]);
    assert_eq!(code, 0, "a torn tail is not damage\n{out}{err}");
    assert!(out.contains("torn tail"), "{out}");
    let (code, _, err) = run(&["dump", path(&dir)]);
    assert_eq!(code, 0);
    assert!(err.contains("torn write"), "{err}");
    assert_eq!(tree(&dir), before);

    // An open cuts it into quarantine; the tool lists and removes it, and only it.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store: Store<Notes, PostcardSerializer> = Store::open(PostcardSerializer, &dir).await.expect("open");
        assert!(store.recovery().torn_tail.is_some());
        store.close().await.expect("close");
    });
    let (code, out, _) = run(&["quarantine", "list", path(&dir)]);
    assert_eq!(code, 0);
    assert!(out.contains("1 quarantine file"), "{out}");
    let segment_name = newest.file_name().expect("name").to_str().expect("utf-8");
    let (code, _, err) = run(&["quarantine", "remove", path(&dir), segment_name]);
    assert_eq!(code, 2, "a segment is not a quarantine file");
    assert!(err.contains("not a quarantine file"), "{err}");
    assert!(newest.exists());
    let (code, out, _) = run(&["quarantine", "remove", path(&dir), "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains("removed"), "{out}");
    let (_, out, _) = run(&["quarantine", "list", path(&dir)]);
    assert!(out.contains("0 quarantine file"), "{out}");
}

#[test]
fn bad_input_gets_a_clear_message_and_exit_code_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing");
    for command in ["info", "verify", "dump"] {
        let (code, _, err) = run(&[command, path(&missing)]);
        assert_eq!(code, 2, "{command} on a missing directory");
        assert!(err.contains("missing") && err.contains("no airomem store"), "{command}: {err}");
    }
    assert!(!missing.exists(), "nothing was created");
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, "hello").expect("write");
    let (code, _, err) = run(&["verify", path(&file)]);
    assert_eq!(code, 2);
    assert!(err.contains("file.txt"), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let (code, _, err) = run(&["info", path(&empty)]);
    assert_eq!(code, 2);
    assert!(err.contains("no airomem store"), "{err}");
    let (code, _, _) = run(&["frobnicate"]);
    assert_eq!(code, 2, "usage errors exit 2");
    let (code, _, _) = run(&["dump"]);
    assert_eq!(code, 2);
}

/// Beside a store that is committing: `info` names this process as the holder, and every
/// `verify` run in the middle of the commits finds the store intact (a batch caught half
/// written is a torn tail, not damage).
#[test]
fn safe_beside_a_live_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("notes");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let store: Store<Notes, PostcardSerializer> = runtime
        .block_on(Store::open_with(PostcardSerializer, &dir, StoreOptions::default().segment_size(64 * 1024)))
        .expect("open");
    let writer = {
        let store = store.clone();
        runtime.spawn(async move {
            for i in 0..u64::MAX {
                if store.commit(Note::Add(format!("live {i}"))).await.is_err() {
                    return i;
                }
            }
            0
        })
    };
    runtime.block_on(async {
        while store.stats().commits < 100 {
            tokio::task::yield_now().await;
        }
    });
    let (code, out, _) = run(&["info", path(&dir)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("open in process {}", std::process::id())), "{out}");
    for _ in 0..20 {
        let (code, out, err) = run(&["verify", path(&dir)]);
        assert_eq!(code, 0, "verify beside a live store:\n{out}{err}");
    }
    runtime.block_on(store.close()).expect("close");
    let committed = runtime.block_on(writer).expect("writer");
    assert!(committed >= 100);
    info_once_free(&dir);
}

/// `airomem info` of a closed store, once it reports the lock free. A process that starts
/// children (this test binary, running tests in parallel) shares each open file with a child
/// between its fork and its exec; the store's lock is then held by that child's copy for
/// that instant after the store closed, and `info` rightly says so. Bounded by attempts,
/// not by time.
fn info_once_free(dir: &Path) -> String {
    for _ in 0..100 {
        let (code, out, err) = run(&["info", path(dir)]);
        assert_eq!(code, 0, "{out}{err}");
        if out.contains("lock        free") {
            return out;
        }
    }
    panic!("the lock of the closed store at {} is still reported held", dir.display());
}

fn flip(file: &Path, offset: u64) {
    let mut bytes = std::fs::read(file).expect("read");
    bytes[offset as usize] ^= 0x10;
    std::fs::write(file, bytes).expect("write");
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry").path();
        if entry.is_file() {
            std::fs::copy(&entry, to.join(entry.file_name().expect("name"))).expect("copy");
        }
    }
}

/// A store that keeps its history: `archive prune --before N` removes only archived files,
/// and only those no read at N or later needs: every such point reads the same state as
/// before the prune, earlier points are `HistoryGone`, and the live files are untouched.
#[test]
fn archive_prune_keeps_what_later_reads_need() {
    use airomem::{At, Error, Past, Seq};
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("notes");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let options = StoreOptions::default().segment_size(512).durability(Durability::OsBuffered).keep_history(true);
        let store: Store<Notes, PostcardSerializer> =
            Store::open_with(PostcardSerializer, &dir, options).await.expect("open");
        for i in 0..300 {
            store.commit(Note::Add(format!("n{i}"))).await.expect("commit");
            if i % 50 == 49 {
                store.snapshot().await.expect("snapshot");
            }
        }
        store.close().await.expect("close");
    });
    let read =
        |seq: u64| Past::<Notes>::open(PostcardSerializer, &dir, At::Seq(Seq(seq))).map(|p| p.state().items.len());
    let before: Vec<usize> = (0..=300).map(|s| read(s).expect("all history is kept")).collect();
    let (code, out, _) = run(&["archive", "list", path(&dir)]);
    assert_eq!(code, 0);
    assert!(out.contains(".snapshot") && out.contains(".journal"), "{out}");

    let live: BTreeMap<PathBuf, Vec<u8>> =
        tree(&dir).into_iter().filter(|(p, _)| !p.starts_with(airomem::ARCHIVE_DIR)).collect();
    let (code, out, err) = run(&["archive", "prune", path(&dir), "--before", "170"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("removed"), "{out}");
    let live_after: BTreeMap<PathBuf, Vec<u8>> =
        tree(&dir).into_iter().filter(|(p, _)| !p.starts_with(airomem::ARCHIVE_DIR)).collect();
    assert_eq!(live_after, live, "prune touched the store's own files");
    // Snapshots sit at 50, 100, ...: the base for reads at 170 is the one at 150.
    for seq in 150..=300u64 {
        assert_eq!(read(seq).expect("kept"), before[seq as usize], "after #{seq}");
    }
    for seq in [0u64, 1, 99, 149] {
        assert!(matches!(read(seq), Err(Error::HistoryGone { .. })), "#{seq} must be gone");
    }
}

/// Beside a store that rolls its journal over every few commits, snapshots every few dozen
/// and removes what the snapshots cover: `verify` and `info` run again and again in the
/// middle of it all and exit 0 every time, `verify` finding the store intact; `dump` too,
/// unless retention removed a segment before the dump reached it, which it then says.
#[test]
fn read_only_commands_beside_rollovers_and_retention_always_succeed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("notes");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let options = StoreOptions::default()
        .segment_size(1024)
        .durability(Durability::OsBuffered)
        .snapshot_every_commands(40)
        .snapshots_retained(2);
    let store: Store<Notes, PostcardSerializer> =
        runtime.block_on(Store::open_with(PostcardSerializer, &dir, options)).expect("open");
    let writer = {
        let store = store.clone();
        runtime.spawn(async move {
            for i in 0..u64::MAX {
                // About 200 bytes: a 1 KiB segment holds four or five.
                if store.commit(Note::Add(format!("{i:0>200}"))).await.is_err() {
                    return i;
                }
            }
            0
        })
    };
    let mut failures = Vec::new();
    let mut check = |args: &[&str], runs: usize| {
        for _ in 0..runs {
            let (code, out, err) = run(args);
            // A dump reads segment after segment as it prints: one that retention removed
            // before the dump reached it cannot be shown, and the dump must say so.
            let removed = args[0] == "dump" && err.contains("was removed while it was being read");
            if (code != 0 && !removed) || (args[0] == "verify" && !out.contains("intact")) {
                failures.push(format!("`{}` exited {code}:\n{out}{err}", args.join(" ")));
            }
        }
    };
    check(&["verify", path(&dir)], 1000);
    check(&["info", path(&dir)], 200);
    check(&["dump", path(&dir)], 200);
    runtime.block_on(store.close()).expect("close");
    let committed = runtime.block_on(writer).expect("writer");
    assert!(committed > 0);
    assert!(failures.is_empty(), "{} runs failed; the first:\n{}", failures.len(), failures[0]);
}
