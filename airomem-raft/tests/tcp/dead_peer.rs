//! A dead peer costs a bounded number of log lines: the transport reports it unreachable,
//! openraft backs off exponentially, and nobody logs at the heartbeat rate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

use crate::{Cluster, add};

/// Counts the events at WARN and above, from every crate (openraft's own too).
struct Counting;

static LOUD: AtomicUsize = AtomicUsize::new(0);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Counting {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= Level::WARN {
            LOUD.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// With a follower dead, the others go on committing for a while. At the heartbeat rate
/// (50 ms) a transport that retried at once would cost openraft's 4 lines per attempt, 80 a
/// second; with the backoff (50 ms doubling to 2 s) the count stays a small constant plus
/// 4 lines every 2 s. The bound below holds for any window up to a minute (`WINDOW` is
/// shorter to keep the test quick); the count is printed for the record.
#[test]
fn a_dead_peer_logs_a_bounded_number_of_lines() {
    const WINDOW: Duration = Duration::from_secs(8);
    // This test's own subscriber, on this thread and the runtime's: the count sees every
    // event of the run, and no other test shares the binary's global one.
    let subscriber = tracing_subscriber::registry().with(Counting);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start({
            let dispatch = tracing::Dispatch::new(subscriber);
            move || {
                // Each worker thread logs to the counting subscriber.
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            }
        })
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut cluster = Cluster::start(3, |c| c).await;
        let leader = cluster.leader().await;
        let dead = (1..=3).find(|&id| id != leader).expect("a follower");
        cluster.close_node(dead).await;
        LOUD.store(0, Ordering::Relaxed);
        let start = Instant::now();
        let mut value = 0;
        while start.elapsed() < WINDOW {
            value += 1;
            cluster.node(leader).commit(add(value)).await.expect("a majority remains");
        }
        let lines = LOUD.load(Ordering::Relaxed);
        eprintln!("{lines} lines at WARN or above in {WINDOW:?} with node {dead} dead ({value} commits)");
        // The backoff (50 ms doubling: 3.15 s for the first 6 attempts, then one per 2 s)
        // allows at most 10 attempts in 8 s; openraft logs 4 lines per failed attempt (seen:
        // 37 lines in all on an idle machine), the transport 1 when the peer goes down: 41,
        // bounded with a margin at 60. At the heartbeat rate it would be 160 attempts, 640
        // lines.
        assert!(lines <= 60, "{lines} lines at WARN or above in {WINDOW:?}: a log flood");
        cluster.close().await;
    });
}
