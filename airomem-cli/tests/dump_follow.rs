//! `airomem dump --follow` as a process beside a running store: it prints the records that
//! were there, then those committed after it started, each batch once the next one makes it
//! final.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use airomem::{JsonSerializer, Store, StoreOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default)]
struct Notes {
    items: Vec<String>,
}

impl airomem::State for Notes {
    type Command = String;
    fn execute(&mut self, note: String) {
        self.items.push(note);
    }
}

/// Waits for a line containing `needle`, giving up after a generous timeout.
fn line_with(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?}: {e}"),
        }
    }
}

#[test]
fn dump_follow_prints_records_committed_after_it_started() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let options = StoreOptions::default().segment_size(1024);
    let store: Store<Notes, _> = runtime.block_on(Store::open_with(JsonSerializer, &dir, options)).expect("open");
    runtime.block_on(store.commit("before".to_string())).expect("commit");
    let mut child = Command::new(env!("CARGO_BIN_EXE_airomem"))
        .args(["dump", "--follow"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn airomem dump --follow");
    let stdout = child.stdout.take().expect("piped");
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert!(line_with(&lines, "\"before\"").contains("\"seq\":1,"));
    // Enough notes to roll the 1 KiB segment over several times while it follows.
    for i in 0..40 {
        runtime.block_on(store.commit(format!("after-{i}"))).expect("commit");
    }
    for i in 0..39 {
        let line = line_with(&lines, &format!("\"after-{i}\""));
        assert!(line.contains(&format!("\"seq\":{},", i + 2)), "{line}");
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    reader.join().expect("reader");
    runtime.block_on(store.close()).expect("close");
}
