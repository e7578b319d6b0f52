//! Finding, verifying and loading snapshots.

use std::io::Read;
use std::path::Path;

use airomem_core::storage::{Storage, StorageReadFile};
use airomem_core::{Seq, SerializerId};
use tracing::{debug, warn};

use crate::format::{CHUNK_HEADER_LEN, Chunk, Footer, HEADER_LEN, SnapshotHeader, footer_len, header_len, walk_chunks};
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
/// is decompressed, the chunks' lengths against the footer, zstd's own content checksum of
/// every chunk, and each chunk's decompressed length. The output is allocated once, from
/// lengths the body checksum covers and no larger than zstd could expand the body to; a
/// version 1 body grows its buffer with the output actually produced.
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
    verify_with(file, bytes, seq, serializer, DECOMPRESS_THREADS)
}

/// Chunks are decompressed on this many threads, the caller's and one more: recovery waits
/// for the load. Measured on a 40 MB postcard-like image (the ignored test
/// `load_time_on_one_and_two_threads`), each half took 8–16 ms of CPU to decompress, and
/// the page faults of the fresh 40 MB output about 20 ms more, which the halves share; so a
/// second thread can save up to a third of the load on an idle machine and little on a busy
/// one, and more threads would save less still.
const DECOMPRESS_THREADS: usize = 2;

pub(crate) fn verify_with(
    file: &Path,
    bytes: &[u8],
    seq: Seq,
    serializer: SerializerId,
    threads: usize,
) -> Result<(SnapshotHeader, Vec<u8>), SnapshotError> {
    let header = SnapshotHeader::decode(file, bytes)?;
    let damaged = |reason: String| SnapshotError::Damaged { file: file.to_path_buf(), reason };
    if header.seq != seq {
        return Err(damaged(format!("header names record {} but the file name says {}", header.seq, seq)));
    }
    if header.serializer != serializer {
        return Err(SnapshotError::SerializerMismatch {
            file: file.to_path_buf(),
            found: header.serializer,
            expected: serializer,
        });
    }
    let footer = Footer::decode(file, bytes)?;
    let head = header_len(footer.version).expect("the header decoded, so its version is known");
    let body = &bytes[head..head + footer.body_len as usize];
    let crc = crc32c::crc32c(body);
    if crc != footer.body_crc {
        return Err(damaged(format!(
            "body checksum mismatch (stored {:#010x}, computed {crc:#010x})",
            footer.body_crc
        )));
    }
    let image = if footer.version == 1 {
        decompress_v1(file, body, &footer)?
    } else {
        let chunks = walk_chunks(file, &footer, |at| {
            Ok(body[at as usize..at as usize + CHUNK_HEADER_LEN].try_into().expect("walk_chunks checks the length"))
        })?;
        decompress_chunks(file, body, &chunks, footer.raw_len, threads)?
    };
    Ok((header, image))
}

/// A version 1 body: one zstd frame of the whole image.
fn decompress_v1(file: &Path, body: &[u8], footer: &Footer) -> Result<Vec<u8>, SnapshotError> {
    let damaged = |reason: String| SnapshotError::Damaged { file: file.to_path_buf(), reason };
    let mut image = Vec::new();
    let decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(|e| damaged(e.to_string()))?;
    decoder.take(footer.raw_len.saturating_add(1)).read_to_end(&mut image).map_err(|e| damaged(e.to_string()))?;
    if image.len() as u64 != footer.raw_len {
        return Err(damaged(format!("decompressed to {} bytes, the footer says {}", image.len(), footer.raw_len)));
    }
    Ok(image)
}

/// Decompresses the chunks of a version 2 body into one allocation, on up to `threads`
/// threads (1 or 2), each writing its own part of the image.
pub(crate) fn decompress_chunks(
    file: &Path,
    body: &[u8],
    chunks: &[Chunk],
    raw_len: u64,
    threads: usize,
) -> Result<Vec<u8>, SnapshotError> {
    // `walk_chunks` bounded every chunk by what zstd can expand its frame to, so this is at
    // most 32768 times the file; it does not fit a 32-bit address space only if the file is
    // damaged in a way its checksums missed.
    let len = usize::try_from(raw_len).map_err(|_| SnapshotError::Damaged {
        file: file.to_path_buf(),
        reason: format!("a {raw_len} byte image does not fit in memory here"),
    })?;
    let mut image = vec![0u8; len];
    // The first chunk starting at or past the middle of the image: the halves differ by at
    // most one chunk's bytes.
    let split = chunks.partition_point(|c| c.raw_at < raw_len / 2);
    if threads < 2 || split == 0 || split == chunks.len() {
        decompress_into(file, body, chunks, &mut image)?;
        return Ok(image);
    }
    let (first, second) = chunks.split_at(split);
    let parallel = std::thread::scope(|s| {
        let (out_first, out_second) = image.split_at_mut(second[0].raw_at as usize);
        let helper = std::thread::Builder::new()
            .name("snapshot-load".into())
            .spawn_scoped(s, move || decompress_into(file, body, second, out_second));
        let helper = match helper {
            Ok(helper) => helper,
            Err(e) => {
                debug!(error = %e, "no second thread to decompress the snapshot on; using one");
                return None;
            }
        };
        let mine = decompress_into(file, body, first, out_first);
        let theirs = helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Some(mine.and(theirs))
    });
    match parallel {
        Some(done) => done?,
        None => decompress_into(file, body, chunks, &mut image)?,
    }
    Ok(image)
}

/// Decompresses consecutive `chunks` into `out`, which is exactly as long as their raw
/// lengths together.
fn decompress_into(file: &Path, body: &[u8], chunks: &[Chunk], mut out: &mut [u8]) -> Result<(), SnapshotError> {
    let mut decompressor =
        zstd::bulk::Decompressor::new().map_err(|e| SnapshotError::io("start decompressing", file, e))?;
    for chunk in chunks {
        let (dst, rest) = std::mem::take(&mut out).split_at_mut(chunk.raw_len as usize);
        let frame = &body[chunk.frame_at as usize..][..chunk.frame_len as usize];
        let damaged = |reason: String| SnapshotError::Damaged {
            file: file.to_path_buf(),
            reason: format!("the chunk of image bytes {}.. {reason}", chunk.raw_at),
        };
        // The destination is exactly the claimed length: zstd fails rather than write past
        // it, so a frame that expands further is refused without more memory.
        let n =
            decompressor.decompress_to_buffer(frame, dst).map_err(|e| damaged(format!("does not decompress: {e}")))?;
        if n != chunk.raw_len as usize {
            return Err(damaged(format!("decompressed to {n} bytes, its header says {}", chunk.raw_len)));
        }
        out = rest;
    }
    Ok(())
}

/// Checks a snapshot file's container without holding it in memory: the header, the
/// footer, that the body fills the space between them, the body's checksum (read in
/// pieces of 1 MiB) and, for version 2, the chunk lengths. Nothing is decompressed and the
/// file's name is not consulted; [`load`] and [`verify`] check all of this again.
///
/// For a received snapshot whose transfer should fail, not its install, if it is damaged.
/// Read errors are [`SnapshotError::Io`] with op "read".
pub fn verify_file_frame(file: &Path, reader: &dyn StorageReadFile) -> Result<(SnapshotHeader, Footer), SnapshotError> {
    let read = |at: u64, buf: &mut [u8]| reader.read_exact_at(at, buf).map_err(|e| SnapshotError::io("read", file, e));
    let damaged = |reason: String| SnapshotError::Damaged { file: file.to_path_buf(), reason };
    let len = reader.len().map_err(|e| SnapshotError::io("read", file, e))?;
    let mut head = vec![0u8; (HEADER_LEN as u64).min(len) as usize];
    read(0, &mut head)?;
    let header = SnapshotHeader::decode_alone(file, &head)?;
    let version = u16::from_le_bytes([head[8], head[9]]);
    let (Some(head_len), Some(foot_len)) = (header_len(version), footer_len(version)) else {
        return Err(damaged(format!("no layout for version {version}")));
    };
    let Some(body_len) = len.checked_sub((head_len + foot_len) as u64) else {
        return Err(damaged("file is shorter than a header and a footer".into()));
    };
    let mut tail = vec![0u8; foot_len];
    read(len - foot_len as u64, &mut tail)?;
    let footer = Footer::decode_tail(file, &tail, version)?;
    if footer.body_len != body_len {
        return Err(damaged(format!("footer names a {} byte body, {body_len} bytes are present", footer.body_len)));
    }
    let mut crc = 0;
    let mut piece = vec![0u8; PIECE.min(body_len as usize)];
    let mut at = 0;
    while at < body_len {
        let n = piece.len().min((body_len - at) as usize);
        read(head_len as u64 + at, &mut piece[..n])?;
        crc = crc32c::crc32c_append(crc, &piece[..n]);
        at += n as u64;
    }
    if crc != footer.body_crc {
        return Err(damaged(format!(
            "body checksum mismatch (stored {:#010x}, computed {crc:#010x})",
            footer.body_crc
        )));
    }
    if version >= 2 {
        walk_chunks(file, &footer, |at| {
            let mut h = [0u8; CHUNK_HEADER_LEN];
            read(head_len as u64 + at, &mut h)?;
            Ok(h)
        })?;
    }
    Ok((header, footer))
}

/// The piece [`verify_file_frame`] reads at a time.
const PIECE: usize = 1024 * 1024;

/// Removes the snapshot of `seq`. The caller syncs the directory.
pub fn remove(storage: &dyn Storage, dir: &Path, seq: Seq) -> Result<(), SnapshotError> {
    let file = path(dir, seq);
    storage.remove(&file).map_err(|e| SnapshotError::io("remove", &file, e))
}

#[cfg(test)]
mod tests;
