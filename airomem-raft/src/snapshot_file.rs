//! The snapshot data openraft moves between nodes: [`SnapshotFile`], a snapshot file read and
//! written in chunks through the storage seam, never held whole in memory by the transfer.
//!
//! openraft 0.9 (without its `generic-snapshot-data` feature) wants the snapshot data to be
//! `AsyncRead + AsyncWrite + AsyncSeek + Send + Unpin + 'static`. A leader's replication
//! seeks to each offset and reads one chunk (`snapshot_max_chunk_size`) per
//! `install_snapshot` RPC; a follower writes each chunk at its offset into the data
//! `begin_receiving_snapshot` gave it, shuts it down after the last one and hands it to
//! `install_snapshot`.
//!
//! # The files and who owns them (all in the node's snapshot directory)
//!
//! * **`<seq>.snapshot`**, a published snapshot, belongs to the state machine: it is made
//!   current, and the others removed, under the state machine's `current` lock. A leader
//!   sending one holds a [`SnapshotFile`] opened under that lock with
//!   [`Storage::open_read`], a handle on the file rather than its name: a publish that
//!   removes the file meanwhile takes its name, and the content stays readable until the
//!   reader is dropped (an open descriptor on Unix, the inode on the simulated disk). Nothing
//!   ever reopens a snapshot by name to read the next chunk.
//! * **`incoming-<n>.part`**, a snapshot being received, belongs to the [`Incoming`] writing
//!   it, created with its first chunk. Its owner removes it when dropped unpublished: a
//!   transfer abandoned, superseded (openraft drops the receiver when a transfer of another
//!   snapshot begins), refused by its end-of-transfer check or by the install. An install
//!   renames it into place as `<seq>.snapshot`, and from then on it is the state machine's.
//!   A killed process removes nothing: the files of no live receiver are removed when the
//!   state machine opens and when a transfer begins.
//!
//! A halted node (a simulated kill) writes no chunk and removes nothing.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use airomem::storage::{Storage, StorageFile, StorageReadFile};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

const INCOMING_PREFIX: &str = "incoming-";
const INCOMING_SUFFIX: &str = ".part";

/// The piece a file is checked or copied in: bounded memory whatever the snapshot's size.
const PIECE: usize = 1024 * 1024;

/// The number of a receiver's file name, or `None` for other files.
fn parse_incoming(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(INCOMING_PREFIX)?.strip_suffix(INCOMING_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn damaged(path: &Path, reason: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("received snapshot {} is damaged: {reason}", path.display()))
}

fn halted() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the node is halted: no snapshot file is written")
}

/// A node's snapshot directory, as the snapshot files see it: where receivers put their
/// files, which of them are alive, and whether the node is halted.
#[derive(Debug)]
pub(crate) struct SnapshotDir {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    halted: AtomicBool,
    next_incoming: AtomicU64,
    /// The numbers of the receivers alive: their files are not leftovers.
    live: Mutex<BTreeSet<u64>>,
}

impl SnapshotDir {
    pub(crate) fn new(storage: Arc<dyn Storage>, path: &Path) -> SnapshotDir {
        SnapshotDir {
            storage,
            path: path.to_path_buf(),
            halted: AtomicBool::new(false),
            next_incoming: AtomicU64::new(0),
            live: Mutex::new(BTreeSet::new()),
        }
    }

    /// From now on, write and remove nothing (the node is being halted as if killed).
    pub(crate) fn halt(&self) {
        self.halted.store(true, Ordering::Release);
    }

    pub(crate) fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }

    /// Removes the receivers' files that no live receiver owns: left by a killed process, or
    /// by a receiver whose own removal failed. Returns how many.
    pub(crate) fn remove_leftovers(&self) -> io::Result<usize> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut removed = 0;
        for name in self.storage.list(&self.path)? {
            if parse_incoming(&name).is_some_and(|n| !live.contains(&n)) {
                let path = self.path.join(&name);
                warn!(file = %path.display(), "removing a snapshot whose transfer did not finish");
                match self.storage.remove(&path) {
                    Ok(()) => removed += 1,
                    // Its owner removed it meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }

    /// The published snapshot at `path`, for reading: the handle is taken now, so the caller
    /// must hold the lock under which snapshots are removed.
    pub(crate) fn open_published(&self, path: &Path) -> io::Result<SnapshotFile> {
        let file = self.storage.open_read(path)?;
        let len = file.len()?;
        Ok(SnapshotFile { pos: 0, kind: Kind::Published { file, len } })
    }

    /// A new receiver. Nothing is created yet (its file comes with the first chunk, so that a
    /// full disk fails that chunk's RPC, which the leader retries, rather than the state
    /// machine); leftovers of earlier transfers are removed first, best effort.
    pub(crate) fn receive(self: &Arc<Self>) -> SnapshotFile {
        if !self.is_halted()
            && let Err(e) = self.remove_leftovers()
        {
            warn!(dir = %self.path.display(), error = %e, "could not remove unfinished snapshot transfers");
        }
        let id = self.next_incoming.fetch_add(1, Ordering::Relaxed);
        self.live.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
        let path = self.path.join(format!("{INCOMING_PREFIX}{id}{INCOMING_SUFFIX}"));
        let incoming = Incoming {
            dir: Arc::clone(self),
            id,
            path,
            created: false,
            file: None,
            end: 0,
            checked: None,
            check: None,
            published: false,
        };
        SnapshotFile { pos: 0, kind: Kind::Incoming(incoming) }
    }
}

/// A snapshot file being read (a published snapshot, on a leader) or written (one being
/// received, on a follower): openraft's `SnapshotData`.
pub(crate) struct SnapshotFile {
    /// Where the next read or write goes.
    pos: u64,
    kind: Kind,
}

enum Kind {
    Published { file: Box<dyn StorageReadFile>, len: u64 },
    Incoming(Incoming),
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Published { len, .. } => {
                f.debug_struct("Published").field("len", len).field("pos", &self.pos).finish()
            }
            Kind::Incoming(i) => f.debug_struct("Incoming").field("path", &i.path).field("pos", &self.pos).finish(),
        }
    }
}

/// What the end-of-transfer check gives back: the file it held, and its verdict.
type CheckResult = (Box<dyn StorageFile>, io::Result<()>);

/// A snapshot being received; see the module docs for its file's lifecycle.
pub(crate) struct Incoming {
    dir: Arc<SnapshotDir>,
    id: u64,
    path: PathBuf,
    /// Whether its file exists (was created and not yet renamed).
    created: bool,
    /// `None` before the first chunk and while the end-of-transfer check holds it.
    file: Option<Box<dyn StorageFile>>,
    /// One past the last byte written.
    end: u64,
    /// The length the file was cut to, synced at and checked at; any write clears it.
    checked: Option<u64>,
    /// The end-of-transfer check running on the blocking pool, which holds the file.
    check: Option<JoinHandle<CheckResult>>,
    /// Renamed into place: the file is the state machine's now.
    published: bool,
}

impl Incoming {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn file(&mut self) -> io::Result<&mut Box<dyn StorageFile>> {
        if self.dir.is_halted() {
            return Err(halted());
        }
        if self.check.is_some() {
            return Err(io::Error::other("a received snapshot is written to while it is being checked"));
        }
        if self.file.is_none() {
            if self.created {
                return Err(io::Error::other("a received snapshot lost its file after a failed check"));
            }
            let file = match self.dir.storage.create(&self.path) {
                // Left by a process that had the same number: nothing of ours.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.dir.storage.remove(&self.path)?;
                    self.dir.storage.create(&self.path)
                }
                created => created,
            }?;
            self.created = true;
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("just set"))
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file()?.write_at(offset, buf)?;
        self.end = self.end.max(offset + buf.len() as u64);
        self.checked = None;
        Ok(())
    }

    /// The end-of-transfer work, blocking: the file is cut to `len`, synced, and its
    /// container (header, footer, body checksum) checked by streaming it.
    fn finish_blocking(&mut self, len: u64) -> io::Result<()> {
        if self.checked == Some(len) {
            return Ok(());
        }
        let (storage, path, end) = (Arc::clone(&self.dir.storage), self.path.clone(), self.end);
        finish(&storage, &path, self.file()?.as_mut(), len, end)?;
        self.checked = Some(len);
        Ok(())
    }

    /// Renames the received file to `target`; from then on it is not this receiver's to
    /// remove.
    pub(crate) fn publish_as(&mut self, target: &Path) -> io::Result<()> {
        if self.dir.is_halted() {
            return Err(halted());
        }
        self.dir.storage.rename(&self.path, target)?;
        self.published = true;
        Ok(())
    }
}

/// Cuts `file` (at `path`, written up to `end`) to `len`, syncs it and checks its
/// container without holding it in memory. The same checksums are verified again when the
/// image is loaded; this check comes first so that a damaged transfer fails the transfer,
/// which the leader repeats, rather than the install, which would stop the node.
fn finish(storage: &Arc<dyn Storage>, path: &Path, file: &mut dyn StorageFile, len: u64, end: u64) -> io::Result<()> {
    // A transfer restarted from the start of a shorter file of the same snapshot id may
    // have left bytes past the end.
    if end > len {
        file.set_len(len)?;
    }
    file.sync_data()?;
    let reader = storage.open_read(path)?;
    if reader.len()? != len {
        return Err(damaged(path, format!("{} bytes on disk, {len} received", reader.len()?)));
    }
    // Header, footer, body checksum and chunk lengths, read in pieces, for every snapshot
    // format version this build reads (a leader of an older build may send an older one).
    airomem_snapshot::verify_file_frame(path, reader.as_ref()).map_err(|e| match e {
        airomem_snapshot::SnapshotError::Io { source, .. } => source,
        e => damaged(path, e),
    })?;
    debug!(file = %path.display(), len, "received snapshot synced and checked");
    Ok(())
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.dir.live.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
        if !self.created || self.published || self.dir.is_halted() {
            return;
        }
        // A check still running keeps its handle; removing the name does not disturb it.
        self.file = None;
        // Unlinking is a metadata operation, quick enough for the task that drops this.
        match self.dir.storage.remove(&self.path) {
            Ok(()) => debug!(file = %self.path.display(), "removed an unfinished snapshot transfer"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(file = %self.path.display(), error = %e, "could not remove an unfinished snapshot transfer")
            }
        }
    }
}

impl SnapshotFile {
    /// The receiver this data is, or the published snapshot it is (openraft's own tests
    /// install a leader's snapshot data directly).
    pub(crate) fn into_incoming(self) -> Result<Incoming, SnapshotFile> {
        match self.kind {
            Kind::Incoming(incoming) => Ok(incoming),
            kind @ Kind::Published { .. } => Err(SnapshotFile { pos: self.pos, kind }),
        }
    }

    /// Makes a received snapshot ready to install (blocking): cut to the end of the last
    /// write, synced and its container checked, unless openraft's shutdown did that already.
    /// A published one is copied, piece by piece, into a new receiver first.
    pub(crate) fn into_finished(self, dir: &Arc<SnapshotDir>) -> io::Result<Incoming> {
        let pos = self.pos;
        let mut incoming = match self.into_incoming() {
            Ok(incoming) => incoming,
            Err(published) => {
                let Kind::Published { file, len } = published.kind else { unreachable!("not incoming") };
                let SnapshotFile { kind: Kind::Incoming(mut copy), .. } = dir.receive() else {
                    unreachable!("a receiver")
                };
                let mut piece = vec![0u8; PIECE.min(len as usize)];
                let mut at = 0;
                while at < len {
                    let n = piece.len().min((len - at) as usize);
                    file.read_exact_at(at, &mut piece[..n])?;
                    copy.write_at(at, &piece[..n])?;
                    at += n as u64;
                }
                let len = copy.end;
                copy.finish_blocking(len)?;
                return Ok(copy);
            }
        };
        // Where the last write ended: the transfer's length (openraft's shutdown uses the same).
        incoming.finish_blocking(incoming.checked.unwrap_or(pos))?;
        Ok(incoming)
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Kind::Published { file, len } = &this.kind else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a snapshot being received is installed, not read",
            )));
        };
        let want = buf.remaining().min(usize::try_from(len.saturating_sub(this.pos)).unwrap_or(usize::MAX));
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        // A synchronous read on the runtime's worker: one chunk (1 MiB by default) from a
        // file just written, normally in the page cache, costs less than a hop to the
        // blocking pool per chunk. openraft asks for at most one chunk per call.
        let n = loop {
            match file.read_at(this.pos, buf.initialize_unfilled_to(want)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        buf.advance(n);
        this.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Kind::Incoming(incoming) = &mut this.kind else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a published snapshot is read-only",
            )));
        };
        // Synchronous, like reads: one chunk into the page cache; the sync comes at the end.
        incoming.write_at(this.pos, buf)?;
        this.pos += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// openraft's end of a transfer, right after the last chunk: the file ends where that
    /// chunk did. Syncing and checking it reads the whole file, so it runs on the blocking
    /// pool, and a damaged transfer fails here, as an error answer to the last chunk.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let len = this.pos;
        let Kind::Incoming(incoming) = &mut this.kind else { return Poll::Ready(Ok(())) };
        loop {
            if let Some(check) = incoming.check.as_mut() {
                let joined: Result<CheckResult, _> = ready!(Pin::new(check).poll(cx));
                incoming.check = None;
                let (file, result) = joined.map_err(io::Error::other)?;
                incoming.file = Some(file);
                if result.is_ok() {
                    incoming.checked = Some(len);
                }
                return Poll::Ready(result);
            }
            if incoming.checked == Some(len) {
                return Poll::Ready(Ok(()));
            }
            incoming.file()?;
            let mut file = incoming.file.take().expect("just opened");
            let (storage, path, end) = (Arc::clone(&incoming.dir.storage), incoming.path.clone(), incoming.end);
            incoming.check = Some(tokio::task::spawn_blocking(move || {
                let result = finish(&storage, &path, file.as_mut(), len, end);
                (file, result)
            }));
        }
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        let end = match &this.kind {
            Kind::Published { len, .. } => *len,
            Kind::Incoming(incoming) => incoming.end,
        };
        let to = match position {
            SeekFrom::Start(to) => Some(to),
            SeekFrom::End(delta) => end.checked_add_signed(delta),
            SeekFrom::Current(delta) => this.pos.checked_add_signed(delta),
        };
        this.pos = to.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start"))?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

#[cfg(test)]
mod tests;
