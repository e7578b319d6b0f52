//! The state the frozen-snapshot tests run on: a map of `u64` to `u64` split into [`SHARDS`]
//! shards, written by [`Cmd`]s, in three builds that differ only in how they freeze.
//!
//! * [`Frozen`]: shards are `Arc<BTreeMap>`, written through `Arc::make_mut`; the frozen view
//!   clones the `Arc`s, so a shard the view still holds is copied on its first write
//!   afterwards, and the view counts those copies exactly ([`Freeze::copied`]).
//! * [`Plain`]: the same type with `State::snapshot_view` left at `None` (today's path: the
//!   state is serialized under the lock).
//! * [`BrokenFreeze`]: what a user could write by mistake: shards are `Arc<RwLock<BTreeMap>>`
//!   written in place, so the "frozen" view shares the live maps and reads them only when it
//!   is serialized: commands committed after the freeze leak into the snapshot.
//!
//! State and view serialize as one map, with its exact length, shard after shard, so the view
//! writes exactly the state's bytes with every serializer.
//!
//! Every command also records itself in the map: key [`LOG`]` | seq` holds the command's id.
//! A recovered state therefore says which command it holds at which sequence number (also
//! for commands whose caller never heard back), and the model at any sequence number can be
//! rebuilt from it. [`Op::Add`] is not idempotent: a command that leaked into a snapshot and
//! is replayed again from the journal shows as a wrong sum.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard};

use airomem::{CommitContext, Freeze, Serializer, SnapshotView, State};
use airomem_workspace::hooked::{Hooks, Op as StorageOp};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer as SerdeSerializer};

/// How many shards a map has.
pub const SHARDS: usize = 64;

/// Keys with this bit set are the command log: `LOG | seq` holds the id of command `seq`.
pub const LOG: u64 = 1 << 63;

/// The shard a key lives in.
pub fn shard_of(key: u64) -> usize {
    (key % SHARDS as u64) as usize
}

/// The plain map every state is compared with.
pub type Model = BTreeMap<u64, u64>;

/// What a command does to the data keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Adds `delta` (wrapping) to `key`'s value, 0 if absent.
    Add { key: u64, delta: u64 },
    /// Removes `key`.
    Remove { key: u64 },
    /// Sets keys `from..from + count` to [`filler`] values: a big state in one command.
    Fill { from: u64, count: u64 },
}

/// A command: a unique id (recorded in the log) and what it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmd {
    /// Unique per command of a test run.
    pub id: u64,
    /// The change.
    pub op: Op,
}

/// The value [`Op::Fill`] gives `key`: all 64 bits busy, so that snapshots hardly compress.
pub fn filler(key: u64) -> u64 {
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | (1 << 63)
}

/// A map that commands can be applied to: the states and the model.
pub trait Entries {
    /// `key`'s value.
    fn get(&self, key: u64) -> Option<u64>;
    /// Sets `key`.
    fn insert(&mut self, key: u64, value: u64);
    /// Removes `key` (a write of its shard even if absent).
    fn remove(&mut self, key: u64);
}

impl Entries for Model {
    fn get(&self, key: u64) -> Option<u64> {
        BTreeMap::get(self, &key).copied()
    }
    fn insert(&mut self, key: u64, value: u64) {
        BTreeMap::insert(self, key, value);
    }
    fn remove(&mut self, key: u64) {
        BTreeMap::remove(self, &key);
    }
}

/// Command `cmd`, executed as sequence number `seq`.
pub fn apply(map: &mut impl Entries, seq: u64, cmd: &Cmd) {
    match cmd.op {
        Op::Add { key, delta } => {
            let value = map.get(key).unwrap_or(0).wrapping_add(delta);
            map.insert(key, value);
        }
        Op::Remove { key } => map.remove(key),
        Op::Fill { from, count } => {
            for key in from..from + count {
                map.insert(key, filler(key));
            }
        }
    }
    map.insert(LOG | seq, cmd.id);
}

/// The shards command `cmd` writes when executed as `seq`: those a view holding every shard
/// makes the writer copy.
pub fn touched(seq: u64, cmd: &Cmd) -> BTreeSet<usize> {
    let mut shards: BTreeSet<usize> = match cmd.op {
        Op::Add { key, .. } | Op::Remove { key } => [shard_of(key)].into(),
        Op::Fill { from, count } => (from..from + count.min(SHARDS as u64)).map(shard_of).collect(),
    };
    shards.insert(shard_of(LOG | seq));
    shards
}

/// The model after `commands`, given as `(seq, command)` in sequence order.
pub fn model_of<'a>(commands: impl IntoIterator<Item = (u64, &'a Cmd)>) -> Model {
    let mut model = Model::new();
    for (seq, cmd) in commands {
        apply(&mut model, seq, cmd);
    }
    model
}

/// The first few differences between a found map and the expected one, or `None`.
pub fn diff(found: &Model, expected: &Model) -> Option<String> {
    if found == expected {
        return None;
    }
    let keys: BTreeSet<u64> = found.keys().chain(expected.keys()).copied().collect();
    let differing: Vec<u64> = keys.into_iter().filter(|k| found.get(k) != expected.get(k)).collect();
    if differing.is_empty() {
        return None;
    }
    let name = |k: u64| if k & LOG != 0 { format!("log of seq {}", k & !LOG) } else { format!("key {k}") };
    let shown: Vec<String> = differing
        .iter()
        .take(4)
        .map(|&k| format!("{}: found {:?}, expected {:?}", name(k), found.get(&k), expected.get(&k)))
        .collect();
    Some(format!(
        "{} of {} keys differ ({} entries found, {} expected), e.g. {}",
        differing.len(),
        found.len().max(expected.len()),
        found.len(),
        expected.len(),
        shown.join("; ")
    ))
}

/// The `(seq, id)` pairs of a map's command log, in order.
pub fn log_of(map: &Model) -> BTreeMap<u64, u64> {
    map.range(LOG..).map(|(&k, &id)| (k & !LOG, id)).collect()
}

/// How a map's shards are held and written.
pub trait Layout: Send + Sync + 'static {
    /// One shard.
    type Shard: Clone + Default + Send + Sync + 'static;
    /// A shard holding `map`.
    fn shard(map: BTreeMap<u64, u64>) -> Self::Shard;
    /// Reads a shard.
    fn read<R>(shard: &Self::Shard, f: impl FnOnce(&BTreeMap<u64, u64>) -> R) -> R;
    /// Writes a shard; true when the write had to copy it first (a view held it).
    fn write<R>(shard: &mut Self::Shard, f: impl FnOnce(&mut BTreeMap<u64, u64>) -> R) -> (R, bool);
    /// Runs `f` on every shard's map at once (all locked, if they have locks).
    fn all<R>(shards: &[Self::Shard], f: impl FnOnce(&[&BTreeMap<u64, u64>]) -> R) -> R;
}

/// Copy-on-write shards: the right way.
pub struct CopyOnWrite;

impl Layout for CopyOnWrite {
    type Shard = Arc<BTreeMap<u64, u64>>;
    fn shard(map: BTreeMap<u64, u64>) -> Self::Shard {
        Arc::new(map)
    }
    fn read<R>(shard: &Self::Shard, f: impl FnOnce(&BTreeMap<u64, u64>) -> R) -> R {
        f(shard)
    }
    fn write<R>(shard: &mut Self::Shard, f: impl FnOnce(&mut BTreeMap<u64, u64>) -> R) -> (R, bool) {
        let shared = Arc::strong_count(shard) > 1;
        (f(Arc::make_mut(shard)), shared)
    }
    fn all<R>(shards: &[Self::Shard], f: impl FnOnce(&[&BTreeMap<u64, u64>]) -> R) -> R {
        let maps: Vec<&BTreeMap<u64, u64>> = shards.iter().map(|s| &**s).collect();
        f(&maps)
    }
}

/// Shards behind a lock, written in place: a view that clones the `Arc`s shares the live
/// maps. The deliberately broken freeze.
pub struct SharedInPlace;

impl Layout for SharedInPlace {
    type Shard = Arc<RwLock<BTreeMap<u64, u64>>>;
    fn shard(map: BTreeMap<u64, u64>) -> Self::Shard {
        Arc::new(RwLock::new(map))
    }
    fn read<R>(shard: &Self::Shard, f: impl FnOnce(&BTreeMap<u64, u64>) -> R) -> R {
        f(&shard.read().unwrap_or_else(PoisonError::into_inner))
    }
    fn write<R>(shard: &mut Self::Shard, f: impl FnOnce(&mut BTreeMap<u64, u64>) -> R) -> (R, bool) {
        (f(&mut shard.write().unwrap_or_else(PoisonError::into_inner)), false)
    }
    fn all<R>(shards: &[Self::Shard], f: impl FnOnce(&[&BTreeMap<u64, u64>]) -> R) -> R {
        let guards: Vec<RwLockReadGuard<'_, BTreeMap<u64, u64>>> =
            shards.iter().map(|s| s.read().unwrap_or_else(PoisonError::into_inner)).collect();
        let maps: Vec<&BTreeMap<u64, u64>> = guards.iter().map(|g| &**g).collect();
        f(&maps)
    }
}

/// The sharded map. `FROZEN` says whether it opts into frozen snapshots.
pub struct Sharded<L: Layout, const FROZEN: bool> {
    shards: Vec<L::Shard>,
    /// The copy counter of the newest view: a write that has to copy a shard counts there.
    view_copies: Mutex<Arc<AtomicU64>>,
}

/// The right freeze, on the frozen path.
pub type Frozen = Sharded<CopyOnWrite, true>;
/// The same type on today's path (`snapshot_view` is `None`).
pub type Plain = Sharded<CopyOnWrite, false>;
/// A freeze whose view shares the live data.
pub type BrokenFreeze = Sharded<SharedInPlace, true>;

impl<L: Layout, const FROZEN: bool> Default for Sharded<L, FROZEN> {
    fn default() -> Self {
        // One shard each: `vec![shard; SHARDS]` would clone one `Arc` into every slot.
        Sharded { shards: (0..SHARDS).map(|_| L::Shard::default()).collect(), view_copies: Mutex::default() }
    }
}

/// What the tests need of a build of the map.
pub trait TestState: State<Command = Cmd> {
    /// Whether this build takes the frozen path.
    const FROZEN: bool;
    /// Every entry, as a plain map.
    fn to_map(&self) -> Model;
}

impl<L: Layout, const FROZEN: bool> TestState for Sharded<L, FROZEN> {
    const FROZEN: bool = FROZEN;
    fn to_map(&self) -> Model {
        L::all(&self.shards, |maps| maps.iter().flat_map(|m| m.iter().map(|(&k, &v)| (k, v))).collect())
    }
}

impl<L: Layout, const FROZEN: bool> Sharded<L, FROZEN> {
    fn write<R>(&mut self, key: u64, f: impl FnOnce(&mut BTreeMap<u64, u64>) -> R) -> R {
        let (result, copied) = L::write(&mut self.shards[shard_of(key)], f);
        if copied {
            self.view_copies.lock().unwrap_or_else(PoisonError::into_inner).fetch_add(1, Ordering::SeqCst);
        }
        result
    }
}

impl<L: Layout, const FROZEN: bool> Entries for Sharded<L, FROZEN> {
    fn get(&self, key: u64) -> Option<u64> {
        L::read(&self.shards[shard_of(key)], |m| m.get(&key).copied())
    }
    fn insert(&mut self, key: u64, value: u64) {
        self.write(key, |m| m.insert(key, value));
    }
    fn remove(&mut self, key: u64) {
        self.write(key, |m| m.remove(&key));
    }
}

impl<L: Layout, const FROZEN: bool> fmt::Debug for Sharded<L, FROZEN> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sharded({} entries)", self.to_map().len())
    }
}

/// Serializes shards as one map: its exact length, then every shard's entries in order.
fn serialize_shards<L: Layout, S: SerdeSerializer>(shards: &[L::Shard], serializer: S) -> Result<S::Ok, S::Error> {
    L::all(shards, |maps| {
        let len = maps.iter().map(|m| m.len()).sum();
        let mut map = serializer.serialize_map(Some(len))?;
        for shard in maps {
            for (key, value) in shard.iter() {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    })
}

impl<L: Layout, const FROZEN: bool> Serialize for Sharded<L, FROZEN> {
    fn serialize<S: SerdeSerializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_shards::<L, S>(&self.shards, serializer)
    }
}

impl<'de, L: Layout, const FROZEN: bool> Deserialize<'de> for Sharded<L, FROZEN> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<L, const FROZEN: bool>(PhantomData<L>);
        impl<'de, L: Layout, const FROZEN: bool> Visitor<'de> for Entries<L, FROZEN> {
            type Value = Sharded<L, FROZEN>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of u64 to u64")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut maps = vec![BTreeMap::new(); SHARDS];
                while let Some((key, value)) = access.next_entry::<u64, u64>()? {
                    maps[shard_of(key)].insert(key, value);
                }
                Ok(Sharded { shards: maps.into_iter().map(L::shard).collect(), view_copies: Mutex::default() })
            }
        }
        deserializer.deserialize_map(Entries::<L, FROZEN>(PhantomData))
    }
}

/// A frozen view: the shards as they were (or, for [`SharedInPlace`], as they are when it is
/// serialized), and the count of shards writers copied since.
pub struct View<L: Layout> {
    shards: Vec<L::Shard>,
    copies: Arc<AtomicU64>,
}

impl<L: Layout> Serialize for View<L> {
    fn serialize<S: SerdeSerializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_shards::<L, S>(&self.shards, serializer)
    }
}

impl<L: Layout, const FROZEN: bool> Freeze for Sharded<L, FROZEN> {
    type Frozen = View<L>;
    fn freeze(&self) -> View<L> {
        let copies = Arc::new(AtomicU64::new(0));
        *self.view_copies.lock().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&copies);
        View { shards: self.shards.clone(), copies }
    }
    fn copied(frozen: &View<L>) -> u64 {
        frozen.copies.load(Ordering::SeqCst)
    }
}

impl<L: Layout, const FROZEN: bool> State for Sharded<L, FROZEN> {
    type Command = Cmd;
    fn execute(&mut self, cmd: Cmd) {
        let seq = CommitContext::current().expect("commands run inside a store").seq.0;
        apply(self, seq, &cmd);
    }
    fn snapshot_view<Z: Serializer>(&self) -> Option<SnapshotView<Z>> {
        FROZEN.then(|| SnapshotView::of(self))
    }
}

/// Whether the calling thread is the store's snapshot thread.
pub fn on_snapshot_thread() -> bool {
    std::thread::current().name() == Some("airomem-snapshot")
}

/// Whether `path` is a snapshot's temporary file.
pub fn is_snapshot_temp(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.ends_with(".snapshot.tmp"))
}

/// A storage hook that holds the snapshot thread at its `n`th write to a snapshot's temporary
/// file until the test releases it. Write 1 is the header, made before a byte of the state
/// is serialized; write 2 is the first chunk, made once the serializer has produced 4 MiB (`airomem_snapshot::format::CHUNK_RAW`)
/// (with a bigger state, it waits in the middle of the serialization).
#[derive(Default)]
pub struct Gate {
    inner: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    hold_at: Option<u32>,
    writes: u32,
    held: bool,
    released: bool,
}

impl Gate {
    /// Holds the next snapshot at its `write`th write to its temporary file.
    pub fn arm(&self, write: u32) {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *state = GateState { hold_at: Some(write), ..GateState::default() };
    }

    /// Waits (blocking) until the snapshot thread is held.
    pub fn wait_held(&self) {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        while !state.held {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Lets the held snapshot thread go on.
    pub fn release(&self) {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(state.held, "release without a held snapshot");
        state.released = true;
        self.changed.notify_all();
    }
}

impl Hooks for Gate {
    fn before(&self, op: StorageOp, path: &Path) {
        if !on_snapshot_thread() || !is_snapshot_temp(path) {
            return;
        }
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match op {
            StorageOp::Create => state.writes = 0,
            StorageOp::Write => {
                state.writes += 1;
                if state.hold_at == Some(state.writes) {
                    state.hold_at = None;
                    state.held = true;
                    self.changed.notify_all();
                    while !state.released {
                        state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
                    }
                    state.held = false;
                    state.released = false;
                }
            }
            _ => {}
        }
    }
}
