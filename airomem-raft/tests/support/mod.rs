//! What the `replication` and `chaos` test binaries share (each includes this file with
//! `#[path]`; a directory without `main.rs` is not a test binary of its own).

use std::time::{Duration, Instant};

use airomem_raft::{Role, Status};

/// Logs to the test output, filtered by `RUST_LOG`.
pub fn init_tracing() {
    drop(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init(),
    );
}

/// Waits until `condition` holds, re-checking every 5 ms; panics after `patience`, naming
/// `what`.
pub async fn wait_until(what: &str, patience: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The node that leads and that every one of `statuses` follows, if there is one.
pub fn agreed_leader(statuses: &[Status]) -> Option<u64> {
    let leader = statuses.iter().find(|s| s.role == Role::Leader)?.id;
    statuses.iter().all(|s| s.leader == Some(leader)).then_some(leader)
}
