//! Structure-aware: a decoded program of principals of two tenants making valid (and then
//! mutated) automerge changes, sent to one relay-side engine with the relay's real policy.
//! After every step: no panic escapes the engine, accepted documents keep their owner, every
//! change is by an actor of the owner's tenant, and nothing is sent to a connection without
//! access. The harness is shared with `server/tests/engine_changes_replay.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/engine_changes.rs"]
mod harness;

fuzz_target!(|program: harness::Program| {
    if let Err(failure) = harness::run(&program) {
        // The harness's panic hook is quiet (automerge panics the engine catches are expected),
        // so report here and abort for libFuzzer to keep the input.
        eprintln!("engine_changes invariant broken: {failure}\n{program:#?}");
        std::process::abort();
    }
});
