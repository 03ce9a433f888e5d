//! Child-process plumbing shared by the nats-server and edge harnesses:
//! spawning with output captured to a log file, signals, bounded waits.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// How often a bounded wait checks the child again.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Spawns `command` with stdin closed and stdout and stderr appended to
/// `log_path`, so a restarted process keeps the log of its earlier runs.
pub(crate) fn spawn_logged(command: &mut Command, log_path: &Path) -> Child {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|e| panic!("open log file {}: {e}", log_path.display()));
    let stderr = log.try_clone().expect("clone log file handle");
    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()))
}

/// Sends SIGTERM to `pid`. The workspace forbids `unsafe`, so this runs the
/// `kill` utility instead of calling `libc::kill`.
pub(crate) fn sigterm(pid: u32) {
    // A failed `kill` means the process is already gone, which callers see
    // through their wait anyway.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// SIGKILLs the child (if it still runs) and reaps it.
pub(crate) fn kill_and_reap(child: &mut Child) {
    // Errors mean the child has already exited; `wait` then just reaps it.
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to `timeout` for the child to exit without blocking the runtime.
/// `None` if it still runs.
pub(crate) async fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = exited(child) {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The exit status if the child has exited, without waiting.
pub(crate) fn exited(child: &mut Child) -> Option<ExitStatus> {
    child.try_wait().expect("try_wait on child process")
}

/// The log file's contents, or a note that it could not be read.
pub(crate) fn read_log(log_path: &Path) -> String {
    std::fs::read_to_string(log_path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", log_path.display()))
}

/// Stops `child` from a context without a runtime (a `Drop`): SIGTERM, then
/// SIGKILL when it has not exited within `timeout`; the wait blocks the
/// thread, briefly.
pub(crate) fn stop_blocking(mut child: Child, timeout: Duration) {
    sigterm(child.id());
    let deadline = std::time::Instant::now() + timeout;
    while exited(&mut child).is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(POLL_EVERY);
    }
    kill_and_reap(&mut child);
}
