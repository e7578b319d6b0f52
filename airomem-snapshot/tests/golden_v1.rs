//! Snapshots written by format version 1 must load, byte for byte, with every later reader.
//!
//! The files under `tests/golden/v1/` were written by the version 1 writer (the ignored
//! `generate` test of commit 1d969fa, run once before version 2 existed, and removed with
//! it) and are never regenerated: a regenerated file would prove only that the current
//! writer agrees with the current reader.

use std::path::{Path, PathBuf};

use airomem_core::storage::StdStorage;
use airomem_core::{Seq, SerializerId};

/// One golden file: its image is rebuilt from `image` so the expected bytes need no file.
struct Golden {
    seq: u64,
    serializer: u16,
    schema_version: u32,
    image: fn() -> Vec<u8>,
    /// Length and crc32c of the image, recorded when the file was written: they catch a
    /// change to `image` that would otherwise make the comparison meaningless.
    image_len: usize,
    image_crc: u32,
}

fn empty() -> Vec<u8> {
    Vec::new()
}

/// About 200 KB that compresses well, like a state of many similar records.
fn repetitive() -> Vec<u8> {
    (0..50_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
}

/// Bytes that barely compress, from a fixed xorshift so the test needs no data file.
fn arbitrary() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..70_001)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

const GOLDEN: [Golden; 3] = [
    Golden { seq: 0, serializer: 1, schema_version: 1, image: empty, image_len: 0, image_crc: 0 },
    Golden { seq: 42, serializer: 1, schema_version: 3, image: repetitive, image_len: 200_000, image_crc: 0x6d09_2a5d },
    Golden {
        seq: 123_456_789,
        serializer: 2,
        schema_version: 7,
        image: arbitrary,
        image_len: 70_001,
        image_crc: 0xafbc_26bf,
    },
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

fn golden_path(g: &Golden) -> PathBuf {
    golden_dir().join(airomem_snapshot::file_name(Seq(g.seq)))
}

#[test]
fn version_1_files_load_exactly() {
    let storage = StdStorage::default();
    for g in &GOLDEN {
        let image = (g.image)();
        assert_eq!((image.len(), crc32c::crc32c(&image)), (g.image_len, g.image_crc), "the expected image changed");
        let bytes = std::fs::read(golden_path(g)).expect("golden file");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1, "{} is a version 1 file", golden_path(g).display());
        let (header, loaded) =
            airomem_snapshot::load(&storage, &golden_dir(), Seq(g.seq), SerializerId(g.serializer)).expect("load");
        assert_eq!(header.serializer, SerializerId(g.serializer));
        assert_eq!(header.schema_version, g.schema_version);
        assert_eq!(header.seq, Seq(g.seq));
        assert_eq!(header.next_record, None, "version 1 records no journal position");
        assert!(loaded == image, "{} loads its image exactly", golden_path(g).display());
        assert_eq!(airomem_snapshot::read_header(&storage, &golden_dir(), Seq(g.seq)).expect("header"), header);
    }
}
