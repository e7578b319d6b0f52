//! The storage seam: every file-system operation of the journal and snapshot code passes
//! through [`Storage`], so that tests can put a simulated power-losing disk in its place.
//!
//! The seam is deliberately small and speaks in whole-file, append, positioned-write and
//! positioned-read terms, the only ways airomem touches its files.

use std::any::Any;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

/// A file opened for writing by [`Storage::create`] or [`Storage::open_write`].
pub trait StorageFile: Send {
    /// Writes all of `buf` at the end of the file.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, over what is there and past the end if it reaches
    /// that far (`pwrite`). A gap between the end and `offset` reads back as zeros.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes the file's data (and the size, if it changed) durable: `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (or extends it with zeros); later appends go to the new
    /// end.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Writes zeros over `from..to`: space prepared ahead of appends. Written rather than
    /// `fallocate`d or left to `set_len`, because unwritten extents and holes need a metadata
    /// update on their first write, which is what preparing the space is meant to spare.
    fn write_zeros(&mut self, from: u64, to: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut offset = from;
        while offset < to {
            let len = (to - offset).min(ZEROS.len() as u64);
            self.write_at(offset, &ZEROS[..len as usize])?;
            offset += len;
        }
        Ok(())
    }
}

/// A file opened for reading by [`Storage::open_read`]: positioned reads of one file,
/// whatever happens to its name afterwards.
///
/// The handle refers to the file, not to its path: once open, the file may be renamed or
/// removed (as a newer snapshot replaces it) and the handle still reads it, as an open
/// descriptor reads an unlinked file on Unix. It is meant for files nobody writes any more
/// (published snapshots); whether writes made after the open are visible is unspecified.
pub trait StorageReadFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset` (`pread`) and returns how many it read: 0 at
    /// or past the end, fewer than asked near it (or whenever the storage prefers to).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` from `offset`; fails with [`io::ErrorKind::UnexpectedEof`] if the file ends
    /// first.
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(offset, buf) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file ends before the read")),
                Ok(n) => {
                    offset += n as u64;
                    buf = &mut buf[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The content of a whole file, read at open: [`Storage::open_read`]'s default.
struct WholeFile(Vec<u8>);

impl StorageReadFile for WholeFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

/// A held lock; dropping it releases the lock.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// The file-system operations airomem needs.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files directly inside `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of a file, read with as few system calls as possible.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The first `len` bytes of a file (fewer if it is shorter): file headers, without
    /// reading what follows them.
    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = self.read(path)?;
        bytes.truncate(len);
        Ok(bytes)
    }
    /// Opens an existing file for positioned reads, in pieces of the caller's choosing.
    ///
    /// A handle rather than a `read_at(path, offset, buf)` that reopens the path each time:
    /// the reader of a snapshot (a leader streaming it to a follower, chunk by chunk) must
    /// keep reading the file it started with while a newer snapshot is published and the
    /// old one removed, and one open per file instead of one per chunk spares the system
    /// calls.
    ///
    /// The default reads the whole file at once ([`Storage::read`]) and serves the pieces
    /// from memory: correct for any storage (the content is fixed at the open, as the file
    /// a descriptor pins), but it holds the whole file. Storages that can read in place
    /// override it; wrappers forward it.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageReadFile>> {
        Ok(Box::new(WholeFile(self.read(path)?)))
    }
    /// Creates a new, empty file; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for writing; appends go to its current end.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive advisory lock on `path`, creating the file if needed. Fails with
    /// [`io::ErrorKind::WouldBlock`] if another handle, in this process or another, holds it;
    /// once the holder releases it, taking it again succeeds.
    fn lock(&self, path: &Path) -> io::Result<LockGuard>;
}

/// The real file system, through `std::fs`.
///
/// New directories get `dir_mode` and new files `file_mode` (on Unix; both before the
/// process umask). The defaults, `0o700` and `0o600`, keep a store's content private to its
/// owner: journals of session stores hold secrets.
#[derive(Clone, Copy, Debug)]
pub struct StdStorage {
    /// Permission bits for directories the store creates.
    pub dir_mode: u32,
    /// Permission bits for files the store creates.
    pub file_mode: u32,
}

impl Default for StdStorage {
    fn default() -> Self {
        StdStorage { dir_mode: 0o700, file_mode: 0o600 }
    }
}

impl StdStorage {
    fn options(&self) -> OpenOptions {
        #[cfg_attr(not(unix), expect(unused_mut, reason = "modes exist on unix only"))]
        let mut options = OpenOptions::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(self.file_mode);
        }
        options
    }
}

/// A file and where its end is. Every write is positioned (`pwrite`), appends included:
/// the file is never opened with `O_APPEND`, under which Linux ignores the offset of a
/// positioned write.
struct StdFile {
    file: File,
    end: u64,
}

impl StorageFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_at(self.end, buf)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let result = self.file.write_all_at(buf, offset);
        // A failed write may still have written a prefix; a later append must not leave a
        // gap of stale bytes, so the end is taken from the file itself then.
        match &result {
            Ok(()) => self.end = self.end.max(offset + buf.len() as u64),
            Err(_) => self.end = self.file.metadata().map_or(self.end, |m| m.len()),
        }
        result
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.end = len;
        Ok(())
    }
}

/// A file open for reading: positioned reads on its descriptor, which keeps the file
/// readable after its name is removed.
struct StdReadFile(File);

impl StorageReadFile for StdReadFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
        }
        #[cfg(windows)]
        {
            // Moves the file's cursor, which nothing else here uses.
            std::os::windows::fs::FileExt::seek_read(&self.0, buf, offset)
        }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Storage for StdStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(self.dir_mode);
        }
        builder.create(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut bytes = Vec::with_capacity(len);
        File::open(path)?.take(len as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageReadFile>> {
        Ok(Box::new(StdReadFile(File::open(path)?)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = self.options().write(true).create_new(true).open(path)?;
        Ok(Box::new(StdFile { file, end: 0 }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = self.options().write(true).open(path)?;
        let end = file.metadata()?.len();
        Ok(Box::new(StdFile { file, end }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        Ok(Box::new(crate::dir_lock::lock(path, &self.options())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_within_one_process_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = StdStorage::default();
        let path = dir.path().join("LOCK");
        let held = storage.lock(&path).expect("first lock");
        match storage.lock(&path) {
            Ok(_) => panic!("a second lock on the same file must fail"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
        drop(held);
        storage.lock(&path).expect("lock after release");
    }

    #[cfg(unix)]
    #[test]
    fn new_files_and_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = StdStorage::default();
        let sub = dir.path().join("a/b");
        storage.create_dir_all(&sub).expect("mkdir");
        let mut file = storage.create(&sub.join("f")).expect("create");
        file.write_all(b"abc").expect("write");
        file.sync_data().expect("sync");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        // The umask can only remove bits, so these hold whatever it is.
        assert_eq!(mode(&sub) & !0o700, 0);
        assert_eq!(mode(&sub.join("f")) & !0o600, 0);
        assert_eq!(storage.read(&sub.join("f")).expect("read"), b"abc");
        assert_eq!(storage.read_prefix(&sub.join("f"), 2).expect("read prefix"), b"ab");
        assert_eq!(storage.read_prefix(&sub.join("f"), 9).expect("read prefix"), b"abc");
        assert_eq!(storage.list(&sub).expect("list"), vec!["f".to_string()]);
    }

    /// What both implementations of `open_read` must do: positioned reads, short at the end,
    /// and a handle that outlives the file's name.
    fn reads_in_place_and_survives_removal(storage: &dyn Storage, dir: &Path) {
        let path = dir.join("f");
        let mut file = storage.create(&path).expect("create");
        file.write_all(b"0123456789").expect("write");
        let reader = storage.open_read(&path).expect("open");
        assert_eq!(reader.len().expect("len"), 10);
        let mut buf = [0u8; 4];
        assert_eq!(reader.read_at(3, &mut buf).expect("read"), 4);
        assert_eq!(&buf, b"3456");
        assert_eq!(reader.read_at(8, &mut buf).expect("read"), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(reader.read_at(10, &mut buf).expect("read"), 0);
        assert_eq!(reader.read_at(99, &mut buf).expect("read"), 0);
        storage.remove(&path).expect("remove");
        let mut all = [0u8; 10];
        reader.read_exact_at(0, &mut all).expect("an open file outlives its name");
        assert_eq!(&all, b"0123456789");
        assert_eq!(reader.read_exact_at(5, &mut all).expect_err("past the end").kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(storage.open_read(&path).err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
    }

    #[test]
    fn open_read_reads_in_place_and_survives_removal() {
        let dir = tempfile::tempdir().expect("tempdir");
        reads_in_place_and_survives_removal(&StdStorage::default(), dir.path());
    }

    /// A storage that does not override `open_read`: the default serves the same reads.
    #[derive(Debug)]
    struct Plain(StdStorage);

    impl Storage for Plain {
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            self.0.create_dir_all(dir)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            self.0.list(dir)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.0.read(path)
        }
        fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
            self.0.create(path)
        }
        fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
            self.0.open_write(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.0.rename(from, to)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            self.0.remove(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.0.sync_dir(dir)
        }
        fn lock(&self, path: &Path) -> io::Result<LockGuard> {
            self.0.lock(path)
        }
    }

    #[test]
    fn the_default_open_read_serves_the_same_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        reads_in_place_and_survives_removal(&Plain(StdStorage::default()), dir.path());
    }
}
