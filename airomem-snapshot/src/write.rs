//! Publishing a snapshot: stream the compressed image into a temporary file, make it
//! durable, rename it into place, make the rename durable. A crash at any point leaves
//! either no new snapshot (plus a temporary file that the next open removes) or the
//! complete one.

use std::error::Error as StdError;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use airomem_core::Seq;
use airomem_core::storage::{Storage, StorageFile};
use tracing::{debug, warn};

use crate::format::{CHUNK_HEADER_LEN, CHUNK_RAW, FOOTER_LEN, Footer, HEADER_LEN, SnapshotHeader, encode_chunk_header};
use crate::{SnapshotError, path, temp_path};

/// A snapshot that is durable under its final name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The file.
    pub path: PathBuf,
    /// The last journal record it includes.
    pub seq: Seq,
    /// Bytes of the serialized state.
    pub raw_len: u64,
    /// Bytes of the file.
    pub file_len: u64,
}

/// What [`write_streamed`]'s `fill` may fail with: whatever the serializer reports.
pub type FillError = Box<dyn StdError + Send + Sync>;

/// Writes `image`, the serialized state as of `header.seq`, as a snapshot in `dir`.
///
/// If anything fails before the rename, the temporary file is removed (best effort, so a
/// retry can start afresh and a full disk gets its space back) and the error returned.
pub fn write(
    storage: &dyn Storage,
    dir: &Path,
    header: SnapshotHeader,
    image: &[u8],
    level: i32,
) -> Result<Published, SnapshotError> {
    write_streamed(storage, dir, header, level, |out| out.write_all(image).map_err(Into::into))
}

/// Writes the serialized state as of `header.seq` as a snapshot in `dir`, with `fill`
/// writing the image into the snapshot as it serializes it, in writes of any size.
///
/// The image is never held whole: the writer keeps one chunk of it ([`CHUNK_RAW`] bytes)
/// and that chunk's compressed frame. `fill`'s writes return an error once the file cannot
/// be written; `fill` should then stop and may return that error or its own.
///
/// Errors: a failed write or sync of the file is [`SnapshotError::Io`] with the operating
/// system's error, whatever `fill` returned after it (so [`SnapshotError::is_storage_full`]
/// sees a full disk); otherwise an error from `fill` is [`SnapshotError::Source`]. On any
/// error before the rename, and if `fill` panics, the temporary file is removed (best
/// effort, so a retry can start afresh and a full disk gets its space back).
pub fn write_streamed(
    storage: &dyn Storage,
    dir: &Path,
    header: SnapshotHeader,
    level: i32,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), FillError>,
) -> Result<Published, SnapshotError> {
    let temp = temp_path(dir, header.seq);
    let target = path(dir, header.seq);
    let file = match storage.create(&temp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left by an earlier attempt at the same sequence number that could not clean up.
            storage.remove(&temp).map_err(|e| SnapshotError::io("remove", &temp, e))?;
            storage.create(&temp)
        }
        created => created,
    }
    .map_err(|e| SnapshotError::io("create", &temp, e))?;
    let mut cleanup = RemoveOnDrop { storage, temp: &temp, armed: true };
    let footer = write_temp(file, &temp, header, level, fill)?;
    cleanup.armed = false;
    if let Err(e) = storage.rename(&temp, &target) {
        drop(storage.remove(&temp));
        return Err(SnapshotError::io("rename", &temp, e));
    }
    storage.sync_dir(dir).map_err(|e| SnapshotError::io("sync directory", dir, e))?;

    let file_len = (HEADER_LEN + FOOTER_LEN) as u64 + footer.body_len;
    debug!(
        file = %target.display(), seq = header.seq.0, raw = footer.raw_len, compressed = file_len,
        chunks = footer.chunks, "snapshot published"
    );
    Ok(Published { path: target, seq: header.seq, raw_len: footer.raw_len, file_len })
}

/// Removes the temporary file unless disarmed: on every error return and on a panic in
/// `fill` alike.
struct RemoveOnDrop<'a> {
    storage: &'a dyn Storage,
    temp: &'a Path,
    armed: bool,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = self.storage.remove(self.temp)
        {
            warn!(file = %self.temp.display(), error = %e, "could not remove a failed snapshot's temporary file");
        }
    }
}

/// Writes header, chunked body and footer into the temporary file and makes it durable.
fn write_temp(
    mut file: Box<dyn StorageFile>,
    temp: &Path,
    header: SnapshotHeader,
    level: i32,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), FillError>,
) -> Result<Footer, SnapshotError> {
    file.write_all(&header.encode()).map_err(|e| SnapshotError::io("write", temp, e))?;
    let compressor = zstd::bulk::Compressor::new(level)
        .and_then(|mut c| c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true)).map(|()| c))
        .map_err(|e| SnapshotError::io("start compressing", temp, e))?;
    let mut body = Body {
        file,
        compressor,
        raw: Vec::with_capacity(CHUNK_RAW),
        frame: Vec::with_capacity(zstd::zstd_safe::compress_bound(CHUNK_RAW)),
        raw_len: 0,
        len: 0,
        crc: 0,
        chunks: 0,
        failed: None,
    };
    let filled = fill(&mut body);
    if filled.is_ok() && body.failed.is_none() {
        // The last, short chunk; a failure lands in `failed`.
        drop(body.end_chunk());
    }
    if let Some((op, e)) = body.failed {
        // The sink's own error first, whatever `fill` made of it: it is the real cause.
        return Err(SnapshotError::io(op, temp, e));
    }
    if let Err(reason) = filled {
        return Err(SnapshotError::Source { reason });
    }
    let footer = Footer {
        raw_len: body.raw_len,
        body_len: body.len,
        body_crc: body.crc,
        chunks: body.chunks,
        version: crate::format::FORMAT_VERSION,
    };
    let mut file = body.file;
    file.write_all(&footer.encode()).map_err(|e| SnapshotError::io("write", temp, e))?;
    file.sync_data().map_err(|e| SnapshotError::io("fdatasync", temp, e))?;
    Ok(footer)
}

/// Collects the image into chunks, compresses each full one and writes it out, checksumming
/// the body on the way.
struct Body {
    file: Box<dyn StorageFile>,
    compressor: zstd::bulk::Compressor<'static>,
    /// The current chunk's image bytes.
    raw: Vec<u8>,
    /// The compressed frame of the chunk being written out; kept to reuse its allocation.
    frame: Vec<u8>,
    raw_len: u64,
    /// Body bytes written so far.
    len: u64,
    crc: u32,
    chunks: u32,
    /// The first failure of the file or the compressor: every write after it fails too, and
    /// this, not what `fill` returns, is what the snapshot fails with.
    failed: Option<(&'static str, io::Error)>,
}

/// The snapshot is written in pieces of this many bytes, each synced before the next is
/// written. A journal `fdatasync` issued meanwhile waits for whatever of the snapshot the
/// device has queued ahead of it, and those are commits waiting: synced piece by piece,
/// that is at most one piece. With a 2.2 MB compressed chunk handed to write-back at once
/// and a sync every 4 MiB, commits' p99 during a snapshot of 1M sessions rose 5.1 ms in the
/// bench; with 256 KiB pieces, 2.8 ms (3.4 ms in a noisier run), for a snapshot about a
/// tenth longer (110 syncs for 28 MB). See `docs/design.md`, "Snapshots".
const WRITE_PIECE: usize = 256 * 1024;

impl Body {
    /// Compresses and writes out `self.raw` as one chunk, if it holds anything.
    fn end_chunk(&mut self) -> io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let raw = std::mem::take(&mut self.raw);
        let result = self.write_chunk(&raw);
        self.raw = raw;
        self.raw.clear();
        result
    }

    /// Compresses and writes out one chunk of at most [`CHUNK_RAW`] bytes.
    fn write_chunk(&mut self, raw: &[u8]) -> io::Result<()> {
        debug_assert!(!raw.is_empty() && raw.len() <= CHUNK_RAW);
        self.frame.clear();
        if let Err(e) = self.compressor.compress_to_buffer(raw, &mut self.frame) {
            return Err(self.fail("compress", e));
        }
        let header = encode_chunk_header(self.frame.len() as u32, raw.len() as u32);
        if let Err(e) = self.file.write_all(&header) {
            return Err(self.fail("write", e));
        }
        let frame = std::mem::take(&mut self.frame);
        let written = self.write_synced(&frame);
        self.frame = frame;
        written?;
        self.crc = crc32c::crc32c_append(crc32c::crc32c_append(self.crc, &header), &self.frame);
        self.len += (CHUNK_HEADER_LEN + self.frame.len()) as u64;
        self.chunks += 1;
        Ok(())
    }

    /// Writes `bytes` in [`WRITE_PIECE`]s, syncing each before the next.
    fn write_synced(&mut self, bytes: &[u8]) -> io::Result<()> {
        for piece in bytes.chunks(WRITE_PIECE) {
            if let Err(e) = self.file.write_all(piece) {
                return Err(self.fail("write", e));
            }
            if let Err(e) = self.file.sync_data() {
                return Err(self.fail("fdatasync", e));
            }
        }
        Ok(())
    }

    /// Keeps `e` as the snapshot's failure and gives `fill` an error of the same kind.
    fn fail(&mut self, op: &'static str, e: io::Error) -> io::Error {
        let copy = io::Error::new(e.kind(), format!("{op} of the snapshot failed: {e}"));
        self.failed = Some((op, e));
        copy
    }

    fn failed_again(&self) -> io::Error {
        let kind = self.failed.as_ref().map_or(io::ErrorKind::Other, |(_, e)| e.kind());
        io::Error::new(kind, "the snapshot file failed earlier")
    }
}

impl Write for Body {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(self.failed_again());
        }
        let n = data.len();
        while !data.is_empty() {
            if self.raw.is_empty() && data.len() >= CHUNK_RAW {
                // A whole chunk in hand: compress it where it is rather than copy it.
                let (chunk, rest) = data.split_at(CHUNK_RAW);
                self.write_chunk(chunk)?;
                self.raw_len += CHUNK_RAW as u64;
                data = rest;
                continue;
            }
            let take = (CHUNK_RAW - self.raw.len()).min(data.len());
            self.raw.extend_from_slice(&data[..take]);
            self.raw_len += take as u64;
            data = &data[take..];
            if self.raw.len() == CHUNK_RAW {
                self.end_chunk()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are cut by size alone, so the file does not depend on where `fill` flushes;
        // durability comes at the end.
        if self.failed.is_some() {
            return Err(self.failed_again());
        }
        Ok(())
    }
}
