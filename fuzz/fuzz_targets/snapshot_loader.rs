//! Any bytes as a snapshot file: verification must never panic, and must reject every
//! input that is not a complete snapshot for the name, serializer and schema it expects.
#![no_main]

use std::path::Path;

use airomem_core::{Seq, SerializerId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let file = Path::new("00000000000000000007.snapshot");
    if let Ok((_header, image)) = airomem_snapshot::verify(file, bytes, Seq(7), SerializerId(1)) {
        // Only a well-formed container gets here; it can hold at most what zstd can expand.
        assert!(bytes.len() >= airomem_snapshot::format::MIN_FILE_LEN);
        let _ = image.len();
    }
});
