//! Shared pieces of airomem's integration tests and benchmarks; not part of the library. It
//! holds the session store that the README's example is built around. The examples do not
//! use it: each defines its own types, so that a user can copy it into a crate of their own.

pub mod hooked;
pub mod migration;
pub mod sim;

// The guide's chapters (docs/guide/) hold the examples the README used to: their Rust
// blocks compile and run as doctests of this package, which has the facade's `json` and
// `snapshot` features and, in doctests, its dev-dependencies. (Replication's chapter is
// doctested by airomem-raft.)
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/commands-and-units.md")]
pub struct GuideCommandsAndUnits;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/without-a-runtime.md")]
pub struct GuideWithoutARuntime;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/changing-your-types.md")]
pub struct GuideChangingYourTypes;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/looking-inside.md")]
pub struct GuideLookingInside;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/web-service.md")]
pub struct GuideWebService;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/operations.md")]
pub struct GuideOperations;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/guarantees.md")]
pub struct GuideGuarantees;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/big-states.md")]
pub struct GuideBigStates;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/metrics.md")]
pub struct GuideMetrics;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/follower.md")]
pub struct GuideFollower;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/backup.md")]
pub struct GuideBackup;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Login sessions: token to user id.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct Sessions {
    /// Live sessions.
    pub tokens: HashMap<String, u64>,
}

/// The changes a session store accepts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum SessionsCommand {
    /// Starts a session.
    CreateSession {
        /// The session's secret token.
        token: String,
        /// Who logged in.
        user_id: u64,
    },
    /// Ends a session.
    DeleteSession {
        /// The session's token.
        token: String,
    },
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

/// An append-only log of numbers: recovery must give back exactly a prefix of what was
/// committed, which makes "nothing lost, nothing invented, nothing reordered" checkable.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// The values, in commit order.
    pub values: Vec<u64>,
}

impl airomem::State for Log {
    type Command = u64;

    fn execute(&mut self, value: u64) {
        self.values.push(value);
    }
}

/// Every command's sequence number (from [`airomem::CommitContext`]) and value, in the order
/// executed: what the crash and fault tests compare with the commands they submitted.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct SeqLog {
    /// `(sequence number, value)` of each applied command.
    pub entries: Vec<(u64, u64)>,
}

/// Appends `value` to a [`SeqLog`]. `pad` only varies the record size, so that records
/// straddle sector boundaries and segments fill at different points. With `panic`, the
/// command panics after appending: the store must roll the append back.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Append {
    /// The value appended.
    pub value: u64,
    /// Filler bytes.
    pub pad: Vec<u8>,
    /// Whether to panic after appending.
    pub panic: bool,
}

/// The message of the panics [`Append`] raises on purpose, so a panic hook can keep them quiet.
pub const DELIBERATE_PANIC: &str = "deliberate panic of a test command";

impl airomem::State for SeqLog {
    type Command = Append;

    fn execute(&mut self, command: Append) {
        let seq = airomem::CommitContext::current().map_or(0, |c| c.seq.0);
        self.entries.push((seq, command.value));
        assert!(!command.panic, "{DELIBERATE_PANIC}");
    }
}

/// A 32-character token derived from `n`: distinct for distinct `n`, cheap, deterministic.
pub fn token(n: u64) -> String {
    // splitmix64, twice, so that neighbouring n give unrelated tokens.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!("{:016x}{:016x}", mix(n), mix(!n))
}

/// Keeps the panics of [`Append`] commands with `panic` set (and only those) out of the test
/// output: crash tests raise thousands of them on purpose. Installed once per process.
pub fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<String>().map(String::as_str);
            if message != Some(DELIBERATE_PANIC) {
                default(info);
            }
        }));
    });
}

/// Runs `check`, which must panic, and returns the panic's message; panics itself, naming
/// what `check` returned, if it does not. For tests of guards whose failure is a panic.
pub fn panic_message_of<T: std::fmt::Debug>(check: impl FnOnce() -> T) -> String {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        Ok(outcome) => panic!("expected a panic, but the check returned {outcome:?}"),
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    }
}

/// Polls `future` once: its output if it is ready at once, `None` otherwise. A commit polled
/// once has been handed to the store's writer (unless back-pressure holds it), which lets a
/// test queue commands in a known order without spawning them.
pub async fn poll_once<F: std::future::Future>(mut future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// Commits the commands `command(0)` to `command(count - 1)` from 64 concurrent tasks (so in
/// batches, and not in order): how the measurements fill a store quickly.
pub async fn commit_from_64_tasks<S: airomem::State, Z: airomem::Serializer>(
    store: &airomem::Store<S, Z>,
    count: u64,
    command: fn(u64) -> S::Command,
) {
    let mut tasks = Vec::new();
    for first in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in (first..count).step_by(64) {
                store.commit(command(n)).await.expect("commit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a committing task");
    }
}

/// A journal writer for [`SeqLog`] commands on `dir` of `storage` (created, empty), for tests
/// that lay out records one by one, independent of how concurrent commits happen to be
/// batched.
pub fn seq_log_journal(
    storage: std::sync::Arc<dyn airomem::storage::Storage>,
    dir: &std::path::Path,
    preallocate: u64,
) -> airomem_journal::JournalWriter {
    use airomem::{PostcardSerializer, Seq, Serializer, State};
    use airomem_journal::{JournalConfig, JournalWriter, ReplayRange};

    storage.create_dir_all(dir).expect("mkdir");
    let config = JournalConfig {
        storage,
        dir: dir.into(),
        serializer: PostcardSerializer::ID,
        schema_version: SeqLog::SCHEMA_VERSION,
        segment_size: 1 << 20,
        preallocate,
    };
    let nothing = std::collections::BTreeSet::new();
    let range = ReplayRange { from: Seq(1), until: None, skip: &nothing, beside_writer: false, next_record: None };
    let empty = airomem_journal::replay(&config, range, None, |_| Ok::<(), ()>(())).expect("an empty journal");
    JournalWriter::open(config, &empty).expect("first segment")
}

/// `command` as the journal holds it (postcard).
pub fn payload(command: &Append) -> Vec<u8> {
    use airomem::Serializer;
    let mut payload = Vec::new();
    airomem::PostcardSerializer.encode(command, &mut payload).expect("encode");
    payload
}

/// The binary of the example `name`, as `cargo test` builds it beside the test binaries:
/// the test binary is `target/<profile>/deps/<test>`, the example
/// `target/<profile>/examples/<name>`.
///
/// # Panics
///
/// If the binary is missing or older than its source (`cargo test --test X` alone does not
/// rebuild examples), with a message saying how to build it.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    use std::path::Path;
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir =
        test_binary.parent().and_then(Path::parent).expect("the test binary lies in target/<profile>/deps");
    let binary = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let build =
        format!("`cargo test` builds it; `cargo test --test X` does not: run `cargo build --example {name}` first");
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("the example binary {} is missing ({e}): {build}", binary.display()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(format!("{name}.rs"));
    let edited = std::fs::metadata(&source).and_then(|m| m.modified()).expect("the example's source");
    assert!(built >= edited, "the example binary {} is older than its source: {build}", binary.display());
    binary
}
