//! `airomem dump`: the journal's records as JSON lines.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use airomem::inspect::{self, Kind, RecordInfo};
use airomem::{Error, Seq};
use base64::Engine;
use serde_json::{Value, json};

use crate::output::{chain, time};
use crate::{Failure, Outcome};

/// The serializer id of `JsonSerializer`: its payloads are printed as JSON.
const JSON: u16 = 2;

pub(crate) fn run(dir: &Path, from: u64, to: Option<u64>) -> Result<Outcome, Failure> {
    let mut records = inspect::records(dir, Seq(from), to.map(Seq))?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for record in records.by_ref() {
        match record {
            Ok(record) => {
                if let Err(e) = writeln!(out, "{}", line(&record)) {
                    // A closed pipe (`| head`) is the reader's choice, not an error.
                    return if e.kind() == io::ErrorKind::BrokenPipe { Ok(Outcome::Clean) } else { Err(e.into()) };
                }
            }
            Err(e @ Error::Journal(_)) => {
                out.flush()?;
                eprintln!("airomem: DAMAGE {}", chain(&e));
                return Ok(Outcome::Damaged);
            }
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
    Ok(Outcome::Clean)
}

fn line(record: &RecordInfo) -> Value {
    let mut object = json!({
        "seq": record.seq.0,
        "time": time(record.unix_nanos),
        "kind": match record.kind { Kind::Command => "command", _ => "abort" },
        "batch_start": record.batch_start,
        "batch_end": record.batch_end,
        "unit_continues": record.unit_continues,
        "cancelled": record.cancelled,
        "segment": record.segment.file_name().map(|n| n.to_string_lossy().into_owned()),
        "offset": record.offset,
        "schema_version": record.schema_version,
    });
    match record.kind {
        Kind::Abort { cancels } => object["cancels"] = json!(cancels.map(|s| s.0)),
        _ if record.serializer.0 == JSON => match serde_json::from_slice::<Value>(&record.payload) {
            Ok(payload) => object["payload"] = payload,
            Err(_) => {
                object["payload_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&record.payload))
            }
        },
        _ => object["payload_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&record.payload)),
    }
    object
}
