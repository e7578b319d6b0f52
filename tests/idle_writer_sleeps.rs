//! `Durability::Periodic(0)` used to make the idle writer spin through `recv_timeout(0)`: a
//! whole core burnt while nothing happens. This file holds one test so that its process has
//! exactly one writer thread, whose CPU time it reads.

use airomem::{Durability, PostcardSerializer, PostcardStore, Store, StoreOptions};
use airomem_workspace::Log;

/// The CPU time a thread of this process has used, in clock ticks, by its name.
fn thread_cpu_ticks(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        // Another thread (a runtime's blocking worker, say) may exit while this reads: its
        // entry is skipped, not taken for the end of the search.
        let Ok(task) = task else { continue };
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        if comm.trim() == name {
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // Fields after the parenthesised name: utime and stime are the 12th and 13th.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            return Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?);
        }
    }
    None
}

/// An idle writer sleeps, whatever the periodic interval.
#[cfg(target_os = "linux")]
#[test]
fn an_idle_writer_under_a_zero_periodic_interval_sleeps() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().durability(Durability::Periodic(std::time::Duration::ZERO));
    let store: PostcardStore<Log> =
        runtime.block_on(Store::open_with(PostcardSerializer, tmp.path(), options)).expect("open");
    runtime.block_on(store.commit(1)).expect("commit");
    // The commit was made in this thread (`commit_in_caller`), so the writer thread may not
    // have run at all yet, nor named itself. Its sync of that commit says it has, and that
    // it has nothing left to do.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.stats().syncs == 0 {
        assert!(std::time::Instant::now() < deadline, "the writer thread never synced the commit");
        std::thread::yield_now();
    }
    let before = thread_cpu_ticks("airomem-writer").expect("the writer thread is there");
    let idle = std::time::Instant::now();
    // Time passing is what is measured here, not a wait for an event.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let used = thread_cpu_ticks("airomem-writer").expect("the writer thread is there") - before;
    let ticks_per_second = 100; // USER_HZ on Linux
    let elapsed = idle.elapsed().as_secs_f64() * ticks_per_second as f64;
    assert!((used as f64) < elapsed / 5.0, "the idle writer used {used} ticks of CPU in {elapsed:.0}");
    assert_eq!(runtime.block_on(store.commit(2)).map(|c| c.seq.get()).expect("commit"), 2);
}
