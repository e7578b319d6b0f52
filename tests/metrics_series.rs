//! A store's series as a Prometheus recorder renders them: two labelled stores in one
//! process told apart, a store with metrics turned off left out, and the health gauge falling
//! to 0 when the store stops accepting commits. One recorder serves the whole process, so
//! every test here shares it and reads only its own store's label.

use std::sync::{Arc, OnceLock};

use airomem::{Error, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::Log;
use airomem_workspace::hooked::{Hooked, PanicOnWrite};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

type LogStore = PostcardStore<Log>;

fn recorder() -> &'static PrometheusHandle {
    static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();
    RECORDER.get_or_init(|| PrometheusBuilder::new().install_recorder().expect("the only recorder of this process"))
}

/// The value of `name{store="<label>"}` in the current scrape.
fn series(name: &str, label: &str) -> Option<f64> {
    let prefix = format!("{name}{{store=\"{label}\"}} ");
    recorder().render().lines().find_map(|line| line.strip_prefix(&prefix)).map(|v| v.parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_labelled_stores_feed_their_own_series() {
    recorder();
    let tmp = tempfile::tempdir().expect("tempdir");
    let open = |dir: &str, label: &str| {
        let options = StoreOptions::default().metrics_label(label);
        Store::open_with(PostcardSerializer, tmp.path().join(dir), options)
    };
    let left: LogStore = open("left", "two-left").await.expect("open left");
    let right: LogStore = open("right", "two-right").await.expect("open right");
    for value in 0..3 {
        left.commit(value).await.expect("commit");
    }
    for value in 0..5 {
        right.commit(value).await.expect("commit");
    }
    left.commit_all([10, 11, 12, 13]).await.expect("unit");

    assert_eq!(series("airomem_commits_total", "two-left"), Some(7.0), "each command of a unit counts");
    assert_eq!(series("airomem_commit_seconds_count", "two-left"), Some(4.0), "a unit is one commit call");
    assert_eq!(series("airomem_commits_total", "two-right"), Some(5.0));
    assert_eq!(series("airomem_commit_seconds_count", "two-right"), Some(5.0));
    assert_eq!(series("airomem_batch_commands_sum", "two-left"), Some(7.0));
    let stats = left.stats();
    assert_eq!(series("airomem_batch_commands_count", "two-left"), Some(stats.batches as f64));
    assert_eq!(series("airomem_journal_bytes_total", "two-left"), Some(stats.journal_bytes as f64));
    assert_eq!(series("airomem_journal_segments", "two-left"), Some(stats.segments as f64));
    assert_eq!(series("airomem_healthy", "two-left"), Some(1.0));
    assert!(series("airomem_recovery_seconds", "two-right").is_some());

    let info = left.snapshot().await.expect("snapshot");
    assert_eq!(series("airomem_state_bytes", "two-left"), Some(info.raw_len as f64));
    assert_eq!(series("airomem_snapshot_bytes", "two-left"), Some(info.file_len as f64));
    assert_eq!(series("airomem_snapshot_seconds_count", "two-left"), Some(1.0));
    assert_eq!(series("airomem_snapshot_pause_seconds_count", "two-left"), Some(1.0));
    assert_eq!(series("airomem_state_bytes", "two-right"), Some(0.0), "no snapshot of the other store yet");
    left.close().await.expect("close");
    right.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_metrics_off_registers_nothing() {
    recorder();
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().metrics(false).metrics_label("switched-off");
    let store: LogStore = Store::open_with(PostcardSerializer, tmp.path(), options).await.expect("open");
    store.commit(1).await.expect("commit");
    let scrape = recorder().render();
    assert!(!scrape.contains("switched-off"), "{scrape}");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_gauge_falls_to_zero_when_commits_are_refused() {
    recorder();
    let tmp = tempfile::tempdir().expect("tempdir");
    let switch = Arc::new(PanicOnWrite::default());
    let options =
        StoreOptions::default().storage(Arc::new(Hooked::new(Arc::clone(&switch)))).metrics_label("falls-ill");
    let store: LogStore = Store::open_with(PostcardSerializer, tmp.path(), options).await.expect("open");
    store.commit(1).await.expect("commit");
    assert_eq!(series("airomem_healthy", "falls-ill"), Some(1.0));
    switch.arm();
    assert!(matches!(store.commit(2).await, Err(Error::WriterPanicked { .. })));
    assert_eq!(series("airomem_healthy", "falls-ill"), Some(0.0));
    assert_eq!(series("airomem_commits_total", "falls-ill"), Some(1.0), "the refused commit is not counted");
}
