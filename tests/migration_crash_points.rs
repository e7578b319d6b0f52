//! A migrating open can be interrupted anywhere. A schema-1 store (`SeqLog`) is opened as
//! schema 2 (`TaggedLog`), which migrates it, seals the migration and commits a few
//! commands; the power is cut before each storage operation of that in turn, and the disk
//! then taken apart by several power-loss images and by the image a killed process leaves.
//! A killed process's disk is also opened again by a second migrating open, cut in its turn,
//! and then taken apart by a power loss. Each must then:
//!
//! * open under schema 2 to exactly the migrated state plus every schema-2 command that was
//!   acknowledged (and at most the one whose commit failed), never `Corrupt`, never a third
//!   state;
//! * open under schema 1 to exactly the old state, or fail with `SchemaNewer` once a
//!   schema-2 file is durable: never a misread.
//!
//! The schema-1 history is varied by seed: segment size, snapshots, and whether its process
//! closed the store or was killed (with its last writes still only in the page cache, under
//! `OsBuffered`), so that the migrating open also repairs, syncs and seals what it found.

use std::sync::Arc;

use airomem::{Durability, Error, PostcardSerializer, Store, StoreOptions};
use airomem_workspace::migration::{Tagged, TaggedLog};
use airomem_workspace::sim::{SimStorage, SplitMix64};
use airomem_workspace::{Append, SeqLog};

const DIR: &str = "/sim/store";
/// Power-loss images taken of each cut disk, besides the killed-process image.
const IMAGES: u64 = 3;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// How the schema-1 history was written and left.
#[derive(Debug, Clone, Copy)]
struct History {
    commands: u64,
    segment_size: u64,
    snapshots: u64,
    killed: bool,
}

impl History {
    fn of_seed(seed: u64) -> History {
        let mut rng = SplitMix64::new(seed);
        History {
            commands: rng.between(5, 60),
            segment_size: [400, 1500, 1 << 20][rng.below(3) as usize],
            snapshots: if cfg!(feature = "snapshot") { rng.below(3) } else { 0 },
            killed: rng.chance(1, 2),
        }
    }

    fn options(&self, disk: &SimStorage) -> StoreOptions {
        let durability = if self.killed { Durability::OsBuffered } else { Durability::Fsync };
        StoreOptions::default().storage(Arc::new(disk.clone())).segment_size(self.segment_size).durability(durability)
    }
}

fn append(value: u64) -> Append {
    Append { value, pad: vec![1; (value % 50) as usize], panic: false }
}

/// Writes the schema-1 history; returns the disk it leaves and the entries acknowledged.
async fn write_history(history: History) -> (SimStorage, Vec<(u64, u64)>) {
    let sim = SimStorage::new();
    let store: Store<SeqLog, PostcardSerializer> =
        Store::open_with(PostcardSerializer, DIR, history.options(&sim)).await.expect("open schema 1");
    let mut acked = Vec::new();
    for i in 0..history.commands {
        let value = 1000 + i;
        let receipt = store.commit(append(value)).await.expect("commit");
        acked.push((receipt.seq.0, value));
        #[cfg(feature = "snapshot")]
        if history.snapshots > 0 && (i + 1) % (history.commands / history.snapshots + 1) == 0 {
            store.snapshot().await.expect("snapshot");
        }
    }
    if history.killed {
        sim.power_cut();
        let left = sim.process_crash();
        drop(store);
        (left, acked)
    } else {
        store.close().await.expect("close");
        (sim.process_crash(), acked)
    }
}

/// What the migrating process was told.
#[derive(Default)]
struct Told {
    opened: bool,
    acked: Vec<Tagged>,
    failed: Option<u64>,
}

/// The migrating process: opens as schema 2, commits three commands, closes.
async fn migrate(disk: &SimStorage, history: History) -> Told {
    let mut told = Told::default();
    let options = StoreOptions::default().storage(Arc::new(disk.clone())).segment_size(history.segment_size);
    let Ok(store) = Store::<TaggedLog, PostcardSerializer>::open_with(PostcardSerializer, DIR, options).await else {
        return told;
    };
    told.opened = true;
    for value in 1..=3 {
        match store.commit(append(value)).await {
            Ok(receipt) => told.acked.push(Tagged { seq: receipt.seq.0, value, schema: 2 }),
            Err(_) => {
                told.failed = Some(value);
                break;
            }
        }
    }
    drop(store.close().await);
    told
}

/// Checks `after`, a disk the migrating process left, under both schemas.
async fn check(after: &SimStorage, history: History, v1: &[(u64, u64)], told: &Told) -> Result<(), String> {
    // The schema-1 part the new state must hold: all of it once the migrating open served it
    // (it synced it first) or if the old process synced every command; else any prefix.
    let whole = told.opened || !history.killed;
    let options = StoreOptions::default().storage(Arc::new(after.process_crash())).segment_size(history.segment_size);
    match Store::<SeqLog, PostcardSerializer>::open_with(PostcardSerializer, DIR, options).await {
        Ok(store) => {
            let entries = store.query().map_err(|e| e.to_string())?.entries.clone();
            if !told.acked.is_empty() {
                return Err(format!("schema 1 opened a store holding acknowledged schema-2 commands: {entries:?}"));
            }
            if entries.as_slice() != &v1[..entries.len().min(v1.len())] || (whole && entries.len() != v1.len()) {
                return Err(format!("schema 1 read {} entries, not the old history of {}", entries.len(), v1.len()));
            }
        }
        Err(Error::SchemaNewer { found: 2, current: 1, .. }) => {}
        Err(e) => return Err(format!("schema 1: {e}")),
    }

    let options = StoreOptions::default().storage(Arc::new(after.process_crash())).segment_size(history.segment_size);
    let store = Store::<TaggedLog, PostcardSerializer>::open_with(PostcardSerializer, DIR, options)
        .await
        .map_err(|e| format!("schema 2 did not open: {e}"))?;
    let entries = store.query().map_err(|e| e.to_string())?.entries.clone();
    let old: Vec<Tagged> = entries.iter().copied().take_while(|t| t.schema == 1).collect();
    let new = &entries[old.len()..];
    let migrated = TaggedLog::from(SeqLog { entries: v1.to_vec() }).entries;
    if old.as_slice() != &migrated[..old.len().min(migrated.len())] || (whole && old.len() != migrated.len()) {
        return Err(format!("schema 2 holds {} migrated entries, not the {} of the old history", old.len(), v1.len()));
    }
    let acked = told.acked.as_slice();
    let ok = new == acked
        || (new.len() == acked.len() + 1
            && &new[..acked.len()] == acked
            && Some(new[acked.len()].value) == told.failed);
    if !ok {
        return Err(format!("schema 2 holds {new:?} after the migration; acknowledged {acked:?}"));
    }
    if new.iter().any(|t| t.schema != 2) {
        return Err(format!("entries of schema 1 after schema-2 ones: {entries:?}"));
    }
    drop(store.close().await);
    Ok(())
}

fn run_seed(seed: u64) -> Vec<String> {
    let runtime = runtime();
    let history = History::of_seed(seed);
    let (base, v1) = runtime.block_on(write_history(history));
    let probe = base.process_crash();
    let told = runtime.block_on(migrate(&probe, history));
    assert!(told.opened && told.acked.len() == 3, "seed {seed}: the uninterrupted migration works");
    let operations = probe.ops();
    let mut failures = Vec::new();
    for cut in 0..=operations {
        let disk = base.process_crash();
        disk.freeze_after(cut);
        let told = runtime.block_on(migrate(&disk, history));
        disk.power_cut();
        let mut images: Vec<(String, SimStorage)> =
            (0..IMAGES).map(|image| (format!("power loss image {image}"), disk.crash(seed ^ image))).collect();
        images.push(("killed process".to_string(), disk.process_crash()));
        // Crashes in a row: the killed process's disk is opened again by a migrating process
        // that is itself cut at some operation of its open (one per first cut, drawn from the
        // seed), and then the power fails.
        let again = disk.process_crash();
        let mut rng = SplitMix64::new(seed ^ cut.rotate_left(17));
        again.freeze_after(rng.below(operations + 1));
        drop(runtime.block_on(Store::<TaggedLog, PostcardSerializer>::open_with(
            PostcardSerializer,
            DIR,
            StoreOptions::default().storage(Arc::new(again.clone())).segment_size(history.segment_size),
        )));
        again.power_cut();
        images.push(("killed, reopened and cut again, then power loss".to_string(), again.crash(seed ^ cut)));
        for (what, after) in images {
            if let Err(e) = runtime.block_on(check(&after, history, &v1, &told)) {
                failures.push(format!("seed {seed} {history:?}: cut at operation {cut} of {operations}, {what}: {e}"));
            }
        }
    }
    failures
}

#[test]
fn a_migrating_open_can_be_interrupted_at_every_operation() {
    let seeds: u64 = std::env::var("AIROMEM_MIGRATION_SEEDS").map_or(12, |s| s.parse().expect("a count"));
    let failures: Vec<String> = (0..seeds).flat_map(run_seed).collect();
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// A seal that fails (here the disk is full when its snapshot file is created) does not fail
/// the open: the journal holds everything, the report says nothing was sealed, and the next
/// open runs the chain again, as every open does without the `snapshot` feature, to the
/// same state; then it seals.
#[cfg(feature = "snapshot")]
#[test]
fn a_failed_seal_leaves_the_chain_to_run_again_at_the_next_open() {
    let runtime = runtime();
    let history = History { commands: 30, segment_size: 700, snapshots: 1, killed: false };
    let (base, v1) = runtime.block_on(write_history(history));
    let probe = base.process_crash();
    probe.trace();
    assert!(runtime.block_on(migrate(&probe, history)).opened);
    let seal = probe
        .traced()
        .iter()
        .find(|op| op.contains("create") && op.contains(".snapshot"))
        .and_then(|op| op.trim_start_matches('#').split(' ').next()?.parse::<u64>().ok())
        .expect("the migrating open creates a snapshot file");

    let disk = base.process_crash();
    disk.fail_at(seal, std::io::ErrorKind::StorageFull);
    let options = || StoreOptions::default().storage(Arc::new(disk.clone())).segment_size(history.segment_size);
    let migrated = TaggedLog::from(SeqLog { entries: v1.clone() });
    runtime.block_on(async {
        let store = Store::<TaggedLog, PostcardSerializer>::open_with(PostcardSerializer, DIR, options())
            .await
            .expect("a failed seal does not fail the open");
        assert_eq!(store.recovery().sealed, None);
        assert_eq!(store.recovery().migrations.len(), 1);
        assert_eq!(*store.query().expect("query"), migrated);
        let receipt = store.commit(append(7)).await.expect("commit");
        store.close().await.expect("close");

        let store = Store::<TaggedLog, PostcardSerializer>::open_with(PostcardSerializer, DIR, options())
            .await
            .expect("reopen");
        let mut expected = migrated;
        expected.entries.push(Tagged { seq: receipt.seq.0, value: 7, schema: 2 });
        assert_eq!(*store.query().expect("query"), expected);
        assert_eq!(store.recovery().migrations.len(), 1, "the chain ran again");
        assert_eq!(store.recovery().sealed, Some(receipt.seq));
        store.close().await.expect("close");
    });
}
