//! The maintenance example (`examples/store_tool.rs`) run as its users run it: fill a store
//! that keeps its history, read it as it was after a given command, export that point,
//! import it into a new store, and compact the original; each step's output is checked
//! against what the store must hold.
#![cfg(feature = "snapshot")]

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn tool(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(airomem_workspace::example_binary("store_tool"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start store_tool");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input).expect("feed stdin");
    }
    let out = child.wait_with_output().expect("store_tool ran");
    assert!(
        out.status.success(),
        "store_tool {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn text(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

#[test]
fn fill_show_export_import_compact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    tool(&["fill", path(&dir)], None);

    // 5 rounds of 20 opens and 7 closes: 135 commands. After command 30, round 0 is done
    // (20 open, 7 closed) and 3 sessions of round 1 are open.
    let shown = text(&tool(&["show", path(&dir), "--at-seq", "30"], None));
    assert!(shown.starts_with("after command #30 "), "{shown}");
    assert!(shown.contains(": 16 open session(s)"), "{shown}");
    let latest = text(&tool(&["show", path(&dir)], None));
    assert!(latest.contains("after command #135 ") && latest.contains(": 65 open session(s)"), "{latest}");

    let export = tool(&["export", path(&dir), "--at-seq", "30"], None).stdout;
    let document: serde_json::Value = serde_json::from_slice(&export).expect("an export is JSON");
    assert_eq!(document["seq"], 30);
    let copy = tmp.path().join("copy");
    tool(&["import", path(&copy)], Some(&export));
    let imported = text(&tool(&["show", path(&copy)], None));
    assert!(imported.starts_with("after command #30 ") && imported.contains(": 16 open session(s)"), "{imported}");

    let compacted = tool(&["compact", path(&dir)], None);
    let said = String::from_utf8_lossy(&compacted.stderr);
    assert!(said.contains("snapshot after command #135"), "{said}");
    // History was archived, not lost: the old point still reads the same.
    let again = text(&tool(&["show", path(&dir), "--at-seq", "30"], None));
    assert_eq!(again, shown);
}
