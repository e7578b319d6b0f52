//! Any bytes as a journal segment: verification must never panic, never allocate by a
//! length field, and whatever it accepts must read back as the same records.
#![no_main]

use std::path::Path;

use airomem_journal::scan::{AfterDamage, SegmentScan, could_be_abort_marker, is_torn_tail};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(scan) = SegmentScan::read(Path::new("fuzz.journal"), bytes) else { return };
    assert!(scan.valid_len <= bytes.len());
    let frames: Vec<_> = scan.frames(bytes).collect();
    assert_eq!(frames.len() as u64, scan.records);
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.seq.0, scan.header.first_seq.0 + i as u64);
        assert!(frame.payload.end <= scan.valid_len);
    }
    if let Some((offset, _)) = scan.damage {
        assert_eq!(offset, scan.valid_len);
        let after = AfterDamage::find(bytes, offset, scan.next_seq());
        assert!(after.data_end <= bytes.len());
        assert!(after.highest_seq.is_none_or(|h| h >= scan.next_seq()));
        assert_eq!(is_torn_tail(bytes, offset, scan.next_seq()), !after.later_batch);
        if let Some(last) = &scan.last_command {
            let targets = scan.final_batch_start.0..=last.seq.0;
            let _ = could_be_abort_marker(bytes, offset, &after, scan.next_seq(), last.unix_nanos, targets);
        }
    }
});
