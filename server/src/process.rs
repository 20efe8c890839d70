//! A relay process for the end-to-end tests and the benchmark (feature `process`): starts
//! `liaison-relay serve` with `--ready-file` and waits for the file, so neither reads the
//! relay's console output.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::ready::Ready;

/// How often the ready file is looked for while the relay starts.
const POLL: Duration = Duration::from_millis(10);

/// Runs `command` (`liaison-relay serve ...`, its arguments set by the caller) with
/// `--ready-file ready_file`, and returns once the relay listens, with where it serves. Fails if
/// it exits first or takes longer than `timeout` (then it is killed). Its stdout is discarded
/// (nothing to drain, so it never blocks); its stderr (the logs) is the caller's.
pub fn start(mut command: Command, ready_file: &Path, timeout: Duration) -> Result<(Child, Ready)> {
    // A file left by an earlier run on the same path would be taken for this one's.
    match std::fs::remove_file(ready_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", ready_file.display())),
    }
    let mut child =
        command.arg("--ready-file").arg(ready_file).stdout(Stdio::null()).spawn().context("cannot start the relay")?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(ready) = Ready::read(ready_file).context("cannot read the relay's ready file")? {
            return Ok((child, ready));
        }
        if let Some(status) = child.try_wait()? {
            bail!("the relay exited before it was ready: {status}");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the relay was not ready within {timeout:?}");
        }
        std::thread::sleep(POLL);
    }
}
