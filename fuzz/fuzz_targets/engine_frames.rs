//! Arbitrary frames into a relay-side engine over a real store after a valid handshake: it must
//! never panic, whatever a peer sends (bad sync messages, bad changes, unknown documents). The
//! input is length-prefixed frames (`testing::fuzz::split_frames`); the harness is shared with
//! the replay of the seeds and kept crashers (`core/tests/decoders.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    liaison_core::sync::testing::fuzz::engine_frames(data);
});
