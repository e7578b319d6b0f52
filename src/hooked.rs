//! A storage (the real file system by default, or the simulated disk) with a test's hook
//! before every operation: to record which thread made it, to hold a thread at it, to make it
//! panic, to cut the power at it, to count reads, or to keep a store's files somewhere other
//! than where its path says. One pass-through implementation of `Storage`, so that a test
//! writes only what its hook does.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airomem::storage::{LockGuard, StdStorage, Storage, StorageFile, StorageReadFile};

/// An operation about to be made through [`Hooked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `Storage::create_dir_all`.
    CreateDir,
    /// `Storage::list`.
    List,
    /// `Storage::read` (and `read_prefix`).
    Read,
    /// `Storage::open_read`.
    OpenRead,
    /// `StorageReadFile::read_at`.
    ReadAt,
    /// `Storage::create`.
    Create,
    /// `Storage::open_write`.
    OpenWrite,
    /// `Storage::rename`, named by its source.
    Rename,
    /// `Storage::remove`.
    Remove,
    /// `Storage::sync_dir`.
    SyncDir,
    /// `Storage::lock`.
    Lock,
    /// `StorageFile::write_all`.
    Write,
    /// `StorageFile::write_at`.
    WriteAt,
    /// `StorageFile::sync_data`.
    SyncData,
    /// `StorageFile::set_len`.
    SetLen,
}

/// What a test does around the operations of a [`Hooked`] storage.
pub trait Hooks: Send + Sync + 'static {
    /// Called before `op` on `path` (as the store named it), on the thread making it.
    fn before(&self, op: Op, path: &Path) {
        let _ = (op, path);
    }

    /// Called before `StorageFile::set_len(len)` on `path`; by default [`Hooks::before`]
    /// with [`Op::SetLen`].
    fn before_set_len(&self, path: &Path, len: u64) {
        let _ = len;
        self.before(Op::SetLen, path);
    }

    /// Called before `StorageReadFile::read_at` of `len` bytes of `path`; by default
    /// [`Hooks::before`] with [`Op::ReadAt`].
    fn before_read_at(&self, path: &Path, len: usize) {
        let _ = len;
        self.before(Op::ReadAt, path);
    }

    /// Where the file the store calls `path` really is.
    fn locate(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }
}

/// Hooks that make the next journal write panic once armed: a bug in a storage
/// implementation, met on the writer thread. The writer thread dies, and the store refuses
/// commits from then on.
#[derive(Default)]
pub struct PanicOnWrite {
    armed: std::sync::atomic::AtomicBool,
}

impl PanicOnWrite {
    /// Makes the next `write_at` panic (once).
    pub fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Hooks for PanicOnWrite {
    fn before(&self, op: Op, _path: &Path) {
        if op == Op::WriteAt {
            assert!(
                !self.armed.swap(false, std::sync::atomic::Ordering::SeqCst),
                "a storage bug, on the writer thread"
            );
        }
    }
}

/// A storage `S` (the real file system unless said otherwise) with `H` called before every
/// operation.
pub struct Hooked<H, S = StdStorage> {
    hooks: Arc<H>,
    inner: S,
}

impl<H: Hooks> Hooked<H> {
    /// The real file system behind `hooks`.
    pub fn new(hooks: Arc<H>) -> Self {
        Hooked { hooks, inner: StdStorage::default() }
    }
}

impl<H: Hooks, S: Storage> Hooked<H, S> {
    /// `inner` (the simulated disk, say) behind `hooks`.
    pub fn over(inner: S, hooks: Arc<H>) -> Self {
        Hooked { hooks, inner }
    }

    fn at(&self, op: Op, path: &Path) -> PathBuf {
        self.hooks.before(op, path);
        self.hooks.locate(path)
    }

    fn file(&self, file: Box<dyn StorageFile>, path: &Path) -> Box<dyn StorageFile> {
        Box::new(HookedFile { file, path: path.to_path_buf(), hooks: Arc::clone(&self.hooks) })
    }
}

impl<H, S> fmt::Debug for Hooked<H, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hooked")
    }
}

struct HookedFile<H> {
    file: Box<dyn StorageFile>,
    path: PathBuf,
    hooks: Arc<H>,
}

impl<H: Hooks> StorageFile for HookedFile<H> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.hooks.before(Op::Write, &self.path);
        self.file.write_all(buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.hooks.before(Op::WriteAt, &self.path);
        self.file.write_at(offset, buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.hooks.before(Op::SyncData, &self.path);
        self.file.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.hooks.before_set_len(&self.path, len);
        self.file.set_len(len)
    }
    fn write_zeros(&mut self, from: u64, to: u64) -> io::Result<()> {
        self.hooks.before(Op::WriteAt, &self.path);
        self.file.write_zeros(from, to)
    }
}

struct HookedReader<H> {
    file: Box<dyn StorageReadFile>,
    path: PathBuf,
    hooks: Arc<H>,
}

impl<H: Hooks> StorageReadFile for HookedReader<H> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.hooks.before_read_at(&self.path, buf.len());
        self.file.read_at(offset, buf)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
}

impl<H: Hooks, S: Storage> Storage for Hooked<H, S> {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(&self.at(Op::CreateDir, dir))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(&self.at(Op::List, dir))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(&self.at(Op::Read, path))
    }
    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_prefix(&self.at(Op::Read, path), len)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageReadFile>> {
        let file = self.inner.open_read(&self.at(Op::OpenRead, path))?;
        Ok(Box::new(HookedReader { file, path: path.to_path_buf(), hooks: Arc::clone(&self.hooks) }))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = self.inner.create(&self.at(Op::Create, path))?;
        Ok(self.file(file, path))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = self.inner.open_write(&self.at(Op::OpenWrite, path))?;
        Ok(self.file(file, path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let from = self.at(Op::Rename, from);
        self.inner.rename(&from, &self.hooks.locate(to))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(&self.at(Op::Remove, path))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(&self.at(Op::SyncDir, dir))
    }
    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        self.inner.lock(&self.at(Op::Lock, path))
    }
}
