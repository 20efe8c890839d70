//! Arbitrary bytes into the wire decoder: it must return, never panic, and re-encoding what it
//! accepted must decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liaison_core::sync::wire::{DEFAULT_MAX_FRAME, decode};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode(data, DEFAULT_MAX_FRAME) {
        let again = decode(&m.encode(), DEFAULT_MAX_FRAME).expect("re-encoded message decodes");
        assert_eq!(again, m);
    }
});
