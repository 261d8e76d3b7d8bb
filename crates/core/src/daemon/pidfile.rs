//! The PID file of a scheduled process and the `interrupt` command that uses it.
//!
//! Decisions:
//! - The scheduled process writes its PID when it starts and, when it exits, first writes its
//!   exit code to `<pid-file>.exit` and then removes the PID file. `interrupt` cannot wait for a
//!   process that is not its child, so it polls until that file appears (or the process is gone)
//!   and reads the exit code from it: the preStop hook returns only after the final sync, with
//!   its result.
//! - As PID 1 of a container, our exit kills every other process in it, including a waiting
//!   `interrupt` (a preStop hook would then always "fail" with 137). So each `interrupt`
//!   announces itself in `<pid-file>.interrupt.<its pid>` and deletes that file once it has read
//!   the exit code, and the process waits (briefly, bounded) for every live announcer before it
//!   exits.
//! - `interrupt` is idempotent: it sends SIGUSR1, which the process takes as "shut down
//!   gracefully" however often it arrives. Any number of concurrent or repeated calls (a
//!   preStop hook and a human, two hooks) thus request one graceful shutdown and all wait for
//!   it; only a SIGTERM/SIGINT from outside escalates to "stop now".
//! - Before signalling, `interrupt` checks that the PID belongs to a running
//!   volume-syncing-operator (same executable, or same command name when the executable cannot
//!   be read): a stale file whose PID was reused must not get another program killed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Written by a scheduled process; removed (and its exit code recorded) on exit.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

/// How long an exiting process waits for `interrupt` to pick up its exit code.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn exit_file(path: &Path) -> PathBuf {
    sibling(path, ".exit")
}

fn waiter_file(path: &Path, waiter: u32) -> PathBuf {
    sibling(path, &format!(".interrupt.{waiter}"))
}

/// The announcements of the `interrupt`s waiting for this process: (file, waiter pid).
fn waiters(path: &Path) -> Vec<(PathBuf, Option<u32>)> {
    let Some(name) = path.file_name() else {
        return Vec::new();
    };
    let prefix = format!("{}.interrupt.", name.to_string_lossy());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let waiter = file.strip_prefix(&prefix)?.parse().ok();
            Some((e.path(), waiter))
        })
        .collect()
}

impl PidFile {
    /// Writes our PID to `path`, refusing if another live instance owns it.
    pub fn create(path: &Path) -> Result<Self> {
        let pid = std::process::id();
        if let Some(other) = read_pid(path).ok().flatten()
            && other != pid
            && is_running(other)
            && is_ours(other)
        {
            return Err(Error::config(format!(
                "another volume-syncing-operator (pid {other}) is running with pid file {}; give this \
                 one its own --pid-path",
                path.display()
            )));
        }
        let _ = fs::remove_file(exit_file(path));
        let tmp = path.with_extension(format!("tmp.{pid}"));
        fs::write(&tmp, format!("{pid}\n"))
            .and_then(|()| fs::rename(&tmp, path))
            .map_err(|e| {
                Error::config(format!(
                    "cannot write pid file {} (--pid-path): {e}",
                    path.display()
                ))
            })?;
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }

    /// Records the exit code for `interrupt`, removes the PID file, and, if an `interrupt` is
    /// waiting, gives it a moment to read the exit code before this process exits.
    pub fn finish(self, exit_code: u8) {
        let exit = exit_file(&self.path);
        // Written whole or not at all: `interrupt` may read it at any moment.
        let tmp = sibling(&self.path, &format!(".exit.tmp.{}", self.pid));
        let written = fs::write(&tmp, format!("{} {exit_code}\n", self.pid))
            .and_then(|()| fs::rename(&tmp, &exit));
        if let Err(e) = written {
            tracing::warn!("cannot record the exit code next to the pid file: {e}");
            return;
        }
        // Every live `interrupt` removes its announcement once it has read the exit code.
        let deadline = Instant::now() + ACK_TIMEOUT;
        while Instant::now() < deadline
            && waiters(&self.path)
                .iter()
                .any(|(_, waiter)| waiter.is_some_and(is_running))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (file, _) in waiters(&self.path) {
            let _ = fs::remove_file(file);
        }
        // Drop removes the PID file.
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path).ok().flatten() == Some(self.pid) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> std::io::Result<Option<u32>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the process exists and is not a zombie.
fn is_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn exe_of(pid: &str) -> Option<String> {
    let link = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = link.to_string_lossy();
    Some(text.trim_end_matches(" (deleted)").to_string())
}

fn comm_of(pid: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether `pid` runs this program.
fn is_ours(pid: u32) -> bool {
    let pid = pid.to_string();
    match (exe_of(&pid), exe_of("self")) {
        (Some(theirs), Some(mine)) => theirs == mine,
        _ => comm_of(&pid).is_some_and(|c| Some(c) == comm_of("self")),
    }
}

/// Asks the scheduled process named by the PID file to shut down gracefully (SIGUSR1) and waits
/// until it has exited; succeeds only if its final sync succeeded.
pub async fn interrupt(path: &Path, timeout: Duration) -> Result<()> {
    let pid = match read_pid(path) {
        Ok(Some(pid)) => pid,
        Ok(None) if path.exists() => {
            return Err(Error::config(format!(
                "pid file {} does not hold a pid",
                path.display()
            )));
        }
        Ok(None) => {
            return Err(Error::config(format!(
                "no pid file at {}; is a scheduled volume-syncing-operator running with this --pid-path?",
                path.display()
            )));
        }
        Err(e) => {
            return Err(Error::config(format!(
                "cannot read pid file {}: {e}",
                path.display()
            )));
        }
    };
    if !is_running(pid) {
        return Err(Error::config(format!(
            "no process with pid {pid} (stale pid file {}); nothing to interrupt",
            path.display()
        )));
    }
    if !is_ours(pid) {
        let what = comm_of(&pid.to_string()).unwrap_or_else(|| "another program".into());
        return Err(Error::config(format!(
            "pid {pid} from {} is '{what}', not volume-syncing-operator (stale pid file?); not signalling it",
            path.display()
        )));
    }
    tracing::info!(
        pid,
        "asking for a graceful shutdown and waiting for the final sync"
    );
    let waiter = waiter_file(path, std::process::id());
    let _ = fs::write(&waiter, format!("{}\n", std::process::id()));
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).context("cannot signal the process")?;
    let exit = exit_file(path);
    let recorded_by = |text: &str| text.split_whitespace().next() == Some(pid.to_string().as_str());
    let deadline = Instant::now() + timeout;
    let recorded = loop {
        // The exit code appears just before the process exits; as PID 1 it waits for us to
        // read it, so it is read as soon as it appears.
        let text = fs::read_to_string(&exit).unwrap_or_default();
        if recorded_by(&text) || !is_running(pid) {
            break if text.is_empty() {
                fs::read_to_string(&exit).unwrap_or_default()
            } else {
                text
            };
        }
        if Instant::now() >= deadline {
            let _ = fs::remove_file(&waiter);
            return Err(Error::Other(anyhow::anyhow!(
                "pid {pid} has not exited within {timeout:?}; its final sync may still be running"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = fs::remove_file(&waiter);
    // Wait for the exit itself, unless it is PID 1: its exit would kill us too.
    while pid != 1 && is_running(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match recorded.split_whitespace().collect::<Vec<_>>()[..] {
        [p, "0"] if p == pid.to_string() => {
            tracing::info!(pid, "the process finished its final sync and exited");
            Ok(())
        }
        [p, code] if p == pid.to_string() => Err(Error::Other(anyhow::anyhow!(
            "the process exited with code {code}: its final sync did not succeed (see its log)"
        ))),
        _ => Err(Error::Other(anyhow::anyhow!(
            "pid {pid} exited without recording a result; its final sync may not have run"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_and_ours() {
        assert!(is_running(std::process::id()));
        assert!(is_ours(std::process::id()));
        assert!(!is_ours(1) || std::process::id() == 1);
    }

    #[test]
    fn pid_file_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        let file = PidFile::create(&path).unwrap();
        assert_eq!(read_pid(&path).unwrap(), Some(std::process::id()));
        file.finish(0);
        assert!(!path.exists());
        assert_eq!(
            fs::read_to_string(exit_file(&path)).unwrap(),
            format!("{} 0\n", std::process::id())
        );
    }
}
