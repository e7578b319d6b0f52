//! Following a live journal without the application's types: what `airomem dump --follow`
//! prints after the dump.

use std::path::Path;
use std::sync::Arc;

use airomem_core::Seq;
use airomem_core::storage::{StdStorage, Storage};
use airomem_journal::frame::RecordKind;

use super::records::{Kind, RecordInfo};
use crate::Error;
use crate::read_only::tail::{Tail, TailError, TailRecord};
use crate::read_only::view::HistoryView;

/// A cursor in the journal of the store in `dir` that hands over the records of each batch
/// once it is final (see [`crate::Follower`]): whole, and past the point where an abort
/// marker could still be written for one of its commands. Takes no lock, writes nothing.
#[derive(Debug)]
pub struct Follow {
    tail: Tail,
    dir: std::path::PathBuf,
}

/// A cursor before record `next` of the store in `dir`; [`Follow::poll`] reads from there.
pub fn follow(dir: impl AsRef<Path>, next: Seq) -> Result<Follow, Error> {
    let dir = dir.as_ref().to_path_buf();
    let storage: Arc<dyn Storage> = Arc::new(HistoryView::new(Arc::new(StdStorage::default()), &dir));
    let tail = Tail::before(storage, &dir, next).map_err(|e| gone(e, &dir))?;
    Ok(Follow { tail, dir })
}

impl Follow {
    /// The records of the batches that became final since the last call, abort markers and
    /// cancelled commands included (marked), oldest first; empty if none.
    ///
    /// Errors: damage in a sealed segment, a gap, and [`Error::RemovedWhileReading`] if the
    /// store's retention removed the segment the cursor was in (the follower fell behind a
    /// snapshot: the records it had not read are gone from the journal).
    pub fn poll(&mut self) -> Result<Vec<RecordInfo>, Error> {
        let advance = self.tail.advance().map_err(|e| gone(e, &self.dir))?;
        Ok(advance.records.into_iter().map(info).collect())
    }

    /// The sequence number of the next record it will hand over.
    pub fn next(&self) -> Seq {
        self.tail.next()
    }
}

fn gone(e: TailError, dir: &Path) -> Error {
    match e {
        TailError::Failed(e) => e,
        TailError::Gone => Error::RemovedWhileReading { path: dir.to_path_buf() },
    }
}

fn info(r: TailRecord) -> RecordInfo {
    RecordInfo {
        seq: r.seq,
        unix_nanos: r.unix_nanos,
        kind: match r.kind {
            RecordKind::Command => Kind::Command,
            RecordKind::Abort => Kind::Abort { cancels: r.cancels },
        },
        batch_start: r.batch_start,
        batch_end: r.batch_end,
        unit_continues: r.unit_next,
        cancelled: r.cancelled,
        segment: r.segment,
        offset: r.offset,
        serializer: r.serializer,
        schema_version: r.schema_version,
        payload: r.payload,
    }
}
