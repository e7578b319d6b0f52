//! Group commit: 64 tasks committing at once are all acknowledged, with fewer batches and
//! fewer `fdatasync`s than commits; every acknowledged command is there after a reopen, and
//! the journal's batch markers agree with the store's counters.

mod segment_files;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use airomem::{PostcardSerializer, PostcardStore, Seq, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};
use segment_files::{read_segment, segment_names};
use tokio::sync::Barrier;

const TASKS: u64 = 64;
const PER_TASK: u64 = 50;
const TOTAL: u64 = TASKS * PER_TASK;

/// Task `t`'s `i`-th command: a new session, and every fifth command ends the task's own
/// session created just before, so the final state depends on each task's order.
fn command(t: u64, i: u64) -> SessionsCommand {
    if i % 5 == 4 {
        SessionsCommand::DeleteSession { token: token(t * 1000 + i - 1) }
    } else {
        SessionsCommand::CreateSession { token: token(t * 1000 + i), user_id: t }
    }
}

fn model() -> HashMap<String, u64> {
    let mut model = HashMap::new();
    for t in 0..TASKS {
        for i in 0..PER_TASK {
            match command(t, i) {
                SessionsCommand::CreateSession { token, user_id } => {
                    model.insert(token, user_id);
                }
                SessionsCommand::DeleteSession { token } => {
                    model.remove(&token);
                }
            }
        }
    }
    model
}

/// Runs all tasks at once (a barrier lines up their first commits) and returns every
/// acknowledged sequence number, per task in the order the task committed.
async fn commit_concurrently(store: &PostcardStore<Sessions>) -> Vec<Vec<Seq>> {
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut seqs = Vec::new();
            for i in 0..PER_TASK {
                let committed = store.commit(command(t, i)).await.expect("every commit is acknowledged");
                seqs.push(committed.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.push(handle.await.expect("task"));
    }
    all
}

fn check_seqs(per_task: &[Vec<Seq>], first: u64) {
    for seqs in per_task {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a task's commits are ordered as it awaited them");
    }
    let all: BTreeSet<u64> = per_task.iter().flatten().map(|s| s.0).collect();
    assert_eq!(all, (first..first + TOTAL).collect(), "every seq acknowledged exactly once, none skipped");
}

/// Counts the batches on disk by their batch-end markers, and returns the largest batch.
fn batches_on_disk(dir: &std::path::Path) -> (u64, u64, u64) {
    let (mut records, mut batches, mut largest, mut current) = (0, 0, 0, 0);
    for name in segment_names(dir) {
        for record in read_segment(&dir.join(name)).records {
            assert_eq!(record.kind, 1, "only commands");
            records += 1;
            current += 1;
            if record.batch_end {
                batches += 1;
                largest = largest.max(current);
                current = 0;
            }
        }
        assert_eq!(current, 0, "a batch never spans segments");
    }
    (records, batches, largest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_batches_and_syncs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, &dir).await.expect("open");

    let seqs = commit_concurrently(&store).await;
    check_seqs(&seqs, 1);
    let expected = model();
    assert_eq!(store.query().expect("query").tokens, expected);
    let stats = store.stats();
    drop(store);

    let (records, batches, largest) = batches_on_disk(&dir);
    assert_eq!(records, TOTAL);
    assert!(batches < TOTAL, "concurrent commits were grouped: {batches} batches for {TOTAL} commands");
    assert!(largest > 1);

    let store: PostcardStore<Sessions> = Store::open(PostcardSerializer, &dir).await.expect("reopen");
    assert_eq!(store.recovery().records_replayed, TOTAL);
    assert_eq!(store.recovery().next_seq, Seq(TOTAL + 1));
    assert_eq!(store.query().expect("query").tokens, expected, "every acknowledged command survives");

    // Counters, last: the store's view of the batches must match the journal's.
    assert_eq!(stats.commits, TOTAL);
    assert_eq!(stats.last_seq, TOTAL);
    assert_eq!(stats.batches, batches, "stats().batches counts the batches written");
    assert_eq!(stats.syncs, stats.batches, "Fsync: exactly one fdatasync per batch");
    assert!(stats.syncs < stats.commits, "group commit shares syncs: {stats:?}");
    assert!(stats.batches < stats.commits, "group commit shares writes: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_limit_is_honoured_under_concurrency() {
    const LIMIT: u64 = 4;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let options = || StoreOptions::default().max_batch_commands(LIMIT as usize).segment_size(16 * 1024);
    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, &dir, options()).await.expect("open");
    let seqs = commit_concurrently(&store).await;
    check_seqs(&seqs, 1);
    let stats = store.stats();
    drop(store);

    let (records, batches, largest) = batches_on_disk(&dir);
    assert_eq!(records, TOTAL);
    assert!(largest <= LIMIT, "no batch is larger than max_batch_commands: {largest}");
    assert!(batches >= TOTAL / LIMIT);
    assert!(segment_names(&dir).len() > 1, "rollover happened while batches were grouped");

    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, &dir, options()).await.expect("reopen");
    assert_eq!(store.query().expect("query").tokens, model());
    assert_eq!(store.recovery().records_replayed, TOTAL);

    // A second round on the reopened store continues the sequence.
    let seqs = commit_concurrently(&store).await;
    check_seqs(&seqs, TOTAL + 1);

    assert_eq!(stats.batches, batches);
    assert_eq!(stats.commits, TOTAL);
}
