//! Thousands of commands over several close/reopen cycles with 4 KiB segments, for both
//! serializers: the state is exactly the model's, the segment files are exactly the ones the
//! rollover rule predicts (each named by the first sequence number it holds, each exactly as
//! long as predicted, a command larger than a segment alone in one), every command is
//! replayed on reopen, sequence numbers continue across reopens, and `stats()` right after
//! the last commit of a cycle counts exactly what that cycle wrote.

mod segment_files;

use std::collections::HashMap;
use std::path::Path;

use airomem::{JsonSerializer, PostcardSerializer, Seq, Serializer, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};
use segment_files::{FRAME_HEADER_LEN, LOCK_FILE, SEGMENT_HEADER_LEN, file_names, read_segment, segment_name};

const SEGMENT_SIZE: u64 = 4096;
const CYCLES: u64 = 5;
const COMMANDS_PER_CYCLE: u64 = 700;

/// The rollover rule, replayed: a segment is closed when the next batch (here: one record,
/// since commits are awaited one at a time) would take it past the segment size, unless it
/// holds nothing but its header.
struct Prediction {
    /// (first seq, length) of every segment, oldest first.
    segments: Vec<(u64, u64)>,
}

impl Prediction {
    fn new() -> Self {
        Prediction { segments: vec![(1, SEGMENT_HEADER_LEN as u64)] }
    }

    fn record(&mut self, seq: u64, payload_len: usize) {
        let size = (FRAME_HEADER_LEN + payload_len) as u64;
        let (_, len) = *self.segments.last().expect("a segment");
        if len + size > SEGMENT_SIZE && len > SEGMENT_HEADER_LEN as u64 {
            self.segments.push((seq, SEGMENT_HEADER_LEN as u64));
        }
        self.segments.last_mut().expect("a segment").1 += size;
    }

    fn names(&self) -> Vec<String> {
        self.segments.iter().map(|&(first, _)| segment_name(first)).collect()
    }
}

/// The n-th command of the run: mostly new sessions, every third one ends an earlier one,
/// and now and then one larger than a whole segment, which gets a segment of its own.
fn command(n: u64) -> SessionsCommand {
    if n % 3 == 2 {
        SessionsCommand::DeleteSession { token: token(n / 2) }
    } else if n % 251 == 100 {
        SessionsCommand::CreateSession { token: token(n).repeat(160), user_id: n % 1000 }
    } else {
        SessionsCommand::CreateSession { token: token(n), user_id: n % 1000 }
    }
}

fn apply(model: &mut HashMap<String, u64>, command: &SessionsCommand) {
    match command {
        SessionsCommand::CreateSession { token, user_id } => {
            model.insert(token.clone(), *user_id);
        }
        SessionsCommand::DeleteSession { token } => {
            model.remove(token);
        }
    }
}

/// Checks every segment file against the prediction, reading headers and frames directly.
fn check_segments(dir: &Path, prediction: &Prediction, serializer_id: u16, total: u64) {
    let mut expected_files = prediction.names();
    expected_files.push(LOCK_FILE.to_string());
    expected_files.push("journal.head".to_string());
    expected_files.sort();
    assert_eq!(file_names(dir), expected_files, "exactly the predicted segments, the lock file and the journal head");

    let mut next_seq = 1;
    for &(first, len) in &prediction.segments {
        let path = dir.join(segment_name(first));
        let file_len = std::fs::metadata(&path).expect("segment metadata").len();
        let segment = read_segment(&path);
        // A closed segment keeps the zeros prepared for the batch that did not fit, never
        // past the segment size; the newest one was trimmed by the close.
        let size = file_len - segment.zero_tail as u64;
        assert_eq!(size, len, "length of the records of {}", path.display());
        assert!(file_len == size || file_len <= SEGMENT_SIZE, "zeros of {} past the segment size", path.display());
        assert!(
            size <= SEGMENT_SIZE || segment.records.len() == 1,
            "{} is larger than a segment may be, and not because of a single large record",
            path.display()
        );
        assert_eq!(segment.version, 1);
        assert_eq!(segment.serializer, serializer_id);
        assert_eq!(segment.schema, 1);
        assert_eq!(segment.first_seq, first, "header of {} names its first record", path.display());
        assert!(!segment.records.is_empty(), "{} holds records", path.display());
        for record in &segment.records {
            assert_eq!(record.seq, next_seq, "records are contiguous across segments");
            assert_eq!(record.kind, 1, "only commands were written");
            assert!(record.batch_start && record.batch_end, "every awaited commit is a batch of its own");
            next_seq += 1;
        }
    }
    assert_eq!(next_seq, total + 1, "the segments hold every command");
}

/// Journal bytes one cycle wrote: what the segments grew by, headers of new segments included.
fn cycle_bytes(after: &Prediction, at_open: &[(u64, u64)], fresh: bool) -> u64 {
    let total = |segments: &[(u64, u64)]| segments.iter().map(|&(_, len)| len).sum::<u64>();
    // A fresh store's first segment header is written by this cycle too.
    total(&after.segments) - if fresh { 0 } else { total(at_open) }
}

async fn cycles<Z: Serializer + Copy>(serializer: Z) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let options = || StoreOptions::default().segment_size(SEGMENT_SIZE);
    let mut model = HashMap::new();
    let mut prediction = Prediction::new();
    let mut total = 0u64;
    let mut stats = Vec::new();

    for cycle in 0..CYCLES {
        let store: Store<Sessions, Z> = Store::open_with(serializer, &dir, options()).await.expect("open");
        let report = store.recovery();
        assert_eq!(report.records_replayed, total, "cycle {cycle}: every command is replayed");
        assert_eq!(report.records_skipped, 0);
        assert_eq!(report.next_seq, Seq(total + 1), "cycle {cycle}: sequence numbers continue");
        assert!(report.torn_tail.is_none(), "cycle {cycle}: a clean close leaves no torn tail");
        assert_eq!(report.segments_read, if total == 0 { 0 } else { prediction.segments.len() as u64 });
        assert_eq!(store.query().expect("query").tokens, model, "cycle {cycle}: state after recovery");
        let segments_before = prediction.segments.len() as u64;
        let segments_at_open = prediction.segments.clone();

        for _ in 0..COMMANDS_PER_CYCLE {
            let n = total;
            let cmd = command(n);
            let mut payload = Vec::new();
            serializer.encode(&cmd, &mut payload).expect("encode");
            apply(&mut model, &cmd);
            let committed = store.commit(cmd).await.expect("commit");
            total += 1;
            assert_eq!(committed.seq, Seq(total), "seq of command {n}");
            prediction.record(total, payload.len());
        }

        assert_eq!(store.query().expect("query").tokens, model, "cycle {cycle}: state before close");
        // Checked at the very end, so that a wrong count does not hide the other checks.
        let new_segments = prediction.segments.len() as u64 - segments_before + u64::from(cycle == 0);
        // (commits, aborted, batches, syncs, journal bytes, segments created, last seq)
        let expected = (
            COMMANDS_PER_CYCLE,
            0,
            COMMANDS_PER_CYCLE, // awaited commits are written one by one
            // Fsync: one per batch; a rollover finds nothing unsynced, and the sync with which
            // an open makes what it recovered durable is not one of this open's batches.
            COMMANDS_PER_CYCLE,
            cycle_bytes(&prediction, &segments_at_open, cycle == 0),
            new_segments,
            total,
        );
        let s = store.stats();
        let actual = (s.commits, s.aborted, s.batches, s.syncs, s.journal_bytes, s.segments_created, s.last_seq);
        stats.push((cycle, actual, expected));
        if cycle % 2 == 0 {
            store.close().await.expect("close");
        } else {
            // Dropping only asks the writer to close; an open of the directory waits for it.
            drop(store);
            let waited: Store<Sessions, Z> = Store::open_with(serializer, &dir, options()).await.expect("reopen");
            waited.close().await.expect("close");
        }
        check_segments(&dir, &prediction, Z::ID.0, total);
    }

    for (cycle, actual, expected) in stats {
        assert_eq!(
            actual, expected,
            "cycle {cycle}: stats() right after the last acknowledged commit \
             (commits, aborted, batches, syncs, journal_bytes, segments_created, last_seq)"
        );
    }
    assert!(prediction.segments.len() > 20, "the run must roll over many times");
    let oversized = prediction.segments.iter().filter(|&&(_, len)| len > SEGMENT_SIZE).count();
    assert!(oversized >= 10, "commands larger than a segment were written: {oversized}");
    let store: Store<Sessions, Z> = Store::open_with(serializer, &dir, options()).await.expect("final open");
    assert_eq!(store.recovery().records_replayed, CYCLES * COMMANDS_PER_CYCLE);
    assert_eq!(store.recovery().segments_read, prediction.segments.len() as u64);
    assert_eq!(store.recovery().next_seq, Seq(total + 1));
    assert_eq!(store.query().expect("query").tokens, model);
    // The final open with another segment size still reads every segment, and appends to
    // the newest one.
    drop(store);
    let store: Store<Sessions, Z> =
        Store::open_with(serializer, &dir, StoreOptions::default()).await.expect("open with default size");
    assert_eq!(store.query().expect("query").tokens, model);
    let committed = store.commit(command(total)).await.expect("commit");
    assert_eq!(committed.seq, Seq(total + 1));
    assert_eq!(store.stats().segments_created, 0, "a roomy segment size appends to the newest segment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postcard_reopen_cycles_roll_over_and_replay_exactly() {
    cycles(PostcardSerializer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_reopen_cycles_roll_over_and_replay_exactly() {
    cycles(JsonSerializer).await;
}
