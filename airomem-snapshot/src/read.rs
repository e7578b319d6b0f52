//! Finding, verifying and loading snapshots.

use std::io::Read;
use std::path::Path;

use airomem_core::storage::Storage;
use airomem_core::{Seq, SerializerId};
use tracing::warn;

use crate::format::{FOOTER_LEN, Footer, HEADER_LEN, SnapshotHeader};
use crate::{SnapshotError, is_temp_file_name, parse_file_name, path};

/// Sequence numbers of the snapshots in `dir`, oldest first.
pub fn list(storage: &dyn Storage, dir: &Path) -> Result<Vec<Seq>, SnapshotError> {
    let names = storage.list(dir).map_err(|e| SnapshotError::io("list", dir, e))?;
    let mut seqs: Vec<Seq> = names.iter().filter_map(|n| parse_file_name(n)).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Removes temporary files of snapshots whose writing was interrupted: they were never
/// renamed into place, so nothing refers to them.
pub fn remove_temp_files(storage: &dyn Storage, dir: &Path) -> Result<u64, SnapshotError> {
    let names = storage.list(dir).map_err(|e| SnapshotError::io("list", dir, e))?;
    let mut removed = 0;
    for name in names.iter().filter(|n| is_temp_file_name(n)) {
        let temp = dir.join(name);
        warn!(file = %temp.display(), "removing an unfinished snapshot left by an interrupted write");
        storage.remove(&temp).map_err(|e| SnapshotError::io("remove", &temp, e))?;
        removed += 1;
    }
    if removed > 0 {
        storage.sync_dir(dir).map_err(|e| SnapshotError::io("sync directory", dir, e))?;
    }
    Ok(removed)
}

/// Loads and verifies the snapshot of `seq` and returns its header and the serialized
/// state. The schema version is the caller's to judge: it may know how to read older ones.
///
/// Verification covers the header and footer checksums, the body's crc32c before anything
/// is decompressed, zstd's own content checksum, and the decompressed length. Decompression
/// grows its buffer with the output actually produced, never by a length read from the file.
pub fn load(
    storage: &dyn Storage,
    dir: &Path,
    seq: Seq,
    serializer: SerializerId,
) -> Result<(SnapshotHeader, Vec<u8>), SnapshotError> {
    let file = path(dir, seq);
    let bytes = storage.read(&file).map_err(|e| SnapshotError::io("read", &file, e))?;
    verify(&file, &bytes, seq, serializer)
}

/// Reads only the header of the snapshot of `seq`: which serializer and schema version
/// wrote it. Nothing after the header is read or verified.
pub fn read_header(storage: &dyn Storage, dir: &Path, seq: Seq) -> Result<SnapshotHeader, SnapshotError> {
    let file = path(dir, seq);
    let bytes = storage.read_prefix(&file, HEADER_LEN).map_err(|e| SnapshotError::io("read", &file, e))?;
    SnapshotHeader::decode_alone(&file, &bytes)
}

/// Verifies the content of a snapshot file named for `seq` and returns its header and the
/// serialized state.
pub fn verify(
    file: &Path,
    bytes: &[u8],
    seq: Seq,
    serializer: SerializerId,
) -> Result<(SnapshotHeader, Vec<u8>), SnapshotError> {
    let file = file.to_path_buf();
    let header = SnapshotHeader::decode(&file, bytes)?;
    let damaged = |reason: String| SnapshotError::Damaged { file: file.clone(), reason };
    if header.seq != seq {
        return Err(damaged(format!("header names record {} but the file name says {}", header.seq, seq)));
    }
    if header.serializer != serializer {
        return Err(SnapshotError::SerializerMismatch { file, found: header.serializer, expected: serializer });
    }
    let footer = Footer::decode(&file, bytes)?;
    let body = &bytes[HEADER_LEN..bytes.len() - FOOTER_LEN];
    let crc = crc32c::crc32c(body);
    if crc != footer.body_crc {
        return Err(damaged(format!(
            "body checksum mismatch (stored {:#010x}, computed {crc:#010x})",
            footer.body_crc
        )));
    }
    let mut image = Vec::new();
    let decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(|e| damaged(e.to_string()))?;
    decoder.take(footer.raw_len.saturating_add(1)).read_to_end(&mut image).map_err(|e| damaged(e.to_string()))?;
    if image.len() as u64 != footer.raw_len {
        return Err(damaged(format!("decompressed to {} bytes, the footer says {}", image.len(), footer.raw_len)));
    }
    Ok((header, image))
}

/// Removes the snapshot of `seq`. The caller syncs the directory.
pub fn remove(storage: &dyn Storage, dir: &Path, seq: Seq) -> Result<(), SnapshotError> {
    let file = path(dir, seq);
    storage.remove(&file).map_err(|e| SnapshotError::io("remove", &file, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write;
    use airomem_core::storage::StdStorage;

    const ID: SerializerId = SerializerId(1);

    fn publish(dir: &Path, seq: u64, image: &[u8]) -> Vec<u8> {
        let header = SnapshotHeader { serializer: ID, schema_version: 3, seq: Seq(seq) };
        let published = write(&StdStorage::default(), dir, header, image, 3).expect("write");
        assert_eq!(published.raw_len, image.len() as u64);
        std::fs::read(&published.path).expect("read back")
    }

    #[test]
    fn round_trip_and_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let bytes = publish(dir.path(), 42, &image);
        assert!(bytes.len() < image.len() / 10, "repetitive data compresses");
        publish(dir.path(), 7, b"");
        let storage = StdStorage::default();
        assert_eq!(list(&storage, dir.path()).expect("list"), vec![Seq(7), Seq(42)]);
        let (header, loaded) = load(&storage, dir.path(), Seq(42), ID).expect("load");
        assert_eq!((header.schema_version, header.seq, loaded), (3, Seq(42), image));
        assert_eq!(load(&storage, dir.path(), Seq(7), ID).expect("load").1, b"");
        assert_eq!(read_header(&storage, dir.path(), Seq(42)).expect("header"), header);
        assert!(matches!(
            load(&storage, dir.path(), Seq(42), SerializerId(2)),
            Err(SnapshotError::SerializerMismatch { .. })
        ));
    }

    #[test]
    fn every_truncation_and_many_bit_flips_are_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image: Vec<u8> = (0..2_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let bytes = publish(dir.path(), 5, &image);
        let storage = StdStorage::default();
        let file = path(dir.path(), Seq(5));
        for len in 0..bytes.len() {
            std::fs::write(&file, &bytes[..len]).expect("truncate");
            assert!(load(&storage, dir.path(), Seq(5), ID).is_err(), "truncated to {len} bytes");
        }
        for bit in (0..bytes.len() * 8).step_by(7) {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&file, &flipped).expect("flip");
            assert!(load(&storage, dir.path(), Seq(5), ID).is_err(), "bit {bit} flipped");
        }
    }

    #[test]
    fn temp_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("00000000000000000009.snapshot.tmp"), b"partial").expect("write");
        std::fs::write(dir.path().join("unrelated.tmp"), b"x").expect("write");
        let storage = StdStorage::default();
        assert_eq!(remove_temp_files(&storage, dir.path()).expect("clean"), 1);
        assert!(dir.path().join("unrelated.tmp").exists());
        assert!(list(&storage, dir.path()).expect("list").is_empty());
    }
}
