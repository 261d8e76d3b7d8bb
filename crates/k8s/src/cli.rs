//! The arguments of the Kubernetes commands (`inject`, `operator`); the binary's top-level
//! command line (the root crate's `cli`) puts them under its subcommands. Doc comments are
//! the `--help` text.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Whether injected sidecars are native ones (decided from the cluster version when `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NativeSidecars {
    /// Native on Kubernetes >= 1.29, classic below.
    Auto,
    True,
    False,
}

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

    /// After SIGTERM, keep answering admissions this long with /readyz failing, so requests
    /// the API server sent before it saw this replica go are not dropped; a second signal
    /// stops at once. 0: stop at once. At most 1m.
    #[arg(
        long,
        env = "VSO_SHUTDOWN_DELAY",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_shutdown_delay
    )]
    pub shutdown_delay: std::time::Duration,

    /// How often the leader reads the injected Pods' sidecars and writes each
    /// PodFilesystemSync's status (and its events). 0: no status (no Lease, no Pod watch).
    /// At most 1h.
    #[arg(
        long,
        env = "VSO_STATUS_INTERVAL",
        value_name = "DURATION",
        default_value = "15s",
        value_parser = parse_status_interval
    )]
    pub status_interval: std::time::Duration,

    /// This replica's name in the leader election (the Lease
    /// `volume-syncing-operator-status` in --namespace); default: the host name (the Pod's name).
    #[arg(long, env = "VSO_IDENTITY", value_name = "NAME")]
    pub identity: Option<String>,
}

/// A duration up to `max` (named `bound` in the error), or `0` / `0s` for none (the core's
/// parser wants a positive one).
fn zero_or_duration(s: &str, max: u64, bound: &str) -> Result<std::time::Duration, String> {
    if matches!(s.trim(), "0" | "0s") {
        return Ok(std::time::Duration::ZERO);
    }
    let d = vso_core::duration::parse_duration(s)?;
    if d > std::time::Duration::from_secs(max) {
        return Err(format!("{s} is longer than the bound of {bound}"));
    }
    Ok(d)
}

fn parse_status_interval(s: &str) -> Result<std::time::Duration, String> {
    zero_or_duration(s, 3600, "1h")
}

fn parse_shutdown_delay(s: &str) -> Result<std::time::Duration, String> {
    zero_or_duration(s, 60, "1m")
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
