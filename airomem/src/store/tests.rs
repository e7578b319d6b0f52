//! The lone commit, seen from a store: which thread applies a command, and when a caller
//! must leave its command to the writer thread.

use std::sync::atomic::Ordering;

use airomem_core::{PostcardSerializer, State};

use crate::options::{Durability, StoreOptions};
use crate::park::block_on;
use crate::store::Store;

/// Every command appended, in order.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Appended {
    values: Vec<u64>,
}

impl State for Appended {
    type Command = u64;
    fn execute(&mut self, command: u64) {
        self.values.push(command);
    }
}

fn open(dir: &std::path::Path, options: StoreOptions) -> Store<Appended> {
    Store::open_blocking(PostcardSerializer, dir.to_path_buf(), options).expect("open")
}

/// The name of the thread that applies a command: its `commit_with` query runs there.
fn applied_on(store: &Store<Appended>, command: u64) -> String {
    let name = |_: &Appended| std::thread::current().name().unwrap_or("unnamed").to_owned();
    block_on(store.commit_with(command, name)).expect("commit")
}

#[test]
fn a_lone_commit_is_applied_in_its_callers_thread_only_where_allowed() {
    let caller = std::thread::current().name().expect("test threads are named").to_owned();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases = [
        (StoreOptions::default().durability(Durability::OsBuffered), caller.as_str()),
        (StoreOptions::default().durability(Durability::Periodic(std::time::Duration::from_secs(60))), &caller),
        (StoreOptions::default().durability(Durability::Fsync), "airomem-writer"),
        (StoreOptions::default().durability(Durability::OsBuffered).commit_in_caller(false), "airomem-writer"),
    ];
    for (i, (options, expected)) in cases.into_iter().enumerate() {
        let store = open(&tmp.path().join(i.to_string()), options);
        assert_eq!(applied_on(&store, 1), expected, "case {i}");
        assert_eq!(applied_on(&store, 2), expected, "case {i}");
        assert_eq!(store.query().expect("query").values, vec![1, 2]);
        block_on(store.close()).expect("close");
    }
}

/// A request handed to the writer thread and not yet committed (one whose caller gave up
/// waiting, say) must not be overtaken by a later commit of the same caller.
#[test]
fn a_commit_goes_through_the_writer_while_an_earlier_one_is_unwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path(), StoreOptions::default().durability(Durability::OsBuffered));
    assert_ne!(applied_on(&store, 1), "airomem-writer");
    // As if a request were still queued: counted as handed over, never written.
    store.shared().submitted.fetch_add(1, Ordering::Release);
    assert_eq!(applied_on(&store, 2), "airomem-writer");
    assert_eq!(store.query().expect("query").values, vec![1, 2]);
}

/// A commit that finds the committer busy with another caller's commit is queued for the
/// writer thread, never blocked on the lock in its own thread, and applied after it.
#[test]
fn a_commit_finding_the_committer_busy_is_queued_not_blocked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path(), StoreOptions::default().durability(Durability::OsBuffered));
    let (entered, wait_entered) = std::sync::mpsc::channel();
    let (release, wait_release) = std::sync::mpsc::channel::<()>();
    let first = store.clone();
    let holder = std::thread::Builder::new().name("holder".into()).spawn(move || {
        // Alone, so applied in this thread, which holds the committer until released.
        block_on(first.commit_with(1, move |_: &Appended| {
            entered.send(std::thread::current().name().map(str::to_owned)).expect("send");
            wait_release.recv().expect("released");
        }))
        .expect("first commit")
    });
    let holder = holder.expect("spawn");
    assert_eq!(wait_entered.recv().expect("entered").as_deref(), Some("holder"));
    let second = store.clone();
    let waiter = std::thread::spawn(move || applied_on(&second, 2));
    // Released only once the second commit is queued for the writer thread, so it
    // decided where to go while the first was still awaited.
    while store.shared().submitted.load(Ordering::Acquire) < 1 {
        std::thread::yield_now();
    }
    release.send(()).expect("release");
    holder.join().expect("holder");
    assert_eq!(waiter.join().expect("waiter"), "airomem-writer");
    assert_eq!(store.query().expect("query").values, vec![1, 2]);
}
