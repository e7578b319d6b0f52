//! What `stats()` says about memory: the state's serialized size as the last snapshot
//! measured it, and the process's resident memory where the platform tells it.
#![cfg(feature = "snapshot")]

use airomem::{JsonSerializer, JsonStore, Store};
use airomem_workspace::Log;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_the_serialized_size_the_last_snapshot_measured() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: JsonStore<Log> = Store::open(JsonSerializer, tmp.path()).await.expect("open");
    for value in 0..1_000 {
        store.commit(value * 1_000_003).await.expect("commit");
    }
    assert_eq!(store.stats().last_snapshot_raw_bytes, 0, "no snapshot yet, so no measure");

    let info = store.snapshot().await.expect("snapshot");
    let stats = store.stats();
    assert_eq!(stats.last_snapshot_raw_bytes, info.raw_len);
    // The figure is the state's encoding, byte for byte, not its compressed file.
    let encoded = serde_json::to_vec(&*store.query().expect("query")).expect("encode");
    assert_eq!(info.raw_len, encoded.len() as u64);
    assert_eq!(stats.last_snapshot_file_bytes, info.file_len);

    // A later snapshot replaces the figure.
    for value in 0..500 {
        store.commit(value).await.expect("commit");
    }
    let second = store.snapshot().await.expect("second snapshot");
    assert!(second.raw_len > info.raw_len);
    assert_eq!(store.stats().last_snapshot_raw_bytes, second.raw_len);
    store.close().await.expect("close");
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_memory_is_reported_on_linux_and_follows_what_the_process_holds() {
    const BALLAST: usize = 64 * 1024 * 1024;
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: JsonStore<Log> = Store::open(JsonSerializer, tmp.path()).await.expect("open");
    let before = store.stats().resident_bytes.expect("Linux reports resident memory");
    // A test binary with a runtime and a store is more than a megabyte and far less than a
    // terabyte.
    assert!((1 << 20..1 << 40).contains(&before), "resident {before} bytes");

    // Written to, so that every page is really resident.
    let ballast = vec![0x5au8; BALLAST];
    let after = store.stats().resident_bytes.expect("still reported");
    assert!(
        after >= before + (BALLAST as u64) * 3 / 4,
        "resident went from {before} to {after} bytes after {BALLAST} more were touched"
    );
    assert_eq!(ballast.iter().map(|&b| u64::from(b)).sum::<u64>(), 0x5a * BALLAST as u64);
    store.close().await.expect("close");
}
