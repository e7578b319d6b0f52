//! Prints the results as markdown tables: medians with their min–max range, the ratios that
//! say how close airomem comes to the limits, then the comparison with the peers
//! ([`crate::comparison`]).

use crate::commits::CommitResult;
use crate::measure::{REPETITIONS, Summary};
use crate::raw_disk::{GROUP, RECORD_LEN, RawDiskResults};
use crate::recovery::RecoveryResult;
use crate::results::{PeerResults, Results, Setting};
use crate::table::{Table, number, range, ratio, seconds};

/// Prints the whole report to standard output.
pub fn print(setting: &Setting, results: &Results) {
    println!("## airomem benchmark ({} mode)", setting.mode);
    println!();
    println!("- directory: `{}` on {}", setting.dir, setting.filesystem);
    println!(
        "- {} cores; every figure is the median of {REPETITIONS} runs, min–max after it; `sync` before each run",
        setting.cores
    );
    println!();
    disk_table(&results.raw).print();
    commit_table(&results.commits).print();
    peer_commit_table(&results.peers).print();
    recovery_table(&results.recovery).print();
    lookup_table(&results.recovery).print();
    crate::snapshot_stall::print(&results.stall);
    memory_table(&results.memory).print();
    migration_table(&results.migration, &results.memory).print();
    commit_api_table(results).print();
    replication_table(&results.replication).print();
    ratio_table(results).print();
    crate::comparison::print(results);
}

fn disk_table(raw: &RawDiskResults) -> Table {
    let mut table = Table::new("Disk limits (no airomem code)", &["loop", "records/s", "min–max", "per sync"]);
    let rows = [
        (format!("write {RECORD_LEN} B (O_APPEND) + fdatasync"), raw.append, 1),
        (format!("write {GROUP} × {RECORD_LEN} B (O_APPEND) + fdatasync"), raw.group, GROUP),
        (format!("overwrite {RECORD_LEN} B of a pre-zeroed file + fdatasync"), raw.overwrite, 1),
    ];
    for (name, rate, per_sync) in rows {
        table.row(vec![name, number(rate.median), range(rate, number), seconds(per_sync as f64 / rate.median)]);
    }
    table
}

fn commit_table(commits: &[CommitResult]) -> Table {
    let mut table = Table::new(
        "Durable commits (PostcardStore<Sessions>, Durability::Fsync, 90% create / 10% delete)",
        &["writers", "commits", "commits/s", "min–max", "avg batch", "syncs", "p50 latency", "p99 latency"],
    );
    for c in commits {
        let micros = |s: Summary| format!("{} ({})", seconds(s.median / 1e6), range(s, |v| seconds(v / 1e6)));
        table.row(vec![
            c.writers.to_string(),
            number(c.commits as f64),
            number(c.rate.median),
            range(c.rate, number),
            format!("{:.1} ({})", c.average_batch.median, range(c.average_batch, |v| format!("{v:.1}"))),
            number(c.syncs.median),
            micros(c.p50_micros),
            micros(c.p99_micros),
        ]);
    }
    table
}

fn peer_commit_table(peers: &[PeerResults]) -> Table {
    let mut table = Table::new(
        "Peers' durable commits (same workload, one OS thread per writer)",
        &["system", "writers", "commits", "commits/s", "min–max", "p50 latency", "p99 latency"],
    );
    for peer in peers {
        for c in &peer.commits {
            table.row(vec![
                peer.kind.name().into(),
                c.writers.to_string(),
                number(c.commits as f64),
                number(c.rate.median),
                range(c.rate, number),
                micros(c.p50_micros),
                micros(c.p99_micros),
            ]);
        }
    }
    table
}

/// A latency in microseconds with its range.
fn micros(s: Summary) -> String {
    format!("{} ({})", seconds(s.median / 1e6), range(s, |v| seconds(v / 1e6)))
}

fn recovery_table(r: &RecoveryResult) -> Table {
    let title = format!(
        "Recovery of {} commands ({:.1} MB journal in {} segment(s) of at most {} MiB, built at {} commands/s with \
         OsBuffered)",
        number(r.records as f64),
        r.journal_bytes as f64 / 1e6,
        r.segments,
        r.segment_size >> 20,
        number(r.build_rate)
    );
    let mut table = Table::new(&title, &["replay", "records/s", "min–max", "time"]);
    table.row(vec![
        "`Store::open`, wall clock".into(),
        number(r.open_rate.median),
        range(r.open_rate, number),
        format!("{} ({})", seconds(r.open_secs.median), range(r.open_secs, seconds)),
    ]);
    table.row(vec![
        "`Store::open`, `recovery().duration`".into(),
        number(r.replay_rate.median),
        range(r.replay_rate, number),
        seconds(r.records as f64 / r.replay_rate.median),
    ]);
    table.row(vec![
        "in memory: postcard decode + HashMap insert/remove".into(),
        number(r.memory_rate.median),
        range(r.memory_rate, number),
        format!("{} ({})", seconds(r.memory_secs.median), range(r.memory_secs, seconds)),
    ]);
    let snap = &r.snapshot;
    table.row(vec![
        format!("`Store::open` from a snapshot + {}-command tail, wall clock", number(snap.tail as f64)),
        number(snap.open_rate.median),
        range(snap.open_rate, number),
        format!("{} ({})", seconds(snap.open_secs.median), range(snap.open_secs, seconds)),
    ]);
    table
}

/// Memory beyond the state, against the bound docs/design.md (*Memory bounds*) states for it.
fn memory_table(m: &crate::memory::MemoryUse) -> Table {
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let title = format!(
        "Memory (resident, one fresh process, the recovery data set's store): the recovered state took {}",
        mb(m.state)
    );
    let mut table = Table::new(&title, &["step", "peak growth", "bound", "bound is"]);
    table.row(vec![
        "`Store::open`: replaying the journal".into(),
        mb(m.recovery_peak),
        mb(m.state + m.segment_size),
        "the state + one segment (+ decoded commands in flight)".into(),
    ]);
    table.row(vec![
        "`store.snapshot()`".into(),
        mb(m.snapshot_transient),
        mb(m.snapshot_image),
        "one serialized image (+ zstd's window and tables, a 1 MiB buffer)".into(),
    ]);
    table.row(vec![
        format!("{} commits from 64 writers (state kept steady)", number(m.flood_commits as f64)),
        mb(m.flood_transient),
        mb(m.queue_bound),
        "`max_pending_bytes` + one batch".into(),
    ]);
    table
}

/// A migrating open against the by-hand alternative, and its memory against a plain open's.
fn migration_table(m: &crate::migration::MigrationResult, memory: &crate::memory::MemoryUse) -> Table {
    let title = format!(
        "Schema migration of the {}-command store (schema 1 `Sessions` -> schema 2, `From`), sealed with a snapshot",
        number(m.records as f64)
    );
    let mut table = Table::new(&title, &["step", "time", "min–max", "÷ plain open + snapshot"]);
    let row = |table: &mut Table, name: &str, s: Summary| {
        table.row(vec![name.into(), seconds(s.median), range(s, seconds), ratio(s.median / m.plain_total.median)]);
    };
    row(&mut table, "plain `Store::open` (schema 1 types)", m.plain_open);
    row(&mut table, "+ one `store.snapshot()`", m.plain_snapshot);
    row(&mut table, "plain open + snapshot: the by-hand alternative", m.plain_total);
    row(&mut table, "migrating open from the journal alone (replay, convert, seal)", m.migrate_journal);
    row(&mut table, "migrating open from a schema-1 snapshot (decode, convert, seal)", m.migrate_snapshot);
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    table.row(vec![
        format!(
            "peak memory of the migrating open (journal alone), fresh process; schema-2 state left: {}",
            mb(m.migrated_state)
        ),
        mb(m.migrate_peak),
        format!("plain open's peak: {}", mb(memory.recovery_peak)),
        ratio(m.migrate_peak as f64 / memory.recovery_peak.max(1) as f64),
    ]);
    table
}

/// One task committing in turn, importing, and 64 writers committing atomic units.
fn commit_api_table(results: &Results) -> Table {
    let c = &results.commit_api;
    let mut table = Table::new(
        "The commit API: one task awaiting each commit, bulk import, atomic units (commands/s unless said)",
        &["loop", "rate", "min–max", "against", "ratio"],
    );
    lone_rows(&mut table, c.memory, &c.lone);
    against_row(
        &mut table,
        "one task, `commit().await` each, Fsync".into(),
        c.lone[2],
        "raw append + `fdatasync`",
        results.raw.append.median,
    );
    let peer =
        |kind: crate::peers::PeerKind| results.peers.iter().find(|p| p.kind == kind).map(|p| p.recovery.build_rate);
    for (i, name) in ["OsBuffered", "Fsync"].iter().enumerate() {
        let label = format!("`Store::import` of {} commands, one task, {name}", number(c.imported as f64));
        for kind in [crate::peers::PeerKind::Sqlite, crate::peers::PeerKind::Redb] {
            if let Some(rate) = peer(kind) {
                against_row(
                    &mut table,
                    label.clone(),
                    c.import[i],
                    &format!("{} one-transaction build", kind.name()),
                    rate,
                );
            }
        }
    }
    for (size, s) in &c.units {
        let commands =
            Summary { median: s.median * *size as f64, min: s.min * *size as f64, max: s.max * *size as f64 };
        against_row(
            &mut table,
            format!("64 writers, units of {size} (`commit_all`), Fsync: units/s"),
            *s,
            "—",
            s.median,
        );
        against_row(
            &mut table,
            "  the same in commands/s".to_string(),
            commands,
            "64 writers, single commits",
            results.commits.last().map_or(1.0, |r| r.rate.median),
        );
    }
    table
}

/// `--lone-ratio`: one task awaiting each commit, per policy, against the `Mutex<HashMap>`
/// loop over the same commands, as the full run measures them.
pub(crate) fn lone_table(memory: Summary, lone: &[Summary; 3], commands: u64) -> Table {
    let mut table = Table::new(
        &format!(
            "One task awaiting each commit, {} commands (Fsync: fewer), against the in-memory loop",
            number(commands as f64)
        ),
        &["loop", "rate", "min–max", "against", "ratio"],
    );
    lone_rows(&mut table, memory, lone);
    table
}

/// The `Mutex<HashMap>` loop, then one task awaiting each commit under each policy against it.
fn lone_rows(table: &mut Table, memory: Summary, lone: &[Summary; 3]) {
    against_row(table, "`Mutex<HashMap>` insert/remove loop, no store".into(), memory, "itself", memory.median);
    for ((name, _), s) in crate::commit_api::LONE_POLICIES.iter().zip(lone) {
        let name = format!("one task, `commit().await` each, {name}");
        against_row(table, name, *s, "`Mutex<HashMap>` loop", memory.median);
    }
}

/// A row of a rate, its range, what it is compared against and the ratio to `base`.
fn against_row(table: &mut Table, name: String, s: Summary, against: &str, base: f64) {
    table.row(vec![name, number(s.median), range(s, number), against.into(), ratio(s.median / base)]);
}

/// Three `airomem-raft` nodes in one process against a single-node store, and failover.
pub(crate) fn replication_table(r: &crate::replication::ReplicationResult) -> Table {
    let mut table = Table::new(
        "Replication: 3 nodes in one process (airomem-raft on openraft 0.9, in-process network, fdatasync on every \
         node) against one store (Fsync), session workload",
        &["measure", "one store", "3 nodes", "3 nodes ÷ one store"],
    );
    for (writers, single, cluster) in &r.commits {
        table.row(vec![
            format!("{writers} writer(s): commits/s"),
            format!("{} ({})", number(single.rate.median), range(single.rate, number)),
            format!("{} ({})", number(cluster.rate.median), range(cluster.rate, number)),
            ratio(cluster.rate.median / single.rate.median),
        ]);
        table.row(vec![
            format!("{writers} writer(s): latency p50"),
            micros(single.p50),
            micros(cluster.p50),
            ratio(cluster.p50.median / single.p50.median),
        ]);
        table.row(vec![
            format!("{writers} writer(s): latency p99"),
            micros(single.p99),
            micros(cluster.p99),
            ratio(cluster.p99.median / single.p99.median),
        ]);
    }
    if let (Some(first), Some(last)) = (r.failovers.first(), r.failovers.last()) {
        let p50 = crate::measure::percentile(&r.failovers, 50.0);
        table.row(vec![
            format!("failover over {} leader kills: p50 (min–max)", r.failovers.len()),
            "—".into(),
            format!(
                "{} ({}–{})",
                seconds(p50.as_secs_f64()),
                seconds(first.as_secs_f64()),
                seconds(last.as_secs_f64())
            ),
            "—".into(),
        ]);
    }
    table
}

/// Where a point lookup's time goes: the read lock, the map, both.
fn lookup_table(r: &RecoveryResult) -> Table {
    let title = format!(
        "Point lookups of existing tokens, random order, in the store recovered from {} commands",
        number(r.records as f64)
    );
    let mut table = Table::new(&title, &["lookup", "ns each", "min–max"]);
    let nanos = |s: Summary| (format!("{:.0}", s.median), range(s, |v| format!("{v:.0}")));
    for (name, s) in [
        ("`store.query()` guard + `tokens.get(token)` (the comparison row)", r.lookup_nanos),
        ("`tokens.get(token)` under one guard: the map alone", r.lookup_map_nanos),
        ("`store.query()` guard taken and dropped: the lock alone", r.lookup_lock_nanos),
    ] {
        let (median, range) = nanos(s);
        table.row(vec![name.into(), median, range]);
    }
    table
}

fn ratio_table(results: &Results) -> Table {
    let mut table = Table::new("Ratios (of medians)", &["ratio", "value"]);
    let raw = &results.raw;
    let by_writers = |n: usize| results.commits.iter().find(|c| c.writers == n);
    if let Some(one) = by_writers(1) {
        table.row(vec![
            "1-writer commits/s ÷ raw write + fdatasync records/s".into(),
            ratio(one.rate.median / raw.append.median),
        ]);
    }
    if let Some(many) = by_writers(64) {
        table.row(vec![
            format!("64-writer commits/s ÷ group-commit limit ({GROUP} records per write + fdatasync)"),
            ratio(many.rate.median / raw.group.median),
        ]);
        if let Some(one) = by_writers(1) {
            table.row(vec![
                "64-writer commits/s ÷ 1-writer commits/s".into(),
                ratio(many.rate.median / one.rate.median),
            ]);
        }
    }
    let r = &results.recovery;
    table.row(vec![
        "`Store::open` records/s ÷ in-memory decode + insert".into(),
        ratio(r.open_rate.median / r.memory_rate.median),
    ]);
    table.row(vec![
        "`recovery().duration` records/s ÷ in-memory decode + insert".into(),
        ratio(r.replay_rate.median / r.memory_rate.median),
    ]);
    table
}
