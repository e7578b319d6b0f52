//! A corpus of damaged stores. A small store (several segments, the journal head and, with
//! the `snapshot` feature, two snapshots and a pruned journal) is damaged in every way listed
//! below, one damage per copy, and reopened. Every case must end in one of three ways:
//!
//! * the exact model state;
//! * a prefix of the model with a reported torn tail whose cut bytes are in the quarantine
//!   file (damage at the very end of the newest segment);
//! * a typed error that names the damaged file.
//!
//! Never a panic, never any other state. The damages: every bit flipped (4,096 sampled
//! bits by default, all of them with `--ignored`), truncation at every byte offset of the
//! last three records, the tail zero- and garbage-filled from each of those offsets, and
//! each file deleted or zeroed. (A cut exactly between two records leaves an intact, shorter
//! journal: it opens to exactly the records before the cut. A crash cannot produce it. Zeros
//! from a record boundary to the end of the newest segment read the same way: they are the
//! space the writer prepares ahead of its records.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airomem::{Error, JournalError, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::Log;

const COMMANDS: u64 = 40;

fn options() -> StoreOptions {
    let options = StoreOptions::default().segment_size(400);
    #[cfg(feature = "snapshot")]
    let options = options.snapshots_retained(2);
    options
}

fn model() -> Vec<u64> {
    (1..=COMMANDS).map(|v| v * 1_000_003).collect()
}

/// The undamaged store's files, by name.
struct Fixture {
    files: BTreeMap<String, Vec<u8>>,
    newest_segment: String,
}

impl Fixture {
    /// The store as if its process had died after the last commit instead of closing: a
    /// clean close records in `journal.head` that every record is synced, which makes
    /// damage to any of them corruption rather than a torn write. The head's first 20 bytes
    /// (the layout from before the watermark) name the newest segment and nothing more.
    fn crashed(mut self) -> Fixture {
        self.files.get_mut("journal.head").expect("journal.head").truncate(20);
        self
    }
}

async fn build(dir: &Path) -> Fixture {
    let store: PostcardStore<Log> = Store::open_with(PostcardSerializer, dir, options()).await.expect("open");
    for (i, value) in model().into_iter().enumerate() {
        store.commit(value).await.expect("commit");
        #[cfg(feature = "snapshot")]
        if i == 14 || i == 29 {
            store.snapshot().await.expect("snapshot");
        }
        let _ = i;
    }
    store.close().await.expect("close");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8 name").to_string();
        files.insert(name, std::fs::read(&path).expect("read"));
    }
    let newest_segment = files.keys().filter(|n| n.ends_with(".journal")).max().expect("a segment").clone();
    assert!(files.keys().filter(|n| n.ends_with(".journal")).count() >= 3, "several segments: {:?}", files.keys());
    Fixture { files, newest_segment }
}

/// Writes the fixture with `name` replaced by `bytes` (or removed) into a fresh directory.
fn damaged_copy(fixture: &Fixture, scratch: &Path, case: usize, name: &str, bytes: Option<&[u8]>) -> PathBuf {
    let dir = scratch.join(format!("case-{case}"));
    std::fs::create_dir(&dir).expect("mkdir");
    for (file, content) in &fixture.files {
        let content = if file == name { bytes } else { Some(content.as_slice()) };
        if let Some(content) = content {
            std::fs::write(dir.join(file), content).expect("write");
        }
    }
    dir
}

/// Whether an open error is typed and names the damaged file (or, for a lost snapshot, says
/// which records are missing).
fn names_the_damage(error: &Error, name: &str) -> bool {
    let names = |file: &Path| file.file_name().and_then(|n| n.to_str()) == Some(name);
    match error {
        Error::Journal(e) => match &**e {
            JournalError::Corrupt { file, .. }
            | JournalError::BadHeader { file, .. }
            | JournalError::UnsupportedVersion { file, .. }
            | JournalError::SerializerMismatch { file, .. }
            | JournalError::SchemaOrder { file, .. }
            | JournalError::SegmentMissing { file } => names(file),
            // A deleted or unreadable older segment shows as a gap before the next one.
            JournalError::MissingRecords { .. } => name.ends_with(".journal") || name.ends_with(".snapshot"),
            _ => false,
        },
        Error::SchemaNewer { file, .. } | Error::SchemaUnknown { file, .. } => names(file),
        Error::NoUsableSnapshot { skipped, .. } => {
            skipped.iter().any(|s| s.contains(name)) || name.ends_with(".journal")
        }
        #[cfg(feature = "snapshot")]
        Error::Snapshot(e) => e.to_string().contains(name),
        _ => false,
    }
}

#[derive(Default, Debug)]
struct Tally {
    exact: u64,
    torn: u64,
    errors: u64,
}

/// Opens one damaged copy and checks it ends in one of the allowed ways.
async fn check(
    fixture: &Fixture,
    scratch: &Path,
    case: usize,
    what: &str,
    name: &str,
    bytes: Option<&[u8]>,
    tally: &mut Tally,
) {
    let dir = damaged_copy(fixture, scratch, case, name, bytes);
    let model = model();
    match Store::<Log, PostcardSerializer>::open_with(PostcardSerializer, &dir, options()).await {
        Ok(store) => {
            let values = store.query().expect("query").values.clone();
            if values == model {
                tally.exact += 1;
            } else {
                let tail = store.recovery().torn_tail.clone();
                let tail = tail.unwrap_or_else(|| {
                    panic!("{what}: silently wrong state ({} of {} values)", values.len(), model.len())
                });
                assert!(values.len() < model.len() && values[..] == model[..values.len()], "{what}: not a prefix");
                let segment = tail.segment.file_name().and_then(|n| n.to_str()).expect("name");
                assert_eq!(segment, fixture.newest_segment, "{what}: only the newest segment has a torn tail");
                let damaged = bytes.expect("a cut file has bytes");
                let kept = std::fs::read(&tail.quarantine).expect("quarantine file");
                assert_eq!(kept, &damaged[tail.offset as usize..], "{what}: quarantine holds exactly the cut bytes");
                tally.torn += 1;
            }
        }
        Err(e) => {
            assert!(names_the_damage(&e, name), "{what}: error does not name {name}: {e}");
            tally.errors += 1;
        }
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Offsets of the records of a segment, read from the frame headers.
fn record_offsets(segment: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 32;
    while at + 25 <= segment.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 25 + len;
    }
    offsets
}

async fn bit_flips(sample: Option<usize>) -> Tally {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fixture = build(&tmp.path().join("fixture")).await.crashed();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).expect("mkdir");
    let bits: Vec<(String, usize)> = fixture
        .files
        .iter()
        .flat_map(|(name, content)| (0..content.len() * 8).map(move |bit| (name.clone(), bit)))
        .collect();
    let stride = sample.map_or(1, |n| (bits.len() / n).max(1));
    let mut tally = Tally::default();
    for (case, (name, bit)) in bits.iter().step_by(stride).enumerate() {
        let mut bytes = fixture.files[name].clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let what = format!("bit {bit} of {name} flipped");
        check(&fixture, &scratch, case, &what, name, Some(&bytes), &mut tally).await;
    }
    eprintln!("{} of {} bits flipped: {tally:?}", bits.len().div_ceil(stride), bits.len());
    tally
}

#[tokio::test]
async fn sampled_bit_flips_never_give_a_wrong_state() {
    let tally = bit_flips(Some(4096)).await;
    assert!(tally.exact + tally.torn + tally.errors >= 4096, "at least 4,096 cases: {tally:?}");
    assert!(tally.errors > 0 && tally.torn > 0, "the sample reaches errors and torn tails: {tally:?}");
}

#[tokio::test]
#[ignore = "every bit of the store, about 10,000 cases; run with --ignored"]
async fn every_bit_flip_never_gives_a_wrong_state() {
    bit_flips(None).await;
}

#[tokio::test]
async fn cut_zeroed_or_garbage_tails_of_the_last_three_records_are_torn_tails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fixture = build(&tmp.path().join("fixture")).await.crashed();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).expect("mkdir");
    let name = fixture.newest_segment.clone();
    let segment = fixture.files[&name].clone();
    let offsets = record_offsets(&segment);
    assert!(offsets.len() >= 3, "the newest segment holds three records");
    let from = offsets[offsets.len() - 3];
    let mut tally = Tally::default();
    let mut case = 0;
    let mut garbage = 0x2545_f491_4f6c_dd1d_u64;
    for at in from..segment.len() {
        let cut = &segment[..at];
        let zeroed: Vec<u8> = segment[..at].iter().copied().chain(std::iter::repeat_n(0, segment.len() - at)).collect();
        let noise: Vec<u8> = segment[..at]
            .iter()
            .copied()
            .chain((at..segment.len()).map(|_| {
                garbage ^= garbage << 13;
                garbage ^= garbage >> 7;
                garbage ^= garbage << 17;
                garbage as u8
            }))
            .collect();
        if let Some(whole) = offsets.iter().position(|&o| o == at) {
            // A cut exactly between records leaves a shorter, intact journal: nothing in it
            // shows that more was there (a crash cannot do this: fdatasync makes the size
            // durable with the data). Zeros from a record boundary to the end are the same
            // to recovery: they are what the writer prepares ahead of its records. Either
            // way the store opens to exactly the records before the boundary.
            for (how, bytes) in [("cut", cut), ("zero-filled", &zeroed[..])] {
                let dir = damaged_copy(&fixture, &scratch, case, &name, Some(bytes));
                let store: PostcardStore<Log> =
                    Store::open_with(PostcardSerializer, &dir, options()).await.expect("open at a boundary");
                let values = store.query().expect("query").values.clone();
                let before_segment = model().len() - offsets.len();
                assert_eq!(values, model()[..before_segment + whole], "{name} {how} at record boundary {at}");
                assert!(store.recovery().torn_tail.is_none(), "nothing torn at a boundary");
                store.close().await.expect("close");
                std::fs::remove_dir_all(&dir).expect("clean up");
                case += 1;
            }
        }
        let cuts: &[(&str, &[u8])] = if offsets.contains(&at) {
            &[("garbage-filled", &noise[..])]
        } else {
            &[("cut", cut), ("zero-filled", &zeroed[..]), ("garbage-filled", &noise[..])]
        };
        for &(how, bytes) in cuts {
            let before = tally.errors;
            check(&fixture, &scratch, case, &format!("{name} {how} at {at}"), &name, Some(bytes), &mut tally).await;
            assert_eq!(
                tally.errors, before,
                "{name} {how} at {at}: damage at the very end is a torn tail, not an error"
            );
            case += 1;
        }
    }
    eprintln!("{case} tail cases: {tally:?}");
}

#[tokio::test]
async fn deleted_or_zeroed_files_are_errors_or_harmless() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fixture = build(&tmp.path().join("fixture")).await;
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).expect("mkdir");
    let mut tally = Tally::default();
    for (case, (name, content)) in fixture.files.iter().enumerate() {
        check(&fixture, &scratch, 2 * case, &format!("{name} deleted"), name, None, &mut tally).await;
        let zeros = vec![0u8; content.len()];
        check(&fixture, &scratch, 2 * case + 1, &format!("{name} zeroed"), name, Some(&zeros), &mut tally).await;
    }
    eprintln!("{} files deleted or zeroed: {tally:?}", fixture.files.len());
}
