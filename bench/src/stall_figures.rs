//! What the snapshot-stall measurements share with the freeze-cost ones: how the built
//! stores name their sessions, and the figures of a set of snapshots.

use std::time::Duration;

use airomem::SnapshotInfo;
use airomem_workspace::token;

use crate::frozen_states::Variant;
use crate::measure::Summary;
use crate::table::{number, range};

/// Writer tasks that build the store (not timed).
pub(crate) const BUILD_WRITERS: usize = 64;
/// Streams of the building tasks; far from those of the dataset and of the windows.
pub(crate) const BUILD_STREAM: u64 = 1 << 20;

/// What a set of snapshots cost, from their [`SnapshotInfo`]s.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotFigures {
    /// Snapshots.
    pub count: usize,
    /// The writers' stall, `freeze_time`, seconds.
    pub freeze_secs: Summary,
    /// Serialization (with the frozen view: serialization, compression and writing of the
    /// body, one stream), seconds.
    pub serialize_secs: Summary,
    /// The rest, seconds.
    pub write_secs: Summary,
    /// Bytes of the serialized state.
    pub raw_len: Summary,
    /// Bytes of the snapshot file.
    pub file_len: Summary,
    /// Shards the writers copied while a view held them.
    pub shards_copied: Summary,
}

impl SnapshotFigures {
    /// The figures of `infos`, which must not be empty.
    pub fn of(infos: &[SnapshotInfo]) -> SnapshotFigures {
        let secs = |d: Duration| d.as_secs_f64();
        SnapshotFigures {
            count: infos.len(),
            freeze_secs: Summary::over(infos, |i| secs(i.freeze_time)),
            serialize_secs: Summary::over(infos, |i| secs(i.serialize_time)),
            write_secs: Summary::over(infos, |i| secs(i.write_time)),
            raw_len: Summary::over(infos, |i| i.raw_len as f64),
            file_len: Summary::over(infos, |i| i.file_len as f64),
            shards_copied: Summary::over(infos, |i| i.shards_copied as f64),
        }
    }
}

/// The token of session `i` of a store `snapshot_stall::build` made with `sessions` sessions.
pub fn built_token(i: u64, sessions: u64) -> String {
    let writers = BUILD_WRITERS as u64;
    let (each, rest) = (sessions / writers, sessions % writers);
    let long = rest * (each + 1);
    let (index, offset) =
        if i < long { (i / (each + 1), i % (each + 1)) } else { (rest + (i - long) / each, (i - long) % each) };
    token(((BUILD_STREAM + index) << 32) + offset)
}

/// Shards copied, where the state can tell (imbl's maps cannot: their `Freeze` answers 0).
pub(crate) fn copied(variant: Variant, s: Summary) -> String {
    match variant {
        Variant::Sharded => format!("{} ({})", number(s.median), range(s, number)),
        Variant::Plain => "— (no view)".into(),
        Variant::Imbl | Variant::ImblOrd => "— (not counted)".into(),
    }
}
