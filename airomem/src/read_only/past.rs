//! Point-in-time reads: the state of a store as it was after a given command or at a given
//! time, rebuilt from the files without the store's lock and without changing anything.
//!
//! A read goes through [`HistoryView`], a storage that refuses every write. Whatever the
//! recovery code would repair after a crash (a torn tail, an unfinished file) it only plans,
//! and reads as if it were done. The view also merges the store's [`ARCHIVE_DIR`] into its
//! directory, so history that retention archived (with
//! [`crate::StoreOptions::keep_history`]) is found where recovery looks for it.
//!
//! [`ARCHIVE_DIR`]: crate::ARCHIVE_DIR

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airomem_core::storage::Storage;
use airomem_core::{Seq, Serializer, State};
use airomem_journal::frame::RecordKind;
use airomem_journal::scan::SegmentScan;
use airomem_journal::{JournalConfig, JournalError, Repair, ReplayError, ReplayRange, replay, segment};

use crate::Error;
use crate::layout::snapshot_seq;
use crate::options::StoreOptions;
use crate::read_only::inspect::{LeftBehind, intact_prefix};
use crate::read_only::view::{HistoryView, reread_while_retention_runs};
use crate::recover::recover;

/// Where a point-in-time read stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum At {
    /// Everything on disk.
    Latest,
    /// Up to and including this command. A point inside an atomic unit reads as the point
    /// before the unit: units are seen whole or not at all.
    Seq(Seq),
    /// Every command committed at or before this time (by its recorded commit time).
    Time(SystemTime),
}

/// A store's state as it was at one point of its history: read from the files by
/// [`Past::open`], owned by the caller, detached from any running store.
#[derive(Debug)]
pub struct Past<S> {
    state: S,
    seq: Seq,
    unix_nanos: Option<u64>,
}

impl<S: State> Past<S> {
    /// Rebuilds the state of the store in `dir` as it was at `at`: from the newest snapshot
    /// at or before that point and the journal after it, through the schema chain like an
    /// open, and in the archive too if the store keeps history.
    ///
    /// It takes no lock and writes nothing, so it may run beside the live store and on a
    /// store that crashed (what an open would cut as a torn tail is left out here, and left
    /// on disk). Beside the live store it reads a gapless prefix of the history, never
    /// shorter than an earlier read's: whole batches only (one the store is still writing is
    /// left out), and never a command that the store cancels (a command that panics is
    /// cancelled by the read exactly as by the store). Under [`crate::Durability::Fsync`]
    /// everything it shows was synced; under weaker policies it may show commands written
    /// but not yet synced, which a power cut can still take. It blocks the calling thread
    /// while it reads; from async code, call it in `tokio::task::spawn_blocking`.
    ///
    /// Errors: [`Error::NotAStore`] if `dir` holds no store, [`Error::BeyondHistory`] for a
    /// command the store has not reached, [`Error::HistoryGone`] when retention removed
    /// what the point needs, and whatever [`crate::Store::open`] would report about damage
    /// or types. A file the running store's retention removes while the read needs it
    /// makes the read start over from the newer snapshot; [`Error::RemovedWhileReading`]
    /// only if that keeps happening.
    pub fn open<Z: Serializer>(serializer: Z, dir: impl AsRef<Path>, at: At) -> Result<Past<S>, Error> {
        Past::open_with(serializer, dir, at, &StoreOptions::default())
    }

    /// [`Past::open`] through the storage of `options` (see [`crate::StoreOptions::storage`]),
    /// for a store opened with one. The other options do not matter to a read.
    pub fn open_with<Z: Serializer>(
        serializer: Z,
        dir: impl AsRef<Path>,
        at: At,
        options: &StoreOptions,
    ) -> Result<Past<S>, Error> {
        let dir = dir.as_ref().to_path_buf();
        let view: Arc<dyn Storage> = Arc::new(HistoryView::new(Arc::clone(&options.storage), &dir));
        let config = JournalConfig {
            storage: view,
            dir: dir.clone(),
            serializer: Z::ID,
            schema_version: S::SCHEMA_VERSION,
            segment_size: u64::MAX,
            preallocate: 0,
        };
        // Retention removes files only once a newer snapshot covers them, oldest first: a
        // read that failed while it ran may have lost a file to it (a segment listed and gone,
        // or a gap between the snapshot read and the segments listed after it), and one
        // started again begins from the newer snapshot.
        reread_while_retention_runs(&*config.storage, &config.dir, Result::is_ok, || {
            Past::read(&config, &serializer, at)
        })
    }

    /// Rebuilds the state of a damaged store up to the last intact record before its first
    /// damage (see [`crate::inspect::intact_prefix`]), and says what was left behind:
    /// `None` if the store has no damage, and then the state is [`At::Latest`]'s. Reads as
    /// [`Past::open`] does, changing nothing. For an operator who must get at the data of a
    /// store that `Store::open` refuses; the caller decides what to do about the records
    /// left behind, which this never hides.
    pub fn open_intact<Z: Serializer>(
        serializer: Z,
        dir: impl AsRef<Path>,
    ) -> Result<(Past<S>, Option<LeftBehind>), Error> {
        let prefix = intact_prefix(dir.as_ref())?;
        let Some(left_behind) = prefix.left_behind else {
            return Ok((Past::open(serializer, dir, At::Latest)?, None));
        };
        Ok((Past::open(serializer, dir, At::Seq(prefix.last))?, Some(left_behind)))
    }

    fn read<Z: Serializer>(config: &JournalConfig, serializer: &Z, at: At) -> Result<Past<S>, Error> {
        let files = Files::list(config)?;
        let point = files.locate(config, at)?;
        let recovered = match recover::<S, Z>(config, serializer, Some(point.seq)) {
            Ok(recovered) => recovered,
            Err(Error::Journal(e)) if matches!(*e, JournalError::MissingRecords { .. }) => {
                // The point asked for, not the one an atomic unit it falls in moved it to.
                let wanted = if let At::Seq(asked) = at { asked } else { point.seq };
                return Err(Error::HistoryGone { dir: config.dir.clone(), wanted, earliest: files.earliest() });
            }
            Err(e) => return Err(e),
        };
        Ok(Past { state: recovered.state, seq: point.seq, unix_nanos: point.unix_nanos })
    }

    /// The state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The state, to keep.
    pub fn into_state(self) -> S {
        self.state
    }

    /// The point the state is at: after every command up to this sequence number (`Seq(0)`:
    /// before the first), or for [`At::Time`], up to the last record committed by then.
    /// Commands cancelled by a panic never count, and an atomic unit only once its last
    /// command is included.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// The recorded commit time of the last command the state includes, if the journal still
    /// holds it.
    pub fn time(&self) -> Option<SystemTime> {
        self.unix_nanos.map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
    }
}

/// The point a read stops at, resolved to a command.
struct Point {
    seq: Seq,
    unix_nanos: Option<u64>,
}

/// The segments and snapshots a read can use, archive included.
struct Files {
    segments: Vec<Seq>,
    snapshots: Vec<Seq>,
}

impl Files {
    fn list(config: &JournalConfig) -> Result<Files, Error> {
        let names = match config.storage.list(&config.dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotAStore { dir: config.dir.clone() });
            }
            Err(e) => return Err(Error::Io { op: "list", path: config.dir.clone(), source: Arc::new(e) }),
        };
        let mut segments: Vec<Seq> = names.iter().filter_map(|n| segment::parse_file_name(n)).collect();
        segments.sort_unstable();
        let mut snapshots: Vec<Seq> = names.iter().filter_map(|n| snapshot_seq(n)).collect();
        snapshots.sort_unstable();
        if segments.is_empty() && snapshots.is_empty() {
            return Err(Error::NotAStore { dir: config.dir.clone() });
        }
        Ok(Files { segments, snapshots })
    }

    /// The earliest point that can be rebuilt: the start, if the journal reaches back to
    /// it, or else the oldest snapshot.
    fn earliest(&self) -> Seq {
        match (self.segments.first(), self.snapshots.first()) {
            (Some(&first), _) if first == Seq::FIRST => Seq(0),
            (_, Some(&oldest)) => oldest,
            (Some(&first), None) => Seq(first.0 - 1),
            (None, None) => Seq(0),
        }
    }

    /// Resolves the point to the last record the state includes, walking the journal's live
    /// commands from its oldest segment on, and checks it is not past the end.
    fn locate(&self, config: &JournalConfig, at: At) -> Result<Point, Error> {
        let Some(&from) = self.segments.first() else {
            // Only snapshots: the newest is the whole history there is.
            let newest = self.snapshots.last().copied().unwrap_or(Seq(0));
            return match at {
                At::Seq(wanted) if wanted > newest => {
                    Err(Error::BeyondHistory { dir: config.dir.clone(), wanted, last: newest })
                }
                At::Seq(wanted) if wanted < newest => {
                    Err(Error::HistoryGone { dir: config.dir.clone(), wanted, earliest: self.earliest() })
                }
                _ => Ok(Point { seq: newest, unix_nanos: None }),
            };
        };
        if let At::Time(time) = at {
            let limit = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()) as u64;
            if let Some(point) = self.before_time(config, limit)? {
                // A time before the journal's first record reaches only the state before it,
                // which exists only if the journal starts at the very beginning or a
                // snapshot sits there.
                if point.seq.next() == from && from != Seq::FIRST && !self.snapshots.contains(&point.seq) {
                    return Err(Error::HistoryGone {
                        dir: config.dir.clone(),
                        wanted: point.seq,
                        earliest: self.earliest(),
                    });
                }
                return Ok(point);
            }
        }
        let skip = Default::default();
        let until = match at {
            At::Seq(seq) => Some(seq),
            At::Latest | At::Time(_) => None,
        };
        // The commit time of the last live command the point includes.
        let mut included: Option<u64> = None;
        let mut repair = Repair::default();
        let range = ReplayRange { from, until, skip: &skip, beside_writer: true, next_record: None };
        let walked = replay(config, range, Some(&mut repair), |record| {
            included = Some(record.unix_nanos);
            Ok::<(), ()>(())
        });
        let walked = match walked {
            // Damage in history a snapshot at or before the point covers: walk from that
            // snapshot instead, past the damage, as the read itself will.
            Err(ReplayError::Journal(JournalError::Corrupt { seq: damaged, .. }))
                if let Some((snapshot, next_record)) = self.snapshot_past(config, damaged, until) =>
            {
                included = None;
                let range = ReplayRange { from: snapshot.next(), until, skip: &skip, beside_writer: true, next_record };
                replay(config, range, Some(&mut repair), |record| {
                    included = Some(record.unix_nanos);
                    Ok::<(), ()>(())
                })
            }
            walked => walked,
        };
        let (last, held_back) = match walked {
            Ok(outcome) => (Seq(outcome.next_seq.0 - 1), outcome.held_back_from),
            Err(ReplayError::Journal(e)) => return Err(e.into()),
            Err(ReplayError::Visit(())) => unreachable!("the visitor never stops the walk"),
        };
        // What the state includes ends before the first command held back: a batch the
        // store is still writing, or an atomic unit that ends past the point asked for.
        let reached = held_back.map_or(last, |first| Seq(first.0 - 1));
        match at {
            At::Seq(wanted) if wanted > last => Err(Error::BeyondHistory { dir: config.dir.clone(), wanted, last }),
            At::Seq(wanted) => Ok(Point { seq: wanted.min(reached), unix_nanos: included }),
            At::Latest | At::Time(_) => Ok(Point { seq: reached, unix_nanos: included }),
        }
    }

    /// The newest snapshot at or after record `damaged` (and at or before `until`) that
    /// records where its next record starts, with that position.
    fn snapshot_past(
        &self,
        config: &JournalConfig,
        damaged: Seq,
        until: Option<Seq>,
    ) -> Option<(Seq, Option<(Seq, u64)>)> {
        #[cfg(feature = "snapshot")]
        {
            self.snapshots.iter().rev().filter(|&&s| s >= damaged && until.is_none_or(|u| s <= u)).find_map(|&s| {
                let header = airomem_snapshot::read_header(&*config.storage, &config.dir, s).ok()?;
                header.next_record.map(|p| (s, Some((p.segment, p.offset))))
            })
        }
        #[cfg(not(feature = "snapshot"))]
        {
            let _ = (config, damaged, until);
            None
        }
    }

    /// The point just before the first record (of any kind) committed after `limit`, or
    /// `None` if every record was committed by then. Abort markers and cancelled commands
    /// count: the state is the same either side of them, and a snapshot may sit on one.
    /// Reads the segments' frames alone (one segment at a time): damage ends the walk, and
    /// the replay that follows judges it.
    fn before_time(&self, config: &JournalConfig, limit: u64) -> Result<Option<Point>, Error> {
        let mut included = None;
        for &first in &self.segments {
            let path = segment::path(&config.dir, first);
            let bytes = config.storage.read(&path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::RemovedWhileReading { path: path.clone() },
                _ => Error::Io { op: "read", path: path.clone(), source: Arc::new(e) },
            })?;
            let scan = SegmentScan::read(&path, &bytes)?;
            for frame in scan.frames(&bytes) {
                if frame.unix_nanos > limit {
                    return Ok(Some(Point { seq: Seq(frame.seq.0 - 1), unix_nanos: included }));
                }
                if frame.kind == RecordKind::Command && !scan.aborted.contains(&frame.seq) {
                    included = Some(frame.unix_nanos);
                }
            }
        }
        Ok(None)
    }
}
