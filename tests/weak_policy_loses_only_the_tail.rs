//! Under `Durability::OsBuffered` and `Durability::Periodic` several batches are written but
//! not yet synced when the power fails, and the kernel may have written a later one back
//! and not an earlier one. The store must still open, holding a prefix of its history that
//! reaches at least every command synced before the power failed; what it lost is a tail,
//! cut into quarantine and reported.
//!
//! Each workload runs concurrent writers into a simulated disk ([`SimStorage`]) with small
//! segments, so that rollovers sync from time to time, and in half of them a snapshot
//! (which syncs the journal) between two rounds of commits. After the power is cut, many
//! crash images (each pending write independently kept, dropped, torn or scattered:
//! out-of-order writeback) are reopened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use airomem::{Durability, PostcardSerializer, Store, StoreOptions};
use airomem_workspace::sim::{SimStorage, SplitMix64};
use airomem_workspace::{Append, SeqLog};

const DIR: &str = "/sim/store";
const WORKLOADS: u64 = 12;
const CRASHES: u64 = 150;

type LogStore = Store<SeqLog, PostcardSerializer>;

fn options(sim: &SimStorage, durability: Durability, segment_size: u64) -> StoreOptions {
    StoreOptions::default().storage(Arc::new(sim.clone())).durability(durability).segment_size(segment_size)
}

/// Commits `count` commands from each of `writers` concurrent tasks (the `round`th round)
/// and returns them by sequence number.
async fn commit_round(store: &LogStore, writers: u64, count: u64, round: u64, pad: usize) -> BTreeMap<u64, u64> {
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..count {
                let value = (round << 48) | (writer << 32) | i;
                let command = Append { value, pad: vec![7; pad + (i as usize % 5) * 13], panic: false };
                let receipt = store.commit(command).await.expect("commit");
                acked.push((receipt.seq.0, value));
            }
            acked
        }));
    }
    let mut acked = BTreeMap::new();
    for task in tasks {
        acked.extend(task.await.expect("writer task"));
    }
    acked
}

/// Runs one workload, cuts the power and returns the disk, every acknowledged command (by
/// sequence number) and the last sequence number certainly synced: the snapshot's, or
/// the last record before the newest segment (each segment is synced entirely before the
/// next one is created).
async fn workload(durability: Durability, seed: u64) -> (SimStorage, BTreeMap<u64, u64>, u64) {
    let mut rng = SplitMix64::new(seed);
    let writers = rng.between(1, 4);
    let per_writer = rng.between(5, 40);
    let segment_size = rng.between(300, 3000);
    let pad = rng.below(120) as usize;
    let sim = SimStorage::new();
    let store = LogStore::open_with(PostcardSerializer, DIR, options(&sim, durability, segment_size))
        .await
        .expect("open a new store");
    let mut acked = commit_round(&store, writers, per_writer / 2, 0, pad).await;
    let mut synced = 0;
    if rng.chance(1, 2) {
        synced = store.snapshot().await.expect("snapshot").seq.0;
    }
    acked.extend(commit_round(&store, writers, per_writer - per_writer / 2, 1, pad).await);
    let newest_first = sim
        .contents()
        .keys()
        .filter_map(|p| p.file_name()?.to_str()?.strip_suffix(".journal")?.parse::<u64>().ok())
        .max()
        .expect("a segment");
    sim.power_cut();
    drop(store);
    assert_eq!(acked.len() as u64, writers * per_writer, "seed {seed}: every commit was acknowledged");
    (sim, acked, synced.max(newest_first - 1))
}

/// With `out_of_order`, also requires that some crash left intact batches after a lost one
/// (syncs rare enough that several batches are pending).
async fn loses_only_the_tail(durability: Durability, out_of_order: bool) {
    let (mut torn, mut several_lost, mut shorter) = (0, 0, 0);
    for seed in 0..WORKLOADS {
        let (sim, acked, synced) = workload(durability, seed).await;
        let total = acked.len() as u64;
        for crash in 0..CRASHES {
            let image = sim.crash(crash);
            let options = StoreOptions::default().storage(Arc::new(image)).durability(durability);
            let store = match LogStore::open_with(PostcardSerializer, DIR, options).await {
                Ok(store) => store,
                Err(e) => panic!("{durability:?}, workload {seed}, crash {crash}: open failed: {e}"),
            };
            let entries = store.query().expect("query").entries.clone();
            let kept = entries.len() as u64;
            for (i, &(seq, value)) in entries.iter().enumerate() {
                assert_eq!(seq, i as u64 + 1, "{durability:?}, workload {seed}, crash {crash}: a prefix, no hole");
                assert_eq!(acked.get(&seq), Some(&value), "workload {seed}, crash {crash}: the committed value");
            }
            assert!(
                kept >= synced,
                "{durability:?}, workload {seed}, crash {crash}: lost synced commands ({kept} kept, {synced} synced)"
            );
            if let Some(tail) = &store.recovery().torn_tail {
                torn += 1;
                assert!(tail.records_lost >= 1, "workload {seed}, crash {crash}: {tail:?}");
                assert!(
                    kept + tail.records_lost <= total,
                    "workload {seed}, crash {crash}: lost records are among those committed: {tail:?}"
                );
                if tail.records_lost > 1 {
                    several_lost += 1;
                }
            }
            if kept < total {
                shorter += 1;
            }
            // The repaired store goes on: a further command lands after the kept prefix.
            let receipt =
                store.commit(Append { value: u64::MAX, pad: Vec::new(), panic: false }).await.expect("commit");
            assert_eq!(receipt.seq.0, kept + 1, "workload {seed}, crash {crash}");
            store.close().await.expect("close");
        }
    }
    assert!(torn > 0 && shorter > torn, "{durability:?}: crashes exercised cuts ({torn}) and clean ends ({shorter})");
    // Intact records after the damage: later batches written back before an earlier one.
    assert!(!out_of_order || several_lost > 0, "{durability:?}: no cut had intact records after the damage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn os_buffered_loses_only_commands_after_the_last_sync() {
    loses_only_the_tail(Durability::OsBuffered, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_loses_only_commands_after_the_last_sync() {
    loses_only_the_tail(Durability::Periodic(Duration::from_secs(3600)), true).await;
}

/// Frequent periodic syncs record the watermark in the head often, unsynced: a power cut
/// can tear those writes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frequent_periodic_syncs_lose_only_an_unsynced_tail() {
    loses_only_the_tail(Durability::Periodic(Duration::from_micros(200)), false).await;
}
