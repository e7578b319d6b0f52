//! Publishing a snapshot: stream the compressed image into a temporary file, make it
//! durable, rename it into place, make the rename durable. A crash at any point leaves
//! either no new snapshot (plus a temporary file that the next open removes) or the
//! complete one.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use airomem_core::Seq;
use airomem_core::storage::{Storage, StorageFile};
use tracing::{debug, warn};

use crate::format::{FOOTER_LEN, Footer, HEADER_LEN, SnapshotHeader};
use crate::{SnapshotError, path, temp_path};

/// Compressed output is handed to the file in chunks of this size.
const CHUNK: usize = 1024 * 1024;

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
    let footer = match fill(file, &temp, header, image, level) {
        Ok(footer) => footer,
        Err(e) => {
            if let Err(cleanup) = storage.remove(&temp) {
                warn!(file = %temp.display(), error = %cleanup, "could not remove a failed snapshot's temporary file");
            }
            return Err(e);
        }
    };
    if let Err(e) = storage.rename(&temp, &target) {
        drop(storage.remove(&temp));
        return Err(SnapshotError::io("rename", &temp, e));
    }
    storage.sync_dir(dir).map_err(|e| SnapshotError::io("sync directory", dir, e))?;

    let file_len = (HEADER_LEN + FOOTER_LEN) as u64 + footer.body_len;
    debug!(file = %target.display(), seq = header.seq.0, raw = image.len(), compressed = file_len, "snapshot published");
    Ok(Published { path: target, seq: header.seq, raw_len: image.len() as u64, file_len })
}

/// Writes header, compressed body and footer into the temporary file and makes it durable.
fn fill(
    mut file: Box<dyn StorageFile>,
    temp: &Path,
    header: SnapshotHeader,
    image: &[u8],
    level: i32,
) -> Result<Footer, SnapshotError> {
    file.write_all(&header.encode()).map_err(|e| SnapshotError::io("write", temp, e))?;
    let sink = Body { file, crc: 0, len: 0, unsynced: 0, buf: Vec::with_capacity(CHUNK) };
    let compress = || -> io::Result<Body> {
        let mut encoder = zstd::stream::write::Encoder::new(sink, level)?;
        encoder.include_checksum(true)?;
        encoder.set_pledged_src_size(Some(image.len() as u64))?;
        encoder.write_all(image)?;
        let mut body = encoder.finish()?;
        body.flush()?;
        Ok(body)
    };
    let body = compress().map_err(|e| SnapshotError::io("write", temp, e))?;
    let footer = Footer { raw_len: image.len() as u64, body_len: body.len, body_crc: body.crc };
    let mut file = body.file;
    file.write_all(&footer.encode()).map_err(|e| SnapshotError::io("write", temp, e))?;
    file.sync_data().map_err(|e| SnapshotError::io("fdatasync", temp, e))?;
    Ok(footer)
}

/// Buffers compressed bytes into large writes and checksums them on the way.
struct Body {
    file: Box<dyn StorageFile>,
    crc: u32,
    len: u64,
    /// Bytes written since the last sync.
    unsynced: usize,
    buf: Vec<u8>,
}

/// The snapshot is synced every this many bytes as it is written, not only at the end: a
/// device flushing tens of megabytes at once makes every journal `fdatasync` queued behind
/// it wait, and those are commits waiting. Smaller bursts keep that wait short.
const SYNC_EVERY: usize = 4 * CHUNK;

impl Write for Body {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.crc = crc32c::crc32c_append(self.crc, &self.buf);
            self.len += self.buf.len() as u64;
            self.unsynced += self.buf.len();
            self.buf.clear();
            if self.unsynced >= SYNC_EVERY {
                self.file.sync_data()?;
                self.unsynced = 0;
            }
        }
        Ok(())
    }
}
