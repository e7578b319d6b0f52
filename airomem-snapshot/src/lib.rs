//! airomem's snapshots: compressed images of the state, each named by the last sequence
//! number it includes.
//!
//! * [`format`](mod@format): the header, the body of independently compressed chunks, and
//!   the footer; the layout table of each format version is there.
//! * [`write`](mod@write): streaming an image to a temporary file and publishing it
//!   atomically. [`write_streamed`] takes the image as the serializer produces it, in writes
//!   of any size, and never holds it whole; [`write()`] takes it in one slice.
//! * [`read`](mod@read): listing, verifying and loading snapshots of every format version
//!   this build knows (1 and 2; it writes 2). Loading decompresses a version 2 body's chunks
//!   on two threads; [`verify_file_frame`] checks a file's container in pieces without
//!   decompressing it.
//!
//! Like the journal, this crate knows bytes, not the user's types, and does all its file
//! operations through the [`airomem_core::storage::Storage`] seam.
//!
//! This crate has no cargo features.

mod error;
pub mod format;
pub mod read;
pub mod write;

pub use error::SnapshotError;
pub use format::{RecordPosition, SnapshotHeader};
pub use read::{list, load, read_header, remove, remove_temp_files, verify, verify_file_frame};
pub use write::{FillError, Published, write, write_streamed};

use std::path::{Path, PathBuf};

use airomem_core::Seq;

const EXTENSION: &str = ".snapshot";
const TEMP_SUFFIX: &str = ".tmp";

/// The file name of the snapshot that includes every record up to `seq`.
pub fn file_name(seq: Seq) -> String {
    format!("{:020}{EXTENSION}", seq.0)
}

/// The path of the snapshot that includes every record up to `seq`.
pub fn path(dir: &Path, seq: Seq) -> PathBuf {
    dir.join(file_name(seq))
}

fn temp_path(dir: &Path, seq: Seq) -> PathBuf {
    dir.join(format!("{}{TEMP_SUFFIX}", file_name(seq)))
}

/// The sequence number of a snapshot file name, or `None` for other files.
pub fn parse_file_name(name: &str) -> Option<Seq> {
    let digits = name.strip_suffix(EXTENSION)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Seq)
}

fn is_temp_file_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX).and_then(parse_file_name).is_some()
}
