//! volume-syncing-operator keeps a directory and an rclone remote in sync, safely.
//!
//! # Theory of operation
//! 1. [`cli`] parses the command line; [`plan`] turns it and the environment (`REMOTE_*`,
//!    `ENCRYPTED_*`) into a validated plan: a private rclone.conf ([`config`], [`crypt`]), the
//!    resolved rclone binary, a parsed schedule ([`schedule`]). Bad input stops here (exit 2).
//! 2. A [`job::Job`] is one sync: the safety valves ([`safety`], and the encryption key check)
//!    refuse anything that would wipe data (exit 3), then rclone runs as a child in its own
//!    process group with its log streamed into ours ([`rclone`]).
//! 3. [`supervisor`] runs the job once, or — on a [`schedule`] and/or on file changes
//!    ([`watch`]) — until SIGTERM/SIGINT and then once more; [`pidfile`] lets `interrupt` (a
//!    preStop hook) trigger that and wait for it; [`metrics`] and [`http`] make it observable.
//! 4. Every error is an [`error::Error`], mapped to an exit code in one place.
//! 5. [`operator`] is the Kubernetes side (the PodFilesystemSync resource, `inject`, and with
//!    the `operator` feature the admission webhook): it builds command lines for steps 1–3 and
//!    depends on them, never the other way round.
//!
//! The rendered config lives exactly as long as the plan: signals are turned into ordinary
//! returns, so it is removed on every exit path short of SIGKILL.

pub mod cli;
pub mod config;
pub mod crypt;
pub mod error;
pub mod http;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod operator;
pub mod pidfile;
pub mod plan;
pub mod rclone;
pub mod safety;
pub mod schedule;
pub mod supervisor;
pub mod watch;

use std::sync::Arc;

use cli::{Cli, Command, default_pid_path};
use error::Result;
use metrics::Metrics;
use supervisor::{LongRunning, Signals};

/// Runs one command to completion.
pub async fn run(cli: Cli) -> Result<()> {
    if let Command::Interrupt(args) = &cli.command {
        // Keeps the default signal handling: Ctrl-C stops the waiting.
        let path = args.pid_path.clone().unwrap_or_else(default_pid_path);
        return pidfile::interrupt(&path, args.timeout).await;
    }
    match &cli.command {
        Command::Inject(args) => return operator::run_inject(args),
        Command::Crd => return operator::run_crd(),
        #[cfg(feature = "operator")]
        Command::Operator(args) => return operator::run::run(args).await,
        _ => {}
    }
    // Signals are caught before anything is created, so no exit path skips the clean-up.
    let signals = Signals::new()?;
    let plan = match cli.command {
        Command::SyncToRemote(args) => plan::upload(args, cli.verbose).await?,
        Command::RemoteToLocalSync(args) => plan::restore(args, cli.verbose).await?,
        _ => unreachable!("handled above"),
    };
    let result = match plan.long_running {
        None => supervisor::run_once(&plan.job, signals).await,
        Some(long) => {
            let metrics = Arc::new(Metrics::new(long.max_consecutive_failures));
            if let Some(address) = &long.metrics_address {
                http::serve(address, Arc::clone(&metrics)).await?;
            }
            let mode = LongRunning {
                schedule: long.schedule,
                watch: long.watch,
                shutdown_timeout: long.shutdown_timeout,
                pid_path: &long.pid_path,
                metrics,
            };
            supervisor::run_long(Arc::new(plan.job), mode, signals).await
        }
    };
    drop(plan.config);
    result
}
