//! Atomic units (`Store::commit_all`): consecutive sequence numbers, all or nothing for
//! readers, for a panicking command, after a torn write and after a crash that lost an abort
//! marker; whole units only after power loss at any point of a concurrent workload.

mod segment_files;

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use airomem::{Corruption, Durability, Error, PostcardSerializer, PostcardStore, Seq, Store, StoreOptions};
use airomem_workspace::sim::{SimStorage, SplitMix64};
use airomem_workspace::{Append, SeqLog, payload, quiet_deliberate_panics, seq_log_journal};

fn append(value: u64) -> Append {
    Append { value, pad: vec![9; (value % 23) as usize], panic: false }
}

fn panicking(value: u64) -> Append {
    Append { value, pad: Vec::new(), panic: true }
}

#[tokio::test]
async fn a_unit_gets_consecutive_sequence_numbers_and_survives_a_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: PostcardStore<SeqLog> = Store::open(PostcardSerializer, &dir).await.expect("open");
    store.commit(append(1)).await.expect("commit");
    let unit = store.commit_all([append(2), append(3), append(4)]).await.expect("commit_all");
    assert_eq!((unit.first, unit.last, unit.len()), (Seq(2), Seq(4), 3));
    let seen = store.commit_all_with([append(5), append(6)], |log: &SeqLog| log.entries.clone()).await.expect("with");
    assert_eq!(seen, vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)], "the query sees the state after the unit");
    assert!(matches!(store.commit_all(Vec::<Append>::new()).await, Err(Error::EmptyUnit)));
    store.close().await.expect("close");
    let store: PostcardStore<SeqLog> = Store::open(PostcardSerializer, &dir).await.expect("reopen");
    assert_eq!(store.query().expect("query").entries, seen);
}

#[tokio::test]
async fn a_unit_larger_than_the_queue_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let options = StoreOptions::default().max_pending_bytes(4096);
    let store: PostcardStore<SeqLog> = Store::open_with(PostcardSerializer, &dir, options).await.expect("open");
    let big: Vec<Append> = (0..200).map(append).collect();
    match store.commit_all(big).await {
        Err(Error::UnitTooLarge { commands: 200, bytes, limit: 4096 }) => assert!(bytes > 4096),
        other => panic!("expected UnitTooLarge, got {other:?}"),
    }
    let small: Vec<Append> = (0..10).map(append).collect();
    assert_eq!(store.commit_all(small).await.expect("a unit that fits").first, Seq(1), "the refused one took no seq");
}

#[tokio::test]
async fn a_panicking_command_rolls_back_its_whole_unit_now_and_after_a_reopen() {
    quiet_deliberate_panics();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store: PostcardStore<SeqLog> = Store::open(PostcardSerializer, &dir).await.expect("open");
    store.commit_all([append(1), append(2)]).await.expect("first unit");
    match store.commit_all([append(3), panicking(4), append(5)]).await {
        Err(Error::CommandPanicked { seq, .. }) => assert_eq!(seq, Seq(4)),
        other => panic!("expected CommandPanicked, got {other:?}"),
    }
    let expected = vec![(1, 1), (2, 2)];
    assert_eq!(store.query().expect("query").entries, expected, "no command of the unit is applied");
    // The unit took 3..=5 and its abort marker 6.
    assert_eq!(store.commit(append(6)).await.expect("commit after the rollback").seq, Seq(7));
    store.close().await.expect("close");
    let store: PostcardStore<SeqLog> = Store::open(PostcardSerializer, &dir).await.expect("reopen");
    assert_eq!(store.query().expect("query").entries, vec![(1, 1), (2, 2), (7, 6)], "the marker cancels the unit");
    assert!(store.recovery().aborted_now.is_empty());
}

#[test]
fn readers_never_see_a_part_of_a_unit() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let options = StoreOptions::default().durability(Durability::OsBuffered);
    let store: PostcardStore<SeqLog> =
        runtime.block_on(Store::open_with(PostcardSerializer, &dir, options)).expect("open");
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut reads = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                let len = store.query().expect("query").entries.len();
                assert_eq!(len % 7, 0, "a reader saw {len} entries: part of a unit of 7");
                reads += 1;
                if finished {
                    return reads;
                }
            }
        })
    };
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for writer in 0..4u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for unit in 0..100u64 {
                    let base = (writer * 1000 + unit) * 10;
                    store.commit_all((base..base + 7).map(append)).await.expect("commit_all");
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
    });
    done.store(true, Ordering::Release);
    let reads = reader.join().expect("reader");
    assert!(reads > 0);
    assert_eq!(store.query().expect("query").entries.len(), 4 * 100 * 7);
}

/// A synced batch of one command (1), then a batch holding a unit of three (2, 3, 4) that
/// was written but never synced, as a crash right after the write leaves it. Returns the
/// segment and its records, for the test to tear.
fn unit_after_a_synced_command(dir: &std::path::Path) -> (std::path::PathBuf, segment_files::RawSegment) {
    let mut journal = seq_log_journal(Arc::new(airomem::storage::StdStorage::default()), dir, 0);
    journal.begin_batch().expect("batch");
    journal.push(&payload(&append(1))).expect("push");
    journal.write_batch().expect("write");
    journal.sync().expect("sync");
    journal.begin_batch().expect("batch");
    for value in [2, 3, 4] {
        journal.push(&payload(&append(value))).expect("push");
        if value < 4 {
            journal.continue_unit();
        }
    }
    journal.write_batch().expect("write");
    drop(journal);
    let segment = segment_files::newest_segment(dir);
    let raw = segment_files::read_segment(&segment);
    (segment, raw)
}

/// A synced batch of one command, then a batch holding a unit of three that a crash stopped
/// at a record boundary after two of them, before any sync: the open cuts both, keeping
/// what came before, and reports it.
#[tokio::test]
async fn a_unit_cut_short_at_a_record_boundary_is_cut_whole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let (segment, raw) = unit_after_a_synced_command(&dir);
    let second_of_unit = raw.records.iter().find(|r| r.seq == 3).expect("record 3");
    let bytes = fs::read(&segment).expect("read");
    fs::write(&segment, &bytes[..second_of_unit.end]).expect("cut inside the unit");

    let store: PostcardStore<SeqLog> = Store::open(PostcardSerializer, &dir).await.expect("reopen");
    let tail = store.recovery().torn_tail.clone().expect("a torn tail is reported");
    assert!(matches!(tail.reason, Corruption::UnfinishedUnit { first: Seq(2) }), "{:?}", tail.reason);
    // The two present and the missing last one.
    assert_eq!(tail.records_lost, 3);
    assert_eq!(tail.offset as usize, raw.records.iter().find(|r| r.seq == 2).expect("record 2").offset);
    assert_eq!(store.query().expect("query").entries, vec![(1, 1)]);
    let unit = store.commit_all([append(5), append(6)]).await.expect("commit after the cut");
    assert_eq!(unit.first, Seq(2), "the cut records' sequence numbers are reused");
}

/// The same unit torn inside its last record: the two whole records before the damage go
/// with it.
#[tokio::test]
async fn a_unit_torn_inside_its_last_record_is_cut_whole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let (segment, raw) = unit_after_a_synced_command(&dir);
    let last = raw.records.iter().find(|r| r.seq == 4).expect("record 4");
    let bytes = fs::read(&segment).expect("read");
    fs::write(&segment, &bytes[..last.end - 3]).expect("tear the last record");

    let store: PostcardStore<SeqLog> = Store::open(PostcardSerializer, &dir).await.expect("reopen");
    let tail = store.recovery().torn_tail.clone().expect("a torn tail is reported");
    assert!(matches!(tail.reason, Corruption::Truncated { .. }), "{:?}", tail.reason);
    assert_eq!(tail.records_lost, 3);
    assert_eq!(store.query().expect("query").entries, vec![(1, 1)]);
}

/// A crash after a unit's batch was synced but before the abort marker of its panicking
/// command: recovery aborts the command, and with it the whole unit, exactly once.
#[tokio::test]
async fn recovery_aborts_the_whole_unit_of_a_command_whose_marker_was_lost() {
    quiet_deliberate_panics();
    const DIR: &str = "/sim/store";
    let sim = SimStorage::new();
    let mut journal = seq_log_journal(Arc::new(sim.clone()), DIR.as_ref(), 0);
    journal.begin_batch().expect("batch");
    journal.push(&payload(&append(1))).expect("push");
    for (i, command) in [append(2), panicking(3), append(4)].iter().enumerate() {
        journal.push(&payload(command)).expect("push");
        if i < 2 {
            journal.continue_unit();
        }
    }
    journal.push(&payload(&append(5))).expect("push");
    journal.write_batch().expect("write");
    journal.sync().expect("sync");
    sim.power_cut();
    let disk = sim.crash(0);

    let open = |disk: &SimStorage| {
        let options = StoreOptions::default().storage(Arc::new(disk.clone()));
        Store::<SeqLog, PostcardSerializer>::open_with(PostcardSerializer, DIR, options)
    };
    let store = open(&disk).await.expect("open");
    assert_eq!(store.recovery().aborted_now, vec![Seq(3)]);
    assert_eq!(store.query().expect("query").entries, vec![(1, 1), (5, 5)]);
    store.close().await.expect("close");
    let store = open(&disk).await.expect("reopen");
    assert!(store.recovery().aborted_now.is_empty(), "the marker written by the first open cancels the unit");
    assert_eq!(store.query().expect("query").entries, vec![(1, 1), (5, 5)]);
}

/// Who committed a value, and where in which unit: writer, unit index, position, unit size.
fn decode(value: u64) -> (u64, u64, u64, u64) {
    (value >> 48, (value >> 16) & 0xffff_ffff, (value >> 8) & 0xff, value & 0xff)
}

fn encode_value(writer: u64, unit: u64, position: u64, size: u64) -> u64 {
    (writer << 48) | (unit << 16) | (position << 8) | size
}

/// Three writers commit units of 1 to 5 commands (a few of them single commits); the power
/// is cut before every storage operation in turn, and every crash image must hold whole
/// units only, each writer's units as a prefix of what it submitted, and (under `Fsync`)
/// every acknowledged unit.
fn power_loss_run(seed: u64, durability: Durability) -> Vec<String> {
    const DIR: &str = "/sim/store";
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let mut rng = SplitMix64::new(seed);
    let segment_size = [600, 2000, 1 << 20][rng.below(3) as usize];
    let plan: Vec<Vec<u64>> = (0..3).map(|_| (0..6).map(|_| rng.between(1, 5)).collect()).collect();
    let workload = |disk: SimStorage| {
        let plan = plan.clone();
        async move {
            let options =
                StoreOptions::default().storage(Arc::new(disk)).segment_size(segment_size).durability(durability);
            let Ok(store) = Store::<SeqLog, PostcardSerializer>::open_with(PostcardSerializer, DIR, options).await
            else {
                return BTreeMap::new();
            };
            let mut tasks = Vec::new();
            for (writer, sizes) in plan.into_iter().enumerate() {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let mut acked = 0u64;
                    for (unit, &size) in sizes.iter().enumerate() {
                        let values = (0..size).map(|p| encode_value(writer as u64, unit as u64, p, size));
                        let result = if size == 1 {
                            store.commit(append(encode_value(writer as u64, unit as u64, 0, 1))).await.map(drop)
                        } else {
                            store.commit_all(values.map(append)).await.map(drop)
                        };
                        if result.is_err() {
                            break;
                        }
                        acked += 1;
                    }
                    (writer as u64, acked)
                }));
            }
            let mut acked = BTreeMap::new();
            for task in tasks {
                let (writer, units) = task.await.expect("writer task");
                acked.insert(writer, units);
            }
            drop(store.close().await);
            acked
        }
    };
    let probe = SimStorage::new();
    runtime.block_on(workload(probe.clone()));
    let operations = probe.ops();
    let mut failures = Vec::new();
    for cut in (0..operations).step_by(3) {
        let disk = SimStorage::new();
        disk.freeze_after(cut);
        let acked = runtime.block_on(workload(disk.clone()));
        disk.power_cut();
        for image in 0..3 {
            let reopened = disk.crash(seed ^ (image << 32) ^ cut);
            let options = StoreOptions::default().storage(Arc::new(reopened.clone())).segment_size(segment_size);
            let opened =
                runtime.block_on(Store::<SeqLog, PostcardSerializer>::open_with(PostcardSerializer, DIR, options));
            let store = match opened {
                Ok(store) => store,
                Err(e) => {
                    failures.push(format!("seed {seed} {durability:?}: cut {cut}, image {image}: open failed: {e}"));
                    continue;
                }
            };
            let entries = store.query().expect("query").entries.clone();
            if let Err(e) = check_units(&entries, &acked, durability) {
                failures.push(format!("seed {seed} {durability:?}: cut {cut} of {operations}, image {image}: {e}"));
                continue;
            }
            // What the repair left must also hold up under what comes next: a new unit, and
            // the reopen that replays it after whatever the crash left.
            let after_more = runtime.block_on(async {
                let values = (0..3).map(|p| encode_value(9, 0, p, 3));
                store.commit_all(values.map(append)).await.map_err(|e| e.to_string())?;
                store.close().await.map_err(|e| e.to_string())?;
                let options = StoreOptions::default().storage(Arc::new(reopened.clone())).segment_size(segment_size);
                let store = Store::<SeqLog, PostcardSerializer>::open_with(PostcardSerializer, DIR, options)
                    .await
                    .map_err(|e| format!("second reopen: {e}"))?;
                let again = store.query().map_err(|e| e.to_string())?.entries.clone();
                Ok::<_, String>(again)
            });
            match after_more {
                Ok(again) if again.len() == entries.len() + 3 && again[..entries.len()] == entries[..] => {}
                Ok(again) => failures.push(format!(
                    "seed {seed} {durability:?}: cut {cut}, image {image}: after one more unit, {} entries instead of \
                     {} + 3",
                    again.len(),
                    entries.len()
                )),
                Err(e) => failures.push(format!("seed {seed} {durability:?}: cut {cut}, image {image}: {e}")),
            }
        }
    }
    failures
}

/// Whole units, in order per writer, with consecutive sequence numbers; every acknowledged
/// unit present under `Fsync`.
fn check_units(entries: &[(u64, u64)], acked: &BTreeMap<u64, u64>, durability: Durability) -> Result<(), String> {
    let mut next_unit: BTreeMap<u64, u64> = BTreeMap::new();
    let mut i = 0;
    while i < entries.len() {
        let (seq, value) = entries[i];
        let (writer, unit, position, size) = decode(value);
        if position != 0 {
            return Err(format!("entry {seq} is position {position} of a unit whose start is missing"));
        }
        let expected_unit = next_unit.entry(writer).or_default();
        if unit != *expected_unit {
            return Err(format!("writer {writer}: unit {unit} recovered where unit {expected_unit} was due"));
        }
        *expected_unit += 1;
        for p in 0..size {
            let Some(&(s, v)) = entries.get(i + p as usize) else {
                return Err(format!("writer {writer}'s unit {unit} ends after {p} of {size} commands"));
            };
            if s != seq + p || v != encode_value(writer, unit, p, size) {
                return Err(format!("writer {writer}'s unit {unit} is broken at its command {p}: ({s}, {v:#x})"));
            }
        }
        i += size as usize;
    }
    if durability == Durability::Fsync {
        for (writer, &units) in acked {
            let present = next_unit.get(writer).copied().unwrap_or(0);
            if present < units {
                return Err(format!("writer {writer}: {units} units acknowledged, {present} recovered"));
            }
        }
    }
    Ok(())
}

#[test]
fn power_loss_anywhere_leaves_whole_units_only() {
    let seeds: u64 = std::env::var("AIROMEM_UNIT_SEEDS").map_or(6, |s| s.parse().expect("a count"));
    let mut failures = Vec::new();
    for seed in 0..seeds {
        let durability = if seed % 2 == 0 { Durability::Fsync } else { Durability::OsBuffered };
        failures.extend(power_loss_run(seed, durability));
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
