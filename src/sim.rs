//! A simulated disk that loses power: [`SimStorage`], an in-memory
//! [`airomem::storage::Storage`] for crash and fault-injection tests.
//!
//! # What is simulated
//!
//! The model is the POSIX durability contract, taken at its word and no more generously:
//!
//! * **File data** is durable only once `fdatasync`ed ([`StorageFile::sync_data`]). Each file
//!   (an *inode*, so that renames and open handles behave as on a real file system) keeps
//!   its durable content plus the writes and `set_len`s made since its last sync. At a power
//!   loss each of those pending writes, in order, is independently kept, dropped, or torn: a
//!   prefix survives, cut at any byte or at a 512-byte sector boundary, and the rest of the
//!   range the write extended the file by may read back as zeros (metadata committed before
//!   the data, as ext4 can) or as garbage (stale blocks). A write that only overwrites
//!   existing bytes changes no metadata, so nothing orders its sectors: it may also land
//!   scattered, each 512-byte sector kept or lost on its own. A pending `set_len` is kept
//!   or lost.
//! * **Directory entries** (creations, renames, removals) are durable only once the directory
//!   is synced ([`Storage::sync_dir`]). A journaling file system commits metadata in order, so
//!   a power loss keeps an in-order prefix of each directory's pending entry operations and
//!   loses the rest. A file whose data was synced but whose entry was not can therefore
//!   vanish, and an unsynced rename can be undone.
//! * **Directories themselves** (from [`Storage::create_dir_all`]) are durable at once. Strict
//!   POSIX would also want the parent synced after a `mkdir`, which airomem never does for
//!   the store directory it creates; ext4, XFS and btrfs persist a new directory with the
//!   first fsync made inside it, and the simulation follows them so that the tests exercise
//!   the store's own ordering rather than that one known gap.
//!
//! Whatever was synced survives every crash; [`SimStorage::crash`] returns the disk image one
//! power loss leaves, chosen by a seed, as a new, independent storage.
//!
//! # Process crashes
//!
//! A process killed at any instant (SIGKILL, `abort`) loses nothing the kernel already took:
//! its writes stay in the page cache, readable by the next process, but they are no more
//! durable than before, and a power loss later can still drop, tear or scatter them unless
//! someone syncs them first. [`SimStorage::process_crash`] returns the disk as such a death
//! leaves it: every pending write, `set_len` and directory entry operation is still there and
//! still pending, and the dead process's locks are released. Chaining the two,
//! `sim.process_crash()` then `.crash(seed)` on what the next process left, tests that a
//! store does not serve (or build snapshots on) what a power cut can still take back.
//!
//! # Faults
//!
//! Every storage operation (each method of [`Storage`], [`StorageFile`] and
//! [`StorageReadFile`] but the length of an open file) gets an index, counted from 0 across
//! all threads and files ([`SimStorage::ops`]). [`SimStorage::fail_at`] makes one chosen
//! operation fail with `EIO` or `ENOSPC`; [`SimStorage::freeze_after`] and
//! [`SimStorage::power_cut`] make every operation from some index on fail, as if the machine
//! had died there, so that the disk image stays exactly as it was at that moment for
//! [`SimStorage::crash`] to take apart.
//!
//! Thread interleavings are up to the code under test: a seed fixes the crash's choices, and
//! the workload a test derives from it, not the order in which concurrent threads reach the
//! storage.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use airomem::storage::{LockGuard, Storage, StorageFile, StorageReadFile};

/// Raw OS error numbers (Linux) of the injected faults.
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// Torn writes are sometimes cut at a multiple of this, the sector size disks write atomically.
const SECTOR: u64 = 512;

/// A small, fast, deterministic pseudo-random generator (splitmix64), written out so that
/// seeds stay replayable whatever version of any crate is in the lock file.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0). The modulo bias is irrelevant at test sizes.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A number from `low` to `high`, both included.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// An inode number: files are tracked by identity, not by name.
type Ino = u64;

/// A change to a file's content not yet made durable by `sync_data`.
#[derive(Clone, Debug)]
enum FileOp {
    /// `data` written at `offset`.
    Write { offset: u64, data: Vec<u8> },
    /// The file cut (or extended with zeros) to this length.
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    /// What survives any power loss.
    durable: Vec<u8>,
    /// What reads see: `durable` with every pending op applied.
    current: Vec<u8>,
    /// Since the last `sync_data`, in order.
    pending: Vec<FileOp>,
}

/// A change to a directory's entries not yet made durable by `sync_dir`.
#[derive(Clone, Debug)]
enum DirOp {
    /// `name` now refers to `ino` (creation).
    Link { name: String, ino: Ino },
    /// `from` moved to `to` (replacing whatever `to` was).
    Rename { from: String, to: String },
    /// `name` removed.
    Unlink { name: String },
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<String, Ino>) {
        match self {
            DirOp::Link { name, ino } => {
                entries.insert(name.clone(), *ino);
            }
            DirOp::Rename { from, to } => {
                // The ops are applied as an in-order prefix of what really happened, so
                // `from` exists here exactly as it did then.
                if let Some(ino) = entries.remove(from) {
                    entries.insert(to.clone(), ino);
                }
            }
            DirOp::Unlink { name } => {
                entries.remove(name);
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Directory {
    /// Entries that survive any power loss.
    durable: BTreeMap<String, Ino>,
    /// What `list` and lookups see.
    current: BTreeMap<String, Ino>,
    /// Since the last `sync_dir`, in order.
    pending: Vec<DirOp>,
}

impl Directory {
    /// A directory whose entries are all durable.
    fn settled(entries: BTreeMap<String, Ino>) -> Directory {
        Directory { durable: entries.clone(), current: entries, pending: Vec::new() }
    }
}

/// Where injected failures strike.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// One operation that fails, and the raw OS error it fails with.
    fail_at: Option<(u64, i32)>,
    /// From this operation on, everything fails: the power is off.
    frozen_from: Option<u64>,
}

/// What the gate decides for one operation.
enum Gate {
    Proceed,
    /// An injected one-off fault: the operation may have a partial effect first (a short write).
    Fault(io::Error),
    /// The power is off: the operation must change nothing.
    Dead(io::Error),
}

#[derive(Debug, Default)]
struct Disk {
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    dirs: BTreeMap<PathBuf, Directory>,
    /// Inodes on which a [`SimLock`] is held.
    locks: BTreeSet<Ino>,
    /// Operations started so far; the next one gets this index.
    ops: u64,
    faults: Faults,
    /// Each operation, described, when [`SimStorage::trace`] asked for it.
    trace: Option<Vec<String>>,
}

impl Disk {
    /// Counts an operation and decides whether it fails; `what` describes it for the trace.
    fn gate(&mut self, what: impl FnOnce() -> String) -> Gate {
        let index = self.ops;
        self.ops += 1;
        let gate = if self.faults.frozen_from.is_some_and(|from| index >= from) {
            Gate::Dead(io::Error::from_raw_os_error(EIO))
        } else {
            match self.faults.fail_at {
                Some((at, errno)) if at == index => {
                    self.faults.fail_at = None;
                    Gate::Fault(io::Error::from_raw_os_error(errno))
                }
                _ => Gate::Proceed,
            }
        };
        if let Some(trace) = &mut self.trace {
            let outcome = match &gate {
                Gate::Proceed => String::new(),
                Gate::Fault(e) => format!(" -> injected fault: {e}"),
                Gate::Dead(_) => " -> power off".to_string(),
            };
            trace.push(format!("#{index} {}{outcome}", what()));
        }
        gate
    }

    /// Like [`Disk::gate`], for operations a failure leaves without effect.
    fn check(&mut self, what: impl FnOnce() -> String) -> io::Result<()> {
        match self.gate(what) {
            Gate::Proceed => Ok(()),
            Gate::Fault(e) | Gate::Dead(e) => Err(e),
        }
    }

    fn dir(&self, dir: &Path) -> io::Result<&Directory> {
        self.dirs.get(dir).ok_or_else(|| not_found(dir))
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Directory> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let (dir, name) = split(path)?;
        self.dir(dir)?.current.get(&name).copied().ok_or_else(|| not_found(path))
    }

    /// Creates an empty file at `path`, which must not exist.
    fn create_file(&mut self, path: &Path) -> io::Result<Ino> {
        let (dir, name) = split(path)?;
        let ino = self.next_ino;
        let directory = self.dir_mut(dir)?;
        if directory.current.contains_key(&name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        directory.current.insert(name.clone(), ino);
        directory.pending.push(DirOp::Link { name, ino });
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::default());
        Ok(ino)
    }

    fn inode(&mut self, ino: Ino) -> &mut Inode {
        // Inodes are never freed while the storage lives (open handles may outlive names),
        // so a handle's inode is always there.
        self.inodes.entry(ino).or_default()
    }

    /// Writes `data` at `offset`, or at the end of the file.
    fn write(&mut self, ino: Ino, offset: Option<u64>, data: &[u8]) {
        let inode = self.inode(ino);
        let offset = offset.unwrap_or(inode.current.len() as u64);
        write_at(&mut inode.current, offset, data);
        inode.pending.push(FileOp::Write { offset, data: data.to_vec() });
    }

    /// The disk as a dying process leaves it: the same content, durable and pending alike,
    /// and none of the process's locks, faults or counters.
    fn process_crash(&self) -> Disk {
        Disk {
            // Every inode, also those no entry names now: a pending unlink or rename that a
            // later power loss drops can bring one back under its old name.
            inodes: self.inodes.clone(),
            next_ino: self.next_ino,
            dirs: self.dirs.clone(),
            locks: BTreeSet::new(),
            ops: 0,
            faults: Faults::default(),
            trace: None,
        }
    }

    /// The disk as one power loss leaves it.
    fn crash(&self, seed: u64) -> Disk {
        let mut rng = SplitMix64::new(seed);
        let mut dirs = BTreeMap::new();
        for (path, dir) in &self.dirs {
            let mut entries = dir.durable.clone();
            let kept = surviving_prefix(&mut rng, dir.pending.len());
            for op in &dir.pending[..kept] {
                op.apply(&mut entries);
            }
            dirs.insert(path.clone(), Directory::settled(entries));
        }
        // Files no surviving entry names are gone (their space is freed at the next mount).
        let reachable: BTreeSet<Ino> = dirs.values().flat_map(|d: &Directory| d.current.values().copied()).collect();
        let mut inodes = BTreeMap::new();
        for (&ino, inode) in self.inodes.iter().filter(|(ino, _)| reachable.contains(ino)) {
            let content = crash_file(&mut rng, inode);
            inodes.insert(ino, Inode { durable: content.clone(), current: content, pending: Vec::new() });
        }
        Disk {
            inodes,
            next_ino: self.next_ino,
            dirs,
            locks: BTreeSet::new(),
            ops: 0,
            faults: Faults::default(),
            trace: None,
        }
    }
}

/// How many of `pending` directory operations a power loss keeps: all, none, or any prefix.
/// All and none get extra weight: they are the common outcomes and must be covered often.
fn surviving_prefix(rng: &mut SplitMix64, pending: usize) -> usize {
    if pending == 0 {
        return 0;
    }
    match rng.below(4) {
        0 => pending,
        1 => 0,
        _ => rng.below(pending as u64 + 1) as usize,
    }
}

/// A file's content after a power loss: the durable content, then each pending op kept,
/// dropped or (for writes) torn, independently and in order.
fn crash_file(rng: &mut SplitMix64, inode: &Inode) -> Vec<u8> {
    let mut content = inode.durable.clone();
    for op in &inode.pending {
        match op {
            FileOp::SetLen(len) => {
                if rng.chance(1, 2) {
                    content.resize(*len as usize, 0);
                }
            }
            FileOp::Write { offset, data } => {
                // An overwrite changes no metadata, so nothing orders its sectors: any of
                // them may reach the platter without the others.
                let overwrite = offset + data.len() as u64 <= content.len() as u64;
                match rng.below(if overwrite { 4 } else { 3 }) {
                    0 => write_at(&mut content, *offset, data),
                    1 => {}
                    2 => tear(rng, &mut content, *offset, data),
                    _ => scatter(rng, &mut content, *offset, data),
                }
            }
        }
    }
    content
}

/// Applies a torn write: a strict prefix of `data` lands, the rest of the range the write
/// extended the file by is absent, zeros or garbage.
fn tear(rng: &mut SplitMix64, content: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let len = data.len() as u64;
    if len == 0 {
        return;
    }
    let before = content.len() as u64;
    // Sector boundaries strictly inside the write, if any; otherwise any byte.
    let first_boundary = (offset / SECTOR + 1) * SECTOR;
    let cut = if rng.chance(1, 2) && first_boundary < offset + len {
        let boundaries = (offset + len - 1 - first_boundary) / SECTOR + 1;
        first_boundary + rng.below(boundaries) * SECTOR - offset
    } else {
        rng.below(len)
    };
    write_at(content, offset, &data[..cut as usize]);
    let lost_from = (offset + cut).max(before);
    let end = offset + len;
    if lost_from < end {
        let missing = (end - lost_from) as usize;
        match rng.below(3) {
            0 => {}
            1 => content.resize(content.len() + missing, 0),
            _ => {
                let garbage = rng.bytes(missing);
                content.extend_from_slice(&garbage);
            }
        }
    }
}

/// Applies an overwrite sector by sector, each sector landing or not independently.
fn scatter(rng: &mut SplitMix64, content: &mut [u8], offset: u64, data: &[u8]) {
    let mut start = offset;
    let end = offset + data.len() as u64;
    while start < end {
        let stop = ((start / SECTOR + 1) * SECTOR).min(end);
        if rng.chance(1, 2) {
            let from = (start - offset) as usize;
            let to = (stop - offset) as usize;
            content[start as usize..stop as usize].copy_from_slice(&data[from..to]);
        }
        start = stop;
    }
}

/// Writes `data` at `offset`, filling any gap before it with zeros (a hole), as `pwrite` does.
fn write_at(content: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let offset = offset as usize;
    if content.len() < offset {
        content.resize(offset, 0);
    }
    let overlap = (content.len() - offset).min(data.len());
    content[offset..offset + overlap].copy_from_slice(&data[..overlap]);
    content.extend_from_slice(&data[overlap..]);
}

fn split(path: &Path) -> io::Result<(&Path, String)> {
    let name = path.file_name().and_then(|n| n.to_str());
    match (path.parent(), name) {
        (Some(dir), Some(name)) => Ok((dir, name.to_string())),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display()))),
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display()))
}

/// An in-memory disk that can lose power. Clones share one disk, so a test can hand one
/// clone to a store (`StoreOptions::storage(Arc::new(sim.clone()))`) and keep another to cut
/// the power and take the crash image.
#[derive(Clone, Default)]
pub struct SimStorage {
    disk: Arc<Mutex<Disk>>,
}

impl SimStorage {
    /// An empty disk.
    pub fn new() -> Self {
        SimStorage::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        // A panicking test thread must not hide the disk from the assertions that follow.
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Operations started so far (failed ones included): the index the next one gets.
    pub fn ops(&self) -> u64 {
        self.disk().ops
    }

    /// Makes the operation with index `op` fail once: with `ENOSPC` (raw OS error 28, kind
    /// [`io::ErrorKind::StorageFull`]) if `kind` is `StorageFull`, with `EIO` (raw OS error
    /// 5) if it is [`io::ErrorKind::Other`]. A failing write first appends the first half of
    /// its buffer, as the short write that precedes a real `ENOSPC` or `EIO` does; other
    /// failing operations change nothing. Replaces an earlier `fail_at`.
    ///
    /// # Panics
    ///
    /// For any other `kind`: only these two faults are modelled.
    pub fn fail_at(&self, op: u64, kind: io::ErrorKind) {
        let errno = match kind {
            io::ErrorKind::StorageFull => ENOSPC,
            io::ErrorKind::Other => EIO,
            other => panic!("SimStorage injects EIO (ErrorKind::Other) or ENOSPC (StorageFull), not {other:?}"),
        };
        self.disk().faults.fail_at = Some((op, errno));
    }

    /// Cuts the power just before the operation with index `op`: it and every later one fail
    /// with `EIO` and change nothing, so [`SimStorage::crash`] sees the disk as it was after
    /// the first `op` operations. An index already passed cuts the power now.
    pub fn freeze_after(&self, op: u64) {
        self.disk().faults.frozen_from = Some(op);
    }

    /// Cuts the power now: every further operation fails with `EIO`.
    pub fn power_cut(&self) {
        let mut disk = self.disk();
        let now = disk.ops;
        let from = disk.faults.frozen_from.map_or(now, |from| from.min(now));
        disk.faults.frozen_from = Some(from);
    }

    /// Whether the power is off: an operation started now would fail.
    pub fn is_frozen(&self) -> bool {
        let disk = self.disk();
        disk.faults.frozen_from.is_some_and(|from| disk.ops >= from)
    }

    /// Removes every injected fault, including a power cut: the disk works again, with the
    /// content reads saw (not a crash image).
    pub fn clear_faults(&self) {
        self.disk().faults = Faults::default();
    }

    /// The disk image a power loss leaves, decided by `seed` (same seed and same disk, same
    /// image): a new storage, independent of this one, holding only durable content, with
    /// no locks, no faults and its operation counter at 0.
    ///
    /// Call it after [`SimStorage::power_cut`] (or once [`SimStorage::freeze_after`] has
    /// struck) when code may still be running against this storage: otherwise a command
    /// synced after the image was taken could be acknowledged without being in it.
    pub fn crash(&self, seed: u64) -> SimStorage {
        let image = self.disk().crash(seed);
        SimStorage { disk: Arc::new(Mutex::new(image)) }
    }

    /// The disk a killed process leaves to the next one (see *Process crashes* in the module
    /// docs): a new storage, independent of this one, holding the same files with the same
    /// content, where every write, `set_len` and directory entry operation not yet synced is
    /// still pending, so that a later [`SimStorage::crash`] of it can still lose, tear or
    /// scatter them. No lock is held on it, no fault is injected, and its operation counter
    /// is at 0.
    ///
    /// As with [`SimStorage::crash`], cut the power of this storage first
    /// ([`SimStorage::power_cut`], or a [`SimStorage::freeze_after`] that has struck) when
    /// the dead process's threads may still be running against it: the new storage is a copy
    /// taken at one instant, and a dead process must change nothing after it.
    pub fn process_crash(&self) -> SimStorage {
        let image = self.disk().process_crash();
        SimStorage { disk: Arc::new(Mutex::new(image)) }
    }

    /// Every file and what a read of it returns now, by path. An observer for tests: not a
    /// storage operation, so it neither counts nor fails.
    pub fn contents(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let disk = self.disk();
        let mut files = BTreeMap::new();
        for (path, dir) in &disk.dirs {
            for (name, ino) in &dir.current {
                let content = disk.inodes.get(ino).map(|i| i.current.clone()).unwrap_or_default();
                files.insert(path.join(name), content);
            }
        }
        files
    }

    /// Starts recording a description of every operation from now on (numbered like
    /// [`SimStorage::ops`], with the injected outcome), for a failing test to print.
    pub fn trace(&self) {
        self.disk().trace.get_or_insert_with(Vec::new);
    }

    /// The operations recorded since [`SimStorage::trace`].
    pub fn traced(&self) -> Vec<String> {
        self.disk().trace.clone().unwrap_or_default()
    }

    /// How many file writes, `set_len`s and directory entry operations a crash now could
    /// still lose. An observer for tests, like [`SimStorage::contents`].
    pub fn unsynced(&self) -> usize {
        let disk = self.disk();
        disk.inodes.values().map(|i| i.pending.len()).sum::<usize>()
            + disk.dirs.values().map(|d| d.pending.len()).sum::<usize>()
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disk = self.disk();
        f.debug_struct("SimStorage")
            .field("ops", &disk.ops)
            .field("dirs", &disk.dirs.len())
            .field("inodes", &disk.inodes.len())
            .field("faults", &disk.faults)
            .finish_non_exhaustive()
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(|| format!("create_dir_all {}", dir.display()))?;
        for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            disk.dirs.entry(ancestor.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut disk = self.disk();
        disk.check(|| format!("list {}", dir.display()))?;
        Ok(disk.dir(dir)?.current.keys().cloned().collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut disk = self.disk();
        disk.check(|| format!("read {}", path.display()))?;
        let ino = disk.lookup(path)?;
        Ok(disk.inode(ino).current.clone())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageReadFile>> {
        let mut disk = self.disk();
        let ino = disk.lookup(path).ok();
        disk.check(|| format!("open_read {} (inode {ino:?})", path.display()))?;
        let ino = disk.lookup(path)?;
        Ok(Box::new(SimReadFile { disk: Arc::clone(&self.disk), ino }))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut disk = self.disk();
        let ino = disk.next_ino;
        disk.check(|| format!("create {} (inode {ino})", path.display()))?;
        let ino = disk.create_file(path)?;
        Ok(Box::new(SimFile { disk: Arc::clone(&self.disk), ino }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut disk = self.disk();
        let ino = disk.lookup(path).ok();
        disk.check(|| format!("open_write {} (inode {ino:?})", path.display()))?;
        let ino = disk.lookup(path)?;
        Ok(Box::new(SimFile { disk: Arc::clone(&self.disk), ino }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(|| format!("rename {} -> {}", from.display(), to.display()))?;
        let (dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if dir != to_dir {
            // airomem renames only within its directory; a cross-directory rename would need
            // the ordering of two directories' metadata, which nothing here exercises.
            return Err(io::Error::new(io::ErrorKind::Unsupported, "SimStorage renames within one directory only"));
        }
        let directory = disk.dir_mut(dir)?;
        let ino = directory.current.remove(&from_name).ok_or_else(|| not_found(from))?;
        directory.current.insert(to_name.clone(), ino);
        if from_name != to_name {
            directory.pending.push(DirOp::Rename { from: from_name, to: to_name });
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(|| format!("remove {}", path.display()))?;
        let (dir, name) = split(path)?;
        let directory = disk.dir_mut(dir)?;
        directory.current.remove(&name).ok_or_else(|| not_found(path))?;
        directory.pending.push(DirOp::Unlink { name });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(|| format!("sync_dir {}", dir.display()))?;
        let directory = disk.dir_mut(dir)?;
        directory.durable = directory.current.clone();
        directory.pending.clear();
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let mut disk = self.disk();
        disk.check(|| format!("lock {}", path.display()))?;
        let ino = match disk.lookup(path) {
            Ok(ino) => ino,
            Err(e) if e.kind() == io::ErrorKind::NotFound => disk.create_file(path)?,
            Err(e) => return Err(e),
        };
        // Like flock, the lock belongs to the file, whatever name reaches it.
        if !disk.locks.insert(ino) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "the lock is held by another handle"));
        }
        Ok(Box::new(SimLock { disk: Arc::clone(&self.disk), ino }))
    }
}

/// An open file: it refers to the inode, so it keeps working after a rename or removal.
struct SimFile {
    disk: Arc<Mutex<Disk>>,
    ino: Ino,
}

impl SimFile {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&mut self, offset: Option<u64>, buf: &[u8]) -> io::Result<()> {
        let mut disk = self.disk();
        let ino = self.ino;
        let at = offset.map(|o| format!(" at {o}")).unwrap_or_default();
        match disk.gate(|| format!("write {} bytes{at} to inode {ino}", buf.len())) {
            Gate::Proceed => {
                disk.write(ino, offset, buf);
                Ok(())
            }
            Gate::Fault(e) => {
                // The short write a full or failing disk makes before the error: what landed
                // is in the file (unsynced), the caller cannot know how much.
                disk.write(ino, offset, &buf[..buf.len() / 2]);
                Err(e)
            }
            Gate::Dead(e) => Err(e),
        }
    }
}

impl StorageFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write(None, buf)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write(Some(offset), buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut disk = self.disk();
        // A failed sync changes nothing here: the pending writes may or may not survive a
        // crash, which is exactly what a caller of a failed fsync must assume.
        let ino = self.ino;
        disk.check(|| format!("sync_data inode {ino}"))?;
        let inode = disk.inode(self.ino);
        inode.durable = inode.current.clone();
        inode.pending.clear();
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut disk = self.disk();
        let ino = self.ino;
        disk.check(|| format!("set_len inode {ino} to {len}"))?;
        let inode = disk.inode(self.ino);
        inode.current.resize(len as usize, 0);
        inode.pending.push(FileOp::SetLen(len));
        Ok(())
    }
}

/// A file open for reading: like [`SimFile`], it refers to the inode, so it reads what reads
/// of the file see now (its current content, durable or not) after a rename or removal too.
struct SimReadFile {
    disk: Arc<Mutex<Disk>>,
    ino: Ino,
}

impl StorageReadFile for SimReadFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut disk = self.disk.lock().unwrap_or_else(PoisonError::into_inner);
        let ino = self.ino;
        disk.check(|| format!("read {} bytes at {offset} from inode {ino}", buf.len()))?;
        let content = &disk.inode(ino).current;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(content.len());
        let n = buf.len().min(content.len() - start);
        buf[..n].copy_from_slice(&content[start..start + n]);
        Ok(n)
    }

    /// Not an operation of its own: `fstat` on an open file, which a dead disk still answers
    /// from the inode cache.
    fn len(&self) -> io::Result<u64> {
        let mut disk = self.disk.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(disk.inode(self.ino).current.len() as u64)
    }
}

/// A held [`Storage::lock`]; dropping it releases the lock.
struct SimLock {
    disk: Arc<Mutex<Disk>>,
    ino: Ino,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.disk.lock().unwrap_or_else(PoisonError::into_inner).locks.remove(&self.ino);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const SEEDS: u64 = 2000;

    fn dir() -> PathBuf {
        PathBuf::from("/sim/store")
    }

    fn names(storage: &SimStorage) -> BTreeSet<String> {
        storage.list(&dir()).expect("list").into_iter().collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// A disk with `a` fully synced (data and entry) and more unsynced work on top.
    fn busy_disk() -> (SimStorage, Vec<u8>) {
        let sim = SimStorage::new();
        sim.create_dir_all(&dir()).expect("mkdir");
        let synced: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
        let mut a = sim.create(&dir().join("a")).expect("create a");
        a.write_all(&synced[..700]).expect("write");
        a.write_all(&synced[700..]).expect("write");
        a.sync_data().expect("sync");
        sim.sync_dir(&dir()).expect("sync dir");
        a.write_all(&[7; 3000]).expect("unsynced write");
        a.set_len(2000).expect("unsynced set_len");
        a.write_all(&[9; 100]).expect("unsynced write");
        let mut b = sim.create(&dir().join("b")).expect("create b");
        b.write_all(b"bbb").expect("write");
        sim.rename(&dir().join("b"), &dir().join("c")).expect("rename");
        (sim, synced)
    }

    #[test]
    fn synced_data_and_entries_survive_every_seed() {
        let (sim, synced) = busy_disk();
        for seed in 0..SEEDS {
            let image = sim.crash(seed);
            let content = image.read(&dir().join("a")).expect("a was synced, entry and data");
            assert!(content.len() >= synced.len(), "seed {seed}: synced bytes lost");
            assert_eq!(&content[..synced.len()], &synced[..], "seed {seed}: synced bytes changed");
            assert_eq!(image.unsynced(), 0, "a crash image is all durable");
            // And what survived one crash survives the next.
            let again = image.crash(seed.wrapping_mul(31).wrapping_add(7));
            assert_eq!(again.contents(), image.contents(), "seed {seed}");
        }
    }

    #[test]
    fn unsynced_create_and_rename_can_each_be_lost_but_only_in_order() {
        let (sim, _) = busy_disk();
        let mut seen = BTreeSet::new();
        for seed in 0..SEEDS {
            let found = names(&sim.crash(seed));
            // Pending: create b, then rename b -> c. Only in-order prefixes may survive.
            assert!(
                [set(&["a"]), set(&["a", "b"]), set(&["a", "c"])].contains(&found),
                "seed {seed}: {found:?} is not an in-order prefix"
            );
            seen.insert(found.into_iter().collect::<Vec<_>>());
        }
        assert_eq!(seen.len(), 3, "every prefix occurs: {seen:?}");
    }

    #[test]
    fn unsynced_writes_are_kept_dropped_or_torn() {
        let sim = SimStorage::new();
        sim.create_dir_all(&dir()).expect("mkdir");
        let path = dir().join("f");
        let mut file = sim.create(&path).expect("create");
        file.write_all(&[1; 100]).expect("write");
        file.sync_data().expect("sync");
        sim.sync_dir(&dir()).expect("sync dir");
        let data: Vec<u8> = (0..2000u32).map(|i| (i % 200 + 50) as u8).collect();
        file.write_all(&data).expect("unsynced write");
        let full = [vec![1; 100], data.clone()].concat();

        let (mut kept, mut dropped, mut short, mut zeros, mut garbage, mut sector) = (0, 0, 0, 0, 0, 0);
        for seed in 0..SEEDS {
            let content = sim.crash(seed).read(&path).expect("synced entry");
            assert_eq!(&content[..100], &[1; 100], "seed {seed}: synced prefix");
            assert!(content.len() <= full.len(), "seed {seed}: grew past the write");
            if content == full {
                kept += 1;
                continue;
            }
            if content.len() == 100 {
                dropped += 1;
                continue;
            }
            // Torn: some prefix of the write landed, the rest is absent, zeros or garbage.
            let landed = content.iter().zip(&full).take_while(|(a, b)| a == b).count();
            assert!(landed < full.len(), "seed {seed}");
            if landed % 512 == 0 {
                sector += 1;
            }
            if content.len() < full.len() {
                assert_eq!(content.len(), landed, "seed {seed}: a short file holds only the landed prefix");
                short += 1;
            } else if content[landed..].iter().all(|&b| b == 0) {
                zeros += 1;
            } else {
                garbage += 1;
            }
        }
        for (what, count) in
            [("kept", kept), ("dropped", dropped), ("short", short), ("zeros", zeros), ("garbage", garbage)]
        {
            assert!(count > SEEDS / 50, "{what} happened only {count} times in {SEEDS} crashes");
        }
        assert!(sector > SEEDS / 50, "cuts at sector boundaries: {sector}");
    }

    #[test]
    fn a_process_crash_keeps_pending_writes_pending_for_a_later_power_loss() {
        let (sim, synced) = busy_disk();
        sim.power_cut();
        let image = sim.process_crash();
        assert_eq!(image.contents(), sim.contents(), "the next process reads what the dead one wrote");
        assert_eq!(image.unsynced(), sim.unsynced(), "and none of it became durable");
        assert!(!image.is_frozen(), "the power is on for the next process");
        assert_eq!(image.ops(), 0);
        let full = sim.contents().remove(&dir().join("a")).expect("a, with its unsynced writes");
        let (mut lost, mut kept) = (0, 0);
        let mut prefixes = BTreeSet::new();
        for seed in 0..SEEDS {
            // The same disk state and the same seed: the power loss decides exactly as it
            // would have without the process crash.
            let power_loss = image.crash(seed);
            assert_eq!(power_loss.contents(), sim.crash(seed).contents(), "seed {seed}");
            let content = power_loss.read(&dir().join("a")).expect("a was synced, entry and data");
            assert_eq!(&content[..synced.len()], &synced[..], "seed {seed}: synced bytes survive both crashes");
            if content == full {
                kept += 1;
            } else {
                lost += 1;
            }
            prefixes.insert(names(&power_loss).into_iter().collect::<Vec<_>>());
        }
        assert!(kept > SEEDS / 50 && lost > SEEDS / 50, "unsynced writes kept {kept} times, not {lost} times");
        assert_eq!(prefixes.len(), 3, "the pending create and rename are still pending: {prefixes:?}");
    }

    #[test]
    fn a_sync_after_a_process_crash_makes_the_dead_process_writes_durable() {
        let (sim, _) = busy_disk();
        let image = sim.process_crash();
        let before = image.contents();
        // As fdatasync flushes every dirty page of the inode, whoever dirtied it.
        image.open_write(&dir().join("a")).expect("open a").sync_data().expect("sync a");
        image.sync_dir(&dir()).expect("sync dir");
        assert_eq!(image.unsynced(), 1, "only c's data is left, never synced");
        for seed in 0..100 {
            let after = image.crash(seed).contents();
            assert_eq!(after.get(&dir().join("a")), before.get(&dir().join("a")), "seed {seed}");
            assert!(after.contains_key(&dir().join("c")), "seed {seed}: the rename was synced");
        }
    }

    #[test]
    fn a_process_crash_releases_locks_and_leaves_an_independent_disk() {
        let sim = SimStorage::new();
        sim.create_dir_all(&dir()).expect("mkdir");
        let path = dir().join("LOCK");
        let held = sim.lock(&path).expect("the dead process's lock");
        let mut file = sim.create(&dir().join("f")).expect("create");
        sim.fail_at(sim.ops() + 5, io::ErrorKind::Other);
        let image = sim.process_crash();
        drop(image.lock(&path).expect("a dead process holds no lock"));
        assert!(sim.lock(&path).is_err(), "the old disk keeps its own lock");
        drop(held);

        file.write_all(b"old").expect("the old disk goes on alone");
        assert!(image.read(&dir().join("f")).expect("read").is_empty(), "copied at one instant");
        let mut again = image.open_write(&dir().join("f")).expect("open");
        for _ in 0..8 {
            again.write_all(b"new").expect("no fault carried over");
        }
        assert_eq!(sim.read(&dir().join("f")).expect("read"), b"old");
    }

    #[test]
    fn crash_is_deterministic_per_seed() {
        let (sim, _) = busy_disk();
        let distinct: BTreeSet<_> = (0..50).map(|seed| sim.crash(seed).contents()).collect();
        assert!(distinct.len() > 5, "seeds differ");
        for seed in 0..50 {
            assert_eq!(sim.crash(seed).contents(), sim.crash(seed).contents(), "seed {seed}");
        }
    }

    #[test]
    fn handles_follow_the_inode_across_rename_and_removal() {
        let sim = SimStorage::new();
        sim.create_dir_all(&dir()).expect("mkdir");
        let mut file = sim.create(&dir().join("x.tmp")).expect("create");
        file.write_all(b"head").expect("write");
        sim.rename(&dir().join("x.tmp"), &dir().join("x")).expect("rename");
        file.write_all(b"+tail").expect("write after rename");
        assert_eq!(sim.read(&dir().join("x")).expect("read"), b"head+tail");
        assert_eq!(names(&sim), set(&["x"]));
        sim.remove(&dir().join("x")).expect("remove");
        file.write_all(b"!").expect("an unlinked file stays writable");
        assert!(sim.read(&dir().join("x")).is_err());
        assert!(sim.create(&dir().join("y")).is_ok());
        assert_eq!(
            sim.create(&dir().join("y")).err().map(|e| e.kind()),
            Some(io::ErrorKind::AlreadyExists),
            "create never replaces"
        );
        assert_eq!(sim.open_write(&dir().join("nope")).err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
    }

    #[test]
    fn read_handles_read_in_place_and_follow_the_inode_across_removal() {
        let sim = SimStorage::new();
        sim.create_dir_all(&dir()).expect("mkdir");
        let mut file = sim.create(&dir().join("x")).expect("create");
        file.write_all(b"0123456789").expect("write");
        let reader = sim.open_read(&dir().join("x")).expect("open");
        assert_eq!(reader.len().expect("len"), 10);
        let mut buf = [0u8; 4];
        assert_eq!(reader.read_at(8, &mut buf).expect("read"), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(reader.read_at(12, &mut buf).expect("read"), 0);
        sim.remove(&dir().join("x")).expect("remove");
        reader.read_exact_at(2, &mut buf).expect("an open file outlives its name");
        assert_eq!(&buf, b"2345");
        assert_eq!(sim.open_read(&dir().join("x")).err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
        // Reads are operations: counted, and they fail once the power is off.
        let before = sim.ops();
        reader.read_at(0, &mut buf).expect("read");
        assert_eq!(sim.ops(), before + 1);
        sim.power_cut();
        assert!(reader.read_at(0, &mut buf).is_err());
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let sim = SimStorage::new();
        sim.create_dir_all(&dir()).expect("mkdir");
        let path = dir().join("LOCK");
        let held = sim.lock(&path).expect("first lock");
        let clone = sim.clone();
        assert_eq!(clone.lock(&path).err().map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
        // A crash image is another machine after a reboot: nothing is held there.
        drop(sim.crash(0).lock(&path).expect("no locks after a reboot"));
        drop(held);
        drop(clone.lock(&path).expect("lock after release"));
        assert!(names(&sim).contains("LOCK"), "lock creates the file");
    }

    #[test]
    fn operations_are_counted_and_faults_strike_where_asked() {
        let sim = SimStorage::new();
        assert_eq!(sim.ops(), 0);
        sim.create_dir_all(&dir()).expect("op 0");
        let mut file = sim.create(&dir().join("f")).expect("op 1");
        file.write_all(b"0123456789").expect("op 2");
        assert_eq!(sim.ops(), 3);

        sim.fail_at(4, io::ErrorKind::Other);
        file.sync_data().expect("op 3 is not the one");
        let eio = file.write_all(b"abcdefgh").expect_err("op 4 fails");
        assert_eq!(eio.raw_os_error(), Some(5));
        assert_eq!(sim.read(&dir().join("f")).expect("op 5"), b"0123456789abcd", "a short write landed");
        file.write_all(b"!").expect("op 6: the fault struck once");

        sim.fail_at(sim.ops() + 1, io::ErrorKind::StorageFull);
        drop(sim.list(&dir()).expect("op 7"));
        let full = sim.sync_dir(&dir()).expect_err("op 8 fails");
        assert_eq!(full.raw_os_error(), Some(28));
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert_eq!(sim.ops(), 9);

        sim.freeze_after(10);
        assert!(!sim.is_frozen());
        sim.sync_dir(&dir()).expect("op 9 runs");
        assert!(sim.is_frozen());
        for _ in 0..3 {
            let dead = file.write_all(b"lost").expect_err("the power is off");
            assert_eq!(dead.raw_os_error(), Some(5));
            assert!(sim.list(&dir()).is_err());
        }
        assert_eq!(sim.ops(), 16, "failed operations count too");
        let before = b"0123456789abcd!";
        for seed in 0..100 {
            let image = sim.crash(seed);
            let content = image.read(&dir().join("f")).expect("the entry was synced by op 9");
            assert!(content.len() <= before.len(), "seed {seed}: nothing written after the cut");
            assert_eq!(&content[..10], b"0123456789", "seed {seed}: synced by op 3");
        }
        sim.clear_faults();
        file.write_all(b"?").expect("power restored");
    }

    #[test]
    fn power_cut_freezes_now_and_keeps_an_earlier_cut() {
        let sim = SimStorage::new();
        sim.create_dir_all(&dir()).expect("mkdir");
        sim.power_cut();
        assert!(sim.is_frozen());
        assert!(sim.create(&dir().join("f")).is_err());
        assert!(sim.contents().is_empty(), "a refused create changes nothing");
        sim.power_cut();
        assert!(sim.list(&dir()).is_err(), "cutting again keeps it off");
    }

    #[test]
    fn trace_numbers_operations_and_shows_faults() {
        let sim = SimStorage::new();
        sim.create_dir_all(&dir()).expect("untraced op 0");
        sim.trace();
        sim.fail_at(2, io::ErrorKind::StorageFull);
        let mut file = sim.create(&dir().join("f")).expect("op 1");
        assert!(file.write_all(b"abcd").is_err(), "op 2");
        sim.power_cut();
        assert!(file.sync_data().is_err(), "op 3");
        let traced = sim.traced();
        assert_eq!(traced.len(), 3, "{traced:?}");
        assert_eq!(traced[0], "#1 create /sim/store/f (inode 0)");
        assert!(traced[1].starts_with("#2 write 4 bytes to inode 0 -> injected fault:"), "{}", traced[1]);
        assert_eq!(traced[2], "#3 sync_data inode 0 -> power off");
    }

    #[test]
    fn rng_is_stable() {
        let mut rng = SplitMix64::new(0);
        // splitmix64's published first output for seed 0.
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert!((0..1000).all(|_| rng.between(3, 5) >= 3 && rng.below(7) < 7));
    }
}
