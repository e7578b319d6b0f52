//! The replicated state machine: deterministic commit contexts, snapshots, panics.

use std::sync::Arc;

use airomem::PostcardSerializer;
use airomem::storage::StdStorage;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};

use super::{PANIC, Recorder, blank, from_client, membership, normal};
use crate::log::{LogOptions, LogStore};
use crate::state_machine::StateMachine;
use crate::types::{Applied, Command, Entry, Request, log_id};

type Machine = StateMachine<Recorder, PostcardSerializer>;

/// A state machine and the log it rebuilds from; the log handle must outlive the test's use.
fn open_with_log(dir: &std::path::Path) -> (LogStore, Machine) {
    let storage = Arc::new(StdStorage::default());
    let log = LogStore::open(storage.clone(), &dir.join("log"), LogOptions::default()).expect("the log opens");
    let machine = Machine::open(storage, &dir.join("snapshots"), PostcardSerializer, log.reader()).expect("opens");
    (log, machine)
}

fn open(dir: &std::path::Path) -> Machine {
    open_with_log(dir).1
}

#[tokio::test]
async fn commands_get_a_dense_sequence_and_a_monotonic_leader_time() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut sm = open(dir.path());
    let replies = sm
        .apply([
            blank(1, 1),
            normal(1, 2, 7, 1_000),
            membership(1, 3, &[1, 2]),
            // A new leader whose clock is behind: time must not run backwards.
            normal(2, 4, 8, 500),
            blank(2, 5),
            normal(2, 6, 9, 2_000),
        ])
        .await
        .expect("applies");
    assert_eq!(
        replies,
        [
            vec![],
            vec![Applied::Executed { seq: 1, index: 2, unix_nanos: 1_000 }],
            vec![],
            vec![Applied::Executed { seq: 2, index: 4, unix_nanos: 1_000 }],
            vec![],
            vec![Applied::Executed { seq: 3, index: 6, unix_nanos: 2_000 }],
        ]
    );
    assert_eq!(sm.query(|s| s.seen.clone()), [(7, 1, 1_000), (8, 2, 1_000), (9, 3, 2_000)]);
}

#[tokio::test]
async fn a_snapshot_restores_state_and_progress_on_reopen_and_installs_elsewhere() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let other = tempfile::tempdir().expect("a temporary directory");
    let mut snapshot = {
        let mut sm = open(dir.path());
        sm.apply([membership(1, 1, &[1, 2, 3]), normal(1, 2, 5, 10), normal(1, 3, 6, 20)]).await.expect("applies");
        sm.get_snapshot_builder().await.build_snapshot().await.expect("builds")
    };
    let bytes = read_all(&mut snapshot.snapshot).await;
    let mut reopened = open(dir.path());
    assert_eq!(reopened.query(|s| s.seen.clone()), [(5, 1, 10), (6, 2, 20)]);
    let (applied, members) = reopened.applied_state().await.expect("reads");
    assert_eq!(applied, Some(log_id(1, 1, 3)));
    assert_eq!(members, snapshot.meta.last_membership);
    // The counter and the time continue from the snapshot.
    reopened.apply([normal(1, 4, 7, 15)]).await.expect("applies");
    assert_eq!(reopened.query(|s| s.seen[2]), (7, 3, 20));

    let mut follower = open(other.path());
    receive(&mut follower, &snapshot.meta, &bytes).await.expect("installs");
    assert_eq!(follower.query(|s| s.seen.clone()), [(5, 1, 10), (6, 2, 20)]);
    let mut current = follower.get_current_snapshot().await.expect("reads").expect("a snapshot");
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(read_all(&mut current.snapshot).await, bytes, "the received file is the snapshot");
}

/// A received image whose bytes were damaged on the way is refused by `install_snapshot`
/// (here fed directly, without the end-of-transfer check openraft's shutdown runs): the
/// state, the current snapshot and its file stay as they were, and the received file is
/// removed.
#[tokio::test]
async fn a_damaged_received_image_is_refused_and_changes_nothing() {
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let other = tempfile::tempdir().expect("a temporary directory");
    let (old, mut new) = {
        let mut sm = open(dir.path());
        sm.apply([membership(1, 1, &[1, 2, 3]), normal(1, 2, 5, 10)]).await.expect("applies");
        let old = sm.get_snapshot_builder().await.build_snapshot().await.expect("builds");
        sm.apply([normal(1, 3, 6, 20)]).await.expect("applies");
        (old, sm.get_snapshot_builder().await.build_snapshot().await.expect("builds"))
    };
    let mut follower = open(other.path());
    let mut old_snapshot = old;
    receive(&mut follower, &old_snapshot.meta, &read_all(&mut old_snapshot.snapshot).await).await.expect("installs");
    let snapshots = other.path().join("snapshots");
    let files_before = files_in(&snapshots);
    let current_bytes =
        read_all(&mut follower.get_current_snapshot().await.expect("reads").expect("one").snapshot).await;

    let good = read_all(&mut new.snapshot).await;
    for at in [0, good.len() / 2, good.len() - 1] {
        let mut damaged = good.clone();
        damaged[at] ^= 0x40;
        let mut received = follower.begin_receiving_snapshot().await.expect("begins");
        received.write_all(&damaged).await.expect("writes");
        let refused = follower.install_snapshot(&new.meta, received).await;
        assert!(refused.is_err(), "byte {at} flipped: {refused:?}");
        assert_eq!(follower.query(|s| s.seen.clone()), [(5, 1, 10)], "byte {at} flipped: the state is unchanged");
        let mut current = follower.get_current_snapshot().await.expect("reads").expect("a snapshot");
        assert_eq!(current.meta, old_snapshot.meta);
        assert_eq!(read_all(&mut current.snapshot).await, current_bytes);
        assert_eq!(files_in(&snapshots), files_before, "byte {at} flipped: the received file is removed");
    }

    // Through openraft's end of transfer, the damage fails the transfer before any install.
    let mut damaged = good.clone();
    damaged[good.len() / 3] ^= 1;
    let mut received = follower.begin_receiving_snapshot().await.expect("begins");
    received.write_all(&damaged).await.expect("writes");
    let checked = received.shutdown().await;
    assert_eq!(checked.map_err(|e| e.kind()), Err(std::io::ErrorKind::InvalidData));
    drop(received);
    assert_eq!(files_in(&snapshots), files_before);

    // The undamaged image installs.
    receive(&mut follower, &new.meta, &good).await.expect("installs");
    assert_eq!(follower.query(|s| s.seen.clone()), [(5, 1, 10), (6, 2, 20)]);
}

/// The names of the files in `dir`.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("lists")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    names
}

/// All of a snapshot's bytes, read from its start.
async fn read_all(data: &mut crate::snapshot_file::SnapshotFile) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    data.seek(std::io::SeekFrom::Start(0)).await.expect("seeks");
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).await.expect("reads");
    bytes
}

/// Receives `bytes` as openraft does (written, then shut down) and installs them as the
/// snapshot `meta`.
async fn receive(
    sm: &mut Machine,
    meta: &openraft::SnapshotMeta<u64, openraft::BasicNode>,
    bytes: &[u8],
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut received = sm.begin_receiving_snapshot().await.map_err(|e| e.to_string())?;
    received.write_all(bytes).await.map_err(|e| e.to_string())?;
    received.shutdown().await.map_err(|e| e.to_string())?;
    sm.install_snapshot(meta, received).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_panicking_command_is_rolled_back_identically_and_answered_as_panicked() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut log, mut sm) = open_with_log(dir.path());
    let entries = vec![
        normal(1, 1, 1, 10),
        normal(1, 2, 2, 20),
        // `Recorder` records the command before it panics: the half change must vanish.
        normal(1, 3, PANIC, 30),
        blank(1, 4),
        normal(1, 5, 5, 25),
        normal(1, 6, PANIC, 60),
        normal(1, 7, 7, 70),
    ];
    log.blocking_append(entries.clone()).await.expect("appends");
    // A snapshot in the middle: the rebuild starts from it.
    sm.apply(entries[..2].to_vec()).await.expect("applies");
    sm.get_snapshot_builder().await.build_snapshot().await.expect("builds");
    let replies = sm.apply(entries[2..].to_vec()).await.expect("a panic is an answer, not an error");
    let panicked = |index| Applied::Panicked { index, message: "the test's panicking command".into() };
    assert_eq!(
        replies,
        [
            vec![panicked(3)],
            vec![],
            vec![Applied::Executed { seq: 3, index: 5, unix_nanos: 25 }],
            vec![panicked(6)],
            vec![Applied::Executed { seq: 4, index: 7, unix_nanos: 70 }],
        ]
    );
    // The panicked commands took no sequence number and moved no clock.
    let expected = [(1, 1, 10), (2, 2, 20), (5, 3, 25), (7, 4, 70)];
    assert_eq!(sm.query(|s| s.seen.clone()), expected);
    assert_eq!(sm.applied_state().await.expect("reads").0, Some(log_id(1, 1, 7)));

    // A replica applying the same entries from scratch ends identical.
    let other = tempfile::tempdir().expect("a temporary directory");
    let (mut other_log, mut replica) = open_with_log(other.path());
    other_log.blocking_append(entries.clone()).await.expect("appends");
    replica.apply(entries).await.expect("applies");
    assert_eq!(replica.query(|s| s.seen.clone()), expected);
}

#[tokio::test]
async fn a_panicking_command_whose_state_cannot_be_rebuilt_stops_the_state_machine() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Entries applied without being in the log: nothing to rebuild from.
    let mut sm = open(dir.path());
    sm.apply([normal(1, 1, 1, 1)]).await.expect("applies");
    assert!(sm.apply([normal(1, 2, PANIC, 2)]).await.is_err());
    assert!(sm.apply([normal(1, 3, 3, 3)]).await.is_err(), "nothing is applied over a half-changed state");
    assert!(sm.get_snapshot_builder().await.build_snapshot().await.is_err(), "nor snapshotted");
}

#[tokio::test]
async fn a_restart_applies_the_log_up_to_the_recorded_commit_point_and_no_further() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // openraft's log starts at index 0 (the membership `initialize` writes).
    let mut entries = vec![membership(0, 0, &[1])];
    entries.extend((1..=5).map(|i| normal(1, i, i, i * 10)));
    {
        let (mut log, _sm) = open_with_log(dir.path());
        log.blocking_append(entries).await.expect("appends");
        log.save_committed(Some(log_id(1, 1, 3))).await.expect("records the commit point");
    }
    let (mut log, mut sm) = open_with_log(dir.path());
    openraft::storage::StorageHelper::new(&mut log, &mut sm).get_initial_state().await.expect("starts");
    assert_eq!(sm.applied_state().await.expect("reads").0, Some(log_id(1, 1, 3)));
    assert_eq!(sm.query(|s| s.seen.clone()), [(1, 1, 10), (2, 2, 20), (3, 3, 30)], "entries 4 and 5 stay log");
    assert_eq!(log.get_log_state().await.expect("reads").last_log_id, Some(log_id(1, 1, 5)));
}

#[tokio::test]
async fn a_copy_of_an_applied_command_gets_the_recorded_outcome_even_after_a_snapshot_and_a_panic() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut log, mut sm) = open_with_log(dir.path());
    let entries = vec![
        from_client(1, 1, (9, 0, 0), 10, 100),
        from_client(1, 2, (9, 1, 0), PANIC, 200),
        // Retries of both, as a client whose answers were lost sends them.
        from_client(1, 3, (9, 0, 0), 10, 300),
        from_client(1, 4, (9, 1, 0), PANIC, 400),
        // Serial 2 announces that 0 and 1 are finished; later copies of them expire.
        from_client(1, 5, (9, 2, 2), 20, 500),
        from_client(1, 6, (9, 0, 0), 10, 600),
    ];
    log.blocking_append(entries.clone()).await.expect("appends");
    let replies = sm.apply(entries[..4].to_vec()).await.expect("applies");
    let executed = Applied::Executed { seq: 1, index: 1, unix_nanos: 100 };
    let panicked = Applied::Panicked { index: 2, message: "the test's panicking command".into() };
    assert_eq!(replies, [vec![executed.clone()], vec![panicked.clone()], vec![executed], vec![panicked]]);
    assert_eq!(sm.query(|s| s.seen.clone()), [(10, 1, 100)], "each ran once; the panic left nothing");

    // The table travels in snapshots: a replica built from one answers copies the same way.
    sm.get_snapshot_builder().await.build_snapshot().await.expect("builds");
    drop((log, sm));
    let (_log, mut reopened) = open_with_log(dir.path());
    let replies = reopened.apply(entries[4..].to_vec()).await.expect("applies");
    assert_eq!(replies, [vec![Applied::Executed { seq: 2, index: 5, unix_nanos: 500 }], vec![Applied::Expired]]);
    assert_eq!(reopened.query(|s| s.seen.clone()), [(10, 1, 100), (20, 2, 500)]);
}

/// A leader reads its current snapshot to send it while it builds the next one, which removes
/// the older file: the read must never find the file gone (it did, and the storage error
/// stopped the leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_snapshot_stays_readable_while_newer_ones_are_published() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (_log, mut sm) = open_with_log(dir.path());
    sm.apply([membership(1, 0, &[1])]).await.expect("applies");
    sm.get_snapshot_builder().await.build_snapshot().await.expect("builds");
    let mut reader = sm.clone();
    let reading = tokio::spawn(async move {
        for _ in 0..500 {
            reader.get_current_snapshot().await.expect("the current snapshot is readable").expect("one exists");
            tokio::task::yield_now().await;
        }
    });
    for i in 1..=100 {
        sm.apply([normal(1, i, i, i)]).await.expect("applies");
        sm.get_snapshot_builder().await.build_snapshot().await.expect("builds");
    }
    reading.await.expect("no read failed");
}

/// A leader streaming its snapshot holds it open while newer snapshots are published and the
/// file it reads is removed: every chunk it reads afterwards is still the snapshot it began,
/// on the file system and on the simulated disk (both keep an open file readable).
#[tokio::test]
async fn an_open_snapshot_reads_whole_after_newer_ones_removed_its_file() {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let sim = airomem_workspace::sim::SimStorage::new();
    let on_disk: Arc<dyn airomem::storage::Storage> = Arc::new(StdStorage::default());
    let simulated: Arc<dyn airomem::storage::Storage> = Arc::new(sim.clone());
    for (mut log, mut sm, storage, snapshots) in [
        {
            let (log, sm) = open_with_log(dir.path());
            (log, sm, on_disk, dir.path().join("snapshots"))
        },
        {
            let (log, sm) = open_on(&sim);
            (log, sm, simulated, std::path::PathBuf::from("/node/snapshots"))
        },
    ] {
        let entries: Vec<Entry> =
            std::iter::once(membership(1, 1, &[1])).chain((2..=40).map(|i| normal(1, i, i * 1_000_003, i))).collect();
        log.blocking_append(entries.clone()).await.expect("appends");
        sm.apply(entries[..20].to_vec()).await.expect("applies");
        let built = sm.get_snapshot_builder().await.build_snapshot().await.expect("builds");
        let expected = read_all(&mut sm.get_current_snapshot().await.expect("reads").expect("one").snapshot).await;
        let mut sending = built.snapshot;
        // Read like openraft's replication: a seek to the end for the length, then a seek and
        // a chunk per RPC, with newer snapshots published between chunks.
        let len = sending.seek(std::io::SeekFrom::End(0)).await.expect("seeks");
        assert_eq!(len, expected.len() as u64);
        let mut received = Vec::new();
        for (i, entry) in entries[20..].iter().enumerate() {
            sm.apply([entry.clone()]).await.expect("applies");
            sm.get_snapshot_builder().await.build_snapshot().await.expect("builds");
            let listed = airomem_snapshot::list(storage.as_ref(), &snapshots).expect("lists");
            assert_eq!(listed.len(), 1, "only the newest snapshot is kept");
            if received.len() as u64 == len {
                continue;
            }
            sending.seek(std::io::SeekFrom::Start(received.len() as u64)).await.expect("seeks");
            let mut chunk = Vec::with_capacity(16 + i);
            while chunk.capacity() > chunk.len() {
                if sending.read_buf(&mut chunk).await.expect("an open snapshot stays readable") == 0 {
                    break;
                }
            }
            received.extend_from_slice(&chunk);
        }
        sending.seek(std::io::SeekFrom::Start(received.len() as u64)).await.expect("seeks");
        sending.read_to_end(&mut received).await.expect("reads the rest");
        assert_eq!(received, expected);
    }
}

/// An entry carries a batch of commands from several clients: each executes as if alone,
/// and one that panics is rolled back alone (its neighbours in the entry stay), on the first
/// apply and in every rebuild after it.
#[tokio::test]
async fn a_panicking_command_in_a_batch_is_rolled_back_alone() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut log, mut sm) = open_with_log(dir.path());
    let request = |client: u128, value: u64| {
        let mut bytes = Vec::new();
        airomem::Serializer::encode(&airomem::PostcardSerializer, &value, &mut bytes).expect("encodes");
        Request { client, serial: value, low_water: 0, bytes }
    };
    let batch = |index: u64, unix_nanos: u64, requests: Vec<Request>| Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Command { unix_nanos, requests: requests.into() }),
    };
    let entries = vec![
        batch(1, 10, vec![request(1, 1), request(2, 2)]),
        batch(2, 20, vec![request(1, 3), request(2, PANIC), request(3, 4), request(1, PANIC), request(2, 5)]),
        batch(3, 30, vec![request(3, 6)]),
    ];
    log.blocking_append(entries.clone()).await.expect("appends");
    let replies = sm.apply(entries.clone()).await.expect("a panic is an answer, not an error");
    let panicked = Applied::Panicked { index: 2, message: "the test's panicking command".into() };
    let executed = |seq, index, unix_nanos| Applied::Executed { seq, index, unix_nanos };
    assert_eq!(
        replies,
        [
            vec![executed(1, 1, 10), executed(2, 1, 10)],
            vec![executed(3, 2, 20), panicked.clone(), executed(4, 2, 20), panicked, executed(5, 2, 20)],
            vec![executed(6, 3, 30)],
        ]
    );
    let expected = [(1, 1, 10), (2, 2, 10), (3, 3, 20), (4, 4, 20), (5, 5, 20), (6, 6, 30)];
    assert_eq!(sm.query(|s| s.seen.clone()), expected);

    // A retry of a panicked command gets the recorded outcome, executing nothing.
    let retry = batch(4, 40, vec![request(2, PANIC)]);
    log.blocking_append(vec![retry.clone()]).await.expect("appends");
    let replies = sm.apply([retry]).await.expect("applies");
    assert!(matches!(replies[0][0], Applied::Panicked { index: 2, .. }), "{replies:?}");
    assert_eq!(sm.query(|s| s.seen.clone()), expected);
}

/// A follower and its log on the simulated disk `sim`, under `/node`.
fn open_on(sim: &airomem_workspace::sim::SimStorage) -> (LogStore, Machine) {
    let storage: Arc<dyn airomem::storage::Storage> = Arc::new(sim.clone());
    let root = std::path::Path::new("/node");
    let log = LogStore::open(storage.clone(), &root.join("log"), LogOptions::default()).expect("the log opens");
    let machine = Machine::open(storage, &root.join("snapshots"), PostcardSerializer, log.reader()).expect("opens");
    (log, machine)
}

/// A follower that has snapshotted entries 1–2, ready to install the leader's snapshot of 1–4.
async fn follower_before_install(sim: &airomem_workspace::sim::SimStorage) -> (LogStore, Machine) {
    let (mut log, mut sm) = open_on(sim);
    let entries = [membership(1, 1, &[1, 2, 3]), normal(1, 2, 5, 10)];
    log.blocking_append(entries.clone()).await.expect("appends");
    sm.apply(entries).await.expect("applies");
    sm.get_snapshot_builder().await.build_snapshot().await.expect("builds");
    (log, sm)
}

/// A power cut before every storage operation of a snapshot install on a follower: the
/// follower always reopens, into the state it had (its own older snapshot) or into the
/// installed one, never a mix of the two; and once the install has returned, always into the
/// installed one.
#[tokio::test]
async fn a_power_cut_anywhere_in_a_snapshot_install_leaves_the_old_state_or_the_new() {
    use airomem_workspace::sim::SimStorage;

    let leader_dir = tempfile::tempdir().expect("a temporary directory");
    let (meta, bytes) = {
        let mut leader = open(leader_dir.path());
        leader
            .apply([membership(1, 1, &[1, 2, 3]), normal(1, 2, 5, 10), normal(1, 3, 6, 20), normal(1, 4, 7, 30)])
            .await
            .expect("applies");
        let mut snapshot = leader.get_snapshot_builder().await.build_snapshot().await.expect("builds");
        (snapshot.meta, read_all(&mut snapshot.snapshot).await)
    };
    let old = (Some(log_id(1, 1, 2)), vec![(5, 1, 10)]);
    let new = (Some(log_id(1, 1, 4)), vec![(5, 1, 10), (6, 2, 20), (7, 3, 30)]);
    // How many storage operations the install takes.
    let operations = {
        let sim = SimStorage::new();
        let (_log, mut sm) = follower_before_install(&sim).await;
        let before = sim.ops();
        receive(&mut sm, &meta, &bytes).await.expect("installs without faults");
        sim.ops() - before
    };
    assert!(operations >= 4, "the install writes, syncs and renames ({operations} operations)");

    for cut in 0..=operations {
        let sim = SimStorage::new();
        let (log, mut sm) = follower_before_install(&sim).await;
        sim.freeze_after(sim.ops() + cut);
        let installed = receive(&mut sm, &meta, &bytes).await.is_ok();
        drop(sm);
        drop(log);
        sim.power_cut();
        for seed in 0..4 {
            let image = sim.crash(cut * 1000 + seed);
            let (_log, mut reopened) = open_on(&image);
            let applied = reopened.applied_state().await.expect("reads").0;
            let found = (applied, reopened.query(|s| s.seen.clone()));
            let at = format!("cut before operation {cut} of {operations}, crash image {seed}");
            if installed {
                assert_eq!(found, new, "{at}: the install returned, so it must survive");
            } else {
                assert!(found == old || found == new, "{at}: neither the old state nor the new: {found:?}");
            }
        }
    }
}
