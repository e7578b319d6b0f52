//! A store refuses segments it cannot read correctly, naming the file and the reason, and
//! leaves them untouched: wrong magic, a damaged header, an unknown format version, another
//! serializer, another schema version, a header that disagrees with its file name, a file
//! too short for a header. After a refused open the directory is not left locked.

mod segment_files;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airomem::{
    Error, JournalError, JsonSerializer, JsonStore, PostcardSerializer, PostcardStore, Serializer, SerializerId, State,
    Store, StoreOptions,
};
use airomem_workspace::{Sessions, SessionsCommand, token};
use segment_files::{fix_header_crc, segment_names, snapshot};
use serde::{Deserialize, Serialize};

/// The same sessions under schema version 2.
#[derive(Serialize, Deserialize, Default, Debug)]
struct SessionsV2 {
    tokens: std::collections::HashMap<String, u64>,
}

impl State for SessionsV2 {
    type Command = SessionsCommand;
    const SCHEMA_VERSION: u32 = 2;

    fn execute(&mut self, command: SessionsCommand) {
        match command {
            SessionsCommand::CreateSession { token, user_id } => {
                self.tokens.insert(token, user_id);
            }
            SessionsCommand::DeleteSession { token } => {
                self.tokens.remove(&token);
            }
        }
    }
}

const COMMANDS: u64 = 30;

fn options() -> StoreOptions {
    StoreOptions::default().segment_size(512)
}

/// A store written with `serializer`, in several segments. Returns the directory and the
/// segment paths, oldest first.
async fn written<Z: Serializer + Copy>(serializer: Z, tmp: &Path) -> (PathBuf, Vec<PathBuf>) {
    let dir = tmp.join("store");
    let store: Store<Sessions, Z> = Store::open_with(serializer, &dir, options()).await.expect("open");
    for n in 0..COMMANDS {
        store.commit(SessionsCommand::CreateSession { token: token(n), user_id: n }).await.expect("commit");
    }
    store.close().await.expect("close");
    let segments: Vec<PathBuf> = segment_names(&dir).into_iter().map(|n| dir.join(n)).collect();
    assert!(segments.len() >= 3, "several segments");
    (dir, segments)
}

fn journal_error<T: std::fmt::Debug>(result: Result<T, Error>) -> Arc<JournalError> {
    match result {
        Err(Error::Journal(e)) => e,
        other => panic!("expected Error::Journal, got {other:?}"),
    }
}

/// Opens with postcard, expecting a journal error; checks the files did not change and the
/// directory is not left locked.
async fn postcard_open_fails(dir: &Path) -> Arc<JournalError> {
    let before = snapshot(dir);
    let error =
        journal_error(Store::<Sessions, PostcardSerializer>::open_with(PostcardSerializer, dir, options()).await);
    assert_eq!(snapshot(dir), before, "a refused open changes no file");
    error
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).expect("read");
    f(&mut bytes);
    fs::write(path, bytes).expect("write");
}

fn expect_bad_header(error: &JournalError, file: &Path, reason: &str) {
    match error {
        JournalError::BadHeader { file: f, reason: r } => {
            assert_eq!(f, file);
            assert_eq!(*r, reason);
        }
        other => panic!("expected BadHeader({reason}), got {other:?}"),
    }
}

/// Restores the original bytes and checks the store opens with everything in it: the refused
/// open did not leave the directory locked or anything changed.
async fn restore_and_open(dir: &Path, path: &Path, original: &[u8]) {
    fs::write(path, original).expect("restore");
    let store: PostcardStore<Sessions> =
        Store::open_with(PostcardSerializer, dir, options()).await.expect("open after restoring the file");
    assert_eq!(store.recovery().records_replayed, COMMANDS);
    assert_eq!(store.query().expect("query").tokens.len() as u64, COMMANDS);
}

#[tokio::test]
async fn wrong_magic_is_a_bad_header_in_the_newest_and_in_an_older_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, segments) = written(PostcardSerializer, tmp.path()).await;
    for path in [segments.last().expect("newest"), &segments[0], &segments[1]] {
        let original = fs::read(path).expect("read");
        // With a valid header checksum too, so that only the magic is wrong.
        edit(path, |b| {
            b[0..8].copy_from_slice(b"AIROMEMX");
            fix_header_crc(b);
        });
        let error = postcard_open_fails(&dir).await;
        expect_bad_header(&error, path, "wrong magic bytes");
        restore_and_open(&dir, path, &original).await;
    }
}

#[tokio::test]
async fn damaged_header_is_a_bad_header() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, segments) = written(PostcardSerializer, tmp.path()).await;
    for path in [segments.last().expect("newest"), &segments[0]] {
        let original = fs::read(path).expect("read");
        for byte in [8, 10, 13, 16, 24, 29] {
            edit(path, |b| b[byte] ^= 0x04);
            let error = postcard_open_fails(&dir).await;
            expect_bad_header(&error, path, "header checksum mismatch");
            fs::write(path, &original).expect("restore");
        }
        restore_and_open(&dir, path, &original).await;
    }
}

#[tokio::test]
async fn format_version_2_is_unsupported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, segments) = written(PostcardSerializer, tmp.path()).await;
    for path in [segments.last().expect("newest"), &segments[0]] {
        let original = fs::read(path).expect("read");
        edit(path, |b| {
            b[8..10].copy_from_slice(&2u16.to_le_bytes());
            fix_header_crc(b);
        });
        let error = postcard_open_fails(&dir).await;
        match &*error {
            JournalError::UnsupportedVersion { file, found, supported } => {
                assert_eq!(file, path);
                assert_eq!((*found, *supported), (2, 1));
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
        restore_and_open(&dir, path, &original).await;
    }
}

#[tokio::test]
async fn opening_postcard_journal_with_json_is_a_serializer_mismatch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, segments) = written(PostcardSerializer, tmp.path()).await;
    let before = snapshot(&dir);
    let error = journal_error(JsonStore::<Sessions>::open_with(JsonSerializer, &dir, options()).await);
    match &*error {
        JournalError::SerializerMismatch { file, found, expected } => {
            assert_eq!(file, &segments[0], "the first segment read is named");
            assert_eq!(*found, SerializerId(1));
            assert_eq!(*expected, SerializerId(2));
            assert_eq!(*found, PostcardSerializer::ID);
            assert_eq!(*expected, JsonSerializer::ID);
        }
        other => panic!("expected SerializerMismatch, got {other:?}"),
    }
    assert_eq!(snapshot(&dir), before);
    // The right serializer still opens it.
    let store: PostcardStore<Sessions> =
        Store::open_with(PostcardSerializer, &dir, options()).await.expect("open with postcard");
    assert_eq!(store.recovery().records_replayed, COMMANDS);
}

#[tokio::test]
async fn opening_json_journal_with_postcard_is_a_serializer_mismatch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, segments) = written(JsonSerializer, tmp.path()).await;
    let error = postcard_open_fails(&dir).await;
    match &*error {
        JournalError::SerializerMismatch { file, found, expected } => {
            assert_eq!(file, &segments[0]);
            assert_eq!((*found, *expected), (SerializerId(2), SerializerId(1)));
        }
        other => panic!("expected SerializerMismatch, got {other:?}"),
    }
    let store: JsonStore<Sessions> = Store::open_with(JsonSerializer, &dir, options()).await.expect("open with json");
    assert_eq!(store.recovery().records_replayed, COMMANDS);
}

#[tokio::test]
async fn schema_version_2_without_a_predecessor_refuses_a_version_1_journal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, segments) = written(PostcardSerializer, tmp.path()).await;
    let before = snapshot(&dir);
    let result = Store::<SessionsV2, PostcardSerializer>::open_with(PostcardSerializer, &dir, options()).await;
    match &result {
        Err(Error::SchemaUnknown { file, found, current, known, .. }) => {
            assert_eq!(file, &segments[0]);
            assert_eq!((*found, *current), (1, 2));
            assert!(known.is_empty(), "SessionsV2 names no predecessor");
        }
        other => panic!("expected SchemaUnknown, got {other:?}"),
    }
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("schema version 1") && message.contains("fn previous()"), "{message}");
    assert_eq!(snapshot(&dir), before, "a refused open changes no file");
    let store: PostcardStore<Sessions> =
        Store::open_with(PostcardSerializer, &dir, options()).await.expect("version 1 still opens it");
    assert_eq!(store.recovery().records_replayed, COMMANDS);
}

#[tokio::test]
async fn schema_version_1_refuses_a_version_2_journal_as_newer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v2");
    let store: PostcardStore<SessionsV2> = Store::open(PostcardSerializer, &dir).await.expect("open v2");
    store.commit(SessionsCommand::CreateSession { token: "t".into(), user_id: 1 }).await.expect("commit");
    store.close().await.expect("close");
    let segment = dir.join(&segment_names(&dir)[0]);
    assert_eq!(segment_files::read_segment(&segment).schema, 2, "the header records the schema version");
    let before = snapshot(&dir);
    let result = Store::<Sessions, PostcardSerializer>::open_with(PostcardSerializer, &dir, options()).await;
    match &result {
        Err(Error::SchemaNewer { file, found, current }) => {
            assert_eq!(file, &segment);
            assert_eq!((*found, *current), (2, 1));
        }
        other => panic!("expected SchemaNewer, got {other:?}"),
    }
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("newer build"), "{message}");
    assert_eq!(snapshot(&dir), before, "a refused open changes no file");
}

#[tokio::test]
async fn header_that_disagrees_with_the_file_name_is_a_bad_header() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, segments) = written(PostcardSerializer, tmp.path()).await;
    let path = &segments[1];
    let original = fs::read(path).expect("read");
    edit(path, |b| {
        let first = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
        b[16..24].copy_from_slice(&(first + 1).to_le_bytes());
        fix_header_crc(b);
    });
    let error = postcard_open_fails(&dir).await;
    expect_bad_header(&error, path, "first sequence number differs from the file name");
    restore_and_open(&dir, path, &original).await;
}

#[tokio::test]
async fn segment_shorter_than_a_header_is_a_bad_header() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, segments) = written(PostcardSerializer, tmp.path()).await;
    for path in [segments.last().expect("newest"), &segments[0]] {
        let original = fs::read(path).expect("read");
        edit(path, |b| b.truncate(20));
        let error = postcard_open_fails(&dir).await;
        expect_bad_header(&error, path, "file is shorter than a segment header");
        restore_and_open(&dir, path, &original).await;
    }
}
