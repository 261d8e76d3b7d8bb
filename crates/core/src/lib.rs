//! The sync core of volume-syncing-operator: keeps a directory and an rclone remote in sync,
//! safely. It has no Kubernetes dependency (the `vso-k8s` crate builds command lines for it and
//! depends on it, never the other way round).
//!
//! # Layers
//! Lowest first; a module imports its own layer and the ones below (checked by
//! `tests/it/architecture.rs`):
//! - [`remote`] — rclone and the remote: the typed remote end and its internal objects
//!   ([`remote::path`]), the private rclone.conf ([`remote::config`], [`remote::crypt`]), the
//!   child process ([`remote::rclone`]); with [`error`], [`logging`] and [`duration`];
//! - [`sync`] — one sync and what keeps it safe: [`sync::job`], [`sync::replicate`], the valves
//!   ([`sync::valves`]), the lease ([`sync::lease`]), restore fidelity ([`sync::fidelity`]);
//! - [`daemon`] — when a sync runs: [`daemon::supervisor`], [`daemon::schedule`],
//!   [`daemon::watch`], [`daemon::pidfile`], [`daemon::metrics`], [`daemon::http`];
//! - [`cli`] and [`plan`] — the command line's arguments, validated once into a plan; [`run`].
//!
//! # Theory of operation
//! 1. [`cli`] holds the arguments; [`plan`] turns them and the environment (`REMOTE_*`,
//!    `ENCRYPTED_*`) into a validated plan: a private rclone.conf ([`remote::config`],
//!    [`remote::crypt`]), the resolved rclone binary, a parsed schedule
//!    ([`daemon::schedule`]), each remote path checked into a [`remote::path::RemoteEnd`]. Bad
//!    input stops here (exit 2).
//! 2. A [`sync::job::Job`] is one sync: the safety valves ([`sync::valves`], and the encryption
//!    key check) refuse anything that would wipe data (exit 3), then rclone runs as a child in
//!    its own process group with its log streamed into ours ([`remote::rclone`]). An upload
//!    first takes the lease of the remote path ([`sync::lease`]: one writer per path) and keeps
//!    it until it ends; a one-shot restore waits while a writer holds it.
//! 3. [`daemon::supervisor`] runs a [`sync::task::Task`] (a job, or a replication) once, or —
//!    on a schedule and/or on file changes ([`daemon::watch`]) — until SIGTERM/SIGINT and then
//!    once more; [`daemon::pidfile`] lets `interrupt` (a preStop hook) trigger that and wait for
//!    it; [`daemon::metrics`] and [`daemon::http`] make it observable.
//! 4. Restore fidelity ([`sync::fidelity`]): the upload records what rclone cannot keep (modes,
//!    owners, symlinks, empty directories, hard links) in a manifest beside the data; the
//!    restore applies it after the data sync, only where it matches the restored data.
//! 5. Every error is an [`error::Error`], mapped to an exit code in one place.
//! 6. [`sync::replicate`] is `remote-to-remote-sync`: pairs of remote paths, each with its own
//!    valves, lease and summary, run by the same supervisor.
//!
//! The rendered config lives exactly as long as the plan: signals are turned into ordinary
//! returns, so it is removed on every exit path short of SIGKILL.

pub mod cli;
pub mod daemon;
pub mod duration;
pub mod error;
pub mod logging;
pub mod plan;
pub mod remote;
pub mod sync;

use std::sync::Arc;

use cli::{
    InterruptArgs, RemoteToLocalArgs, RemoteToRemoteArgs, SyncToRemoteArgs, default_pid_path,
};
use daemon::metrics::Metrics;
use daemon::supervisor::{self, LongRunning, Signals};
use daemon::{http, pidfile};
use error::Result;
use sync::task::Task;
use sync::{lease, replicate};

/// The commands of the sync core.
#[derive(Debug)]
pub enum Command {
    SyncToRemote(SyncToRemoteArgs),
    RemoteToLocalSync(RemoteToLocalArgs),
    RemoteToRemoteSync(RemoteToRemoteArgs),
    Interrupt(InterruptArgs),
}

/// Runs one command to completion; `verbose` is the count of `-v`.
pub async fn run(command: Command, verbose: u8) -> Result<()> {
    if let Command::Interrupt(args) = &command {
        // Keeps the default signal handling: Ctrl-C stops the waiting.
        let path = args.pid_path.clone().unwrap_or_else(default_pid_path);
        return pidfile::interrupt(&path, args.timeout).await;
    }
    // Signals are caught before anything is created, so no exit path skips the clean-up.
    let signals = Signals::new()?;
    let plan = match command {
        Command::SyncToRemote(args) => plan::upload(args, verbose).await?,
        Command::RemoteToLocalSync(args) => plan::restore(args, verbose).await?,
        Command::RemoteToRemoteSync(args) => {
            let plan = plan::replicate(args, verbose).await?;
            replicate::keep_leases(&plan.replication);
            let end = plan.termination_message.as_deref();
            let result = supervise(plan.replication, None, plan.long_running, end, signals).await;
            drop(plan.config);
            return result;
        }
        Command::Interrupt(_) => unreachable!("handled above"),
    };
    // A test build panics here on request, with the secret on disk: the panic hook must remove
    // it (tests/it/trust_encryption.rs). Release builds have no such switch.
    #[cfg(debug_assertions)]
    if std::env::var_os("VOLUME_SYNCING_OPERATOR_TEST_PANIC").is_some() {
        panic!("deliberate panic for a test (VOLUME_SYNCING_OPERATOR_TEST_PANIC)");
    }
    let job = &plan.job;
    let lease =
        lease::Lease::new(&job.rclone, &job.remote, job.dry_run, plan.lease.clone())?.map(Arc::new);
    if let Some(lease) = &lease {
        tokio::spawn(Arc::clone(lease).keep());
    }
    let end = plan.termination_message.as_deref();
    let result = supervise(plan.job, lease.clone(), plan.long_running, end, signals).await;
    // After the last sync, on every path that gets here (so short of SIGKILL).
    if let Some(lease) = &lease {
        lease.release().await;
    }
    drop(plan.config);
    result
}

/// Runs the task once, or in the long-running mode until a signal; then writes the summary of
/// the last sync to `termination_message`, when given.
async fn supervise<T: Task>(
    task: T,
    lease: Option<Arc<lease::Lease>>,
    long_running: Option<plan::LongRunningPlan>,
    termination_message: Option<&std::path::Path>,
    signals: Signals,
) -> Result<()> {
    match long_running {
        None => supervisor::run_once(&task, lease.as_deref(), signals, termination_message).await,
        Some(long) => {
            let metrics = Arc::new(Metrics::new(
                long.max_consecutive_failures,
                long.max_sync_age,
            ));
            if let Some(address) = &long.metrics_address {
                http::serve(address, Arc::clone(&metrics)).await?;
            }
            let mode = LongRunning {
                schedule: long.schedule,
                watch: long.watch,
                shutdown_timeout: long.shutdown_timeout,
                pid_path: &long.pid_path,
                metrics,
                lease,
                termination_message,
            };
            supervisor::run_long(Arc::new(task), mode, signals).await
        }
    }
}
