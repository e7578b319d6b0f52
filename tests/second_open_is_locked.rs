//! One store per directory: a second open, from this process or another, fails with
//! `Error::Locked` while the first is alive (any clone of it), and succeeds once it is
//! dropped, closed, or its process has died.
//!
//! The other process is this test binary itself, started again with `LOCK_CHILD_DIR` set:
//! the `child_process_entry` test then acts as the child and exits with a status code instead
//! of running as a test.
//!
//! The tests of this file run one at a time (`SERIAL`): a child process started by one test
//! inherits, between its fork and its exec, the lock file descriptors of the stores other
//! tests hold, which would make their reopen-after-drop steps fail spuriously. That effect is
//! itself pinned down by `reopen_after_drop_succeeds_while_the_process_starts_children`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use airomem::{Error, PostcardSerializer, PostcardStore, Store};
use airomem_workspace::{Sessions, SessionsCommand};

const CHILD_DIR: &str = "LOCK_CHILD_DIR";
const CHILD_MODE: &str = "LOCK_CHILD_MODE";
const OPENED: i32 = 0;
const LOCKED: i32 = 3;
const OTHER_ERROR: i32 = 4;
const READY: &str = "child-store-open";

/// Serializes the tests of this file (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn create(token: &str) -> SessionsCommand {
    SessionsCommand::CreateSession { token: token.into(), user_id: 1 }
}

async fn open(dir: &Path) -> Result<PostcardStore<Sessions>, Error> {
    Store::open(PostcardSerializer, dir).await
}

fn assert_locked(result: Result<PostcardStore<Sessions>, Error>, dir: &Path) {
    match result {
        Err(Error::Locked { dir: locked }) => assert_eq!(locked, dir, "the error names the directory"),
        Err(other) => panic!("expected Error::Locked, got {other:?}"),
        Ok(_) => panic!("a second store opened a locked directory"),
    }
}

/// The child's side. Mode `try`: open, exit OPENED or LOCKED. Mode `hold`: open, commit,
/// print READY, keep the store until stdin closes, then exit.
#[test]
#[ignore = "the child process of another test in this file, which starts it with --ignored"]
fn child_process_entry() {
    let dir = std::env::var(CHILD_DIR).expect("started by the parent test, which sets the directory");
    let mode = std::env::var(CHILD_MODE).expect("child mode");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let code = runtime.block_on(async {
        match open(Path::new(&dir)).await {
            Ok(store) => {
                if mode == "hold" {
                    store.commit(create("from-child")).await.expect("child commit");
                    let mut out = std::io::stdout();
                    writeln!(out, "{READY}").expect("stdout");
                    out.flush().expect("flush");
                    let mut line = String::new();
                    while std::io::stdin().read_line(&mut line).expect("stdin") > 0 {}
                }
                drop(store);
                OPENED
            }
            Err(Error::Locked { .. }) => LOCKED,
            Err(e) => {
                eprintln!("child open failed: {e}");
                OTHER_ERROR
            }
        }
    });
    std::process::exit(code);
}

fn child(dir: &Path, mode: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current exe"));
    command
        .args(["child_process_entry", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_MODE, mode)
        .stdin(Stdio::null());
    command
}

fn try_from_child(dir: &Path) -> i32 {
    let status = child(dir, "try").stdout(Stdio::null()).status().expect("run child");
    status.code().expect("child exited with a code")
}

/// Starts a child that opens the store and holds it; returns once the child says it has.
fn holding_child(dir: &Path) -> Child {
    let mut child = child(dir, "hold").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("child ended before it had the store open").expect("read child stdout");
        // The test harness may have printed "test child_process_entry ... " on the same line.
        if line.ends_with(READY) {
            break;
        }
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_in_the_same_process_is_locked_until_the_last_clone_is_dropped() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let first = open(&dir).await.expect("first open");
    first.commit(create("a")).await.expect("commit");
    assert!(dir.join("airomem.lock").is_file(), "the lock file sits in the store directory");
    assert_locked(open(&dir).await, &dir);

    let clone = first.clone();
    drop(first);
    assert_locked(open(&dir).await, &dir);
    clone.commit(create("b")).await.expect("a clone keeps working");
    drop(clone);

    let second = open(&dir).await.expect("open after the last clone is dropped");
    assert_eq!(second.query().expect("query").tokens.len(), 2);
    assert_locked(open(&dir).await, &dir);
    second.close().await.expect("close");

    let third = open(&dir).await.expect("open after close");
    assert_eq!(third.recovery().records_replayed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_open_does_not_disturb_the_open_store() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let first = open(&dir).await.expect("first open");
    for _ in 0..3 {
        assert_locked(open(&dir).await, &dir);
    }
    first.commit(create("still-works")).await.expect("commit after refused opens");
    drop(first);
    let again = open(&dir).await.expect("reopen");
    assert_eq!(again.recovery().records_replayed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_is_locked_out_while_this_one_holds_the_store() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = open(&dir).await.expect("open");
    store.commit(create("parent")).await.expect("commit");
    assert_eq!(try_from_child(&dir), LOCKED, "the child must be refused while the parent holds the store");
    drop(store);
    assert_eq!(try_from_child(&dir), OPENED, "the child opens once the parent dropped the store");
    let store = open(&dir).await.expect("parent reopens after the child exited");
    assert_eq!(store.recovery().records_replayed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_process_is_locked_out_while_another_holds_the_store() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let mut holder = holding_child(&dir);
    assert_locked(open(&dir).await, &dir);
    drop(holder.stdin.take()); // tells the child to drop its store and exit
    let status = holder.wait().expect("wait for child");
    assert_eq!(status.code(), Some(OPENED));
    let store = open(&dir).await.expect("open after the child released the store");
    assert_eq!(store.query().expect("query").tokens.get("from-child"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_leaves_no_stale_lock() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let mut holder = holding_child(&dir);
    assert_locked(open(&dir).await, &dir);
    holder.kill().expect("kill the child");
    holder.wait().expect("reap the child");
    let store = open(&dir).await.expect("the lock dies with its process");
    assert_eq!(store.query().expect("query").tokens.get("from-child"), Some(&1), "the child's commit was durable");
}

/// Dropping the last clone releases the lock "so a reopen right after the drop succeeds" (the
/// store's own words), also in a process that starts child processes, as servers and test
/// harnesses do. A child inherits every open file descriptor between its fork and its exec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_drop_succeeds_while_the_process_starts_children() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawner = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let exe = std::env::current_exe().expect("current exe");
            let mut children = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Lists the tests and exits: a short-lived child that holds no store.
                let status = Command::new(&exe).arg("--list").stdout(Stdio::null()).stderr(Stdio::null()).status();
                assert!(status.expect("run child").success());
                children += 1;
            }
            children
        })
    };
    let mut failures = Vec::new();
    for round in 0..200 {
        match open(&dir).await {
            Ok(store) => drop(store),
            Err(e) => failures.push((round, e.to_string())),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let children = spawner.join().expect("spawner");
    assert!(children > 0);
    assert!(
        failures.is_empty(),
        "{} of 200 opens right after a drop failed while {children} child processes were started, first: {:?}",
        failures.len(),
        failures.first()
    );
}
