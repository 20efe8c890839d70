//! Arbitrary bytes into the wire decoder: it must return, never panic, and re-encoding what it
//! accepted must decode to the same message. The harness is shared with the replay of the seeds
//! and kept crashers (`core/tests/decoders.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| liaison_core::sync::testing::fuzz::wire_decode(data));
