//! The comparison with the peers: one markdown table with the workloads as rows and the
//! systems as columns (the best of each row in bold), airomem's ratio to each peer, and the
//! footnotes that say how each system was set up and which ones really sync.

use crate::measure::{DiskUse, Summary};
use crate::peers::PeerKind;
use crate::results::{PeerResults, Results};
use crate::sync_probe::{PROBE_COMMITS, SyncProbe};
use crate::table::{Table, megabytes, number, range, ratio, seconds};

/// Which way a row improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// One system's figure in a row: the value compared, and its text.
#[derive(Clone, Debug)]
struct Cell {
    value: f64,
    text: String,
}

impl Cell {
    fn rate(s: Summary) -> Cell {
        Cell { value: s.median, text: format!("{} ({})", number(s.median), range(s, number)) }
    }

    fn micros(s: Summary) -> Cell {
        let time = |v: f64| seconds(v / 1e6);
        Cell { value: s.median, text: format!("{} ({})", time(s.median), range(s, time)) }
    }

    fn secs(s: Summary) -> Cell {
        Cell { value: s.median, text: format!("{} ({})", seconds(s.median), range(s, seconds)) }
    }

    fn nanos(s: Summary) -> Cell {
        Cell { value: s.median, text: format!("{} ns ({})", number(s.median), range(s, number)) }
    }

    fn bytes(d: DiskUse) -> Cell {
        Cell { value: d.allocated as f64, text: megabytes(d) }
    }
}

/// A workload: airomem's cell first, then one per peer in [`PeerKind::ALL`] order.
struct Row {
    label: String,
    better: Better,
    cells: Vec<Option<Cell>>,
}

/// Prints the comparison tables and their footnotes.
pub fn print(results: &Results) {
    let rows = rows(results);
    let names = column_names(results);
    comparison_table(&rows, &names).print();
    footnotes(results);
    ratio_table(&rows, &names).print();
}

fn column_names(results: &Results) -> Vec<String> {
    let mut names = vec!["airomem".to_string()];
    for peer in &results.peers {
        let probe = results.syncs.iter().find(|(id, _)| *id == peer.kind.id()).map(|(_, probe)| probe);
        let unsynced = probe.and_then(SyncProbe::total).is_some_and(|n| n < 0.5);
        names.push(if unsynced { format!("{} (no fsync)†", peer.kind.name()) } else { peer.kind.name().into() });
    }
    names
}

fn rows(results: &Results) -> Vec<Row> {
    let peers = &results.peers;
    let row = |label: String, better, airomem: Option<Cell>, peer: &dyn Fn(&PeerResults) -> Option<Cell>| Row {
        label,
        better,
        cells: std::iter::once(airomem).chain(peers.iter().map(peer)).collect(),
    };
    let mut rows = Vec::new();
    for writers in [1, 16, 64] {
        let airomem = results.commits.iter().find(|c| c.writers == writers).map(|c| Cell::rate(c.rate));
        let peer = |p: &PeerResults| p.commits.iter().find(|c| c.writers == writers).map(|c| Cell::rate(c.rate));
        rows.push(row(format!("durable commits/s, {writers} writer(s)"), Better::Higher, airomem, &peer));
    }
    let at_64 = results.commits.iter().find(|c| c.writers == 64);
    let peer_at_64 = |p: &PeerResults| p.commits.iter().find(|c| c.writers == 64).copied();
    rows.push(row(
        "commit latency p50, 64 writers".into(),
        Better::Lower,
        at_64.map(|c| Cell::micros(c.p50_micros)),
        &|p| peer_at_64(p).map(|c| Cell::micros(c.p50_micros)),
    ));
    rows.push(row(
        "commit latency p99, 64 writers".into(),
        Better::Lower,
        at_64.map(|c| Cell::micros(c.p99_micros)),
        &|p| peer_at_64(p).map(|c| Cell::micros(c.p99_micros)),
    ));
    let r = &results.recovery;
    let records = number(r.records as f64);
    rows.push(row(
        format!("recovery of {records} commands (open → all sessions in memory)"),
        Better::Lower,
        Some(Cell::secs(r.open_secs)),
        &|p| Some(Cell::secs(p.recovery.recover_secs)),
    ));
    rows.push(row(
        format!("recovery from a snapshot + {}-command tail", number(r.snapshot.tail as f64)),
        Better::Lower,
        Some(Cell::secs(r.snapshot.open_secs)),
        &|p| p.recovery.snapshot.map(|(secs, _)| Cell::secs(secs)),
    ));
    rows.push(row(
        "point lookup of an existing token".into(),
        Better::Lower,
        Some(Cell::nanos(r.lookup_nanos)),
        &|p| Some(Cell::nanos(p.recovery.lookup_nanos)),
    ));
    rows.push(row(format!("disk use after {records} commands"), Better::Lower, Some(Cell::bytes(r.disk)), &|p| {
        Some(Cell::bytes(p.recovery.disk))
    }));
    rows.push(row(
        "disk use after a snapshot + tail (and retention)".into(),
        Better::Lower,
        Some(Cell::bytes(r.snapshot.disk)),
        &|p| p.recovery.snapshot.map(|(_, disk)| Cell::bytes(disk)),
    ));
    rows
}

/// The best median of a row, by its direction.
fn best(row: &Row) -> Option<f64> {
    let values = row.cells.iter().flatten().map(|c| c.value);
    match row.better {
        Better::Higher => values.max_by(f64::total_cmp),
        Better::Lower => values.min_by(f64::total_cmp),
    }
}

fn comparison_table(rows: &[Row], names: &[String]) -> Table {
    let mut headers = vec!["workload (median, min–max of 3; best in bold)"];
    headers.extend(names.iter().map(String::as_str));
    let mut table = Table::new("airomem and its peers (same workload, same run, same file system)", &headers);
    for row in rows {
        let best = best(row);
        let mut cells = vec![row.label.clone()];
        cells.extend(row.cells.iter().map(|cell| match cell {
            Some(c) if Some(c.value) == best => format!("**{}**", c.text),
            Some(c) => c.text.clone(),
            None => "—".into(),
        }));
        table.row(cells);
    }
    table
}

fn ratio_table(rows: &[Row], names: &[String]) -> Table {
    let mut headers = vec!["airomem vs each peer (>1× = airomem better)"];
    headers.extend(names.iter().skip(1).map(String::as_str));
    let mut table =
        Table::new("Ratios of medians: for rates airomem ÷ peer, for times and sizes peer ÷ airomem", &headers);
    for row in rows {
        let mut cells = vec![row.label.clone()];
        let airomem = row.cells.first().and_then(Option::as_ref);
        cells.extend(row.cells.iter().skip(1).map(|peer| match (airomem, peer) {
            (Some(a), Some(p)) if row.better == Better::Higher => ratio(a.value / p.value),
            (Some(a), Some(p)) => ratio(p.value / a.value),
            _ => "—".into(),
        }));
        table.row(cells);
    }
    table
}

fn footnotes(results: &Results) {
    let r = &results.recovery;
    let records = number(r.records as f64);
    let syncs: Vec<String> = results
        .syncs
        .iter()
        .map(|(id, probe)| {
            let name = PeerKind::from_id(id).map_or("airomem", PeerKind::name);
            format!("{name}: {} per commit", probe.describe())
        })
        .collect();
    println!(
        "- **Sync check** (`strace -f -e trace=fdatasync,fsync,sync_file_range`, {PROBE_COMMITS} commits from one \
         writer, minus a run with none): {}. † = makes no sync call at all: its \"durable\" commits only reach the \
         page cache, and a power loss or kernel crash loses them; its commit figures are not durable commits.",
        syncs.join("; ")
    );
    let airomem_commits: Vec<String> = results.commits.iter().map(|c| number(c.commits as f64)).collect();
    let peer_commits: Vec<String> =
        results.peers.first().map_or(Vec::new(), |p| p.commits.iter().map(|c| number(c.commits as f64)).collect());
    println!(
        "- **Commits**: 90% create / 10% delete. airomem: `PostcardStore<Sessions>`, `Durability::Fsync`, one store \
         cloned into one tokio task per writer (group commit), {} commits per repetition at 1/16/64 writers. Peers: \
         one OS thread per writer, {} commits per repetition (each of their commits pays its own sync).",
        airomem_commits.join(" / "),
        peer_commits.join(" / ")
    );
    for peer in &results.peers {
        println!("  - {}: {}.", peer.kind.name(), peer.kind.sharing());
    }
    let builds: Vec<String> = results
        .peers
        .iter()
        .map(|p| format!("{} {} commands/s", p.kind.name(), number(p.recovery.build_rate)))
        .collect();
    println!(
        "- **Recovery** of the same {records}-command data set (every system verified to hold exactly the expected \
         sessions): airomem `Store::open` of a postcard journal in {} segment(s) of at most {} MiB; airomem 0.7 \
         `Store::open` of one JSON journal; prevayler-rs `PrevaylerBuilder::build` replaying its JSON redo logs; \
         SQLite open + `SELECT token, user_id FROM sessions` into a `HashMap`; redb `Database::open` + iterating the \
         table into a `HashMap`. Data sets built (not timed figures) as fast as each API allows: airomem with \
         `OsBuffered` at {} commands/s; {} (SQLite in one transaction, redb in one write transaction, airomem 0.7 \
         with `JournalFlushPolicy::Manually`, prevayler-rs through its only API).",
        r.segments,
        r.segment_size >> 20,
        number(r.build_rate),
        builds.join(", ")
    );
    println!(
        "- **Snapshot + tail**: airomem `store.snapshot()` after the data set ({:.1} MB serialized → {:.1} MB file), \
         then {} durable commands from 64 writers, then `Store::open`; airomem 0.7 built with \
         `max_journal_entries({records} − {})`, so that its automatic JSON snapshot is written (synchronously, under \
         its write lock) before the last {} commands; prevayler-rs not measured: its snapshot loader rescans the \
         whole buffer for a newline after every 1 KiB it reads, quadratic in the snapshot's size; SQLite and redb \
         replay no journal: their recovery is the row above.",
        r.snapshot.raw_len as f64 / 1e6,
        r.snapshot.file_len as f64 / 1e6,
        number(r.snapshot.tail as f64),
        number(r.snapshot.tail as f64),
        number(r.snapshot.tail as f64),
    );
    println!(
        "- **Lookups** ({} existing tokens per repetition, each with its own lock): airomem `store.query()` guard + \
         `HashMap::get`; airomem 0.7 `store.query().await` (a tokio `RwLock`) + `get`, all inside one `block_on`; \
         prevayler-rs `RwLock::read` + `query()` + `get`; SQLite the connection's mutex + a cached prepared `SELECT`; \
         redb `begin_read` + `open_table` + `get`.",
        number(results.lookups as f64)
    );
    println!(
        "- **Disk use**: blocks allocated (`du`), store closed. SQLite after close has checkpointed and removed its \
         WAL. After the snapshot, airomem's retention (`snapshots_retained(1)`, raised to 2: a first snapshot \
         keeps the journal as its fallback) removed {} of its {} segment(s); \
         airomem 0.7 never removes a journal or a snapshot (with its defaults it writes a full snapshot every \
         65,535 commands and keeps them all).",
        r.snapshot.segments_removed, r.segments
    );
    println!();
}
