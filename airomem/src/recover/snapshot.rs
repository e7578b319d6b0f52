//! Loading the newest snapshot that verifies (feature `snapshot`): where replay starts.

use airomem_core::{Seq, Serializer, State};
use airomem_journal::JournalConfig;
use airomem_snapshot::SnapshotError;
use tracing::warn;

use crate::Error;
use crate::error::snapshot_error;
use crate::recover::migrate::{Chain, Held};
use crate::recover::replay::Base;

/// Loads the newest snapshot that verifies and decodes, with a sequence number no higher
/// than `until`, whichever schema of `chain` wrote it. Damaged snapshots are passed over
/// with a warning; a snapshot written with another serializer or format version, under a
/// schema the chain does not reach, or one that verifies but does not decode with the
/// types of its schema, is an error, since older ones would be too.
pub(crate) fn load_newest<S: State, Z: Serializer>(
    config: &JournalConfig,
    serializer: &Z,
    chain: &Chain<S, Z>,
    until: Option<Seq>,
) -> Result<Base<S>, Error> {
    let storage = &*config.storage;
    let mut skipped = Vec::new();
    let candidates = airomem_snapshot::list(storage, &config.dir).map_err(snapshot_error)?;
    // A name past the bound no journal reaches is no proof of anything: it is damage, passed
    // over below like any other.
    let newest_on_disk = candidates
        .iter()
        .rev()
        .copied()
        .find(|&s| s.0 <= airomem_snapshot::format::MAX_SEQ && until.is_none_or(|u| s <= u))
        .unwrap_or(Seq(0));
    for &seq in candidates.iter().rev().filter(|&&s| until.is_none_or(|u| s <= u)) {
        let loaded = airomem_snapshot::load(storage, &config.dir, seq, config.serializer);
        let reason = match loaded {
            // The image verified (checksums, lengths, zstd's own checksum): bytes that do not
            // decode are a type change, not damage, and an older snapshot written by the same
            // types would not decode either.
            Ok((header, image)) => {
                let file = airomem_snapshot::path(&config.dir, seq);
                let state = chain.decode_state(serializer, header.schema_version, &image, &file, seq)?;
                let next_record = header.next_record.map(|p| (p.segment, p.offset));
                return Ok(Base { state, seq, skipped, newest_on_disk, next_record });
            }
            Err(e @ SnapshotError::Damaged { .. }) => e.to_string(),
            // Listed a moment ago: a reader without the lock raced the store's retention. It
            // is no damage, and an older snapshot would only lead to more removed files.
            Err(SnapshotError::Io { path, source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::RemovedWhileReading { path });
            }
            // The reason is kept as text: the operating system's error goes into it too.
            Err(SnapshotError::Io { op, path, source }) => format!("{op} {}: {source}", path.display()),
            Err(e) => return Err(snapshot_error(e)),
        };
        warn!(reason, "skipping a snapshot that does not verify; falling back to an older one");
        skipped.push(reason);
    }
    // No snapshot verified (or there is none): replay from the start.
    Ok(Base { state: Held::Empty, seq: Seq(0), skipped, newest_on_disk, next_record: None })
}
