//! Retention keeps exactly the newest snapshots and removes exactly the journal segments
//! whose records the oldest kept snapshot includes, never the newest segment; automatic
//! snapshots by command count follow the same rules. Every reopen is exact.
#![cfg(feature = "snapshot")]

use std::fs;
use std::path::Path;

use airomem::{PostcardSerializer, PostcardStore, State, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};

fn create(n: u64) -> SessionsCommand {
    SessionsCommand::CreateSession { token: token(n), user_id: n }
}

fn delete(n: u64) -> SessionsCommand {
    SessionsCommand::DeleteSession { token: token(n) }
}

/// The numbers in the names of the files of `dir` ending in `suffix`, ascending.
fn numbered(dir: &Path, suffix: &str) -> Vec<u64> {
    let mut seqs: Vec<u64> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter_map(|n| n.strip_suffix(suffix).map(|d| d.parse().expect("numeric name")))
        .collect();
    seqs.sort_unstable();
    seqs
}

async fn commit(store: &PostcardStore<Sessions>, model: &mut Sessions, command: SessionsCommand) -> u64 {
    let receipt = store.commit(command.clone()).await.expect("commit");
    model.execute(command);
    receipt.seq.get()
}

/// Checks the segments left by retention against the oldest kept snapshot `oldest` when the
/// last record is `last`: the first segment holds record `oldest + 1` (or is the newest), so
/// nothing still needed is gone and nothing wholly covered is kept, and the newest holds `last`.
fn assert_segments_pruned_exactly(dir: &Path, oldest: u64, last: u64) {
    let segments = numbered(dir, ".journal");
    assert!(!segments.is_empty(), "the newest segment always exists");
    assert!(segments[0] <= oldest + 1, "the journal reaches back to the oldest kept snapshot: {segments:?}");
    if let Some(&second) = segments.get(1) {
        assert!(second > oldest + 1, "a segment wholly covered by {oldest} was kept: {segments:?}");
    }
    assert!(*segments.last().expect("newest") <= last, "the newest segment holds the last record: {segments:?}");
    assert!(segments.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_snapshots_keep_two_and_prune_covered_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let options = || StoreOptions::default().segment_size(1024).snapshots_retained(2);
    let mut model = Sessions::default();
    let mut taken = Vec::new();
    let mut last = 0;
    {
        let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
        for round in 0..10u64 {
            // Rounds of different lengths, so snapshots fall at various places in segments.
            for i in 0..(20 + round * 7) {
                last = commit(&store, &mut model, create(round * 1000 + i)).await;
            }
            if round > 0 {
                last = commit(&store, &mut model, delete((round - 1) * 1000)).await;
            }
            let info = store.snapshot().await.expect("snapshot");
            assert_eq!(info.seq.get(), last);
            assert_eq!(info.snapshots_removed, u64::from(round >= 2), "round {round}");
            taken.push(last);

            let kept = &taken[taken.len().saturating_sub(2)..];
            assert_eq!(numbered(dir, ".snapshot"), kept, "round {round}");
            if round == 0 {
                // The only snapshot may be the damaged one: the whole journal is its fallback.
                assert_eq!(info.segments_removed, 0);
                assert_eq!(numbered(dir, ".journal")[0], 1, "nothing pruned behind a single snapshot");
            } else {
                assert_segments_pruned_exactly(dir, kept[0], last);
            }
        }
    }
    let kept = taken[8..].to_vec();
    assert_eq!(numbered(dir, ".snapshot"), kept, "exactly the newest two remain");
    assert!(numbered(dir, ".journal")[0] > 1, "retention removed segments");
    assert_segments_pruned_exactly(dir, kept[0], last);

    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("reopen");
    assert_eq!(store.recovery().snapshot.map(|s| s.get()), Some(kept[1]));
    assert_eq!(store.recovery().records_replayed, 0, "the newest snapshot includes every record");
    assert_eq!(store.recovery().next_seq.get(), last + 1);
    assert_eq!(*store.query().expect("query"), model);
}

/// Snapshots one, two or three commands apart put the oldest kept snapshot at every offset
/// relative to the segment boundaries, including right before and right at one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_a_few_commands_apart_prune_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let options = || StoreOptions::default().segment_size(512).snapshots_retained(2);
    let mut model = Sessions::default();
    let mut taken = Vec::new();
    let mut last = 0;
    {
        let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
        for gap in (1..=3u64).cycle().take(90) {
            for _ in 0..gap {
                let command = if last % 7 == 6 { delete(last - 3) } else { create(last) };
                last = commit(&store, &mut model, command).await;
            }
            let info = store.snapshot().await.expect("snapshot");
            assert_eq!(info.seq.get(), last);
            taken.push(last);
            let kept = &taken[taken.len().saturating_sub(2)..];
            assert_eq!(numbered(dir, ".snapshot"), kept);
            assert_segments_pruned_exactly(dir, kept[0], last);
        }
    }
    assert!(numbered(dir, ".journal")[0] > 100, "retention kept up with the snapshots");
    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("reopen");
    assert_eq!(store.recovery().snapshot.map(|s| s.get()), Some(last));
    assert_eq!(*store.query().expect("query"), model);
}

/// Asking to retain one snapshot keeps two: one snapshot alone leaves nothing to fall back
/// on when it is damaged. The first snapshot prunes nothing; later ones prune up to the older
/// of the two kept, and the segment the writer appends to always stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retaining_one_snapshot_keeps_two_and_the_newest_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let options = || StoreOptions::default().segment_size(1024).snapshots_retained(1);
    let mut model = Sessions::default();
    let mut last = 0;
    let mut taken = Vec::new();
    for round in 0..3u64 {
        let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
        assert_eq!(*store.query().expect("query"), model, "round {round}");
        for i in 0..50 {
            last = commit(&store, &mut model, create(round * 100 + i)).await;
        }
        let info = store.snapshot().await.expect("snapshot");
        assert_eq!(info.seq.get(), last);
        taken.push(last);
        let kept = &taken[taken.len().saturating_sub(2)..];
        assert_eq!(numbered(dir, ".snapshot"), kept, "round {round}");
        if round == 0 {
            assert_eq!(info.segments_removed, 0, "nothing pruned behind a single snapshot");
        } else {
            assert!(info.segments_removed > 0, "round {round}: covered segments are removed");
            assert_segments_pruned_exactly(dir, kept[0], last);
        }
        // The store keeps working after its journal was pruned.
        last = commit(&store, &mut model, delete(round * 100)).await;
        assert_eq!(*store.query().expect("query"), model);
        store.close().await.expect("close");
    }
    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("reopen");
    assert_eq!(store.recovery().records_replayed, 1);
    assert_eq!(store.recovery().next_seq.get(), last + 1);
    assert_eq!(*store.query().expect("query"), model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_snapshots_every_100_commands() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let options = || StoreOptions::default().segment_size(2048).snapshot_every_commands(100);
    let mut model = Sessions::default();
    {
        let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
        for n in 0..1_050u64 {
            let command = if n % 10 == 9 { delete(n - 5) } else { create(n) };
            let seq = commit(&store, &mut model, command).await;
            assert_eq!(seq, n + 1);
        }
        // Dropping the store waits for queued snapshots.
    }
    // One command per batch: a snapshot is due after exactly every 100th command, and the
    // default retention keeps the newest two.
    let snapshots = numbered(dir, ".snapshot");
    assert!(!snapshots.is_empty(), "automatic snapshots were taken");
    assert!(snapshots.iter().all(|s| s % 100 == 0), "{snapshots:?}");
    assert_eq!(snapshots, vec![900, 1000]);
    assert!(numbered(dir, ".journal")[0] > 1, "retention removed segments");
    assert_segments_pruned_exactly(dir, snapshots[0], 1_050);
    assert!(numbered(dir, ".snapshot.tmp").is_empty(), "no temporary files remain");

    let store: PostcardStore<Sessions> = Store::open_with(PostcardSerializer, dir, options()).await.expect("reopen");
    assert_eq!(store.recovery().snapshot.map(|s| s.get()), Some(1000));
    assert_eq!(store.recovery().records_replayed, 50);
    assert_eq!(store.recovery().next_seq.get(), 1_051);
    assert_eq!(*store.query().expect("query"), model);
}
