//! The arguments of the sync commands (`sync-to-remote`, `remote-to-local-sync`,
//! `remote-to-remote-sync`, `interrupt`): clap derive structs only. Doc comments are the `--help`
//! text; the binary's top-level command line puts them under its subcommands.
//!
//! Values are parsed here only as far as clap can do it without context (numbers, durations);
//! everything that needs the environment or the file system is validated once in
//! [`crate::plan`], so a bad input is reported before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};

use crate::duration::{format_duration, parse_duration};

/// The bounds of every duration flag (README, "Flag bounds"). A value outside them is a usage
/// error (exit 2) naming the flag and the bound: a year-long lease or an `@every 100000000d`
/// is a typo, and unbounded values once overflowed the time arithmetic (a panic, or a lease
/// expiring in year 15716 that no writer could parse back). The upper bounds are far above any
/// sensible setting.
pub mod bounds {
    use std::time::Duration;

    const SECOND: Duration = Duration::from_secs(1);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    /// `--lease-ttl`: renewals every third of it need room for the settle delay; a lease of a
    /// killed writer blocks the path this long, so a day is the most that makes sense.
    pub const LEASE_TTL: (Duration, Duration) =
        (crate::sync::lease::MIN_TTL, crate::sync::lease::MAX_TTL);
    /// `--lease-max-clock-skew`: clocks further apart than an hour are broken, not skewed.
    pub const LEASE_MAX_CLOCK_SKEW: (Duration, Duration) = (Duration::from_millis(1), HOUR);
    /// `--wait-for-writer` (0 also allowed: do not wait).
    pub const WAIT_FOR_WRITER: (Duration, Duration) = (Duration::from_millis(1), DAY);
    /// `--debounce`.
    pub const DEBOUNCE: (Duration, Duration) = (Duration::from_millis(1), HOUR);
    /// `--min-interval`, `--shutdown-timeout`, `interrupt --timeout`.
    pub const UP_TO_A_DAY: (Duration, Duration) = (Duration::from_millis(1), DAY);
    /// `--full-sync-every`, `--sync-timeout`, `--max-sync-age` (and `--schedule @every`, see
    /// [`crate::daemon::schedule::MAX_EVERY`]).
    pub const UP_TO_A_YEAR: (Duration, Duration) = (SECOND, crate::daemon::schedule::MAX_EVERY);
    /// `--retries`.
    pub const RETRIES: u32 = 100;
    /// `--max-consecutive-failures`.
    pub const MAX_CONSECUTIVE_FAILURES: u32 = 10_000;
}

/// A parser of a duration within `(min, max)`; the message names the bound (clap names the
/// flag).
fn within((min, max): (Duration, Duration), s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            format_duration(min),
            format_duration(max)
        ));
    }
    Ok(d)
}

fn parse_lease_ttl(s: &str) -> Result<Duration, String> {
    within(bounds::LEASE_TTL, s)
}

fn parse_clock_skew(s: &str) -> Result<Duration, String> {
    within(bounds::LEASE_MAX_CLOCK_SKEW, s)
}

fn parse_debounce(s: &str) -> Result<Duration, String> {
    within(bounds::DEBOUNCE, s)
}

fn parse_up_to_a_day(s: &str) -> Result<Duration, String> {
    within(bounds::UP_TO_A_DAY, s)
}

fn parse_up_to_a_year(s: &str) -> Result<Duration, String> {
    within(bounds::UP_TO_A_YEAR, s)
}

/// The oldest rclone this program works with: its default `--max-buffer-memory` is from 1.70
/// (an older rclone fails every sync with "unknown flag"). Named by `--version` and the help.
pub const MIN_RCLONE_VERSION: &str = "1.70";

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("long_running").multiple(true)))]
pub struct SyncToRemoteArgs {
    /// Local directory to upload.
    #[arg(short, long, value_name = "LOCAL_DIR")]
    pub src: PathBuf,

    /// Path on the remote, e.g. bucket/path (becomes remote:bucket/path).
    #[arg(short, long, value_name = "REMOTE_PATH")]
    pub dst: String,

    /// Upload even if the local directory holds no regular file (only empty directories,
    /// links, special files, lost+found), which deletes every file at the destination (safety
    /// rule 'empty-source').
    #[arg(long)]
    pub force_even_if_remote_would_be_cleared: bool,

    /// Upload even though the local directory holds the marker of an unfinished restore, which
    /// would replace the remote with a partial copy (safety rule 'restore-in-progress').
    #[arg(long)]
    pub force_upload_partial_restore: bool,

    /// Refuse an upload that would delete more than this share (percent) of the files the
    /// last upload to the path recorded, when that is 10 files or more (safety rule
    /// 'mass-delete'); 100 switches the rule off.
    #[arg(long, value_name = "PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_delete_percent: u8,

    #[command(flatten)]
    pub watch: WatchArgs,

    #[command(flatten)]
    pub lease: LeaseArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// The lease that makes this process the only writer of the remote path (sync-to-remote).
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Upload even though another writer holds a live lease on the remote path (safety rule
    /// 'remote-in-use').
    ///
    /// Only for a writer known to be gone: a live one would upload too until its next renewal.
    #[arg(long)]
    pub force_take_over_lease: bool,

    /// How long the lease lives without renewal; it is renewed every third of it.
    ///
    /// A writer killed without releasing it blocks others this long (plus the clock skew). 15s
    /// to 1d.
    #[arg(long, value_parser = parse_lease_ttl, default_value = "2m", value_name = "DURATION")]
    pub lease_ttl: Duration,

    /// The largest clock difference between hosts writing to the same remote path; a lease
    /// counts as expired only this long after its expiry time.
    ///
    /// At most 1h.
    #[arg(long, value_parser = parse_clock_skew, default_value = "30s", value_name = "DURATION")]
    pub lease_max_clock_skew: Duration,
}

/// Sync on change (sync-to-remote only).
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Sync when files change (inotify), uploading only what changed; combines with --schedule.
    ///
    /// Runs a full sync at start, then after each burst of changes, until SIGTERM/SIGINT (one
    /// final sync).
    #[arg(long, group = "long_running")]
    pub watch: bool,

    /// With --watch: wait for this quiet period after the last change before syncing.
    ///
    /// At most 1h.
    #[arg(long, value_parser = parse_debounce, default_value = "2s", value_name = "DURATION", requires = "watch")]
    pub debounce: Duration,

    /// With --watch: at most one sync per this interval (default: no limit).
    ///
    /// At most 1d.
    #[arg(long, value_parser = parse_up_to_a_day, value_name = "DURATION", requires = "watch")]
    pub min_interval: Option<Duration>,

    /// With --watch: also run a full sync this often, to catch anything the watcher missed.
    /// 1s to 366 days.
    #[arg(long, value_parser = parse_up_to_a_year, default_value = "1h", value_name = "DURATION", requires = "watch")]
    pub full_sync_every: Duration,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("long_running").multiple(true)))]
pub struct RemoteToLocalArgs {
    /// Path on the remote to restore from, e.g. bucket/path.
    #[arg(short, long, value_name = "REMOTE_PATH")]
    pub src: String,

    /// Local directory to restore into (created if missing).
    #[arg(short, long, value_name = "LOCAL_DIR")]
    pub dst: PathBuf,

    /// Restore even if it deletes local data: the remote is empty, missing or unlistable while
    /// the local directory holds files, the directory is owned by root or another user, or it is
    /// a system directory such as /etc (safety rules 'empty-remote', 'foreign-owner',
    /// 'system-directory').
    #[arg(long)]
    pub force_delete_local_dir: bool,

    /// Restore only into an empty directory (or one left by an interrupted restore); if it
    /// already holds data, skip the restore and exit 0.
    ///
    /// For init containers: a restarted pod keeps writes that are newer than the remote.
    #[arg(long)]
    pub if_local_empty: bool,

    /// Skip the restore (exit 0, with a log line) when the remote path was never uploaded to by
    /// sync-to-remote: it holds neither the metadata manifest nor the upload record that every
    /// upload leaves.
    ///
    /// The first Pod ever to use a path then starts with its own data, and every later start
    /// restores (PodFilesystemSync restoreRemoteOnFirstRun: false). Files found there anyway
    /// are not restored, and a warning says so.
    #[arg(long)]
    pub skip_if_never_uploaded: bool,

    /// Restore even though the remote holds objects beneath paths that are symlinks in the
    /// local directory (safety rule 'link-conflict'): those objects are skipped, with a warning
    /// naming the links.
    ///
    /// A restore never writes or deletes through a symlink.
    #[arg(long)]
    pub skip_objects_under_links: bool,

    /// Restore the setuid and setgid bits of files recorded by the upload (also as root).
    ///
    /// Without it they are dropped, with a warning counting them: whoever can write to the
    /// bucket could otherwise plant a setuid program in the volume.
    #[arg(long)]
    pub restore_setid_bits: bool,

    /// While a writer holds a live lease on the remote path, wait up to this long for it to
    /// finish (its final sync releases the lease) before restoring; 0 = do not wait.
    ///
    /// On timeout exit 1. One-shot restores only. At most 1d.
    #[arg(long, value_parser = parse_wait, default_value = "5m", value_name = "DURATION")]
    pub wait_for_writer: Duration,

    /// The largest clock difference between hosts (see sync-to-remote): a lease counts as
    /// expired only this long after its expiry time.
    ///
    /// At most 1h.
    #[arg(long, value_parser = parse_clock_skew, default_value = "30s", value_name = "DURATION")]
    pub lease_max_clock_skew: Duration,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("long_running").multiple(true)))]
pub struct RemoteToRemoteArgs {
    /// Path to replicate from, on the source remote (SOURCE_*), e.g. bucket/path.
    ///
    /// Repeatable: one per -d.
    #[arg(short, long, value_name = "SOURCE_PATH", required = true)]
    pub src: Vec<String>,

    /// Path to replicate to, on the remote (REMOTE_*), e.g. bucket/path.
    ///
    /// Repeatable: one per -s, in the same order.
    #[arg(short, long, value_name = "REMOTE_PATH", required = true)]
    pub dst: Vec<String>,

    /// Source option key=value for section [source]; wins over SOURCE_<KEY>. Repeatable.
    #[arg(long = "source-param", value_name = "KEY=VALUE")]
    pub source_params: Vec<String>,

    /// Encryption (rclone crypt) option key=value of the source; wins over
    /// SOURCE_ENCRYPTED_<KEY>. Repeatable.
    #[arg(long = "source-enc-param", value_name = "KEY=VALUE")]
    pub source_enc_params: Vec<String>,

    /// Replicate even if a source path holds no file while its destination does, which
    /// deletes every file at the destination (safety rule 'empty-source').
    #[arg(long)]
    pub force_even_if_destination_would_be_cleared: bool,

    /// Refuse a replication that would delete more than this share (percent) of the files the
    /// last replication to the destination recorded, when that is 10 files or more (safety rule
    /// 'mass-delete'); 100 switches the rule off.
    #[arg(long, value_name = "PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_delete_percent: u8,

    #[command(flatten)]
    pub lease: LeaseArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options shared by both sync directions.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Never delete at the destination: use `rclone copy` instead of `rclone sync`.
    #[arg(short = 'x', long)]
    pub no_delete: bool,

    /// Show what would be transferred and deleted, change nothing (rclone --dry-run).
    #[arg(long)]
    pub dry_run: bool,

    /// The rclone executable, version 1.70 or newer; by default `rclone` is looked up in PATH.
    #[arg(long, env = "RCLONE_BINARY", value_name = "PATH")]
    pub rclone_binary: Option<PathBuf>,

    /// Remote option key=value for section [remote]; wins over REMOTE_<KEY>. Repeatable.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,

    /// Encryption (rclone crypt) option key=value; wins over ENCRYPTED_<KEY>. Repeatable.
    #[arg(short = 'e', long = "enc-param", value_name = "KEY=VALUE")]
    pub enc_params: Vec<String>,

    /// Use this existing rclone.conf (its section [remote], and [source] for
    /// remote-to-remote-sync) instead of REMOTE_* (and SOURCE_*) variables.
    #[arg(short = 'c', long, value_name = "FILE", requires = "no_template")]
    pub config_path: Option<PathBuf>,

    /// Do not render a config from REMOTE_* variables; requires --config-path.
    #[arg(long, requires = "config_path")]
    pub no_template: bool,

    /// Re-run a failed sync this many times within one run, with exponential backoff from 1s.
    ///
    /// Not retried: a cause that cannot heal within seconds (a refused connection, wrong
    /// credentials, TLS, DNS, a missing bucket) or one rclone called fatal. rclone's own
    /// whole-pass retries are turned off in favour of these. At most 100.
    #[arg(long, default_value_t = 3, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(bounds::RETRIES)))]
    pub retries: u32,

    /// Upper bound for one whole sync, retries and backoff included (e.g. 30m, 6h); after it
    /// rclone is stopped and the sync fails (exit 1).
    ///
    /// Default: no bound (stalled transfers are still cut by rclone's idle --timeout, 30s by
    /// default). 1s to 366 days.
    #[arg(long, value_parser = parse_up_to_a_year, value_name = "DURATION")]
    pub sync_timeout: Option<Duration>,

    /// When the process ends, write the summary of its last sync here: a JSON document of at
    /// most 4 KiB (result, safety rule, message, end time, duration, bytes, last success).
    ///
    /// Made for a Kubernetes container's terminationMessagePath (`/dev/termination-log`), where
    /// the operator reads it into the PodFilesystemSync's status.
    #[arg(long, env = "VSO_TERMINATION_MESSAGE_PATH", value_name = "FILE")]
    pub termination_message_path: Option<PathBuf>,

    #[command(flatten)]
    pub schedule: ScheduleArgs,

    /// Further rclone flags, passed through after `--` (e.g. `-- --transfers 16`).
    #[arg(last = true, value_name = "RCLONE_FLAGS")]
    pub rclone_args: Vec<String>,
}

/// The long-running mode (--schedule and/or --watch).
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Repeat the sync: `@every 1m`, `@every 1h30m`, cron with seconds `0 30 * * * *`, standard
    /// cron `*/6 * * * *`, or @hourly, @daily, @weekly, @monthly, @yearly.
    ///
    /// Runs once at start, then on the schedule; SIGTERM/SIGINT triggers one final sync.
    #[arg(long, value_name = "EXPR", group = "long_running")]
    pub schedule: Option<String>,

    /// Upper bound for the final sync after SIGTERM/SIGINT (e.g. 30s, 5m); after it rclone is
    /// stopped and the exit code is 1.
    ///
    /// At most 1d.
    #[arg(long, value_parser = parse_up_to_a_day, default_value = "5m", value_name = "DURATION", requires = "long_running")]
    pub shutdown_timeout: Duration,

    /// Where the scheduled process writes its PID (read by `interrupt`).
    ///
    /// Default: $TMPDIR/volume-syncing-operator.pid.
    #[arg(long, value_name = "FILE", requires = "long_running")]
    pub pid_path: Option<PathBuf>,

    /// Serve Prometheus /metrics, /healthz, /livez and /readyz on HOST:PORT (e.g. 0.0.0.0:9090)
    /// while running with --schedule or --watch.
    ///
    /// Off by default.
    #[arg(long, value_name = "HOST:PORT", requires = "long_running")]
    pub metrics_address: Option<String>,

    /// /healthz and /livez answer 503 after this many consecutive failed syncs, 200 again after
    /// a success. 1 to 10000.
    #[arg(long, default_value_t = 3, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(bounds::MAX_CONSECUTIVE_FAILURES)))]
    pub max_consecutive_failures: u32,

    /// /healthz answers 503 when no sync has succeeded for this long (counted from the start
    /// until the first success), or when the running sync has run this long.
    ///
    /// Default: twice the longest gap between two planned syncs (schedule, or --full-sync-every
    /// with --watch) plus 10m. 1s to 366 days.
    #[arg(long, value_parser = parse_up_to_a_year, value_name = "DURATION", requires = "long_running")]
    pub max_sync_age: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct InterruptArgs {
    /// The PID file written by the scheduled process.
    ///
    /// Default: $TMPDIR/volume-syncing-operator.pid.
    #[arg(long, value_name = "FILE")]
    pub pid_path: Option<PathBuf>,

    /// How long to wait for the process to finish its final sync and exit.
    ///
    /// At most 1d.
    #[arg(long, value_parser = parse_up_to_a_day, default_value = "10m", value_name = "DURATION")]
    pub timeout: Duration,
}

/// `--wait-for-writer`: a bounded duration where `0` means "not at all".
fn parse_wait(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        Ok(Duration::ZERO)
    } else {
        within(bounds::WAIT_FOR_WRITER, s)
    }
}

/// The default PID file location: writable by a non-root process (unlike /run).
pub fn default_pid_path() -> PathBuf {
    std::env::temp_dir().join("volume-syncing-operator.pid")
}
