//! Reading a backup's files back and checking them: each against the manifest (length,
//! crc32c), and all of them together (the snapshot verifies; the segments continue one
//! another from the record after the snapshot to the cut, which ends a batch).

use std::collections::BTreeSet;
use std::path::Path;

use airomem_core::{Seq, SerializerId};
use airomem_journal::scan::SegmentScan;
use airomem_journal::segment;

use crate::backup::manifest::{MANIFEST_FILE, Manifest, ManifestFile};
use crate::error::{BackupProblem, Error};

/// What the files of a cut hold, read and checked together.
pub(crate) struct Examined {
    pub(crate) serializer: SerializerId,
    pub(crate) schema: u32,
    pub(crate) seq: Seq,
    pub(crate) files: Vec<ManifestFile>,
}

fn inconsistent(path: &Path, reason: String) -> Error {
    Error::Backup { path: path.to_path_buf(), problem: BackupProblem::Inconsistent { reason } }
}

/// Reads `snapshot` and `segments` (in order) from `dir` and checks them as one cut: the
/// snapshot verifies whole, every segment verifies with no damage and no bytes after its
/// records, each continues the one before it, the first holds the record after the
/// snapshot, and the last ends at a batch boundary (outside an atomic unit) at or after the
/// snapshot.
///
/// With `expect` (a manifest's files, in the same order), each file's length and checksum
/// are compared as soon as it is read, so damage is reported as such, before its content is
/// interpreted.
pub(crate) fn examine(
    dir: &Path,
    snapshot: Option<Seq>,
    segments: &[Seq],
    expect: Option<&[ManifestFile]>,
) -> Result<Examined, Error> {
    let mut files = Vec::new();
    let read = |path: &Path, index: usize| -> Result<Vec<u8>, Error> {
        let bytes = read(path)?;
        if let Some(want) = expect.and_then(|files| files.get(index)) {
            let got = described(path, &bytes);
            let what = if want.len != got.len {
                format!("{} bytes, the manifest says {}", got.len, want.len)
            } else if want.crc != got.crc {
                format!("crc32c {:08x}, the manifest says {:08x}", got.crc, want.crc)
            } else {
                return Ok(bytes);
            };
            return Err(Error::Backup {
                path: path.to_path_buf(),
                problem: BackupProblem::FileDamaged { name: want.name.clone(), what },
            });
        }
        Ok(bytes)
    };
    let mut serializer = None;
    let mut schema = 0u32;
    if let Some(seq) = snapshot {
        let path = airomem_snapshot::path(dir, seq);
        let bytes = read(&path, 0)?;
        let header = airomem_snapshot::SnapshotHeader::decode_alone(&path, &bytes)
            .map_err(|e| inconsistent(&path, format!("snapshot: {e}")))?;
        airomem_snapshot::verify(&path, &bytes, seq, header.serializer)
            .map_err(|e| inconsistent(&path, format!("snapshot: {e}")))?;
        serializer = Some(header.serializer);
        schema = header.schema_version;
        files.push(described(&path, &bytes));
    }
    let after = snapshot.map_or(Seq(1), Seq::next);
    let Some(&first) = segments.first() else {
        return Err(inconsistent(dir, "no journal segment".into()));
    };
    if first > after {
        return Err(inconsistent(dir, format!("the journal starts at #{}, after #{}", first.0, after.0)));
    }
    let mut expected = first;
    let mut end = None;
    for (i, &seg) in segments.iter().enumerate() {
        let path = segment::path(dir, seg);
        let bytes = read(&path, files.len())?;
        let scan = SegmentScan::read(&path, &bytes).map_err(|e| inconsistent(&path, e.to_string()))?;
        if scan.header.first_seq != expected {
            return Err(inconsistent(&path, format!("expected the segment holding #{}", expected.0)));
        }
        if let Some((offset, kind)) = &scan.damage {
            return Err(inconsistent(&path, format!("damage at offset {offset}: {kind}")));
        }
        // Zeros after the records are space a writer prepared (a sealed segment keeps less
        // than a batch of them): not damage, as in a store.
        if *serializer.get_or_insert(scan.header.serializer) != scan.header.serializer {
            return Err(inconsistent(&path, "a different serializer than the files before it".into()));
        }
        if scan.header.schema_version < schema && i > 0 {
            return Err(inconsistent(&path, "an older schema than the segment before it".into()));
        }
        schema = schema.max(scan.header.schema_version);
        expected = scan.next_seq();
        if i + 1 == segments.len() {
            if !scan.ends_at_batch_boundary() || scan.open_unit.is_some() {
                return Err(inconsistent(&path, "the journal does not end at a batch boundary".into()));
            }
            end = Some(Seq(expected.0 - 1));
        }
        files.push(described(&path, &bytes));
    }
    let seq = end.expect("the loop ran for the last segment");
    if seq.next() < after {
        return Err(inconsistent(dir, format!("the journal ends at #{}, before the snapshot #{}", seq.0, after.0 - 1)));
    }
    Ok(Examined { serializer: serializer.expect("a segment was read"), schema, seq, files })
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::Backup { path: path.to_path_buf(), problem: BackupProblem::FileMissing { name: file_name(path) } }
        }
        _ => Error::io("read", path)(e),
    })
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn described(path: &Path, bytes: &[u8]) -> ManifestFile {
    ManifestFile { name: file_name(path), len: bytes.len() as u64, crc: crc32c::crc32c(bytes) }
}

/// Reads the manifest of the backup in `dir`.
pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest, Error> {
    let path = dir.join(MANIFEST_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Manifest::decode(&path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::Backup { path: dir.to_path_buf(), problem: BackupProblem::NoManifest })
        }
        Err(e) => Err(Error::io("read", &path)(e)),
    }
}

/// Checks the backup in `dir` against its manifest and returns the manifest: every listed
/// file present with its length and checksum, no other file, the snapshot verifying whole,
/// the journal continuous from the record after the snapshot to exactly the manifest's
/// sequence number, ending a batch, with the manifest's serializer and schema.
///
/// Reads only; safe to run on a backup that is being restored from.
pub fn verify(dir: &Path) -> Result<Manifest, Error> {
    let manifest = read_manifest(dir)?;
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    let names = std::fs::read_dir(dir).map_err(Error::io("list", dir))?;
    for entry in names {
        let name = entry.map_err(Error::io("list", dir))?.file_name().to_string_lossy().into_owned();
        if name != MANIFEST_FILE && !listed.contains(name.as_str()) {
            return Err(Error::Backup { path: dir.to_path_buf(), problem: BackupProblem::FileUnlisted { name } });
        }
    }
    let mut snapshot = None;
    let mut segments = Vec::new();
    for (i, file) in manifest.files.iter().enumerate() {
        match (airomem_snapshot::parse_file_name(&file.name), segment::parse_file_name(&file.name)) {
            (Some(seq), None) if i == 0 && manifest.snapshot == Some(seq) => snapshot = Some(seq),
            (None, Some(first)) if segments.last().is_none_or(|&last| last < first) => segments.push(first),
            _ => {
                return Err(Error::Backup {
                    path: dir.join(MANIFEST_FILE),
                    problem: BackupProblem::ManifestDamaged { reason: format!("unexpected file `{}`", file.name) },
                });
            }
        }
    }
    if snapshot != manifest.snapshot {
        return Err(inconsistent(dir, "the manifest names a snapshot it does not list".into()));
    }
    let examined = examine(dir, snapshot, &segments, Some(&manifest.files))?;
    if examined.seq != manifest.seq || examined.serializer != manifest.serializer || examined.schema != manifest.schema
    {
        return Err(inconsistent(
            dir,
            format!(
                "the files hold #{} (serializer {}, schema {}), the manifest says #{} (serializer {}, schema {})",
                examined.seq.0,
                examined.serializer,
                examined.schema,
                manifest.seq.0,
                manifest.serializer,
                manifest.schema
            ),
        ));
    }
    Ok(manifest)
}
