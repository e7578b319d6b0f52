//! Figures for `ShardedMap` against `HashMap`: inserts, lookups, freezes, the first write to
//! each shard after a freeze, and decoding. Ignored by default; run in release mode:
//!
//! ```text
//! cargo test -p airomem --release --test collections_measure -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Each figure is the best of a few runs: the machine is shared, and the best run is the one
//! least disturbed.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use airomem::Freeze;
use airomem::collections::ShardedMap;

/// 32-character keys, distinct, from a fixed seed.
fn keys(n: usize, seed: u64) -> Vec<String> {
    let mut state = seed;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n).map(|_| format!("{:016x}{:016x}", next(), next())).collect()
}

fn best<T>(runs: usize, mut f: impl FnMut() -> (Duration, T)) -> Duration {
    (0..runs).map(|_| black_box(f()).0).min().expect("at least one run")
}

fn ns_per(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

#[test]
#[ignore]
fn measure_insert_and_lookup() {
    const N: usize = 1_000_000;
    let source = keys(N, 1);
    let std_insert = best(5, || {
        let keys = source.clone();
        let start = Instant::now();
        let mut map = HashMap::new();
        for (i, key) in keys.into_iter().enumerate() {
            map.insert(key, i as u64);
        }
        (start.elapsed(), map)
    });
    for split_at in [448, 512, 896] {
        let sharded_insert = best(5, || {
            let keys = source.clone();
            let start = Instant::now();
            let mut map = ShardedMap::new().split_at(split_at);
            for (i, key) in keys.into_iter().enumerate() {
                map.insert(key, i as u64);
            }
            (start.elapsed(), map)
        });
        println!(
            "insert {N} String(32)->u64, no reserve: HashMap {:.0} ns/insert, ShardedMap(split at {split_at}) {:.0} ns/insert ({:.2}x)",
            ns_per(std_insert, N),
            ns_per(sharded_insert, N),
            sharded_insert.as_secs_f64() / std_insert.as_secs_f64()
        );
    }

    for n in [100_000, N] {
        let std_map: HashMap<String, u64> = source[..n].iter().cloned().zip(0..).collect();
        let sharded: ShardedMap<String, u64> = source[..n].iter().cloned().zip(0..).collect();
        // Probe with other copies of the keys, in another order than insertion.
        let probes = keys(n, 1);
        let order: Vec<usize> = (0..n).map(|i| (i * 7919) % n).collect();
        // Alternating, so that neither map always runs on a cache the other warmed.
        let (mut std_get, mut sharded_get) = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            std_get = std_get.min(lookups(&order, |i| std_map.get(probes[i].as_str()).copied()));
            sharded_get = sharded_get.min(lookups(&order, |i| sharded.get(probes[i].as_str()).copied()));
        }
        println!(
            "get {n} present keys: HashMap {:.0} ns/get, ShardedMap {:.0} ns/get ({:.2}x)",
            ns_per(std_get, n),
            ns_per(sharded_get, n),
            sharded_get.as_secs_f64() / std_get.as_secs_f64()
        );
    }
}

fn lookups(order: &[usize], get: impl Fn(usize) -> Option<u64>) -> Duration {
    let start = Instant::now();
    let mut sum = 0u64;
    for &i in order {
        sum += get(i).unwrap_or(0);
    }
    black_box(sum);
    start.elapsed()
}

#[test]
#[ignore]
fn measure_freeze_and_first_writes() {
    for n in [100_000, 1_000_000, 4_000_000] {
        let source = keys(n, 2);
        for split_at in [256, 512, 4096] {
            let mut map: ShardedMap<String, u64> = ShardedMap::new().split_at(split_at);
            map.extend(source.iter().cloned().zip(0..));
            let freeze = best(20, || {
                let start = Instant::now();
                let frozen = map.freeze();
                (start.elapsed(), frozen)
            });
            // Writes to existing keys in a scattered order until every shard is copied; only
            // the writes that copied a shard count.
            let frozen = map.freeze();
            let shards = frozen.shard_count();
            let mut copying = Vec::new();
            let mut copied = 0;
            let mut i = 0;
            while copied < shards {
                let key = &source[(i * 7919) % n];
                i += 1;
                let start = Instant::now();
                *map.get_mut(key.as_str()).expect("present") += 1;
                let took = start.elapsed();
                let now = frozen.copied_shards();
                if now > copied {
                    copying.push(took);
                    copied = now;
                }
            }
            drop(frozen);
            let total: Duration = copying.iter().sum();
            let max = copying.iter().max().copied().unwrap_or_default();
            println!(
                "{n} entries, split at {split_at}, {shards} shards: freeze {:.1} us; first write to a shard after it: mean {:.0} us, max {:.0} us, all shards {:.1} ms ({:.0} ns/entry copied)",
                freeze.as_secs_f64() * 1e6,
                total.as_secs_f64() * 1e6 / shards as f64,
                max.as_secs_f64() * 1e6,
                total.as_secs_f64() * 1e3,
                ns_per(total, n)
            );
        }
    }
}

/// The calling thread's time on a CPU, in nanoseconds (Linux): on a shared machine, a
/// single-threaded figure that other processes inflate less than wall time.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().next().and_then(|ns| ns.parse().ok()))
        .unwrap_or(0)
}

#[test]
#[ignore]
fn measure_decode() {
    for n in [800_000, 1_000_000] {
        let source: HashMap<String, u64> = keys(n, 3).into_iter().zip(0..).collect();
        let bytes = postcard::to_stdvec(&source).expect("encode");
        // Wall time (best of 7), and the decoding thread's CPU time in that run. The value is
        // dropped after the clock stops.
        fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> (Duration, Duration) {
            (0..7)
                .map(|_| {
                    let cpu = thread_cpu_ns();
                    let start = Instant::now();
                    let value: T = postcard::from_bytes(bytes).expect("decode");
                    let wall = start.elapsed();
                    let cpu = Duration::from_nanos(thread_cpu_ns() - cpu);
                    drop(black_box(value));
                    (wall, cpu)
                })
                .min()
                .expect("runs")
        }
        let as_vec = decode::<Vec<(String, u64)>>(&bytes);
        let std_map = decode::<HashMap<String, u64>>(&bytes);
        let sharded = decode::<ShardedMap<String, u64>>(&bytes);
        let show =
            |(wall, cpu): (Duration, Duration)| format!("{} ms (thread CPU {} ms)", wall.as_millis(), cpu.as_millis());
        println!(
            "decode {n} String(32)->u64 from postcard ({} MB): as Vec<(K, V)> {}, HashMap {}, ShardedMap {}",
            bytes.len() >> 20,
            show(as_vec),
            show(std_map),
            show(sharded)
        );
    }
}
