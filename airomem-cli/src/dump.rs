//! `airomem dump`: the journal's records as JSON lines.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use airomem::inspect::{self, Kind, RecordInfo};
use airomem::{Error, Seq};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::IgnoredAny;

use crate::outcome::{Failure, Outcome};
use crate::output::{chain, time};

/// The serializer id of `JsonSerializer`: its payloads are printed as JSON.
const JSON: u16 = 2;

/// How often `--follow` looks for new records.
const POLL: Duration = Duration::from_millis(10);

pub(crate) fn run(dir: &Path, from: u64, to: Option<u64>, follow: bool) -> Result<Outcome, Failure> {
    let mut records = inspect::records(dir, Seq(from), to.map(Seq))?;
    let mut next = Seq(from.max(1));
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line = Line::default();
    for record in records.by_ref() {
        match record {
            Ok(record) => {
                next = record.seq.next();
                line.write(&record);
                if let Err(e) = out.write_all(&line.text) {
                    return write_failed(e);
                }
            }
            Err(e @ Error::Journal(_)) => return damaged(&mut out, &e),
            Err(e) => return Err(e.into()),
        }
    }
    out.flush()?;
    if let Some((segment, offset)) = records.torn_tail() {
        eprintln!(
            "airomem: the journal ends in a torn write at {} offset {offset} (a crash, or a batch being written now)",
            segment.display()
        );
    }
    if follow {
        return follow_on(dir, next, &mut out, &mut line);
    }
    Ok(Outcome::Clean)
}

/// How a failed write of the output ends the dump: a closed pipe (`| head`) is the reader's
/// choice, not an error.
fn write_failed(e: io::Error) -> Result<Outcome, Failure> {
    if e.kind() == io::ErrorKind::BrokenPipe { Ok(Outcome::Clean) } else { Err(e.into()) }
}

/// Reports damage the journal holds, after everything before it was printed.
fn damaged(out: &mut impl Write, e: &Error) -> Result<Outcome, Failure> {
    out.flush()?;
    eprintln!("airomem: DAMAGE {}", chain(e));
    Ok(Outcome::Damaged)
}

/// Prints the records after `next - 1` as their batches become final, until the process is
/// interrupted, the reader of its output goes, or the journal is damaged.
fn follow_on(dir: &Path, next: Seq, out: &mut impl Write, line: &mut Line) -> Result<Outcome, Failure> {
    let mut cursor = inspect::follow(dir, next)?;
    loop {
        match cursor.poll() {
            Ok(records) => {
                for record in &records {
                    line.write(record);
                    if let Err(e) = out.write_all(&line.text) {
                        return write_failed(e);
                    }
                }
                if !records.is_empty()
                    && let Err(e) = out.flush()
                {
                    return write_failed(e);
                }
            }
            Err(e @ Error::Journal(_)) => return damaged(out, &e),
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(POLL);
    }
}

/// One record's JSON line, built in a buffer reused from record to record. Written by hand
/// rather than through `serde_json::Value`: a dump of a large journal spent most of its time
/// building and dropping those trees. Every value is a number, a boolean, base64, an RFC 3339
/// time, a segment file name or the payload of a JSON store, so nothing needs escaping.
#[derive(Default)]
struct Line {
    text: Vec<u8>,
    /// The last commit time formatted, and its text: the records of a batch share it.
    time: Option<(u64, String)>,
}

impl Line {
    fn write(&mut self, record: &RecordInfo) {
        let text = &mut self.text;
        text.clear();
        let time = match &self.time {
            Some((nanos, formatted)) if *nanos == record.unix_nanos => formatted,
            _ => &self.time.insert((record.unix_nanos, time(record.unix_nanos))).1,
        };
        let kind = match record.kind {
            Kind::Command => "command",
            _ => "abort",
        };
        let segment = record.segment.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        // `write!` into a Vec cannot fail.
        let _ = write!(
            text,
            "{{\"seq\":{},\"time\":\"{time}\",\"kind\":\"{kind}\",\"batch_start\":{},\"batch_end\":{},\
             \"unit_continues\":{},\"cancelled\":{},\"segment\":\"{segment}\",\"offset\":{},\"schema_version\":{}",
            record.seq.0,
            record.batch_start,
            record.batch_end,
            record.unit_continues,
            record.cancelled,
            record.offset,
            record.schema_version,
        );
        match record.kind {
            Kind::Abort { cancels } => match cancels {
                Some(seq) => {
                    let _ = write!(text, ",\"cancels\":{}", seq.0);
                }
                None => text.extend_from_slice(b",\"cancels\":null"),
            },
            // A JSON store's payload is the serializer's own JSON: written as it is once it
            // parses (checked without building anything) and sits on one line.
            _ if record.serializer.0 == JSON
                && !record.payload.contains(&b'\n')
                && serde_json::from_slice::<IgnoredAny>(&record.payload).is_ok() =>
            {
                text.extend_from_slice(b",\"payload\":");
                text.extend_from_slice(&record.payload);
            }
            _ if record.serializer.0 == JSON
                && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&record.payload) =>
            {
                text.extend_from_slice(b",\"payload\":");
                let _ = serde_json::to_writer(&mut *text, &value);
            }
            _ => {
                text.extend_from_slice(b",\"payload_base64\":\"");
                let start = text.len();
                text.resize(start + base64::encoded_len(record.payload.len(), true).unwrap_or(0), 0);
                let written = STANDARD.encode_slice(&record.payload, &mut text[start..]).unwrap_or(0);
                text.truncate(start + written);
                text.push(b'"');
            }
        }
        text.extend_from_slice(b"}\n");
    }
}
