//! What a commit tells its caller and the command: `commit_with` returns a value computed
//! from the state right after exactly this command; `CommitContext::current()` inside
//! `execute` gives the seq and time the receipt reports; replay after a reopen hands every
//! command the very same context, so a state that records it is rebuilt identically.

mod segment_files;

use std::collections::BTreeSet;
use std::sync::Arc;

use airomem::{
    CommitContext, Committed, Durability, Error, PostcardSerializer, PostcardStore, Seq, State, Store, StoreOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

/// An entry and the context its command executed with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Entry {
    id: u64,
    name: String,
    seq: u64,
    unix_nanos: u64,
}

/// A ledger that assigns ids and records each command's commit context.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
struct Ledger {
    next_id: u64,
    entries: Vec<Entry>,
    /// Seqs of every command executed, removals included.
    executed: Vec<u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
enum LedgerCommand {
    Add { name: String },
    Remove { id: u64 },
}

impl State for Ledger {
    type Command = LedgerCommand;

    fn execute(&mut self, command: LedgerCommand) {
        let context = CommitContext::current().expect("a command executes with a context");
        self.executed.push(context.seq.0);
        match command {
            LedgerCommand::Add { name } => {
                let id = self.next_id;
                self.next_id += 1;
                self.entries.push(Entry { id, name, seq: context.seq.0, unix_nanos: context.unix_nanos });
            }
            LedgerCommand::Remove { id } => self.entries.retain(|e| e.id != id),
        }
    }
}

async fn open(dir: &std::path::Path) -> PostcardStore<Ledger> {
    Store::open(PostcardSerializer, dir).await.expect("open")
}

fn add(name: impl Into<String>) -> LedgerCommand {
    LedgerCommand::Add { name: name.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_with_returns_what_the_command_did() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path()).await;
    for i in 0..20u64 {
        let (id, count, outside) = store
            .commit_with(add(format!("e{i}")), |s: &Ledger| {
                (s.entries.last().expect("just added").id, s.entries.len(), CommitContext::current())
            })
            .await
            .expect("commit_with");
        assert_eq!(id, i, "the id the command assigned");
        assert_eq!(count as u64, i + 1, "the count right after this command");
        assert_eq!(outside, None, "the query runs outside execute: no command context");
    }
    let remaining =
        store.commit_with(LedgerCommand::Remove { id: 3 }, |s: &Ledger| s.entries.len()).await.expect("remove");
    assert_eq!(remaining, 19);
    assert!(CommitContext::current().is_none(), "no context outside execute");
    let query = store.query().expect("query");
    assert_eq!(query.entries.len(), 19);
    assert!(query.entries.iter().all(|e| e.id != 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_with_sees_exactly_its_own_command_under_concurrency() {
    const TASKS: usize = 16;
    const PER_TASK: usize = 25;
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path()).await;
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut seen = Vec::new();
            for i in 0..PER_TASK {
                let name = format!("t{t}-{i}");
                let last = store
                    .commit_with(add(name.clone()), |s: &Ledger| s.entries.last().cloned().expect("just added"))
                    .await
                    .expect("commit_with");
                assert_eq!(last.name, name, "the query ran right after this command, not another");
                seen.push(last);
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.expect("task"));
    }
    let ids: BTreeSet<u64> = all.iter().map(|e| e.id).collect();
    let seqs: BTreeSet<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(ids, (0..(TASKS * PER_TASK) as u64).collect(), "ids are assigned once each");
    assert_eq!(seqs, (1..=(TASKS * PER_TASK) as u64).collect(), "seqs are assigned once each");
    // Every returned entry is the one in the state.
    let state = store.query().expect("query").clone();
    all.sort_by_key(|e| e.id);
    assert_eq!(state.entries, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_match_the_context_and_replay_reproduces_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ledger");
    let mut receipts: Vec<Committed> = Vec::new();
    let mut before_close = Ledger::default();
    for cycle in 0..3u64 {
        let store = open(&dir).await;
        assert_eq!(
            *store.query().expect("query"),
            before_close,
            "cycle {cycle}: replay rebuilds the same recorded contexts"
        );
        assert_eq!(store.recovery().next_seq, Seq(receipts.len() as u64 + 1));
        for i in 0..30u64 {
            let receipt = if i % 7 == 6 {
                store.commit(LedgerCommand::Remove { id: i / 2 }).await.expect("commit")
            } else {
                store.commit(add(format!("c{cycle}-{i}"))).await.expect("commit")
            };
            if let Some(previous) = receipts.last() {
                assert!(receipt.seq > previous.seq, "seqs strictly increase, across reopens too");
                assert_eq!(receipt.seq, Seq(previous.seq.0 + 1), "no seq is skipped");
                assert!(receipt.unix_nanos >= previous.unix_nanos, "recorded time never runs backwards");
            } else {
                assert_eq!(receipt.seq, Seq(1));
            }
            assert_eq!(receipt.time(), std::time::UNIX_EPOCH + std::time::Duration::from_nanos(receipt.unix_nanos));
            receipts.push(receipt);
        }
        let state = store.query().expect("query").clone();
        // Each command saw the seq and time its receipt reports.
        assert_eq!(state.executed, receipts.iter().map(|r| r.seq.0).collect::<Vec<_>>());
        for entry in &state.entries {
            let receipt = receipts[entry.seq as usize - 1];
            assert_eq!((entry.seq, entry.unix_nanos), (receipt.seq.0, receipt.unix_nanos), "{entry:?}");
        }
        before_close = state;
        drop(store);
    }
    let store = open(&dir).await;
    assert_eq!(*store.query().expect("query"), before_close);
    assert_eq!(store.recovery().records_replayed, receipts.len() as u64);
    drop(store);

    // The journal itself records what the receipts said.
    let on_disk: Vec<(u64, u64)> = segment_files::segment_names(&dir)
        .iter()
        .flat_map(|name| segment_files::read_segment(&dir.join(name)).records)
        .map(|r| (r.seq, r.unix_nanos))
        .collect();
    assert_eq!(on_disk, receipts.iter().map(|r| (r.seq.0, r.unix_nanos)).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_query_still_commits_the_command() {
    panicking_query_commits(Durability::Fsync).await;
}

/// Under `OsBuffered` a lone `commit_with` runs its query in the caller's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_query_in_the_callers_thread_still_commits_the_command() {
    panicking_query_commits(Durability::OsBuffered).await;
}

async fn panicking_query_commits(durability: Durability) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ledger");
    let options = StoreOptions::default().durability(durability);
    let store: PostcardStore<Ledger> = Store::open_with(PostcardSerializer, &dir, options).await.expect("open");
    store.commit(add("first")).await.expect("commit");
    let result = store.commit_with(add("second"), |_: &Ledger| -> u64 { panic!("query blew up") }).await;
    assert!(matches!(result, Err(Error::QueryPanicked)), "{result:?}");
    let names: Vec<String> = store.query().expect("query").entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, ["first", "second"], "the command itself was committed");
    let third = store.commit(add("third")).await.expect("the store goes on");
    assert_eq!(third.seq, Seq(3));
    drop(store);
    let store = open(&dir).await;
    let names: Vec<String> = store.query().expect("query").entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, ["first", "second", "third"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_a_commit_with_as_soon_as_it_returns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path()).await;
    let mut seen = Vec::new();
    for i in 1..=300u64 {
        if i % 2 == 0 {
            store.commit(add(format!("c{i}"))).await.expect("commit");
        } else {
            store.commit_with(add(format!("q{i}")), |s: &Ledger| s.entries.len()).await.expect("commit_with");
        }
        let stats = store.stats();
        seen.push((i, stats.commits, stats.last_seq));
    }
    assert_eq!(store.query().expect("query").entries.len(), 300);
    for (i, commits, last_seq) in seen {
        // A command acknowledged through commit_with is committed like any other.
        assert_eq!((commits, last_seq), (i, i), "stats() (commits, last_seq) right after command {i} returned");
    }
}
