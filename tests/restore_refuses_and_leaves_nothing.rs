//! `backup::restore` refuses an existing store, a damaged backup (a flipped byte in each
//! file, a missing file, a missing or damaged manifest, an unlisted file), a newer schema and
//! a newer format, and leaves nothing behind when it refuses: the target is as it was and no
//! temporary directory remains beside it. `backup::verify` refuses the same backups.
#![cfg(feature = "snapshot")]

use std::path::{Path, PathBuf};

use airomem::backup::{self, MANIFEST_FILE};
use airomem::{BackupProblem, Error, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::Log;

fn options() -> StoreOptions {
    StoreOptions::default().segment_size(4 * 1024).snapshot_every_commands(100)
}

/// A store of 600 commands and a backup of it.
async fn store_and_backup(root: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join("store");
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, &dir, options()).await.expect("open");
    for i in 0..600 {
        store.commit(i).await.expect("commit");
    }
    let dest = root.join("backup");
    let report = store.backup(&dest).await.expect("backup");
    assert_eq!(report.seq.0, 600);
    assert!(report.files.len() >= 2, "a snapshot and the segment after it: {:?}", report.files);
    store.close().await.expect("close");
    (dir, dest)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).expect("list").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    names.sort();
    names
}

/// Restores `backup` into a fresh target under `root`, expects `want`, and checks that
/// nothing was left: no target, no temporary directory.
fn refused(root: &Path, backup: &Path, want: impl Fn(&BackupProblem) -> bool) {
    let before = names(root);
    let target = root.join("target");
    let verified = backup::verify(backup);
    let restored = backup::restore(backup, &target, None);
    for result in [verified.map(|_| ()), restored.map(|_| ())] {
        match result {
            Err(Error::Backup { problem, .. }) if want(&problem) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(!target.exists(), "a refused restore created its target");
    assert_eq!(names(root), before, "a refused restore left something beside its target");
}

fn flip_byte(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).expect("read");
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x40;
    std::fs::write(file, bytes).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_damaged_backups_and_existing_stores_and_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, good) = store_and_backup(tmp.path()).await;
    let manifest = backup::verify(&good).expect("the backup verifies");

    // A flipped byte in the middle of each file, one file at a time.
    for file in &manifest.files {
        let work = tempfile::tempdir_in(tmp.path()).expect("tempdir");
        let damaged = work.path().join("backup");
        copy_dir(&good, &damaged);
        flip_byte(&damaged.join(&file.name), file.len as usize / 2);
        refused(work.path(), &damaged, |p| matches!(p, BackupProblem::FileDamaged { name, .. } if *name == file.name));
    }
    // A missing file.
    let work = tempfile::tempdir_in(tmp.path()).expect("tempdir");
    let damaged = work.path().join("backup");
    copy_dir(&good, &damaged);
    let gone = &manifest.files[manifest.files.len() / 2].name;
    std::fs::remove_file(damaged.join(gone)).expect("remove");
    refused(work.path(), &damaged, |p| matches!(p, BackupProblem::FileMissing { name } if name == gone));
    // No manifest: an unfinished backup.
    let work = tempfile::tempdir_in(tmp.path()).expect("tempdir");
    let damaged = work.path().join("backup");
    copy_dir(&good, &damaged);
    std::fs::remove_file(damaged.join(MANIFEST_FILE)).expect("remove");
    refused(work.path(), &damaged, |p| matches!(p, BackupProblem::NoManifest));
    // A damaged manifest.
    let work = tempfile::tempdir_in(tmp.path()).expect("tempdir");
    let damaged = work.path().join("backup");
    copy_dir(&good, &damaged);
    flip_byte(&damaged.join(MANIFEST_FILE), 20);
    refused(work.path(), &damaged, |p| matches!(p, BackupProblem::ManifestDamaged { .. }));
    // A file the manifest does not list.
    let work = tempfile::tempdir_in(tmp.path()).expect("tempdir");
    let damaged = work.path().join("backup");
    copy_dir(&good, &damaged);
    std::fs::write(damaged.join("stray"), b"x").expect("write");
    refused(work.path(), &damaged, |p| matches!(p, BackupProblem::FileUnlisted { .. }));

    // A newer schema than the restoring side knows (Log is schema 1).
    let before = names(tmp.path());
    let target = tmp.path().join("target");
    match backup::restore(&good, &target, Some(0)) {
        Err(Error::Backup { problem: BackupProblem::SchemaNewer { found: 1, supported: 0 }, .. }) => {}
        other => panic!("expected SchemaNewer, got {other:?}"),
    }
    assert!(!target.exists());
    assert_eq!(names(tmp.path()), before);

    // An existing store: refused, and the store's files are untouched.
    let store_files = names(&dir);
    match backup::restore(&good, &dir, None) {
        Err(Error::Backup { problem: BackupProblem::TargetNotEmpty, .. }) => {}
        other => panic!("expected TargetNotEmpty, got {other:?}"),
    }
    assert_eq!(names(&dir), store_files);
    assert_eq!(names(tmp.path()), before, "nothing beside the existing store either");

    // A backup into a directory that is not empty is refused, and leaves it as it was.
    match tokio::task::spawn_blocking({
        let (dir, dest) = (dir.clone(), dir.clone());
        move || backup::take_beside(&dir, &dest)
    })
    .await
    .expect("join")
    {
        Err(Error::Backup { problem: BackupProblem::DestinationNotEmpty, .. }) => {}
        other => panic!("expected DestinationNotEmpty, got {other:?}"),
    }
    assert_eq!(names(&dir), store_files);

    // The good backup restores into an empty directory that exists.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    backup::restore(&good, &empty, Some(1)).expect("restore into an empty directory");
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, &empty, options()).await.expect("open");
    assert_eq!(store.query().expect("query").values, (0..600).collect::<Vec<u64>>());
}

#[test]
fn a_newer_backup_format_is_refused_before_its_fields_are_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let body = "airomem-backup 2\nwhatever comes next\n";
    let text = format!("{body}crc {:08x}\n", crc32c(body.as_bytes()));
    std::fs::write(tmp.path().join(MANIFEST_FILE), text).expect("write");
    match backup::verify(tmp.path()) {
        Err(Error::Backup { problem: BackupProblem::FormatNewer { found: 2, supported: 1 }, .. }) => {}
        other => panic!("expected FormatNewer, got {other:?}"),
    }
}

/// crc32c (Castagnoli), bit by bit: the test's own, so it checks the manifest's checksum
/// independently of the crate the library uses.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

/// A restore killed before its rename leaves its temporary directory; a later restore by a
/// process with the same id (containers often reuse it) replaces it rather than failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_temporary_directory_of_this_process_id_is_replaced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, good) = store_and_backup(tmp.path()).await;
    let target = tmp.path().join("restored");
    let stale = tmp.path().join(format!(".restored.restoring-{}", std::process::id()));
    std::fs::create_dir(&stale).expect("mkdir");
    std::fs::write(stale.join("00000000000000000001.journal"), b"half a copy").expect("write");
    backup::restore(&good, &target, Some(1)).expect("restore");
    assert!(!stale.exists(), "the stale directory became the store or went");
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, &target, options()).await.expect("open");
    assert!(!store.query().expect("query").values.is_empty());
    store.close().await.expect("close");
}
