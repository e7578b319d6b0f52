//! The manifest: a small text file that says what a backup holds, with a checksum of its
//! own so that a damaged one is refused rather than misread.
//!
//! ```text
//! airomem-backup 1
//! serializer 1
//! schema 3
//! seq 1234
//! snapshot 1200            (0: none, the journal starts at record 1)
//! created 1764070000000000000   (ns since the Unix epoch)
//! file 00000000000000001200.snapshot 40960 1a2b3c4d
//! file 00000000000000001001.journal 65536 deadbeef
//! crc 0a1b2c3d             (crc32c of every byte before this line)
//! ```

use std::path::Path;

use airomem_core::{Seq, SerializerId};

use crate::error::{BackupProblem, Error};

/// The manifest's file name in a backup directory.
pub const MANIFEST_FILE: &str = "airomem-backup.manifest";

/// The backup format this build writes and the newest it reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Its name in the backup directory (and in a restored store).
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// crc32c of its content.
    pub crc: u32,
}

/// What a backup's manifest records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Manifest {
    /// The backup format (see [`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The serializer of every file.
    pub serializer: SerializerId,
    /// The newest schema version among the files: the application that opens a restored
    /// store must know it.
    pub schema: u32,
    /// The cut: the last command the backup holds.
    pub seq: Seq,
    /// The snapshot the state starts from, if any.
    pub snapshot: Option<Seq>,
    /// When the backup was taken, ns since the Unix epoch.
    pub created_unix_nanos: u64,
    /// The files: the snapshot first, then the segments in order.
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// The manifest's bytes, its checksum line last.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut text = format!(
            "airomem-backup {}\nserializer {}\nschema {}\nseq {}\nsnapshot {}\ncreated {}\n",
            self.format,
            self.serializer.0,
            self.schema,
            self.seq.0,
            self.snapshot.map_or(0, |s| s.0),
            self.created_unix_nanos
        );
        for file in &self.files {
            text.push_str(&format!("file {} {} {:08x}\n", file.name, file.len, file.crc));
        }
        let crc = crc32c::crc32c(text.as_bytes());
        text.push_str(&format!("crc {crc:08x}\n"));
        text.into_bytes()
    }

    /// Parses and checks a manifest read from `path`. A newer format is refused before any
    /// other field is trusted.
    pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest, Error> {
        let damaged = |reason: &str| Error::Backup {
            path: path.to_path_buf(),
            problem: BackupProblem::ManifestDamaged { reason: reason.to_string() },
        };
        let text = std::str::from_utf8(bytes).map_err(|_| damaged("not UTF-8"))?;
        let body_end = text.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
        let (body, last) = text.split_at(body_end);
        let crc = last
            .strip_prefix("crc ")
            .and_then(|v| u32::from_str_radix(v.trim_end(), 16).ok())
            .ok_or_else(|| damaged("no checksum line at the end"))?;
        if crc != crc32c::crc32c(body.as_bytes()) || !last.ends_with('\n') {
            return Err(damaged("checksum mismatch"));
        }
        let mut lines = body.lines();
        let mut field = |name: &str| -> Result<u64, Error> {
            let line = lines.next().ok_or_else(|| damaged("a field is missing"))?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| damaged(&format!("expected `{name} <number>`, found `{line}`")))
        };
        let format = u32::try_from(field("airomem-backup")?).map_err(|_| damaged("format out of range"))?;
        if format > MANIFEST_FORMAT {
            return Err(Error::Backup {
                path: path.to_path_buf(),
                problem: BackupProblem::FormatNewer { found: format, supported: MANIFEST_FORMAT },
            });
        }
        let serializer = u16::try_from(field("serializer")?).map_err(|_| damaged("serializer out of range"))?;
        let schema = u32::try_from(field("schema")?).map_err(|_| damaged("schema out of range"))?;
        let seq = Seq(field("seq")?);
        let snapshot = Some(Seq(field("snapshot")?)).filter(|s| s.0 != 0);
        let created_unix_nanos = field("created")?;
        let mut files = Vec::new();
        for line in lines {
            let mut parts = line.split(' ');
            let (Some("file"), Some(name), Some(len), Some(crc), None) =
                (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(damaged(&format!("expected `file <name> <len> <crc>`, found `{line}`")));
            };
            // A name is a plain file name: a manifest never points outside its directory.
            if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
                return Err(damaged(&format!("`{name}` is not a file name")));
            }
            let len = len.parse().map_err(|_| damaged("a file length is not a number"))?;
            let crc = u32::from_str_radix(crc, 16).map_err(|_| damaged("a file checksum is not hexadecimal"))?;
            files.push(ManifestFile { name: name.to_string(), len, crc });
        }
        Ok(Manifest { format, serializer: SerializerId(serializer), schema, seq, snapshot, created_unix_nanos, files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            serializer: SerializerId(1),
            schema: 3,
            seq: Seq(1234),
            snapshot: Some(Seq(1200)),
            created_unix_nanos: 17,
            files: vec![ManifestFile { name: "00000000000000001200.snapshot".into(), len: 40, crc: 0xdead_beef }],
        }
    }

    #[test]
    fn a_manifest_reads_back_as_written() {
        let m = sample();
        assert_eq!(Manifest::decode(Path::new("m"), &m.encode()).expect("decodes"), m);
    }

    #[test]
    fn every_flipped_byte_of_a_manifest_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            assert!(Manifest::decode(Path::new("m"), &damaged).is_err(), "byte {i} flipped was accepted");
        }
        assert!(Manifest::decode(Path::new("m"), &bytes[..bytes.len() - 1]).is_err(), "a cut manifest");
    }
}
