//! A real full disk: a 1 MiB tmpfs is filled by commits until they fail with a clear
//! storage-full error; the store then refuses further commits (poisoned); after space
//! returns (the tmpfs is grown), a reopened store holds every acknowledged command.
//!
//! Needs root to mount; elsewhere it prints why it is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use airomem::{Error, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Result<Mount, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if output.status.success() {
            Ok(Mount(at.to_path_buf()))
        } else {
            Err(format!("mount failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
        }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount to {size}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn create(n: u64) -> SessionsCommand {
    SessionsCommand::CreateSession { token: token(n), user_id: n }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_commits_clearly_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mount = match Mount::tmpfs(tmp.path(), "1m") {
        Ok(mount) => mount,
        Err(reason) => {
            eprintln!("skipped: a tmpfs is needed to fill a disk for real ({reason})");
            return;
        }
    };
    let dir = tmp.path().join("store");
    // Small segments so that rollovers (file creation, renames) also meet the full disk.
    let options = || StoreOptions::default().segment_size(64 * 1024);

    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, &dir, options()).await.expect("open");
    let mut model = Sessions::default();
    let mut failure = None;
    for n in 0..1_000_000 {
        match store.commit(create(n)).await {
            Ok(_) => airomem::State::execute(&mut model, create(n)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a 1 MiB disk fills up");
    assert!(failure.is_storage_full(), "the failing commit says the disk is full: {failure}");
    match store.commit(create(u64::MAX)).await {
        Err(Error::Poisoned { cause }) => assert!(cause.contains("space"), "the cause names the full disk: {cause}"),
        other => panic!("after a failed write the store must refuse commits, got {other:?}"),
    }
    assert_eq!(*store.query().expect("reads still work"), model, "reads show exactly the acknowledged state");
    drop(store);

    mount.resize("16m");
    let store: PostcardStore<Sessions> =
        Store::open_with(PostcardSerializer, &dir, options()).await.expect("reopen once space is back");
    assert_eq!(*store.query().expect("query"), model, "every acknowledged command survived the full disk");
    store.commit(create(u64::MAX - 1)).await.expect("commits work again");
    eprintln!(
        "disk full after {} commits; reopened with {} sessions, torn tail cut: {}",
        model.tokens.len(),
        store.query().expect("query").tokens.len() - 1,
        store.recovery().torn_tail.is_some()
    );
}
