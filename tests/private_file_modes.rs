//! Files the store creates are private by default (0600, directory 0700) even under
//! `umask 000`, and the modes are configurable.
//!
//! The umask is set by running this test binary again under `sh -c 'umask 000; exec ...'`;
//! the `modes_child_entry` test then plays the child.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use airomem::{PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand};

const CHILD_DIR: &str = "MODES_CHILD_DIR";
const CHILD_CUSTOM: &str = "MODES_CHILD_CUSTOM";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// Opens a store in the given directory, commits, snapshots (with the feature) and exits.
#[test]
#[ignore = "the child process of another test in this file, which starts it with --ignored"]
fn modes_child_entry() {
    let dir = std::env::var(CHILD_DIR).expect("started by the parent test, which sets the directory");
    let options = if std::env::var(CHILD_CUSTOM).is_ok() {
        StoreOptions::default().permissions(0o750, 0o640)
    } else {
        StoreOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store: PostcardStore<Sessions> =
            Store::open_with(PostcardSerializer, Path::new(&dir), options).await.expect("open");
        store.commit(SessionsCommand::CreateSession { token: "secret".into(), user_id: 1 }).await.expect("commit");
        #[cfg(feature = "snapshot")]
        store.snapshot().await.expect("snapshot");
    });
}

fn run_child_under_umask_000(dir: &Path, custom: bool) {
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"umask 000 && exec "$0" modes_child_entry --exact --ignored --test-threads=1"#)
        .arg(exe)
        .env(CHILD_DIR, dir);
    if custom {
        command.env(CHILD_CUSTOM, "1");
    }
    let status = command.stdout(std::process::Stdio::null()).status().expect("run child");
    assert!(status.success(), "child failed");
}

fn assert_modes(dir: &Path, dir_mode: u32, file_mode: u32) {
    assert_eq!(mode(dir), dir_mode, "directory mode");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), file_mode, "mode of {}", path.display());
        files += 1;
    }
    // The lock, a segment, and with the feature a snapshot.
    assert!(files >= 2, "the store created its files");
}

#[test]
fn files_are_private_under_umask_000() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("a/b/store");
    run_child_under_umask_000(&dir, false);
    assert_modes(&dir, 0o700, 0o600);
    assert_eq!(mode(&tmp.path().join("a")), 0o700, "missing parents are private too");
}

#[test]
fn modes_are_configurable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    run_child_under_umask_000(&dir, true);
    assert_modes(&dir, 0o750, 0o640);
}
