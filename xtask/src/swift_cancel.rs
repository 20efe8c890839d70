//! Makes the generated Swift hand a cancelled `Task` to Rust, as the generated Kotlin and Python
//! already do: uniffi 0.32's Swift awaits a Rust future with a plain continuation, so a
//! cancelled Task keeps waiting until the call is done (mozilla/uniffi-rs#2771; #2887 proposes
//! an opt-in that does what this does). Every liaison async call is safe to drop (ffi/src/work.rs),
//! so every throwing one is made cancellable:
//!
//! - `uniffiRustCallAsync` takes the `ffi_*_rust_future_cancel_*` function that goes with the
//!   `free` one it already takes, and waits inside `withTaskCancellationHandler`, whose handler
//!   calls it: uniffi's scheduler then wakes the waiting continuation at once;
//! - after the wait, a cancelled Task throws `CancellationError` before it asks for the result,
//!   and the `defer` already there frees (drops) the Rust future;
//! - calls that do not throw (`stopSync`) are not cancelled: they could not report it;
//! - `CALL_CANCELLED`, should it ever arrive, throws `CancellationError` instead of `fatalError`.
//!
//! Each edit finds its exact text or fails: a uniffi upgrade that changes the template stops
//! `cargo xtask bindings` here instead of shipping unpatched Swift.

use anyhow::{Result, bail};

const SIGNATURE: &str = "    freeFunc: (UInt64) -> (),\n";
const SIGNATURE_NEW: &str = "    freeFunc: (UInt64) -> (),\n    cancelFunc: @escaping @Sendable (UInt64) -> (),\n";

const WAIT: &str = "    var pollResult: Int8;
    repeat {
        pollResult = await withUnsafeContinuation {
            pollFunc(
                rustFuture,
                { handle, pollResult in
                    uniffiFutureContinuationCallback(handle: handle, pollResult: pollResult)
                },
                uniffiContinuationHandleMap.insert(obj: $0)
            )
        }
    } while pollResult != UNIFFI_RUST_FUTURE_POLL_READY
";
const WAIT_NEW: &str = "    var pollResult: Int8;
    // liaison: a cancelled Task cancels the Rust future (xtask/src/swift_cancel.rs).
    let cancellable = errorHandler != nil
    repeat {
        pollResult = await withTaskCancellationHandler {
            await withUnsafeContinuation {
                pollFunc(
                    rustFuture,
                    { handle, pollResult in
                        uniffiFutureContinuationCallback(handle: handle, pollResult: pollResult)
                    },
                    uniffiContinuationHandleMap.insert(obj: $0)
                )
            }
        } onCancel: {
            if cancellable {
                cancelFunc(rustFuture)
            }
        }
    } while pollResult != UNIFFI_RUST_FUTURE_POLL_READY
    if cancellable {
        try Task.checkCancellation()
    }
";

const CANCELLED: &str = "            fatalError(\"Cancellation not supported yet\")\n";
const CANCELLED_NEW: &str = "            throw CancellationError()\n";

const FREE: &str = "freeFunc: ffi_";
const FREE_FN: &str = "_rust_future_free_";

/// The generated Swift with cancellation wired through; an error if the template changed.
pub fn make_cancellable(swift: &str) -> Result<String> {
    let mut out = swift.to_owned();
    for (what, old, new) in [
        ("signature", SIGNATURE, SIGNATURE_NEW),
        ("wait", WAIT, WAIT_NEW),
        ("CALL_CANCELLED", CANCELLED, CANCELLED_NEW),
    ] {
        if out.matches(old).count() != 1 {
            bail!("uniffi's Swift template changed: its async {what} is not as xtask/src/swift_cancel.rs expects");
        }
        out = out.replacen(old, new, 1);
    }
    // Every call site: `freeFunc: ffi_X_rust_future_free_T,` gains `cancelFunc: ffi_X_rust_future_cancel_T,`.
    let mut patched = String::with_capacity(out.len() + 4096);
    let mut calls = 0;
    for line in out.split_inclusive('\n') {
        patched.push_str(line);
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("freeFunc: ").and_then(|rest| rest.strip_suffix(','))
            && trimmed.starts_with(FREE)
            && name.contains(FREE_FN)
        {
            let indent = &line[..line.len() - line.trim_start().len()];
            patched.push_str(&format!("{indent}cancelFunc: {},\n", name.replacen(FREE_FN, "_rust_future_cancel_", 1)));
            calls += 1;
        }
    }
    if calls == 0 || calls != patched.matches("uniffiRustCallAsync(").count() {
        bail!("uniffi's Swift template changed: not every async call names its free function as expected");
    }
    Ok(patched)
}

/// Patches a generated Swift file in place (`cargo xtask swift-cancellable FILE`).
pub fn patch_file(path: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    std::fs::write(path, make_cancellable(&text)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        format!(
            "fileprivate func uniffiRustCallAsync<F, T>(\n    rustFutureFunc: () -> UInt64,\n{SIGNATURE}    liftFunc: (F) throws -> T,\n    errorHandler: ((RustBuffer) throws -> Swift.Error)?\n) async throws -> T {{\n{WAIT}}}\n{CANCELLED}\
             open func listKols()async throws  -> [KolSummary]  {{\n    return\n        try  await uniffiRustCallAsync(\n            pollFunc: ffi_liaison_ffi_rust_future_poll_rust_buffer,\n            freeFunc: ffi_liaison_ffi_rust_future_free_rust_buffer,\n            liftFunc: x\n        )\n}}\n"
        )
    }

    #[test]
    fn every_call_gets_the_cancel_function_that_goes_with_its_free_function() {
        let out = make_cancellable(&sample()).unwrap();
        assert!(out.contains(
            "            freeFunc: ffi_liaison_ffi_rust_future_free_rust_buffer,\n            cancelFunc: ffi_liaison_ffi_rust_future_cancel_rust_buffer,\n"
        ));
        assert!(out.contains("withTaskCancellationHandler"));
        assert!(out.contains("try Task.checkCancellation()"));
        assert!(!out.contains("fatalError(\"Cancellation not supported yet\")"));
    }

    #[test]
    fn a_changed_template_is_an_error_not_unpatched_swift() {
        assert!(make_cancellable(&sample().replace("withUnsafeContinuation", "withCheckedContinuation")).is_err());
        assert!(make_cancellable("no async here").is_err());
    }
}
