//! Damage that is not a torn tail is reported, never repaired: a flipped byte in any record
//! that has an intact record after it (in the newest segment), or anywhere in an older
//! segment, is `JournalError::Corrupt` naming the segment, the record's offset and the
//! sequence number it should carry; a deleted segment is `JournalError::MissingRecords`. In
//! every case the files are left byte for byte as they were. A length field claiming ~4 GiB
//! is refused without allocating it.

mod segment_files;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use airomem::{Corruption, Error, JournalError, PostcardSerializer, PostcardStore, Seq, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand, token};
use segment_files::{RawRecord, copy_dir, file_stamps, read_segment, segment_names, snapshot};

/// Records the largest single allocation this test binary makes, to show that a huge length
/// field is never used as an allocation size.
struct TrackingAllocator;

static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator;

const SEGMENT_SIZE: u64 = 1024;

fn command(n: u64) -> SessionsCommand {
    SessionsCommand::CreateSession { token: token(n), user_id: n }
}

fn model(commands: u64) -> HashMap<String, u64> {
    (0..commands).map(|n| (token(n), n)).collect()
}

fn options() -> StoreOptions {
    StoreOptions::default().segment_size(SEGMENT_SIZE)
}

async fn open(dir: &Path) -> Result<PostcardStore<Sessions>, Error> {
    Store::open_with(PostcardSerializer, dir, options()).await
}

/// Opens `dir`, expecting a journal error, and checks that nothing on disk changed.
async fn open_fails(dir: &Path) -> Arc<JournalError> {
    let before = snapshot(dir);
    let stamps = file_stamps(dir);
    let error = match open(dir).await {
        Ok(store) => panic!("opening a damaged store must fail, but it opened: {:?}", store.recovery()),
        Err(Error::Journal(e)) => e,
        Err(other) => panic!("expected Error::Journal, got {other:?}"),
    };
    assert_eq!(snapshot(dir), before, "a failed open leaves every file as it was");
    // And it says the same thing the second time.
    match open(dir).await {
        Err(Error::Journal(again)) => assert_eq!(again.to_string(), error.to_string()),
        other => panic!("second open: {other:?}"),
    }
    assert_eq!(snapshot(dir), before);
    assert_eq!(file_stamps(dir), stamps, "no file was rewritten, replaced or touched");
    error
}

/// A store of at least three segments whose newest one holds at least four records.
struct Original {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    commands: u64,
    /// (path, records) of every segment, oldest first.
    segments: Vec<(PathBuf, Vec<RawRecord>)>,
}

async fn original() -> Original {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("original");
    let store = open(&dir).await.expect("open");
    let mut commands = 0;
    loop {
        store.commit(command(commands)).await.expect("commit");
        commands += 1;
        let names = segment_names(&dir);
        if names.len() >= 3 && read_segment(&dir.join(names.last().expect("newest"))).records.len() >= 4 {
            break;
        }
    }
    store.close().await.expect("close");
    let segments = segment_names(&dir)
        .into_iter()
        .map(|name| {
            let path = dir.join(name);
            let records = read_segment(&path).records;
            (path, records)
        })
        .collect();
    Original { _tmp: tmp, dir, commands, segments }
}

/// A copy of the original with one segment's bytes changed by `damage`.
fn damaged_copy(
    original: &Original,
    scratch: &Path,
    case: &str,
    segment: usize,
    damage: impl FnOnce(&mut Vec<u8>),
) -> (PathBuf, PathBuf) {
    let dir = scratch.join(case);
    copy_dir(&original.dir, &dir);
    let path = dir.join(original.segments[segment].0.file_name().expect("name"));
    let mut bytes = fs::read(&path).expect("read");
    damage(&mut bytes);
    fs::write(&path, &bytes).expect("write");
    (dir, path)
}

/// Where in a record a byte is flipped, and the mask.
const FLIPS: [(&str, usize, u8); 7] = [
    ("length", 0, 0x01),
    ("checksum", 5, 0x10),
    ("seq", 8, 0x01),
    ("time", 20, 0x80),
    ("kind", 24, 0x03),
    ("payload start", 25, 0x20),
    ("payload end", usize::MAX, 0x01),
];

fn flip_at(record: &RawRecord, at: usize) -> usize {
    if at == usize::MAX { record.end - 1 } else { record.offset + at }
}

fn expect_corrupt(error: &JournalError, file: &Path, record: &RawRecord, what: &str) -> Corruption {
    match error {
        JournalError::Corrupt { file: f, offset, seq, kind } => {
            assert_eq!(f, file, "{what}: the damaged segment is named");
            assert_eq!(*offset, record.offset as u64, "{what}: the damaged record's offset");
            assert_eq!(*seq, Seq(record.seq), "{what}: the seq the record should carry");
            kind.clone()
        }
        other => panic!("{what}: expected JournalError::Corrupt, got {other:?}"),
    }
}

async fn flips_in_segment(original: &Original, segment: usize, records: impl Iterator<Item = usize>, label: &str) {
    let scratch = tempfile::tempdir().expect("scratch");
    let mut cases = 0;
    for index in records {
        let record = original.segments[segment].1[index].clone();
        for (field, at, mask) in FLIPS {
            let case = format!("{label}-record-{index}-{field}");
            let (dir, path) =
                damaged_copy(original, scratch.path(), &case, segment, |b| b[flip_at(&record, at)] ^= mask);
            let error = open_fails(&dir).await;
            let kind = expect_corrupt(&error, &path, &record, &case);
            assert!(matches!(kind, Corruption::Checksum { .. }), "{case}: {kind:?}");
            cases += 1;
        }
    }
    assert!(cases > 0);
}

#[tokio::test]
async fn flipped_byte_in_an_earlier_record_of_the_newest_segment_is_corruption() {
    let original = original().await;
    let newest = original.segments.len() - 1;
    let count = original.segments[newest].1.len();
    flips_in_segment(&original, newest, 0..count - 1, "newest").await;
}

#[tokio::test]
async fn flipped_byte_anywhere_in_an_older_segment_is_corruption() {
    let original = original().await;
    for segment in [0, original.segments.len() - 2] {
        let count = original.segments[segment].1.len();
        assert!(count >= 3);
        // First, middle and last record: in an older segment even the last one is not a torn
        // tail, since later segments hold acknowledged records.
        flips_in_segment(&original, segment, [0, count / 2, count - 1].into_iter(), &format!("segment-{segment}"))
            .await;
    }
}

#[tokio::test]
async fn damaged_length_fields_before_intact_records_are_corruption() {
    let original = original().await;
    let scratch = tempfile::tempdir().expect("scratch");
    let newest = original.segments.len() - 1;
    for (segment, index) in [(newest, 0), (newest, 1), (0, 1)] {
        let record = original.segments[segment].1[index].clone();
        let available = fs::metadata(&original.segments[segment].0).expect("metadata").len() - record.offset as u64;
        // The largest length a record may claim is refused only because the bytes are not
        // there; anything larger is refused by the limit itself.
        let claims = [
            (u32::MAX, Corruption::LengthTooLarge { claimed: u64::from(u32::MAX) }),
            (0x8000_0000, Corruption::LengthTooLarge { claimed: 0x8000_0000 }),
            (0x1000_0001, Corruption::LengthTooLarge { claimed: 0x1000_0001 }),
            (0x1000_0000, Corruption::Truncated { needed: 25 + 0x1000_0000, available }),
        ];
        for (claim, expected) in claims {
            let case = format!("segment-{segment}-record-{index}-claims-{claim}");
            let (dir, path) = damaged_copy(&original, scratch.path(), &case, segment, |b| {
                b[record.offset..record.offset + 4].copy_from_slice(&claim.to_le_bytes());
            });
            let error = open_fails(&dir).await;
            let kind = expect_corrupt(&error, &path, &record, &case);
            assert_eq!(kind, expected, "{case}");
        }
    }
    assert_no_huge_allocation();
}

#[tokio::test]
async fn four_gib_length_in_the_last_record_is_a_torn_tail_without_allocating_it() {
    let original = original().await;
    let scratch = tempfile::tempdir().expect("scratch");
    let newest = original.segments.len() - 1;
    let last = original.segments[newest].1.last().expect("records").clone();
    for claim in [u32::MAX, 0x1000_0000, 0x0fff_ffff] {
        let case = format!("last-claims-{claim}");
        let (dir, path) = damaged_copy(&original, scratch.path(), &case, newest, |b| {
            b[last.offset..last.offset + 4].copy_from_slice(&claim.to_le_bytes());
        });
        // As a crash would leave it: a clean close makes damage to the last record corruption.
        segment_files::as_if_crashed(&dir);
        let store = open(&dir).await.expect("a damaged last record is a torn tail: the store opens");
        let tail = store.recovery().torn_tail.clone().expect("torn tail reported");
        assert_eq!(tail.segment, path, "{case}");
        assert_eq!(tail.offset, last.offset as u64, "{case}");
        assert_eq!(tail.bytes, (last.end - last.offset) as u64, "{case}");
        let expected = if claim as usize > 256 * 1024 * 1024 {
            Corruption::LengthTooLarge { claimed: u64::from(claim) }
        } else {
            Corruption::Truncated { needed: 25 + u64::from(claim), available: (last.end - last.offset) as u64 }
        };
        assert_eq!(tail.reason, expected, "{case}");
        assert_eq!(store.query().expect("query").tokens, model(original.commands - 1));
        assert_eq!(store.recovery().next_seq, Seq(original.commands));
    }
    assert_no_huge_allocation();
}

fn assert_no_huge_allocation() {
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    assert!(largest < 16 * 1024 * 1024, "an allocation of {largest} bytes: a length field was trusted");
}

#[tokio::test]
async fn deleted_middle_segment_is_missing_records() {
    let original = original().await;
    let scratch = tempfile::tempdir().expect("scratch");
    let dir = scratch.path().join("missing-middle");
    copy_dir(&original.dir, &dir);
    let middle = 1;
    let (deleted, deleted_records) = &original.segments[middle];
    let (after, after_records) = &original.segments[middle + 1];
    fs::remove_file(dir.join(deleted.file_name().expect("name"))).expect("remove");
    let error = open_fails(&dir).await;
    match &*error {
        JournalError::MissingRecords { file, expected, found } => {
            assert_eq!(file, &dir.join(after.file_name().expect("name")), "the segment after the gap");
            assert_eq!(*expected, Seq(deleted_records[0].seq), "the first missing record");
            assert_eq!(*found, Seq(after_records[0].seq), "the record found instead");
        }
        other => panic!("expected MissingRecords, got {other:?}"),
    }
}

#[tokio::test]
async fn deleted_first_segment_is_missing_records() {
    let original = original().await;
    let scratch = tempfile::tempdir().expect("scratch");
    let dir = scratch.path().join("missing-first");
    copy_dir(&original.dir, &dir);
    fs::remove_file(dir.join(original.segments[0].0.file_name().expect("name"))).expect("remove");
    let error = open_fails(&dir).await;
    let (second, second_records) = &original.segments[1];
    match &*error {
        JournalError::MissingRecords { file, expected, found } => {
            assert_eq!(file, &dir.join(second.file_name().expect("name")));
            assert_eq!(*expected, Seq(1));
            assert_eq!(*found, Seq(second_records[0].seq));
        }
        other => panic!("expected MissingRecords, got {other:?}"),
    }
}

#[tokio::test]
async fn undamaged_copy_opens_to_the_model() {
    // The control for every case above: the same copy without damage opens cleanly.
    let original = original().await;
    let scratch = tempfile::tempdir().expect("scratch");
    let (dir, _) = damaged_copy(&original, scratch.path(), "none", 0, |_| {});
    let before: BTreeMap<_, _> = snapshot(&dir);
    let store = open(&dir).await.expect("open");
    assert!(store.recovery().torn_tail.is_none());
    assert_eq!(store.recovery().records_replayed, original.commands);
    assert_eq!(store.query().expect("query").tokens, model(original.commands));
    store.close().await.expect("close");
    assert_eq!(snapshot(&dir), before, "opening and closing without commits changes no file");
}
