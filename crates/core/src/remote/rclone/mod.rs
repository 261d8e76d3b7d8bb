//! The rclone child process: finding the binary, building commands, streaming its output into
//! our log while it runs, reading its exit code, and stopping it within a bounded time.
//!
//! Decisions:
//! - rclone runs in its own process group, so a terminal's Ctrl-C reaches only us; we decide
//!   whether the child finishes (first signal in scheduled mode) or is stopped: SIGTERM to the
//!   group, [`STOP_GRACE`], then SIGKILL. `kill_on_drop` is the last line of defence.
//! - rclone logs JSON (`--use-json-log`) to stderr; each line becomes one of our log events
//!   (target `rclone`) at the matching level, and the `stats` object of the last line is the
//!   run's statistics. Output is streamed line by line, never buffered to the end (`stream.rs`).
//! - Those statistics count the user's files only. rclone runs at `-v` at least, so it names
//!   every object it copies or deletes (one line per change, none per unchanged file); what it
//!   says about this program's own objects at the top of the path (the metadata manifest that
//!   replication carries, [`crate::remote::path::INTERNAL_PREFIX`]) is subtracted and counted
//!   apart ([`Stats::internal_files`]). No extra rclone call; at our verbosity 0 those per-object
//!   lines are logged at debug, so the log reads as before.
//! - The child inherits our environment (so `RCLONE_*` flags work) minus the variables we turn
//!   into the config: secrets reach rclone only through the 0600 config file.
//! - Probing (`first_line`) reads one line and then stops rclone: O(1) in the remote's size.
//! - Every line read from rclone passes through the [`Scrubber`] before it is logged or quoted
//!   in an error, so no secret of the config reaches our output, whatever rclone prints.
//! - A config file rclone cannot parse is a configuration error (exit 2) naming the option,
//!   never its value.
//! - rclone gets SIGKILL when we die (`PR_SET_PDEATHSIG`), even by SIGKILL: no rclone outlives
//!   the process that owns its config file, restore marker and lease. The signal follows the
//!   thread that spawned the child; the runtime is single-threaded (`main.rs`), so that thread
//!   lives as long as the process.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::remote::cause::{Causes, Kind};
use crate::remote::scrub::Scrubber;
use crate::remote::stats::Stats;

use stream::{Preview, Streamed, Streamer, unparsable_option, without};

pub mod rc;
mod stream;

/// How long rclone gets between SIGTERM and SIGKILL when it must stop.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Flags of the short checks (listings, key check): fail within seconds on a dead endpoint
/// instead of rclone's minutes of low-level retries; a failed check is retried by the next run.
const CHECK_FLAGS: [&str; 6] = [
    "--low-level-retries",
    "2",
    "--contimeout",
    "10s",
    "--timeout",
    "15s",
];

/// The longest one short check (listing, key check, lease, upload record) may take in all,
/// whatever rclone's retries make of the flags above: then rclone is killed and the check
/// fails, naming it. A pass of checks before a sync is thus bounded too.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(60);

/// Fails a check that ran past [`CHECK_DEADLINE`].
async fn within_deadline<T>(
    operation: &str,
    check: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(CHECK_DEADLINE, check).await {
        Ok(result) => result,
        Err(_) => Err(Error::Other(anyhow::anyhow!(
            "rclone {operation} did not finish within {}s (the endpoint does not answer?); it was \
             stopped",
            CHECK_DEADLINE.as_secs()
        ))),
    }
}

/// rclone's concurrency for our transfers, chosen by measurement (issue 18, BENCHMARKS.md
/// section 8): at a real bucket's 10-50 ms per request, a volume of small files is bound by
/// round trips, and rclone's defaults (4 transfers, 8 checkers) leave most of that time idle.
/// On an idle machine, restoring 10,000 small files at 20 ms round trip took 18-20 s with 16
/// transfers, 11-13 s with 32, 9-11 s with 64 (as fast as rclone tuned by hand to 64/64 with
/// `--fast-list`), 11 s with 128. 64 transfers alone would multiply the memory of large files
/// (rclone buffers up to `--buffer-size` per transfer, and S3 multipart uploads
/// `--s3-upload-concurrency` chunks per transfer: 575 MiB peak uploading 32 files of 32 MiB),
/// so `--max-buffer-memory` caps all of rclone's buffers together: 140 MiB peak at the same
/// speed, as much as rclone's defaults (138 MiB), well inside the injected sidecar's 256 MiB
/// limit; transfers wait for a buffer rather than allocating one. No `--fast-list`: it holds
/// the whole remote listing in memory, which grows with the file count, and the checkers
/// already list directories in parallel. They come before the user's flags after `--`, which
/// rclone lets win (the last value of a flag counts; `-- --max-buffer-memory off` lifts the
/// cap).
pub const DEFAULT_TRANSFER_FLAGS: [&str; 6] = [
    "--transfers",
    "64",
    "--checkers",
    "64",
    "--max-buffer-memory",
    "64M",
];

/// Bounds of every transfer (`sync`, `copy`, `delete`), so a dead or stalled endpoint fails
/// in seconds instead of rclone's minutes: rclone's default 10 low-level retries are multiplied
/// by the S3 SDK's own attempts (its count is the same flag), each with backoff; 2 makes it 4
/// quick tries. rclone's own whole-pass `--retries` (3) is ours instead ([`crate::sync::job`],
/// `--retries`), so a cause that cannot heal is not tried three times over. `--timeout` is the
/// idle timeout: a transfer that moves no data for that long is cut. Flags after `--` come
/// later on the command line and win.
pub const TRANSFER_FLAGS: [&str; 8] = [
    "--contimeout",
    "10s",
    "--timeout",
    "30s",
    "--low-level-retries",
    "2",
    "--retries",
    "1",
];

/// Environment variables that are turned into the config and are not passed to rclone.
pub const PRIVATE_ENV_PREFIXES: [&str; 4] = ["REMOTE_", "ENCRYPTED_", "ENCRYPTION_", "SOURCE_"];

/// Signals an abort to a running rclone: `Some(reason)` stops it (e.g. "SIGTERM").
pub type Abort = watch::Receiver<Option<&'static str>>;

/// Resolves the rclone executable: `--rclone-binary` / `RCLONE_BINARY`, else `rclone` in PATH.
pub fn resolve_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let how =
        "install rclone into PATH, or name it with --rclone-binary PATH or RCLONE_BINARY=PATH";
    if let Some(path) = explicit {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(Error::config(format!(
                "rclone binary {} does not exist or is not executable; {how}",
                path.display()
            )))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("rclone"))
        .find(|p| is_executable(p))
        .ok_or_else(|| Error::config(format!("rclone was not found in PATH; {how}")))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What rclone's exit code means (rclone docs, "Exit code").
pub fn exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "uncategorised error",
        2 => "syntax or usage error",
        3 => "directory not found",
        4 => "file not found",
        5 => "temporary error, more retries might fix it",
        6 => "less serious error",
        7 => "fatal error, e.g. --max-delete reached or account suspended",
        8 => "transfer limit (--max-transfer) reached",
        9 => "no files transferred (--error-on-no-transfer)",
        10 => "duration limit (--max-duration) reached",
        -1 => "killed by a signal",
        _ => "unknown exit code",
    }
}

/// rclone's filter flags as environment variables (`RCLONE_EXCLUDE`, …). They are meant for the
/// user's sync; on a command naming one object rclone refuses them ("can't limit to single
/// files when using filters"), so [`Rclone::for_single_objects`] does not pass them on.
const FILTER_ENV: [&str; 22] = [
    "RCLONE_EXCLUDE",
    "RCLONE_EXCLUDE_FROM",
    "RCLONE_EXCLUDE_IF_PRESENT",
    "RCLONE_FILES_FROM",
    "RCLONE_FILES_FROM_RAW",
    "RCLONE_FILTER",
    "RCLONE_FILTER_FROM",
    "RCLONE_IGNORE_CASE",
    "RCLONE_INCLUDE",
    "RCLONE_INCLUDE_FROM",
    "RCLONE_MAX_AGE",
    "RCLONE_MAX_DEPTH",
    "RCLONE_MAX_SIZE",
    "RCLONE_MIN_AGE",
    "RCLONE_MIN_SIZE",
    "RCLONE_HASH_FILTER",
    "RCLONE_METADATA_EXCLUDE",
    "RCLONE_METADATA_EXCLUDE_FROM",
    "RCLONE_METADATA_FILTER",
    "RCLONE_METADATA_FILTER_FROM",
    "RCLONE_METADATA_INCLUDE",
    "RCLONE_METADATA_INCLUDE_FROM",
];

/// A configured rclone: binary, config file and verbosity.
#[derive(Debug, Clone)]
pub struct Rclone {
    binary: PathBuf,
    config: PathBuf,
    verbose: u8,
    scrubber: Arc<Scrubber>,
    /// Leave the user's filter flags ([`FILTER_ENV`]) out of the child's environment.
    single_objects: bool,
}

impl Rclone {
    pub fn new(binary: PathBuf, config: PathBuf, verbose: u8) -> Self {
        Rclone {
            binary,
            config,
            verbose,
            scrubber: Arc::default(),
            single_objects: false,
        }
    }

    /// The same rclone for commands on one object of ours (the lease): without the user's
    /// filter flags from the environment.
    pub fn for_single_objects(&self) -> Self {
        Rclone {
            single_objects: true,
            ..self.clone()
        }
    }

    /// The same rclone, with its output scrubbed of these secrets.
    pub fn with_scrubber(self, scrubber: Scrubber) -> Self {
        Rclone {
            scrubber: Arc::new(scrubber),
            ..self
        }
    }

    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config").arg(&self.config).args(args);
        for (name, _) in std::env::vars_os() {
            let private = name
                .to_str()
                .is_some_and(|n| PRIVATE_ENV_PREFIXES.iter().any(|p| n.starts_with(p)));
            let filter =
                self.single_objects && name.to_str().is_some_and(|n| FILTER_ENV.contains(&n));
            if private || filter {
                cmd.env_remove(&name);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        cmd
    }

    /// Runs a transfer command (`sync`, `copy`, …) with JSON logging, streaming its output
    /// into our log. `user_flags` (from after `--`) come last, so they win over ours.
    /// Returns rclone's final statistics.
    pub async fn run(
        &self,
        operation: &str,
        args: &[OsString],
        user_flags: &[String],
        abort: &mut Abort,
    ) -> Result<Stats> {
        let streamed = self
            .stream(operation, args, user_flags, abort, false)
            .await?;
        Ok(streamed.stats)
    }

    /// The transfer [`Rclone::run`] would make, as a `--dry-run` whose lines are logged at
    /// debug only. `Ok(true)` when rclone says positively that it would change nothing: it
    /// succeeded, skipped no action (copy, delete, update modification time, remove directory,
    /// …: each is a line with a `skipped` field; but for [`stream::DIRECTORY_ACTIONS`]),
    /// printed "There was nothing to transfer" (so its info lines, and the notice lines of
    /// skipped actions, reached us: not with a `--log-file` among the user's flags) and final
    /// statistics with no transfer, deletion or error. Anything else is `Ok(false)`: the
    /// transfer is to be run. The dry run is stopped at the first action it skips: the answer
    /// is known then.
    pub async fn changes_nothing(
        &self,
        operation: &str,
        args: &[OsString],
        user_flags: &[String],
        abort: &mut Abort,
    ) -> Result<bool> {
        let mut args = args.to_vec();
        args.push("--dry-run".into());
        let streamed = match self.stream(operation, &args, user_flags, abort, true).await {
            Ok(streamed) => streamed,
            Err(e @ Error::Interrupted(_)) => return Err(e),
            Err(e) => {
                tracing::debug!("the dry run of the {operation} failed: {e:#}");
                return Ok(false);
            }
        };
        let preview = streamed.preview.unwrap_or_default();
        let stats = &streamed.stats;
        Ok(streamed.reported
            && preview.skipped == 0
            && preview.nothing_to_transfer
            && stats.transfers == 0
            && stats.deletes == 0
            && stats.errors == 0
            && stats.internal_files == 0)
    }

    /// Runs a transfer command with JSON logging, its lines streamed into our log (all at
    /// debug for a `preview`, whose findings are counted instead).
    async fn stream(
        &self,
        operation: &str,
        args: &[OsString],
        user_flags: &[String],
        abort: &mut Abort,
        preview: bool,
    ) -> Result<Streamed> {
        let mut full: Vec<OsString> = vec![operation.into()];
        full.extend(args.iter().cloned());
        full.extend(
            [
                "--use-json-log",
                "--stats",
                "30s",
                "--stats-log-level",
                "NOTICE",
                "--stats-one-line",
            ]
            .map(OsString::from),
        );
        full.extend(TRANSFER_FLAGS.map(OsString::from));
        // -v at least: rclone then names each object it copies or deletes, which is how our
        // own objects are told apart in the counts (see the module docs).
        full.push(if self.verbose < 2 { "-v" } else { "-vv" }.into());
        full.extend(user_flags.iter().map(OsString::from));
        let label = if preview {
            format!("{operation} (dry run)")
        } else {
            operation.to_string()
        };
        let mut child = self.spawn(&full, &label)?;
        let stderr = child.stderr.take().context("rclone stderr")?;
        let stdout = child.stdout.take().context("rclone stdout")?;
        let mut out = Streamer::new(stderr, stdout, Arc::clone(&self.scrubber));
        out.info_as_debug = self.verbose == 0;
        out.preview = preview.then(Preview::default);
        let status = loop {
            tokio::select! {
                reason = aborted(abort) => {
                    stop(&mut child).await;
                    return Err(Error::Interrupted(reason));
                }
                more = out.next() , if !out.done() => {
                    if let Some(line) = more { out.handle(&line) }
                    if out.preview.as_ref().is_some_and(|p| p.skipped > 0) {
                        // A dry run that found a change has said what it is for.
                        stop(&mut child).await;
                        let stats = Stats::default();
                        return Ok(Streamed { stats, reported: false, preview: out.preview });
                    }
                }
                status = child.wait(), if out.done() => break status.context("waiting for rclone")?,
            }
        };
        if let Some(key) = out.unparsable_option.take() {
            return Err(unparsable_config(&key));
        }
        let reported = out.stats.is_some();
        let stats = without(out.stats.unwrap_or_default(), &out.internal);
        if !status.success() {
            let code = status.code().unwrap_or(-1);
            return Err(Error::Rclone {
                operation: operation.to_string(),
                code,
                meaning: exit_meaning(code),
                cause: out.causes.cause(),
                stats,
            });
        }
        Ok(Streamed {
            stats,
            reported,
            preview: out.preview,
        })
    }

    /// Runs rclone and returns the first non-empty line of its standard output, then stops it
    /// (reading more is not needed). `Ok(None)` when rclone printed nothing and succeeded, or
    /// failed with "directory not found" (exit 3): the path does not exist.
    pub async fn first_line(&self, args: &[OsString], operation: &str) -> Result<Option<String>> {
        within_deadline(operation, self.first_line_unbounded(args, operation)).await
    }

    async fn first_line_unbounded(
        &self,
        args: &[OsString],
        operation: &str,
    ) -> Result<Option<String>> {
        let mut child = self.spawn(&with_check_flags(args), operation)?;
        let stdout = child.stdout.take().context("rclone stdout")?;
        let stderr = child.stderr.take().context("rclone stderr")?;
        let stderr_task = tokio::spawn(collect_tail(stderr, Arc::clone(&self.scrubber), false));
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await.context("reading rclone output")? {
            if !line.trim().is_empty() {
                stop(&mut child).await;
                return Ok(Some(line));
            }
        }
        let status = child.wait().await.context("waiting for rclone")?;
        let (tail, causes) = stderr_task.await.unwrap_or_default();
        match status.code() {
            Some(0) | Some(3) => Ok(None),
            _ => Err(failure(operation, status, &tail, &causes)),
        }
    }

    /// Runs a short rclone command, feeding `stdin`, and returns its standard output.
    pub async fn output(
        &self,
        args: &[OsString],
        stdin: Option<&str>,
        operation: &str,
    ) -> Result<String> {
        within_deadline(operation, self.output_unbounded(args, stdin, operation)).await
    }

    async fn output_unbounded(
        &self,
        args: &[OsString],
        stdin: Option<&str>,
        operation: &str,
    ) -> Result<String> {
        let mut cmd = self.command(with_check_flags(args));
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = self.start(cmd, operation)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .context("writing to rclone")?;
        }
        let out = child
            .wait_with_output()
            .await
            .context("waiting for rclone")?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mut causes = Causes::default();
            stderr
                .lines()
                .for_each(|l| causes.add(&self.scrubber.scrub(l)));
            let tail = self
                .scrubber
                .scrub(stderr.lines().last().unwrap_or(""))
                .into_owned();
            Err(failure(operation, out.status, &tail, &causes))
        }
    }

    /// Starts a short rclone command (with the check flags) whose standard input and output
    /// are pipes for the caller: `rcat` fed after the data sync succeeded, `cat` read to the
    /// end (see [`crate::sync::fidelity`]). The caller bounds it in time and reads its status.
    pub fn spawn_piped(&self, args: &[OsString], operation: &str) -> Result<Child> {
        let mut cmd = self.command(with_check_flags(args));
        cmd.stdin(Stdio::piped());
        self.start(cmd, operation)
    }

    /// Starts a long-running rclone (`rcd`, [`rc`]) with the check flags; its
    /// standard error is a pipe for the caller to drain ([`collect_tail`]).
    pub fn spawn_server(&self, args: &[&str], operation: &str) -> Result<Child> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let mut cmd = self.command(with_check_flags(&args));
        cmd.stdout(Stdio::null());
        self.start(cmd, operation)
    }

    /// The scrubber of this rclone's output.
    pub fn scrubber(&self) -> Arc<Scrubber> {
        Arc::clone(&self.scrubber)
    }

    fn spawn(&self, args: &[OsString], operation: &str) -> Result<Child> {
        self.start(self.command(args), operation)
    }

    fn start(&self, mut cmd: Command, operation: &str) -> Result<Child> {
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} for {operation}", self.binary.display()))?;
        tracing::debug!(pid = child.id(), operation, "started rclone");
        Ok(child)
    }
}

fn with_check_flags(args: &[OsString]) -> Vec<OsString> {
    args.iter()
        .cloned()
        .chain(CHECK_FLAGS.map(OsString::from))
        .collect()
}

/// The provider's "bucket already exists" answer to the bucket check before an upload (rclone's
/// `Minio` provider and others, against servers that answer 409 to a bucket they own): it
/// proves the bucket exists, so the write can be repeated with `--s3-no-check-bucket`.
pub fn is_bucket_already_exists(e: &Error) -> bool {
    format!("{e:#}").contains("BucketAlreadyExists")
}

/// Flag for writes of the program's own objects after a successful data sync: the bucket
/// exists then, and checking it again only costs a request (and fails on some providers, see
/// [`is_bucket_already_exists`]). Harmless on other backends.
pub const NO_BUCKET_CHECK: &str = "--s3-no-check-bucket";

/// Asks the kernel to SIGKILL rclone when the thread that spawned it (ours) exits.
#[allow(unsafe_code)] // the only unsafe code: a pre-exec hook, see below
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // We may have died between fork and prctl: then nobody would send the signal.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other(
                    "the parent exited before rclone started",
                ));
            }
            Ok(())
        });
    }
}

fn unparsable_config(key: &str) -> Error {
    Error::config(format!(
        "rclone cannot parse the config: the line of option '{key}' is invalid (its value is not \
         shown); fix that option"
    ))
}

/// The error of a failed short command: rclone's cause when one was recognised in its output
/// (already scrubbed), else its last output line as context.
pub(crate) fn failure(operation: &str, status: ExitStatus, detail: &str, causes: &Causes) -> Error {
    failure_with_code(operation, status.code().unwrap_or(-1), detail, causes)
}

/// [`failure`] by rclone's exit code (or, for a call to `rclone rcd`, the code the failed
/// command would have had).
pub(crate) fn failure_with_code(
    operation: &str,
    code: i32,
    detail: &str,
    causes: &Causes,
) -> Error {
    if let Some(key) = unparsable_option(detail) {
        return unparsable_config(&key);
    }
    let cause = causes.cause().filter(|c| c.kind != Kind::Other);
    let known = cause.is_some();
    let err = Error::Rclone {
        operation: operation.to_string(),
        code,
        meaning: exit_meaning(code),
        cause,
        stats: Stats::default(),
    };
    if known || detail.is_empty() {
        err
    } else {
        Error::Other(anyhow::Error::new(err).context(detail.trim().to_string()))
    }
}

/// Waits until the abort channel carries a reason; pends forever if nobody can abort.
pub async fn aborted(abort: &mut Abort) -> &'static str {
    loop {
        if let Some(reason) = *abort.borrow_and_update() {
            return reason;
        }
        if abort.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Stops rclone and everything in its process group: SIGTERM, grace period, SIGKILL.
async fn stop(child: &mut Child) {
    let Some(pid) = child.id() else {
        return; // already reaped
    };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            pid,
            "rclone did not stop within {STOP_GRACE:?} of SIGTERM, killing it"
        );
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Anything left in the group (rclone does not normally fork) goes too.
    let _ = killpg(group, Signal::SIGKILL);
}

/// Reads an rclone's stderr to the end, logging it at debug level (scrubbed): its last line and
/// the causes it named.
/// `quiet`: at trace level (target `rclone::rcd`), for `rclone rcd`, whose log names every
/// request that failed, an expected "object not found" included.
pub(crate) async fn collect_tail<R: AsyncRead + Unpin>(
    reader: R,
    scrubber: Arc<Scrubber>,
    quiet: bool,
) -> (String, Causes) {
    let mut lines = BufReader::new(reader).lines();
    let mut last_error = String::new();
    let mut causes = Causes::default();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = scrubber.scrub(&line).into_owned();
        if quiet {
            tracing::trace!(target: "rclone::rcd", "{line}");
        } else {
            tracing::debug!(target: "rclone", "{line}");
        }
        if !line.trim().is_empty() {
            causes.add(&line);
            last_error = line;
        }
    }
    (last_error, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_have_documented_meanings() {
        for code in 1..=10 {
            assert_ne!(exit_meaning(code), "unknown exit code", "{code}");
        }
        assert!(exit_meaning(7).contains("--max-delete"));
    }
}
