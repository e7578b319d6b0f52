//! What a user sees of an `airomem::Error` first: the `Debug` form, which
//! `fn main() -> Result<(), airomem::Error>` (every README and guide example), `unwrap()` and
//! `expect()` print. It is the message (the `Display` text) and then every cause not already
//! in it, the operating system's error included; `{:#?}` keeps the variant and its fields.
//! Each case is a real failure, met as a user meets it.

mod segment_files;

use std::error::Error as _;
use std::path::Path;
use std::sync::Arc;

use airomem::{Error, JournalError, PostcardSerializer, PostcardStore, Store};
use airomem_workspace::{Log, Sessions};

async fn open_log(dir: &Path) -> Result<PostcardStore<Log>, Error> {
    Store::open(PostcardSerializer, dir).await
}

/// A store of five records, closed cleanly.
async fn five_records(dir: &Path) {
    let store = open_log(dir).await.expect("open");
    for value in 1000..1005 {
        store.commit(value).await.expect("commit");
    }
    store.close().await.expect("close");
}

/// The error of an open that must fail (a store has no `Debug` for `expect_err`).
fn failed<T>(opened: Result<T, Error>, why: &str) -> Error {
    match opened {
        Ok(_) => panic!("the open succeeded, but {why}"),
        Err(e) => e,
    }
}

/// Asserts that `debug` shows `error`'s message first and its fields nowhere.
fn shows_the_message(error: &Error, debug: &str) {
    let message = error.to_string();
    assert!(debug.starts_with(&message), "the Debug form does not start with the message {message:?}:\n{debug}");
    for field_syntax in [" { ", "(\"", ": \""] {
        assert!(!debug.contains(field_syntax), "the Debug form shows the fields ({field_syntax:?}):\n{debug}");
    }
}

#[tokio::test]
async fn a_flipped_byte_shows_the_journal_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    five_records(&dir).await;
    let segment = segment_files::newest_segment(&dir);
    let record = segment_files::read_segment(&segment).records[1].clone();
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[record.end - 1] ^= 0x01; // the last payload byte of record #2, with #3..#5 after it
    std::fs::write(&segment, &bytes).expect("write");

    let error = failed(open_log(&dir).await, "a flipped byte fails it");
    let debug = format!("{error:?}");
    shows_the_message(&error, &debug);
    for part in [&segment.display().to_string(), "journal corrupt in ", "(expected record #2)", "checksum mismatch"] {
        assert!(debug.contains(part), "{part:?} is missing from:\n{debug}");
    }
    assert!(!debug.contains("Caused by"), "a checksum mismatch has no cause to show:\n{debug}");

    let structured = format!("{error:#?}");
    for part in ["Journal(", "Corrupt {", "offset: ", "Checksum {", "stored: "] {
        assert!(structured.contains(part), "{{:#?}} keeps the variant and its fields ({part:?}):\n{structured}");
    }
}

/// A store directory that is a regular file: the open fails listing it.
#[tokio::test]
async fn an_io_error_shows_the_operating_systems_words() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("not-a-directory");
    std::fs::write(&file, b"x").expect("write");

    let error = failed(open_log(&file).await, "a regular file is no store directory");
    assert!(matches!(error, Error::Io { .. }), "{error:#?}");
    let os_error = error.source().expect("the operating system's error is the source").to_string();
    assert!(!error.to_string().contains(&os_error), "the message leaves the OS error to the chain");
    let debug = format!("{error:?}");
    shows_the_message(&error, &debug);
    let expected = format!("list {} failed\n\nCaused by:\n    {os_error}", file.display());
    assert_eq!(debug, expected);
}

/// A full disk under `Error::Io` (outside the journal): one cause, then a journal error
/// carried as an `io::Error` (as the open reports a failed recovery task): two, numbered.
#[test]
fn a_full_disk_is_named_in_the_cause_chain() {
    let enospc = || std::io::Error::from_raw_os_error(28);
    let os_error = enospc().to_string();
    let io = Error::Io { op: "write the export of", path: "/data/export".into(), source: Arc::new(enospc()) };
    shows_the_message(&io, &format!("{io:?}"));
    assert_eq!(format!("{io:?}"), format!("write the export of /data/export failed\n\nCaused by:\n    {os_error}"));

    let journal = JournalError::StorageFull { op: "write", path: "/data/store/1.journal".into(), source: enospc() };
    let nested =
        Error::Io { op: "recover", path: "/data/store".into(), source: Arc::new(std::io::Error::other(journal)) };
    assert_eq!(
        format!("{nested:?}"),
        format!(
            "recover /data/store failed\n\nCaused by:\n    0: no space left to write /data/store/1.journal\n    1: {os_error}"
        )
    );
}

/// The command type changed without a new schema version: a store of numbers (`Log`) opened
/// as one of sessions.
#[tokio::test]
async fn changed_types_show_what_to_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    five_records(&dir).await;

    let opened = Store::<Sessions, PostcardSerializer>::open(PostcardSerializer, &dir).await;
    let error = failed(opened, "numbers do not decode as sessions");
    assert!(matches!(error, Error::Decode { .. }), "{error:#?}");
    let debug = format!("{error:?}");
    shows_the_message(&error, &debug);
    assert!(debug.contains("the types changed without a new State::SCHEMA_VERSION"), "{debug}");
    let codec = error.source().expect("the codec error is the source").to_string();
    assert_eq!(debug.matches(&codec).count(), 1, "the message already holds its cause; not twice:\n{debug}");
}

/// The demo's `main` returns the error: what the process prints on a bad directory.
#[cfg(feature = "snapshot")]
#[test]
fn a_main_that_returns_the_error_prints_the_message_and_the_cause() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("not-a-directory");
    std::fs::write(&file, b"x").expect("write");
    let out = std::process::Command::new(airomem_workspace::example_binary("sessions"))
        .arg(&file)
        .env("RUST_LOG", "off")
        .output()
        .expect("run the sessions example");
    assert!(!out.status.success(), "the example opened a regular file as a store");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let os_error = std::fs::read_dir(&file).expect_err("a file is no directory").to_string();
    let expected = format!("Error: list {} failed\n\nCaused by:\n    {os_error}\n", file.display());
    assert_eq!(stderr, expected);
}
