//! HTTP clients written in the bench, for what oha cannot do: send each request to the next
//! of several servers, stop after a number of creates, and note when each create was
//! acknowledged. Closed loop: each client sends its next request when its last is answered.
//! Every `POST /sessions` carries a user id no other request of the run uses.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::error::BoxError;

/// Above the service's commit timeout (10 s): a request left this long is stuck.
const TIMEOUT: Duration = Duration::from_secs(30);

/// When a run of creates ends.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// After this long.
    Elapsed(Duration),
    /// Once this many requests were sent.
    Sent(u64),
}

/// What one run of creates measured.
#[derive(Clone, Debug)]
pub struct Creates {
    /// Creates answered `201` per second.
    pub per_sec: f64,
    /// Latency of the `201`s: percentiles and the slowest, in milliseconds.
    pub p50_ms: f64,
    /// See [`Creates::p50_ms`].
    pub p99_ms: f64,
    /// See [`Creates::p50_ms`].
    pub max_ms: f64,
    /// Requests not answered `201`: by status, or by the client's error.
    pub failed: BTreeMap<String, u64>,
}

/// A client for the bench's own requests: no proxy, [`TIMEOUT`] per request.
pub fn client() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder().no_proxy().timeout(TIMEOUT).build()?)
}

/// One `POST /sessions` to `base`: `Ok(())` for a `201`, else what came instead.
async fn create(client: &reqwest::Client, base: &str, user_id: u64) -> Result<(), String> {
    let url = format!("{base}/sessions");
    match client.post(url).json(&serde_json::json!({ "user_id": user_id })).send().await {
        Ok(response) => {
            let status = response.status();
            // Read the body, so that the connection serves the next request.
            let _ = response.bytes().await;
            if status == reqwest::StatusCode::CREATED { Ok(()) } else { Err(status.as_str().to_string()) }
        }
        Err(e) if e.is_timeout() => Err("timeout".into()),
        Err(e) if e.is_connect() => Err("connect".into()),
        Err(_) => Err("broken connection".into()),
    }
}

/// `clients` clients creating sessions, client `i`'s `k`-th request going to
/// `targets[(i + k) % targets.len()]`, until `until`.
pub async fn creates(
    client: &reqwest::Client,
    targets: &[String],
    clients: u64,
    until: Until,
) -> Result<Creates, BoxError> {
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (client, targets, sent) = (client.clone(), targets.to_vec(), Arc::clone(&sent));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failed = BTreeMap::<String, u64>::new();
                for k in 0.. {
                    let more = match until {
                        Until::Elapsed(duration) => started.elapsed() < duration,
                        Until::Sent(n) => sent.fetch_add(1, Ordering::Relaxed) < n,
                    };
                    if !more {
                        break;
                    }
                    let target = &targets[(i + k) as usize % targets.len()];
                    let begun = Instant::now();
                    match create(&client, target, (i << 32) | k).await {
                        Ok(()) => latencies.push(begun.elapsed()),
                        Err(why) => *failed.entry(why).or_default() += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = BTreeMap::new();
    for task in tasks {
        let (mine, why) = task.await?;
        latencies.extend(mine);
        for (why, count) in why {
            *failed.entry(why).or_default() += count;
        }
    }
    let elapsed = started.elapsed();
    if latencies.is_empty() {
        return Err(format!("no create was acknowledged: {failed:?}").into());
    }
    latencies.sort_unstable();
    let ms = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    Ok(Creates {
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: ms(1.0),
        failed,
    })
}

/// Clients creating sessions in the background, each request to the next server still up,
/// noting when each create was sent and acknowledged: what a failover is timed with.
pub struct Background {
    up: Arc<Vec<AtomicBool>>,
    /// (sent, acknowledged) of each `201` since the last [`Background::forget`].
    acks: Arc<Mutex<Vec<(Instant, Instant)>>>,
    arrived: Arc<Notify>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<String, u64>>>,
}

impl Background {
    /// Starts `clients` clients over `targets`, all up.
    pub fn start(client: &reqwest::Client, targets: &[String], clients: u64) -> Background {
        let up: Arc<Vec<AtomicBool>> = Arc::new(targets.iter().map(|_| AtomicBool::new(true)).collect());
        let acks = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|i| {
                let (client, targets) = (client.clone(), targets.to_vec());
                let (up, acks, arrived, stop) =
                    (Arc::clone(&up), Arc::clone(&acks), Arc::clone(&arrived), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut outcomes = BTreeMap::<String, u64>::new();
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        let n = targets.len();
                        let next =
                            (0..n).map(|j| (i + k + j as u64) as usize % n).find(|&t| up[t].load(Ordering::Relaxed));
                        let Some(target) = next else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        let sent = Instant::now();
                        let outcome = create(&client, &targets[target], (i << 32) | k).await;
                        match outcome {
                            Ok(()) => {
                                acks.lock().unwrap_or_else(PoisonError::into_inner).push((sent, Instant::now()));
                                arrived.notify_waiters();
                                *outcomes.entry("201".into()).or_default() += 1;
                            }
                            Err(why) => {
                                *outcomes.entry(why).or_default() += 1;
                                // A refused request comes back at once: do not spin on it.
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                    outcomes
                })
            })
            .collect();
        Background { up, acks, arrived, stop, tasks }
    }

    /// Whether requests go to `targets[index]`.
    pub fn set_up(&self, index: usize, up: bool) {
        if let Some(flag) = self.up.get(index) {
            flag.store(up, Ordering::Relaxed);
        }
    }

    /// Forgets the acknowledgements so far.
    pub fn forget(&self) {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Waits for the first acknowledgement of a create sent after `since`, for up to
    /// `patience`; returns when it came.
    pub async fn first_sent_after(&self, since: Instant, patience: Duration) -> Result<Instant, BoxError> {
        let deadline = since + patience;
        loop {
            let arrived = self.arrived.notified();
            let first = self
                .acks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|(sent, _)| *sent > since)
                .map(|(_, acked)| *acked)
                .min();
            if let Some(acked) = first {
                return Ok(acked);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no create acknowledged within {patience:?}").into());
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), arrived).await;
        }
    }

    /// Stops the clients (each finishes its request in flight); their outcomes.
    pub async fn stop(self) -> Result<BTreeMap<String, u64>, BoxError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut outcomes = BTreeMap::new();
        for task in self.tasks {
            for (why, count) in task.await? {
                *outcomes.entry(why).or_default() += count;
            }
        }
        Ok(outcomes)
    }
}
