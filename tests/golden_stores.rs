//! Golden stores: directories written by the first release's types (`v1`), one postcard and
//! one JSON, committed under `tests/golden/`. Each has a snapshot, records after it and
//! several segments. Today's code must keep opening them, under their own types and under
//! the types of every later release (`v2`, `v3`), converting the state at each schema
//! boundary; a change to the file formats or to the migration path fails here.
//!
//! The stores are never opened in place: every test opens a copy in a temp dir. The state
//! each one holds is recorded next to it (`tests/golden/NAME.expected.json`), so the tests
//! compare with what was written, not with a recomputation by the code under test.
//!
//! `regenerate_golden_stores` (ignored) is the program that wrote them:
//!
//! ```text
//! cargo test --all-features --test golden_stores -- --ignored regenerate
//! ```
//!
//! It is deterministic in everything but the commit times in the record headers.

mod segment_files;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use airomem::testing::{SchemaCheck, assert_schema_recorded};
use airomem::{Error, Migration, Seq, Serializer, State, Store};
use segment_files::{copy_dir, file_names, is_segment_name, read_segment, segment_names};
use serde::{Deserialize, Serialize};

/// The first release, frozen: copied verbatim when v2 was released and never edited since.
mod v1 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    /// Login sessions: token to user id.
    #[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
    pub struct Sessions {
        pub tokens: BTreeMap<String, u64>,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub enum SessionsCommand {
        CreateSession { token: String, user_id: u64 },
        DeleteSession { token: String },
    }

    impl airomem::State for Sessions {
        type Command = SessionsCommand;

        fn execute(&mut self, command: SessionsCommand) {
            match command {
                SessionsCommand::CreateSession { token, user_id } => {
                    self.tokens.insert(token, user_id);
                }
                SessionsCommand::DeleteSession { token } => {
                    self.tokens.remove(&token);
                }
            }
        }
    }
}

/// The second release, frozen: each session records when it started, and a user's sessions
/// can be ended at once.
mod v2 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Session {
        pub user_id: u64,
        /// The commit time of the command that created it; 0 for sessions created before
        /// v2, when no time was kept.
        pub created_at_nanos: u64,
    }

    #[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
    pub struct Sessions {
        pub tokens: BTreeMap<String, Session>,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub enum SessionsCommand {
        CreateSession { token: String, user_id: u64 },
        DeleteSession { token: String },
        DeleteUser { user_id: u64 },
    }

    impl From<super::v1::Sessions> for Sessions {
        fn from(old: super::v1::Sessions) -> Self {
            let tokens = old.tokens.into_iter().map(|(t, user_id)| (t, Session { user_id, created_at_nanos: 0 }));
            Sessions { tokens: tokens.collect() }
        }
    }

    impl airomem::State for Sessions {
        type Command = SessionsCommand;
        const SCHEMA_VERSION: u32 = 2;

        fn execute(&mut self, command: SessionsCommand) {
            match command {
                SessionsCommand::CreateSession { token, user_id } => {
                    let context = airomem::CommitContext::current().expect("execute runs inside a commit's context");
                    self.tokens.insert(token, Session { user_id, created_at_nanos: context.unix_nanos });
                }
                SessionsCommand::DeleteSession { token } => {
                    self.tokens.remove(&token);
                }
                SessionsCommand::DeleteUser { user_id } => self.tokens.retain(|_, s| s.user_id != user_id),
            }
        }

        fn previous<Z: airomem::Serializer>() -> airomem::Previous<Self, Z> {
            airomem::Previous::from::<super::v1::Sessions>()
        }
    }
}

/// The current release: `tokens` is now `sessions`, and user ids are `u32` (`user`). The
/// conversion refuses a user id that does not fit.
mod v3 {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Session {
        pub user: u32,
        pub created_at_nanos: u64,
    }

    #[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
    pub struct Sessions {
        pub sessions: BTreeMap<String, Session>,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub enum SessionsCommand {
        CreateSession { token: String, user: u32 },
        DeleteSession { token: String },
        DeleteUser { user: u32 },
    }

    /// A v2 session whose user id does not fit the v3 type.
    #[derive(Debug)]
    pub struct UserIdTooLarge {
        pub token: String,
        pub user_id: u64,
    }

    impl std::fmt::Display for UserIdTooLarge {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "session {} has user id {}, which does not fit in a u32", self.token, self.user_id)
        }
    }

    impl std::error::Error for UserIdTooLarge {}

    impl TryFrom<super::v2::Sessions> for Sessions {
        type Error = UserIdTooLarge;

        fn try_from(old: super::v2::Sessions) -> Result<Self, UserIdTooLarge> {
            let mut sessions = BTreeMap::new();
            for (token, s) in old.tokens {
                let Ok(user) = u32::try_from(s.user_id) else {
                    return Err(UserIdTooLarge { token, user_id: s.user_id });
                };
                sessions.insert(token, Session { user, created_at_nanos: s.created_at_nanos });
            }
            Ok(Sessions { sessions })
        }
    }

    impl airomem::State for Sessions {
        type Command = SessionsCommand;
        const SCHEMA_VERSION: u32 = 3;

        fn execute(&mut self, command: SessionsCommand) {
            match command {
                SessionsCommand::CreateSession { token, user } => {
                    let context = airomem::CommitContext::current().expect("execute runs inside a commit's context");
                    self.sessions.insert(token, Session { user, created_at_nanos: context.unix_nanos });
                }
                SessionsCommand::DeleteSession { token } => {
                    self.sessions.remove(&token);
                }
                SessionsCommand::DeleteUser { user } => self.sessions.retain(|_, s| s.user != user),
            }
        }

        fn previous<Z: airomem::Serializer>() -> airomem::Previous<Self, Z> {
            airomem::Previous::try_from::<super::v2::Sessions>()
        }
    }
}

/// `C` once its old schemas are retired: the same bytes on disk (`serde(transparent)`), the
/// same schema version and `execute`, but no `previous()`.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
#[serde(transparent)]
struct Retired<C>(C);

impl<C: State> State for Retired<C> {
    type Command = C::Command;
    const SCHEMA_VERSION: u32 = C::SCHEMA_VERSION;

    fn execute(&mut self, command: C::Command) {
        self.0.execute(command)
    }
}

/// What a golden store holds, recorded by the program that wrote it.
#[derive(Serialize, Deserialize, Debug)]
struct Expected {
    /// The last record the snapshot includes.
    snapshot_seq: u64,
    /// The last record of the journal (every record is a v1 command).
    last_seq: u64,
    /// The v1 state after the last record.
    state: v1::Sessions,
}

/// The lock file a store creates if it is missing; not part of the committed copies.
const LOCK_FILE: &str = "airomem.lock";
/// A user with several sessions in the golden state.
const BUSY_USER: u64 = 3;

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

fn expected_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.expected.json"))
}

fn expected(name: &str) -> Expected {
    let bytes = fs::read(expected_file(name)).expect("read the expected state");
    serde_json::from_slice(&bytes).expect("decode the expected state")
}

/// A copy of the golden store `name` in `tmp`, to open and change.
fn golden_copy(name: &str, tmp: &Path) -> PathBuf {
    let dir = tmp.join(name);
    copy_dir(&golden_dir(name), &dir);
    dir
}

fn token(n: u64) -> String {
    format!("token-{n:03}")
}

/// The schema version in the header of every segment and snapshot of `dir`, read from the
/// bytes (not by the library), by file name.
fn schemas_on_disk(dir: &Path) -> BTreeMap<String, u32> {
    let mut found = BTreeMap::new();
    for name in file_names(dir) {
        if is_segment_name(&name) {
            found.insert(name.clone(), read_segment(&dir.join(&name)).schema);
        } else if name.ends_with(".snapshot") {
            // Snapshot header: magic (8), format (2), serializer (2), schema version (4).
            let bytes = fs::read(dir.join(&name)).expect("read snapshot");
            found.insert(name, u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")));
        }
    }
    found
}

fn oldest_schema(dir: &Path) -> u32 {
    schemas_on_disk(dir).into_values().min().expect("files with a schema")
}

/// Every file of `dir` but the lock file, with its bytes: what a refused open must leave as
/// it found it.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = segment_files::snapshot(dir);
    files.remove(LOCK_FILE);
    files
}

async fn open<S: State, Z: Serializer>(serializer: Z, dir: &Path) -> Result<Store<S, Z>, Error> {
    Store::open(serializer, dir).await
}

fn state<S: State + Clone, Z: Serializer>(store: &Store<S, Z>) -> S {
    store.query().expect("query").clone()
}

/// Runs a scenario once on the postcard golden store and once on the JSON one.
macro_rules! on_both_stores {
    ($($test:ident => $scenario:ident,)*) => {$(
        mod $test {
            #[tokio::test]
            async fn postcard() {
                super::$scenario(airomem::PostcardSerializer, "postcard").await
            }
            #[tokio::test]
            async fn json() {
                super::$scenario(airomem::JsonSerializer, "json").await
            }
        }
    )*};
}

on_both_stores! {
    golden_store_is_as_described => is_as_described,
    v1_still_opens_its_golden_store => v1_opens,
    v2_migrates_the_golden_store_once => v2_migrates,
    v3_migrates_the_golden_store_in_two_steps => v3_migrates_directly,
    v3_migrates_a_store_that_v2_migrated => v2_then_v3,
    old_schemas_retire_once_no_file_needs_them_v2 => retire_v2,
    old_schemas_retire_once_no_file_needs_them_v3 => retire_v3,
    a_failed_conversion_changes_nothing => conversion_fails,
    older_types_refuse_a_migrated_store => downgrade_refused,
    a_torn_tail_is_cut_before_the_migration => torn_tail_then_migration,
    a_panicking_command_after_a_migration_rolls_back => rollback_after_migration,
}

/// The committed directory holds what the tests below assume: v1 segments of the right
/// serializer, several of them, one starting after the snapshot, one snapshot, no lock file.
async fn is_as_described<Z: Serializer>(_: Z, name: &str) {
    let golden = expected(name);
    let dir = golden_dir(name);
    let segments = segment_names(&dir);
    assert!(segments.len() >= 3, "{name}: several segments: {segments:?}");
    let firsts: Vec<u64> = segments.iter().map(|s| read_segment(&dir.join(s)).first_seq).collect();
    assert!(firsts.iter().any(|&f| f > golden.snapshot_seq + 1), "{name}: a rollover in the tail: {firsts:?}");
    for segment in &segments {
        let raw = read_segment(&dir.join(segment));
        assert_eq!((raw.schema, raw.serializer), (1, Z::ID.0), "{name}: {segment}");
    }
    let last = read_segment(&dir.join(segments.last().expect("segments"))).records.last().map(|r| r.seq);
    assert_eq!(last, Some(golden.last_seq), "{name}: the journal ends at the recorded record");
    let snapshot = format!("{:020}.snapshot", golden.snapshot_seq);
    let mut names = file_names(&dir);
    names.retain(|n| !is_segment_name(n));
    assert_eq!(names, [snapshot, "journal.head".to_string()], "{name}");
    assert!(golden.snapshot_seq < golden.last_seq);
    let size: u64 = file_names(&dir).iter().map(|n| fs::metadata(dir.join(n)).expect("metadata").len()).sum();
    assert!(size < 32 * 1024, "{name}: the golden store stays small ({size} bytes)");
}

/// The release that wrote the store reads it as it was written.
async fn v1_opens<Z: Serializer>(serializer: Z, name: &str) {
    let golden = expected(name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = golden_copy(name, tmp.path());
    let store: Store<v1::Sessions, Z> = open(serializer, &dir).await.expect("open under v1");
    assert_eq!(state(&store), golden.state);
    let report = store.recovery();
    assert_eq!(report.migrations, []);
    assert_eq!(report.sealed, None);
    assert_eq!(report.next_seq, Seq(golden.last_seq + 1));
    if cfg!(feature = "snapshot") {
        assert_eq!(report.snapshot, Some(Seq(golden.snapshot_seq)));
        assert_eq!(report.records_replayed, golden.last_seq - golden.snapshot_seq);
    } else {
        assert_eq!(report.records_replayed, golden.last_seq);
    }
    assert_eq!(store.stats().oldest_schema_on_disk, 1);
}

/// The first open under v2 replays the v1 history with v1's code, converts once after its
/// last record, and (with snapshots) seals the result; the next open reads v2 only.
async fn v2_migrates<Z: Serializer + Copy>(serializer: Z, name: &str) {
    let golden = expected(name);
    let last = Seq(golden.last_seq);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = golden_copy(name, tmp.path());
    let migrated = v2::Sessions::from(golden.state.clone());
    let one_migration = [Migration { from: 1, to: 2, after: last }];

    let store: Store<v2::Sessions, Z> = open(serializer, &dir).await.expect("open under v2");
    assert_eq!(state(&store), migrated);
    let report = store.recovery();
    assert_eq!(report.migrations, one_migration);
    if cfg!(feature = "snapshot") {
        assert_eq!(report.snapshot, Some(Seq(golden.snapshot_seq)));
        assert_eq!(report.records_replayed, golden.last_seq - golden.snapshot_seq);
        assert_eq!(report.sealed, Some(last));
    } else {
        assert_eq!(report.records_replayed, golden.last_seq);
        assert_eq!(report.sealed, None);
    }
    // The v1 files are still there: the migration rewrote none of them.
    assert_eq!(store.stats().oldest_schema_on_disk, 1);
    store.close().await.expect("close");
    let on_disk = schemas_on_disk(&dir);
    // Every v1 file is as committed, or was removed by retention: none was rewritten.
    let mut kept = 0;
    for (file, bytes) in contents(&golden_dir(name)) {
        if on_disk.contains_key(&file) {
            assert_eq!(fs::read(dir.join(&file)).expect("read"), bytes, "{name}: {file} is not rewritten");
            kept += 1;
        }
    }
    assert!(kept >= 3, "{name}: the v1 snapshot and the tail's segments are kept: {on_disk:?}");
    let newest = segment_names(&dir).last().cloned().expect("segments");
    assert_eq!(on_disk[&newest], 2, "{name}: a new segment of the new schema");
    assert_eq!(read_segment(&dir.join(&newest)).first_seq, golden.last_seq + 1);
    if cfg!(feature = "snapshot") {
        assert_eq!(on_disk[&format!("{:020}.snapshot", golden.last_seq)], 2, "{name}: the sealing snapshot");
    }

    let store: Store<v2::Sessions, Z> = open(serializer, &dir).await.expect("reopen under v2");
    assert_eq!(state(&store), migrated);
    let report = store.recovery();
    if cfg!(feature = "snapshot") {
        assert_eq!(report.migrations, [], "the sealed state is not migrated again");
        assert_eq!(report.snapshot, Some(last));
        assert_eq!(report.records_replayed, 0);
    } else {
        assert_eq!(report.migrations, one_migration, "without snapshots every open migrates");
    }
    assert_eq!(report.sealed, None);

    // v2 commands on the migrated state, with v2's new command and v2's commit times.
    let busy = migrated.tokens.values().filter(|s| s.user_id == BUSY_USER).count();
    assert!(busy >= 2, "{name}: the golden state gives user {BUSY_USER} several sessions");
    let created = store
        .commit(v2::SessionsCommand::CreateSession { token: "after-v2".into(), user_id: 8 })
        .await
        .expect("commit");
    assert_eq!(created.seq, last.next());
    store.commit(v2::SessionsCommand::DeleteUser { user_id: BUSY_USER }).await.expect("commit");
    let mut expected = migrated.clone();
    expected.tokens.insert("after-v2".into(), v2::Session { user_id: 8, created_at_nanos: created.unix_nanos });
    expected.tokens.retain(|_, s| s.user_id != BUSY_USER);
    assert_eq!(state(&store), expected);
    store.close().await.expect("close");

    let store: Store<v2::Sessions, Z> = open(serializer, &dir).await.expect("reopen under v2");
    assert_eq!(state(&store), expected, "the v2 records replay with their recorded times");
    let report = store.recovery();
    if cfg!(feature = "snapshot") {
        assert_eq!(report.migrations, []);
        assert_eq!(report.records_replayed, 2);
    } else {
        assert_eq!(report.migrations, one_migration);
        assert_eq!(report.records_replayed, golden.last_seq + 2);
    }
}

/// Opened directly by v3, the v1 history is converted twice in one open.
async fn v3_migrates_directly<Z: Serializer + Copy>(serializer: Z, name: &str) {
    let golden = expected(name);
    let last = Seq(golden.last_seq);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = golden_copy(name, tmp.path());
    let migrated = v3::Sessions::try_from(v2::Sessions::from(golden.state.clone())).expect("user ids fit");

    let store: Store<v3::Sessions, Z> = open(serializer, &dir).await.expect("open under v3");
    assert_eq!(state(&store), migrated);
    let report = store.recovery();
    assert_eq!(
        report.migrations,
        [Migration { from: 1, to: 2, after: last }, Migration { from: 2, to: 3, after: last }]
    );
    assert_eq!(report.sealed, cfg!(feature = "snapshot").then_some(last));
    assert_eq!(store.stats().oldest_schema_on_disk, 1);
    let created =
        store.commit(v3::SessionsCommand::CreateSession { token: "after-v3".into(), user: 9 }).await.expect("commit");
    store.close().await.expect("close");

    let store: Store<v3::Sessions, Z> = open(serializer, &dir).await.expect("reopen under v3");
    let mut expected = migrated;
    expected.sessions.insert("after-v3".into(), v3::Session { user: 9, created_at_nanos: created.unix_nanos });
    assert_eq!(state(&store), expected);
    let migrations = &store.recovery().migrations;
    assert_eq!(migrations.len(), if cfg!(feature = "snapshot") { 0 } else { 2 }, "{migrations:?}");
}

/// Release by release: v2 migrates the store and commits, then v3 converts v2's state
/// (including the sessions v2 created) once.
async fn v2_then_v3<Z: Serializer + Copy>(serializer: Z, name: &str) {
    let golden = expected(name);
    let last = Seq(golden.last_seq);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = golden_copy(name, tmp.path());

    let store: Store<v2::Sessions, Z> = open(serializer, &dir).await.expect("open under v2");
    store.commit(v2::SessionsCommand::CreateSession { token: "after-v2".into(), user_id: 8 }).await.expect("commit");
    store.commit(v2::SessionsCommand::DeleteSession { token: token(0) }).await.expect("commit");
    let v2_state = state(&store);
    store.close().await.expect("close");

    let store: Store<v3::Sessions, Z> = open(serializer, &dir).await.expect("open under v3");
    let to_v3 = Migration { from: 2, to: 3, after: Seq(last.0 + 2) };
    let report = store.recovery();
    if cfg!(feature = "snapshot") {
        assert_eq!(report.snapshot, Some(last), "v2's sealing snapshot");
        assert_eq!(report.migrations, [to_v3]);
        assert_eq!(report.sealed, Some(Seq(last.0 + 2)));
    } else {
        assert_eq!(report.migrations, [Migration { from: 1, to: 2, after: last }, to_v3]);
    }
    let expected = v3::Sessions::try_from(v2_state).expect("user ids fit");
    assert!(expected.sessions.contains_key("after-v2") && !expected.sessions.contains_key(&token(0)));
    assert_eq!(state(&store), expected);
}

async fn retire_v2<Z: Serializer + Copy>(serializer: Z, name: &str) {
    retire::<v2::Sessions, Z>(serializer, name, v2::SessionsCommand::DeleteUser { user_id: BUSY_USER }).await
}

async fn retire_v3<Z: Serializer + Copy>(serializer: Z, name: &str) {
    retire::<v3::Sessions, Z>(serializer, name, v3::SessionsCommand::DeleteUser { user: BUSY_USER as u32 }).await
}

/// After a migration the old files stay (`oldest_schema_on_disk` says so) until snapshots
/// let retention remove them, and until then they are the fallback behind the sealing
/// snapshot: a type without `previous()` opens the store only while that snapshot is
/// intact. Once no old file is left, it opens the store whatever single snapshot is damaged.
async fn retire<C, Z>(serializer: Z, name: &str, command: C::Command)
where
    C: State + Clone + PartialEq + std::fmt::Debug,
    Z: Serializer + Copy,
{
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = golden_copy(name, tmp.path());
    let store: Store<C, Z> = open(serializer, &dir).await.expect("open under the current types");
    assert_eq!(store.stats().oldest_schema_on_disk, 1);
    let migrated = state(&store);
    let migrations = store.recovery().migrations.clone();
    store.close().await.expect("close");
    assert_eq!(oldest_schema(&dir), 1);

    #[cfg(not(feature = "snapshot"))]
    {
        // Without snapshots every open replays the v1 segments.
        let _ = (command, migrated, migrations);
        refused_as_unknown::<Retired<C>, Z>(serializer, &dir, name).await;
    }

    #[cfg(feature = "snapshot")]
    {
        let golden = expected(name);
        let seal = format!("{:020}.snapshot", golden.last_seq);
        let fallback = tmp.path().join("fallback");
        copy_dir(&dir, &fallback);

        // Nothing it reads needs v1 (the sealing snapshot is the newest), but v1 files remain.
        let store: Store<Retired<C>, Z> = open(serializer, &dir).await.expect("open from the sealing snapshot");
        assert_eq!(state(&store), Retired(migrated.clone()));
        assert_eq!(store.stats().oldest_schema_on_disk, 1);
        store.close().await.expect("close");

        // With the sealing snapshot damaged, only the chain rebuilds the state: from the v1
        // snapshot and the v1 journal, migrated again.
        flip_a_byte(&fallback.join(&seal));
        refused_as_unknown::<Retired<C>, Z>(serializer, &fallback, name).await;
        let store: Store<C, Z> = open(serializer, &fallback).await.expect("open from the v1 snapshot");
        assert_eq!(state(&store), migrated);
        let report = store.recovery();
        assert_eq!(report.snapshot, Some(Seq(golden.snapshot_seq)));
        assert_eq!(report.snapshots_skipped.len(), 1, "{:?}", report.snapshots_skipped);
        assert_eq!(report.migrations, migrations);
        store.close().await.expect("close");

        let store: Store<C, Z> = open(serializer, &dir).await.expect("reopen under the current types");
        assert_eq!(store.recovery().migrations, []);
        assert_eq!(store.stats().oldest_schema_on_disk, 1);
        store.commit(command).await.expect("commit");
        // The seal was the second snapshot; a third lets retention (two kept) drop the v1
        // snapshot, and with it every v1 segment, since all of them end at or before the
        // seal's record: the writer started a new segment at the migration.
        let newest = store.snapshot().await.expect("snapshot");
        assert_eq!(store.stats().oldest_schema_on_disk, C::SCHEMA_VERSION);
        let kept = state(&store);
        store.close().await.expect("close");
        let on_disk = schemas_on_disk(&dir);
        assert!(on_disk.values().all(|&v| v == C::SCHEMA_VERSION), "{on_disk:?}");
        assert!(on_disk.contains_key(&seal), "{on_disk:?}");

        let store: Store<Retired<C>, Z> = open(serializer, &dir).await.expect("open with the old schemas retired");
        assert_eq!(state(&store), Retired(kept.clone()));
        assert_eq!(store.recovery().migrations, []);
        assert_eq!(store.stats().oldest_schema_on_disk, C::SCHEMA_VERSION);
        store.close().await.expect("close");

        // The fallback behind the newest snapshot is now of the current schema too.
        flip_a_byte(&newest.path);
        let store: Store<Retired<C>, Z> = open(serializer, &dir).await.expect("open from the sealing snapshot");
        assert_eq!(store.recovery().snapshot, Some(Seq(golden.last_seq)));
        assert_eq!(state(&store), Retired(kept));
    }
}

/// Opening `dir` as `S` fails because a file of schema 1 is needed, and changes nothing.
async fn refused_as_unknown<S: State, Z: Serializer>(serializer: Z, dir: &Path, name: &str) {
    let before = contents(dir);
    match open::<S, Z>(serializer, dir).await {
        Err(Error::SchemaUnknown { found: 1, current, known, .. }) => {
            assert_eq!((current, known), (S::SCHEMA_VERSION, vec![]));
        }
        other => panic!("{name}: expected SchemaUnknown for schema 1, got {:?}", other.map(|_| ())),
    }
    assert_eq!(contents(dir), before, "{name}: a refused open changes nothing");
}

/// Damages a snapshot's compressed image (past its 40-byte header, before its 24-byte
/// footer), so that it no longer verifies.
#[cfg(feature = "snapshot")]
fn flip_a_byte(path: &Path) {
    let mut bytes = fs::read(path).expect("read snapshot");
    assert!(bytes.len() > 40 + 24 + 8, "a snapshot with an image");
    let middle = 40 + (bytes.len() - 40 - 24) / 2;
    bytes[middle] ^= 0x10;
    fs::write(path, bytes).expect("write snapshot");
}

/// A `TryFrom` that refuses the state stops the open and changes nothing; once the data is
/// fixed (by the release that wrote it), the migration goes through.
async fn conversion_fails<Z: Serializer + Copy>(serializer: Z, name: &str) {
    let golden = expected(name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = golden_copy(name, tmp.path());
    let too_large = u64::from(u32::MAX) + 1;
    let store: Store<v1::Sessions, Z> = open(serializer, &dir).await.expect("open under v1");
    store
        .commit(v1::SessionsCommand::CreateSession { token: "too-large".into(), user_id: too_large })
        .await
        .expect("commit");
    store.close().await.expect("close");

    let before = contents(&dir);
    match open::<v3::Sessions, Z>(serializer, &dir).await {
        Err(Error::MigrationFailed { from: 2, to: 3, after, reason, .. }) => {
            assert_eq!(after, Seq(golden.last_seq + 1));
            assert!(reason.contains("too-large") && reason.contains(&too_large.to_string()), "{reason}");
        }
        other => panic!("{name}: expected MigrationFailed, got {:?}", other.map(|_| ())),
    }
    assert_eq!(contents(&dir), before, "{name}: a failed migration changes nothing");

    let store: Store<v1::Sessions, Z> = open(serializer, &dir).await.expect("the old release still opens it");
    store.commit(v1::SessionsCommand::DeleteSession { token: "too-large".into() }).await.expect("commit");
    store.close().await.expect("close");
    let store: Store<v3::Sessions, Z> = open(serializer, &dir).await.expect("open under v3");
    let expected = v3::Sessions::try_from(v2::Sessions::from(golden.state)).expect("user ids fit");
    assert_eq!(state(&store), expected);
}

/// Once a newer release has written to the store, the older one refuses it.
async fn downgrade_refused<Z: Serializer + Copy>(serializer: Z, name: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = golden_copy(name, tmp.path());
    let store: Store<v2::Sessions, Z> = open(serializer, &dir).await.expect("open under v2");
    store.close().await.expect("close");
    let before = contents(&dir);
    match open::<v1::Sessions, Z>(serializer, &dir).await {
        Err(Error::SchemaNewer { file, found: 2, current: 1 }) => assert_eq!(file.parent(), Some(dir.as_path())),
        other => panic!("{name}: expected SchemaNewer, got {:?}", other.map(|_| ())),
    }
    assert_eq!(contents(&dir), before, "{name}: a refused open changes nothing");
}

/// A crash that tore the last v1 record: the open cuts it and converts the state holding
/// every record before it, the same state v1 itself recovers.
async fn torn_tail_then_migration<Z: Serializer + Copy>(serializer: Z, name: &str) {
    let golden = expected(name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = golden_copy(name, tmp.path());
    segment_files::as_if_crashed(&dir);
    let newest = segment_files::newest_segment(&dir);
    let len = fs::metadata(&newest).expect("metadata").len();
    fs::OpenOptions::new().write(true).open(&newest).expect("open segment").set_len(len - 3).expect("cut");

    // What the release that wrote it recovers, from a second copy.
    let reference = tmp.path().join("reference");
    copy_dir(&dir, &reference);
    let store: Store<v1::Sessions, Z> = open(serializer, &reference).await.expect("open under v1");
    assert_eq!(store.recovery().torn_tail.as_ref().map(|t| t.records_lost), Some(1));
    let v1_state = state(&store);
    assert_ne!(v1_state, golden.state, "the last record changed the state");
    store.close().await.expect("close");

    let before_cut = Seq(golden.last_seq - 1);
    let store: Store<v2::Sessions, Z> = open(serializer, &dir).await.expect("open under v2");
    let report = store.recovery();
    assert_eq!(report.torn_tail.as_ref().map(|t| t.records_lost), Some(1));
    assert_eq!(report.migrations, [Migration { from: 1, to: 2, after: before_cut }]);
    assert_eq!(report.sealed, cfg!(feature = "snapshot").then_some(before_cut));
    assert_eq!(state(&store), v2::Sessions::from(v1_state));
    let receipt = store.commit(v2::SessionsCommand::DeleteUser { user_id: BUSY_USER }).await.expect("commit");
    assert_eq!(receipt.seq, before_cut.next(), "the cut record was never part of the store");
}

/// v2's types with a command that panics, to exercise the rollback of a migrated store.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
#[serde(transparent)]
struct Panicky(v2::Sessions);

/// The user whose `DeleteUser` panics under [`Panicky`].
const PANICKING_USER: u64 = 999;

impl From<v1::Sessions> for Panicky {
    fn from(old: v1::Sessions) -> Self {
        Panicky(v2::Sessions::from(old))
    }
}

impl State for Panicky {
    type Command = v2::SessionsCommand;
    const SCHEMA_VERSION: u32 = 2;

    fn execute(&mut self, command: v2::SessionsCommand) {
        let panics = command == v2::SessionsCommand::DeleteUser { user_id: PANICKING_USER };
        self.0.execute(command);
        assert!(!panics, "{}", airomem_workspace::DELIBERATE_PANIC);
    }

    fn previous<Z: airomem::Serializer>() -> airomem::Previous<Self, Z> {
        airomem::Previous::from::<v1::Sessions>()
    }
}

/// A command that panics in a migrated store is rolled back by rebuilding the state: from
/// the sealing snapshot, or (without snapshots) through the v1 history and the conversion
/// again.
async fn rollback_after_migration<Z: Serializer + Copy>(serializer: Z, name: &str) {
    airomem_workspace::quiet_deliberate_panics();
    let golden = expected(name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = golden_copy(name, tmp.path());
    let store: Store<Panicky, Z> = open(serializer, &dir).await.expect("open under v2");
    store.commit(v2::SessionsCommand::DeleteUser { user_id: BUSY_USER }).await.expect("commit");
    let before = state(&store);
    match store.commit(v2::SessionsCommand::DeleteUser { user_id: PANICKING_USER }).await {
        Err(Error::CommandPanicked { seq, .. }) => assert_eq!(seq, Seq(golden.last_seq + 2)),
        other => panic!("{name}: expected CommandPanicked, got {other:?}"),
    }
    assert_eq!(state(&store), before, "{name}: rolled back");
    store.commit(v2::SessionsCommand::DeleteUser { user_id: 1 }).await.expect("commit after the rollback");
    let mut expected = v2::Sessions::from(golden.state);
    expected.tokens.retain(|_, s| s.user_id != BUSY_USER && s.user_id != 1);
    assert_eq!(state(&store).0, expected);
    store.close().await.expect("close");

    let store: Store<Panicky, Z> = open(serializer, &dir).await.expect("reopen under v2");
    assert_eq!(state(&store).0, expected);
    assert_eq!(store.recovery().records_skipped, 1, "the aborted command");
}

/// The frozen modules never change: each one's serialized shape is recorded.
#[test]
fn frozen_schemas_are_recorded() {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/schema");
    let checks = [
        assert_schema_recorded::<v1::Sessions>(schema.join("v1.json")),
        assert_schema_recorded::<v2::Sessions>(schema.join("v2.json")),
        assert_schema_recorded::<v3::Sessions>(schema.join("v3.json")),
    ];
    assert_eq!(checks, [SchemaCheck::Unchanged; 3], "tests/golden/schema/ must be committed");
}

/// The program that wrote the golden stores (it takes a snapshot, hence the feature).
#[cfg(feature = "snapshot")]
mod regenerate {
    use super::*;
    use airomem::{JsonSerializer, PostcardSerializer};

    /// Records before the snapshot, and after it.
    const BEFORE_SNAPSHOT: u64 = 60;
    const TAIL: u64 = 40;
    /// Small enough that both stores roll over several times, also in the tail.
    const SEGMENT_SIZE: u64 = 1024;

    /// The `n`th command of the golden history: sessions of seven users are created, and
    /// every fourth command ends the session created two commands earlier.
    fn golden_command(n: u64) -> v1::SessionsCommand {
        if n % 4 == 3 {
            v1::SessionsCommand::DeleteSession { token: token(n - 2) }
        } else {
            v1::SessionsCommand::CreateSession { token: token(n), user_id: 1 + n % 7 }
        }
    }

    /// Writes `tests/golden/{postcard,json}/` and the expected state beside each. Run it only
    /// when the golden stores are meant to change (a new on-disk format): the tests above then
    /// hold every later build to the new files.
    #[tokio::test]
    #[ignore = "rewrites the committed golden stores"]
    async fn regenerate_golden_stores() {
        regenerate(PostcardSerializer, "postcard").await;
        regenerate(JsonSerializer, "json").await;
    }

    async fn regenerate<Z: Serializer + Copy>(serializer: Z, name: &str) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join(name);
        // Every batch is one command, so sequence numbers and segment boundaries are the same
        // on every run.
        let options = airomem::StoreOptions::default().segment_size(SEGMENT_SIZE);
        let store: Store<v1::Sessions, Z> = Store::open_with(serializer, &dir, options).await.expect("open");
        let mut model = BTreeMap::new();
        for n in 0..BEFORE_SNAPSHOT + TAIL {
            if n == BEFORE_SNAPSHOT {
                assert_eq!(store.snapshot().await.expect("snapshot").seq, Seq(BEFORE_SNAPSHOT));
            }
            let command = golden_command(n);
            match &command {
                v1::SessionsCommand::CreateSession { token, user_id } => model.insert(token.clone(), *user_id),
                v1::SessionsCommand::DeleteSession { token } => model.remove(token),
            };
            assert_eq!(store.commit(command).await.expect("commit").seq, Seq(n + 1));
        }
        let written = state(&store);
        assert_eq!(written.tokens, model);
        store.close().await.expect("close");
        fs::remove_file(dir.join(LOCK_FILE)).expect("remove the lock file");

        let golden = golden_dir(name);
        if golden.exists() {
            fs::remove_dir_all(&golden).expect("remove the old golden store");
        }
        copy_dir(&dir, &golden);
        let expected = Expected { snapshot_seq: BEFORE_SNAPSHOT, last_seq: BEFORE_SNAPSHOT + TAIL, state: written };
        let mut text = serde_json::to_string_pretty(&expected).expect("encode");
        text.push('\n');
        fs::write(expected_file(name), text).expect("write the expected state");
        is_as_described(serializer, name).await;
        v1_opens(serializer, name).await;
    }
}
