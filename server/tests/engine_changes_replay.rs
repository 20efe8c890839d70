//! Replays the `engine_changes` fuzz target's seeds and kept regressions through the same
//! harness (`fuzz/harness/engine_changes.rs`, included by path), so a fixed crash cannot come
//! back unnoticed and the harness itself keeps compiling, without cargo-fuzz.
//!
//! One test in its own binary: the harness installs a process-wide panic hook.
#![allow(clippy::unwrap_used)]

use arbitrary::{Arbitrary, Unstructured};

#[path = "../../fuzz/harness/engine_changes.rs"]
#[allow(dead_code, unused_qualifications, missing_debug_implementations)]
mod harness;

#[test]
fn engine_changes_seeds_and_regressions_hold_every_invariant() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for dir in ["seeds/engine_changes", "regressions/engine_changes"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap();
            // As libfuzzer-sys decodes a typed input.
            let program = harness::Program::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
            if std::env::var_os("LIAISON_FUZZ_DUMP").is_some() {
                eprintln!("{}: {program:#?}", path.display());
            }
            let open = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("open-"));
            match harness::run(&program) {
                // A kept crasher of a bug not fixed yet (named `open-*`, see fuzz/README.md):
                // replayed so it cannot panic its way out, reported, not failed on. Rename it
                // (drop `open-`) in the commit that fixes the bug.
                Err(failure) if open => eprintln!("{} (open bug): {failure}", path.display()),
                Err(failure) => panic!("{}: {failure}", path.display()),
                Ok(()) => {}
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 3, "the engine_changes seeds are there ({replayed} files)");
}
