//! Any bytes as what a peer sends on an airomem-raft connection: decoding them as frames
//! (whole or read from a stream) and their payloads as handshake messages, and running both
//! sides of the handshake against them, must never panic nor allocate by a length field.
#![no_main]

use airomem_raft::fuzzing::{decode_frames, handshake};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    decode_frames(bytes);
    handshake(bytes);
});
