//! The command line: clap derive structs only. Doc comments are the `--help` text.
//!
//! Values are parsed here only as far as clap can do it without context (numbers, durations);
//! everything that needs the environment or the file system is validated once in
//! [`crate::plan`], so a bad input is reported before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::schedule::{format_duration, parse_duration};

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
    pub const LEASE_TTL: (Duration, Duration) = (crate::lease::MIN_TTL, DAY);
    /// `--lease-max-clock-skew`: clocks further apart than an hour are broken, not skewed.
    pub const LEASE_MAX_CLOCK_SKEW: (Duration, Duration) = (Duration::from_millis(1), HOUR);
    /// `--wait-for-writer` (0 also allowed: do not wait).
    pub const WAIT_FOR_WRITER: (Duration, Duration) = (Duration::from_millis(1), DAY);
    /// `--debounce`.
    pub const DEBOUNCE: (Duration, Duration) = (Duration::from_millis(1), HOUR);
    /// `--min-interval`, `--shutdown-timeout`, `interrupt --timeout`.
    pub const UP_TO_A_DAY: (Duration, Duration) = (Duration::from_millis(1), DAY);
    /// `--full-sync-every`, `--sync-timeout`, `--max-sync-age` (and `--schedule @every`, see
    /// [`crate::schedule::MAX_EVERY`]).
    pub const UP_TO_A_YEAR: (Duration, Duration) = (SECOND, crate::schedule::MAX_EVERY);
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

// The help texts after the options. Macros, not consts, because `concat!` (which builds the
// long help from the short one) takes literals only. `-h` shows `after_help`, `--help`
// `after_long_help`; tests below check that they say what the README says.

/// The exit codes of every command (README, "Exit codes").
macro_rules! exit_codes_help {
    () => {
        "\
Exit codes:
  0  success (also: --if-local-empty skipped a restore; a scheduled process whose final
     sync succeeded)
  1  failure: rclone failed, a timeout or a signal cut the sync, a lease was lost, I/O error
  2  usage or configuration error: nothing ran (bad flags or variables, rclone not found, ...)
  3  refused by a safety valve: nothing changed at either end"
    };
}

/// The variables of the destination remote (`[remote]`) and its encryption.
macro_rules! remote_variables_help {
    () => {
        "\
Environment variables:
  REMOTE_<KEY>=VALUE     becomes `<key> = VALUE` in section [remote] of a private rclone.conf:
                         REMOTE_TYPE=s3 (required unless --config-path), REMOTE_PROVIDER,
                         REMOTE_ENDPOINT, REMOTE_ACCESS_KEY_ID, REMOTE_SECRET_ACCESS_KEY, ...
                         (any option of the rclone backend); -p key=value wins over it
  ENCRYPTION_PASSPHRASE  switches on end-to-end encryption (rclone crypt) with this key, as
                         plain text; ENCRYPTION_SALT is an optional second password
  ENCRYPTED_<KEY>=VALUE  any other crypt option: ENCRYPTED_PASSWORD (an rclone-obscured key),
                         ENCRYPTED_FILENAME_ENCRYPTION, ...; -e key=value wins over it
  RCLONE_BINARY          the rclone executable (rclone >= 1.70), as --rclone-binary
  LOG_FORMAT             text or json, as --log-format"
    };
}

/// One line in `-h` of the sync commands pointing at the variables of `--help`.
macro_rules! variables_pointer {
    () => {
        "The remote is configured by REMOTE_* variables, encryption by ENCRYPTION_PASSPHRASE or \
         ENCRYPTED_*; --help lists them, and the exit codes."
    };
}

macro_rules! top_examples {
    () => {
        "\
Examples:
  export REMOTE_TYPE=s3 REMOTE_PROVIDER=AWS REMOTE_ACCESS_KEY_ID=... REMOTE_SECRET_ACCESS_KEY=...
  volume-syncing-operator sync-to-remote -s /data -d my-bucket/app
  volume-syncing-operator remote-to-local-sync -s my-bucket/app -d /data

'volume-syncing-operator COMMAND --help' shows each command's examples and variables."
    };
}

macro_rules! sync_to_remote_examples {
    () => {
        "\
Examples:
  # upload once
  export REMOTE_TYPE=s3 REMOTE_PROVIDER=AWS REMOTE_ACCESS_KEY_ID=... REMOTE_SECRET_ACCESS_KEY=...
  volume-syncing-operator sync-to-remote -s /data -d my-bucket/app
  # the sidecar: now, every 5 minutes, and one final sync on SIGTERM
  volume-syncing-operator sync-to-remote -s /data -d my-bucket/app --schedule '@every 5m'
  # on change, encrypted, with /metrics and /healthz
  ENCRYPTION_PASSPHRASE='...' volume-syncing-operator sync-to-remote -s /data -d my-bucket/app \\
    --watch --metrics-address 0.0.0.0:9090
  # what would change, with an extra rclone flag
  volume-syncing-operator sync-to-remote --dry-run -v -s /data -d my-bucket/app -- --transfers 16"
    };
}

macro_rules! remote_to_local_examples {
    () => {
        "\
Examples:
  # restore once
  export REMOTE_TYPE=s3 REMOTE_PROVIDER=AWS REMOTE_ACCESS_KEY_ID=... REMOTE_SECRET_ACCESS_KEY=...
  volume-syncing-operator remote-to-local-sync -s my-bucket/app -d /data
  # an init container: restore only into an empty volume
  volume-syncing-operator remote-to-local-sync --if-local-empty -s my-bucket/app -d /data
  # an encrypted remote
  ENCRYPTION_PASSPHRASE='...' volume-syncing-operator remote-to-local-sync -s my-bucket/app -d /data"
    };
}

macro_rules! remote_to_remote_examples {
    () => {
        "\
Examples:
  export SOURCE_TYPE=s3 SOURCE_ENDPOINT=https://s3.dc1.example SOURCE_ACCESS_KEY_ID=... ...
  export REMOTE_TYPE=s3 REMOTE_ENDPOINT=https://s3.dc2.example REMOTE_ACCESS_KEY_ID=... ...
  volume-syncing-operator remote-to-remote-sync -s app-data -d app-data
  # two pairs, nightly at 05:00
  volume-syncing-operator remote-to-remote-sync -s app-data -d app-data -s media -d media \\
    --schedule '0 0 5 * * *'"
    };
}

macro_rules! remote_to_remote_variables_help {
    () => {
        "\
Environment variables:
  SOURCE_<KEY>=VALUE     section [source], the remote replicated from (as REMOTE_<KEY>);
                         --source-param key=value wins over it
  SOURCE_ENCRYPTION_PASSPHRASE, SOURCE_ENCRYPTED_<KEY>
                         the source's encryption (as ENCRYPTION_PASSPHRASE, ENCRYPTED_<KEY>)
  REMOTE_<KEY>=VALUE     section [remote], the destination: REMOTE_TYPE=s3, REMOTE_ENDPOINT,
                         REMOTE_ACCESS_KEY_ID, ...; -p key=value wins over it
  ENCRYPTION_PASSPHRASE  encrypts the destination (rclone crypt); ENCRYPTION_SALT and
  ENCRYPTED_<KEY>=VALUE  any other crypt option as for sync-to-remote; -e wins over them
  RCLONE_BINARY          the rclone executable (rclone >= 1.70), as --rclone-binary
  LOG_FORMAT             text or json, as --log-format"
    };
}

macro_rules! interrupt_examples {
    () => {
        "\
Examples:
  volume-syncing-operator sync-to-remote -s /data -d my-bucket/app --schedule '@every 5m' &
  volume-syncing-operator interrupt     # its final sync, then both exit
  # a Kubernetes preStop hook, with the sidecar's --pid-path
  volume-syncing-operator interrupt --pid-path /tmp/vso.pid --timeout 5m"
    };
}

macro_rules! inject_examples {
    () => {
        "\
Examples:
  volume-syncing-operator inject -f deployment.yaml --sync sync.yaml > injected.yaml
  kubectl kustomize . | volume-syncing-operator inject -f - --sync sync.yaml | kubectl apply -f -"
    };
}

#[cfg(feature = "operator")]
macro_rules! operator_examples {
    () => {
        "\
Examples:
  # in a cluster it is deployed by kubectl apply -k deploy/operator (README.md)
  volume-syncing-operator operator --namespace volume-syncing-operator
  # with a certificate mounted from cert-manager
  volume-syncing-operator operator --namespace vso --tls-cert-file /tls/tls.crt \\
    --tls-key-file /tls/tls.key"
    };
}

/// `--version`: the program's and the rclone it needs (a separate executable).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (needs rclone >= 1.70)");

/// Keeps a directory and an rclone remote in sync, and refuses any run that would wipe data.
///
/// A wrapper around the rclone executable (rclone >= 1.70) for shells, containers and
/// Kubernetes (a restore init container plus a backup sidecar).
///
/// The remote is configured from REMOTE_* environment variables (REMOTE_TYPE=s3 becomes
/// `type = s3` in section [remote] of a private, temporary rclone.conf) and -p key=value.
/// Encryption is switched on by ENCRYPTED_* / ENCRYPTION_PASSPHRASE variables or -e key=value.
#[derive(Debug, Parser)]
#[command(
    name = "volume-syncing-operator",
    version = VERSION,
    propagate_version = true,
    after_help = concat!(top_examples!(), "\n--help also shows the exit codes."),
    after_long_help = concat!(top_examples!(), "\n\n", exit_codes_help!())
)]
pub struct Cli {
    /// More output: -v logs every transferred file, -vv adds debug output.
    ///
    /// -vv also logs the rendered rclone config, with secret values redacted.
    #[arg(short, long, action = clap::ArgAction::Count, global = true,
          help_heading = "Global options")]
    pub verbose: u8,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, env = "LOG_FORMAT", default_value_t = LogFormat::Text, global = true,
          help_heading = "Global options")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload LOCAL_DIR to remote:REMOTE_PATH (rclone sync; with -x rclone copy).
    #[command(
        after_help = concat!(sync_to_remote_examples!(), "\n\n", variables_pointer!()),
        after_long_help = concat!(sync_to_remote_examples!(), "\n\n", remote_variables_help!(),
                                  "\n\n", exit_codes_help!())
    )]
    SyncToRemote(SyncToRemoteArgs),
    /// Restore remote:REMOTE_PATH into LOCAL_DIR (rclone sync; with -x rclone copy).
    #[command(
        after_help = concat!(remote_to_local_examples!(), "\n\n", variables_pointer!()),
        after_long_help = concat!(remote_to_local_examples!(), "\n\n", remote_variables_help!(),
                                  "\n\n", exit_codes_help!())
    )]
    RemoteToLocalSync(RemoteToLocalArgs),
    /// Replicate remote paths to remote paths: source:SOURCE_PATH (SOURCE_*) to
    /// remote:REMOTE_PATH (REMOTE_*), server to server (rclone sync; with -x rclone copy).
    ///
    /// Several pairs per run: repeat -s and -d (the n-th -s goes to the n-th -d). Each pair
    /// has its own safety valves, lease and summary line; a failing pair does not stop the
    /// others, and the exit code is the worst of them (3, then 2, then 1).
    #[command(
        after_help = concat!(remote_to_remote_examples!(), "\n\n",
                             "The source is configured by SOURCE_* variables, the destination by \
                              REMOTE_* (encryption: ENCRYPTION_PASSPHRASE, ENCRYPTED_*); --help \
                              lists them, and the exit codes."),
        after_long_help = concat!(remote_to_remote_examples!(), "\n\n",
                                  remote_to_remote_variables_help!(), "\n\n", exit_codes_help!())
    )]
    RemoteToRemoteSync(RemoteToRemoteArgs),
    /// Ask a running scheduled instance to do its final sync and exit; wait until it has.
    ///
    /// Meant as the Kubernetes preStop hook: it returns only after the process has exited,
    /// and exits 0 only if that process's final sync succeeded.
    #[command(after_help = interrupt_examples!())]
    Interrupt(InterruptArgs),
    /// Add the restore init container and the sync sidecar of PodFilesystemSync resources to
    /// the pod templates of Kubernetes manifests, offline; prints the manifests.
    ///
    /// Reads multi-document YAML (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
    /// CronJob, and the items of a List; other kinds pass through unchanged). Bad input exits 2
    /// and prints nothing on stdout.
    #[command(after_help = inject_examples!())]
    Inject(InjectArgs),
    /// Print the CustomResourceDefinition of PodFilesystemSync (YAML).
    #[command(hide = true)]
    Crd,
    /// Run the Kubernetes admission webhook: inject PodFilesystemSync resources into labelled
    /// Pods as they are created (HTTPS; /mutate, /healthz, /readyz, /metrics).
    ///
    /// Talks to the API server from its in-cluster service account (or KUBECONFIG). Without
    /// --tls-cert-file it keeps a CA and serving certificate in the Secret --tls-secret and writes
    /// the CA into the caBundle of --webhook-configuration.
    #[cfg(feature = "operator")]
    #[command(after_help = operator_examples!())]
    Operator(OperatorArgs),
}

/// Whether injected sidecars are native ones (decided from the cluster version when `auto`).
#[cfg(feature = "operator")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NativeSidecars {
    /// Native on Kubernetes >= 1.29, classic below.
    Auto,
    True,
    False,
}

#[cfg(feature = "operator")]
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Address of the HTTPS server (admission, health, metrics).
    #[arg(
        long,
        env = "VSO_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: String,

    /// The operator's own namespace: where its TLS Secret lives.
    #[arg(long, env = "VSO_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: String,

    /// The Service in front of the operator; the serving certificate is made for its DNS names.
    #[arg(
        long,
        env = "VSO_SERVICE",
        value_name = "NAME",
        default_value = "volume-syncing-operator"
    )]
    pub service: String,

    /// More names (DNS or IP) the serving certificate is made for.
    ///
    /// Repeatable.
    #[arg(long, value_name = "HOST")]
    pub cert_host: Vec<String>,

    /// The Secret (in --namespace) holding the generated CA and serving certificate; shared by
    /// all replicas.
    #[arg(
        long,
        env = "VSO_TLS_SECRET",
        value_name = "NAME",
        default_value = "volume-syncing-operator-tls"
    )]
    pub tls_secret: String,

    /// The MutatingWebhookConfiguration whose caBundle gets the generated CA.
    #[arg(
        long,
        env = "VSO_WEBHOOK_CONFIGURATION",
        value_name = "NAME",
        default_value = "volume-syncing-operator"
    )]
    pub webhook_configuration: String,

    /// Serve this certificate (PEM, e.g. mounted by cert-manager) instead of generating one;
    /// reloaded when it changes.
    ///
    /// Needs --tls-key-file; the caBundle is then not touched.
    #[arg(
        long,
        env = "VSO_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key of --tls-cert-file (PEM).
    #[arg(
        long,
        env = "VSO_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// Native sidecars (Kubernetes >= 1.29) or classic ones; `auto` asks the API server.
    #[arg(long, env = "VSO_NATIVE_SIDECARS", value_enum, default_value_t = NativeSidecars::Auto)]
    pub native_sidecars: NativeSidecars,

    /// The image of the injected containers when a resource sets none.
    #[arg(long, env = "VSO_IMAGE", value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The manifests to inject into; `-` reads stdin.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub filename: PathBuf,

    /// A file of PodFilesystemSync resources (multi-document YAML); `-` reads stdin.
    ///
    /// Repeatable.
    #[arg(long, value_name = "FILE", required = true)]
    pub sync: Vec<PathBuf>,

    /// Native sidecars (an init container with restartPolicy Always; Kubernetes >= 1.29), or
    /// `false` for an ordinary sidecar container (older clusters).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub native_sidecars: bool,

    /// The image of the injected containers when a resource sets none.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,
}

/// The image `make image` builds; push it to a registry and pass `--image`.
pub const DEFAULT_IMAGE: &str = "volume-syncing-operator:dev";

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("volume-syncing-operator").chain(args.iter().copied()))
    }

    #[test]
    fn valid_and_invalid_command_lines() {
        let ok = [
            "sync-to-remote -s /data -d b/p",
            "sync-to-remote -s /data -d b/p -x --dry-run -vv",
            "sync-to-remote -s /d -d b -- --transfers 16",
            "remote-to-local-sync -s b/p -d /data --if-local-empty",
            "remote-to-local-sync -s b -d /d --skip-objects-under-links --restore-setid-bits",
            "remote-to-local-sync -s b -d /d -c f --no-template",
            "sync-to-remote -s /d -d b --schedule @hourly",
            "sync-to-remote -s /d -d b --schedule @daily --shutdown-timeout 30s",
            "sync-to-remote -s /d -d b --watch --debounce 1s --min-interval 1m",
            "sync-to-remote -s /d -d b --watch --schedule @hourly --pid-path /p",
            "sync-to-remote -s /d -d b --watch --metrics-address 127.0.0.1:0",
            "remote-to-local-sync -s b -d /d --schedule @hourly --metrics-address :9090",
            "sync-to-remote -s /d -d b --force-take-over-lease --lease-ttl 30s",
            "sync-to-remote -s /d -d b --lease-max-clock-skew 5s --schedule @hourly",
            "remote-to-local-sync -s b -d /d --wait-for-writer 0",
            "remote-to-local-sync -s b -d /d --wait-for-writer 1m --lease-max-clock-skew 1m",
            "remote-to-remote-sync -s a -d b",
            "remote-to-remote-sync -s a -d b -s c -d d -x --dry-run --source-param type=s3",
            "remote-to-remote-sync -s a -d b --schedule @daily --metrics-address :9090",
            "remote-to-remote-sync -s a -d b --force-even-if-destination-would-be-cleared",
            "remote-to-remote-sync -s a -d b --max-delete-percent 100",
            "sync-to-remote -s /d -d b --lease-ttl 1d --retries 100",
            "sync-to-remote -s /d -d b --schedule @daily --max-sync-age 366d",
            "sync-to-remote -s /d -d b --schedule @daily --max-consecutive-failures 10000",
            "remote-to-local-sync -s b -d /d --wait-for-writer 1d --lease-max-clock-skew 1h",
            "interrupt",
            "interrupt --pid-path /tmp/x.pid --timeout 1m",
            "inject -f app.yaml --sync s.yaml",
            "inject -f - --sync a.yaml --sync b.yaml --native-sidecars=false --image i:1",
            "crd",
        ];
        for line in ok {
            assert!(
                parse(&line.split_whitespace().collect::<Vec<_>>()).is_ok(),
                "should parse: {line}"
            );
        }
        let bad = [
            "sync-to-remote -s /data",
            "sync-to-remote -d b",
            "sync-to-remote -s /d -d b -c f",
            "sync-to-remote -s /d -d b --no-template",
            "sync-to-remote -s /d -d b --shutdown-timeout 1m",
            "sync-to-remote -s /d -d b --pid-path /x",
            "sync-to-remote -s /d -d b --metrics-address 127.0.0.1:9090",
            "sync-to-remote -s /d -d b --debounce 1s",
            "remote-to-local-sync -s b -d /d --watch",
            "sync-to-remote -s /d -d b --restore-setid-bits",
            "sync-to-remote -s /d -d b --skip-objects-under-links",
            "sync-to-remote -s /d -d b --schedule @daily --max-consecutive-failures 0",
            "sync-to-remote -s /d -d b --if-local-empty",
            "remote-to-local-sync -s b -d /d --force-even-if-remote-would-be-cleared",
            "interrupt --timeout soon",
            "sync-to-remote -s /d -d b --wait-for-writer 1m",
            "remote-to-local-sync -s b -d /d --force-take-over-lease",
            "sync-to-remote -s /d -d b --lease-ttl soon",
            "sync-to-remote -s /d -d b --lease-ttl 100000000d",
            "sync-to-remote -s /d -d b --lease-ttl 5000000d",
            "sync-to-remote -s /d -d b --lease-ttl 14s",
            "sync-to-remote -s /d -d b --lease-ttl 25h",
            "sync-to-remote -s /d -d b --lease-max-clock-skew 2h",
            "sync-to-remote -s /d -d b --retries 101",
            "sync-to-remote -s /d -d b --sync-timeout 367d",
            "sync-to-remote -s /d -d b --watch --debounce 2h",
            "sync-to-remote -s /d -d b --watch --min-interval 2d",
            "sync-to-remote -s /d -d b --watch --full-sync-every 400d",
            "sync-to-remote -s /d -d b --schedule @daily --shutdown-timeout 2d",
            "sync-to-remote -s /d -d b --schedule @daily --max-sync-age 18446744073709551615s",
            "sync-to-remote -s /d -d b --schedule @daily --max-consecutive-failures 10001",
            "remote-to-local-sync -s b -d /d --wait-for-writer 2d",
            "remote-to-remote-sync -s a -d b --max-delete-percent 101",
            "interrupt --timeout 100000000d",
            "remote-to-remote-sync -s a",
            "remote-to-remote-sync -d b",
            "remote-to-remote-sync -s a -d b --watch",
            "remote-to-remote-sync -s a -d b --shutdown-timeout 1m",
            "no-such-command",
            "inject -f app.yaml",
            "inject --sync s.yaml",
            "inject -f a --sync s --native-sidecars=maybe",
        ];
        for line in bad {
            let err = parse(&line.split_whitespace().collect::<Vec<_>>()).expect_err(line);
            assert_eq!(err.exit_code(), 2, "usage errors exit 2: {line}");
        }
    }

    /// The long (`--help`) and short (`-h`) help of a command path, e.g. `["sync-to-remote"]`.
    fn helps(path: &[&str]) -> (String, String) {
        let mut cmd = Cli::command();
        cmd.build();
        let mut cmd = &mut cmd;
        for name in path {
            cmd = cmd.find_subcommand_mut(name).expect(name);
        }
        (
            cmd.render_long_help().to_string(),
            cmd.render_help().to_string(),
        )
    }

    fn subcommand_paths() -> Vec<Vec<&'static str>> {
        let mut paths = vec![
            vec!["sync-to-remote"],
            vec!["remote-to-local-sync"],
            vec!["remote-to-remote-sync"],
            vec!["interrupt"],
            vec!["inject"],
        ];
        if cfg!(feature = "operator") {
            paths.push(vec!["operator"]);
        }
        paths
    }

    /// Splits an example line the way a shell would for the cases the examples use: words,
    /// '...' quoting; stops at a comment, a pipe, a redirection or `&`.
    fn shell_words(line: &str) -> Vec<String> {
        let (mut words, mut word, mut quoted, mut in_word) =
            (Vec::new(), String::new(), false, false);
        for c in line.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    in_word = true;
                }
                c if quoted => word.push(c),
                '#' | '|' | '>' | '&' if !in_word => break,
                c if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                c => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(word);
        }
        words
    }

    #[test]
    fn help_says_what_it_promises() {
        let (long, short) = helps(&[]);
        for code in [
            "Exit codes:",
            "0  success",
            "1  failure",
            "2  usage or configuration error",
            "3  refused by a safety valve",
        ] {
            assert!(long.contains(code), "--help lacks {code:?}:\n{long}");
        }
        assert!(long.contains("rclone >= 1.70"), "{long}");
        assert!(
            short.contains("Examples:") && !short.contains("Exit codes:"),
            "{short}"
        );
        assert!(short.lines().count() < long.lines().count());
        assert!(
            VERSION.contains(&format!("rclone >= {MIN_RCLONE_VERSION}")),
            "--version names the rclone needed: {VERSION}"
        );
        let version = Cli::command().render_version().to_string();
        assert!(version.contains(VERSION), "{version}");

        for path in subcommand_paths() {
            let (long, short) = helps(&path);
            assert!(long.contains("Examples:"), "{path:?} --help:\n{long}");
            assert!(short.contains("Examples:"), "{path:?} -h:\n{short}");
            assert!(
                short.lines().count() < long.lines().count() || path == ["interrupt"],
                "{path:?}: -h is as long as --help"
            );
        }
        for path in [
            ["sync-to-remote"],
            ["remote-to-local-sync"],
            ["remote-to-remote-sync"],
        ] {
            let (long, short) = helps(&path);
            for promised in [
                "REMOTE_<KEY>",
                "REMOTE_TYPE",
                "ENCRYPTED_<KEY>",
                "ENCRYPTION_PASSPHRASE",
                "RCLONE_BINARY",
                "Exit codes:",
                "3  refused by a safety valve",
                "version 1.70 or newer",
            ] {
                assert!(
                    long.contains(promised),
                    "{path:?} --help lacks {promised:?}"
                );
            }
            assert!(short.contains("REMOTE_*") && short.contains("ENCRYPTION_PASSPHRASE"));
        }
        let (long, _) = helps(&["remote-to-remote-sync"]);
        assert!(long.contains("SOURCE_<KEY>") && long.contains("SOURCE_ENCRYPTION_PASSPHRASE"));
    }

    /// Every command line shown under "Examples:" parses (so the help cannot show a flag that
    /// was renamed).
    #[test]
    fn the_examples_in_the_help_parse() {
        let mut checked = 0;
        for path in std::iter::once(vec![]).chain(subcommand_paths()) {
            let (long, _) = helps(&path);
            let examples = long.split("Examples:").nth(1).expect("examples");
            let examples = examples.replace("\\\n", " ");
            for line in examples.lines() {
                let Some(at) = line.find("volume-syncing-operator ") else {
                    continue;
                };
                if line[at..].starts_with("volume-syncing-operator COMMAND") {
                    continue;
                }
                let words = shell_words(&line[at..]);
                Cli::try_parse_from(&words)
                    .unwrap_or_else(|e| panic!("example does not parse: {words:?}\n{e}"));
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} examples found");
    }

    #[test]
    fn a_duration_out_of_bounds_names_the_flag_and_the_bound() {
        let err = parse(&[
            "sync-to-remote",
            "-s",
            "/d",
            "-d",
            "b",
            "--lease-ttl",
            "5000000d",
        ])
        .expect_err("out of bounds")
        .to_string();
        assert!(
            err.contains("--lease-ttl") && err.contains("must be between 15s and 1d"),
            "{err}"
        );
    }
}
