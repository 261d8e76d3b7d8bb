//! The control loop: one-shot runs and the long-running scheduled mode, driven by events
//! (schedule ticks, a finished sync, signals) in one `tokio::select!` loop.
//!
//! Decisions:
//! - Signals are events, not work done in a handler. In scheduled mode the first SIGTERM or
//!   SIGINT stops scheduling, lets a running sync finish and runs one final sync, bounded by
//!   `--shutdown-timeout`; a second signal stops rclone at once. In a one-shot run the first
//!   signal stops rclone. Either way `run` returns normally, so the private config is removed.
//! - Never two syncs at once: the running sync is the only task; a tick that finds it still
//!   running is skipped with a warning.
//! - A failed scheduled run is logged and the schedule goes on (retries happen inside the job).
//! - Handling SIGTERM ourselves is also what makes the program work as PID 1 in a container,
//!   where the kernel would otherwise ignore it. rclone, our only child, is always reaped.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::job::{Job, Outcome};
use crate::pidfile::PidFile;
use crate::rclone::Abort;
use crate::schedule::{Schedule, format_duration};

/// SIGTERM and SIGINT as one stream of events.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn new() -> Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The name of the next signal received.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Runs the job once; a signal stops rclone and the run fails as interrupted.
pub async fn run_once(job: &Job, mut signals: Signals) -> Result<()> {
    let (abort_tx, mut abort_rx) = watch::channel(None);
    let run = job.run(&mut abort_rx);
    tokio::pin!(run);
    loop {
        tokio::select! {
            result = &mut run => return result.map(|_| ()),
            sig = signals.recv() => {
                tracing::warn!("received {sig}: stopping rclone");
                let _ = abort_tx.send(Some(sig));
            }
        }
    }
}

/// Settings of the long-running mode.
pub struct Scheduled<'a> {
    pub schedule: Schedule,
    pub shutdown_timeout: Duration,
    pub pid_path: &'a Path,
}

/// Runs the job now and on every tick until a signal, then once more.
pub async fn run_scheduled(job: Arc<Job>, mode: Scheduled<'_>, mut signals: Signals) -> Result<()> {
    let pid_file = PidFile::create(mode.pid_path)?;
    let (abort_tx, abort_rx) = watch::channel(None);
    let spawn = |job: &Arc<Job>| {
        let job = Arc::clone(job);
        let mut abort = abort_rx.clone();
        tokio::spawn(async move { job.run(&mut abort).await })
    };
    tracing::info!(schedule = %mode.schedule, "scheduled mode: syncing now, then on the schedule");
    let mut running: Option<JoinHandle<Result<Outcome>>> = Some(spawn(&job));
    let mut next = next_fire(&mode.schedule, Local::now());
    log_next(next);

    let first_signal = loop {
        tokio::select! {
            () = tokio::time::sleep_until(instant_of(next)) => {
                if running.is_some() {
                    tracing::warn!("the previous sync is still running; skipping this scheduled run");
                } else {
                    running = Some(spawn(&job));
                }
                next = next_fire(&mode.schedule, next.max(Local::now()));
                log_next(next);
            }
            joined = join(&mut running), if running.is_some() => {
                running = None;
                // The job already logged its summary; a failure does not stop the schedule.
                if let Err(e) = joined {
                    tracing::warn!("the schedule goes on after a failed sync: {e}");
                }
                log_next(next);
            }
            sig = signals.recv() => break sig,
        }
    };

    tracing::info!(
        "received {first_signal}: no more scheduled runs; finishing the running sync, then one final \
         sync (at most {}; a second signal stops it at once)",
        format_duration(mode.shutdown_timeout)
    );
    let result = shutdown(
        &job,
        running,
        abort_tx,
        abort_rx.clone(),
        &mut signals,
        mode.shutdown_timeout,
    )
    .await;
    let code = match &result {
        Ok(()) => 0,
        Err(e) => e.exit_code(),
    };
    pid_file.finish(code);
    result
}

/// Finishes the running sync, runs the final one; a second signal or the timeout aborts both.
async fn shutdown(
    job: &Job,
    running: Option<JoinHandle<Result<Outcome>>>,
    abort_tx: watch::Sender<Option<&'static str>>,
    mut abort_rx: Abort,
    signals: &mut Signals,
    timeout: Duration,
) -> Result<()> {
    let final_sync = async {
        if let Some(handle) = running {
            tracing::info!("waiting for the running sync to finish");
            let _ = handle.await;
        }
        if let Some(reason) = *abort_rx.borrow() {
            return Err(Error::Interrupted(reason));
        }
        tracing::info!("running the final sync");
        job.run(&mut abort_rx).await.map(|_| ())
    };
    tokio::pin!(final_sync);
    let deadline = Instant::now() + timeout;
    let mut aborted: Option<&'static str> = None;
    loop {
        tokio::select! {
            result = &mut final_sync => {
                return match aborted {
                    Some(reason) => Err(Error::Interrupted(reason)),
                    None => result,
                };
            }
            sig = signals.recv(), if aborted.is_none() => {
                tracing::warn!("received {sig} again: stopping rclone now");
                aborted = Some(sig);
                let _ = abort_tx.send(aborted);
            }
            () = tokio::time::sleep_until(deadline), if aborted.is_none() => {
                tracing::error!("the final sync did not finish within --shutdown-timeout {}; stopping rclone", format_duration(timeout));
                aborted = Some("the shutdown timeout");
                let _ = abort_tx.send(aborted);
            }
        }
    }
}

async fn join(running: &mut Option<JoinHandle<Result<Outcome>>>) -> Result<Outcome> {
    match running {
        Some(handle) => handle
            .await
            .unwrap_or_else(|e| Err(Error::Other(anyhow::anyhow!("sync task failed: {e}")))),
        None => std::future::pending().await,
    }
}

fn next_fire(schedule: &Schedule, after: DateTime<Local>) -> DateTime<Local> {
    schedule
        .next_after(after)
        // A cron expression with no future match (e.g. 30 February): wait "forever".
        .unwrap_or_else(|| after + chrono::Duration::days(365 * 100))
}

fn instant_of(at: DateTime<Local>) -> Instant {
    let wait = (at - Local::now()).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + wait
}

fn log_next(next: DateTime<Local>) {
    tracing::info!(next_run = %next.to_rfc3339(), "next scheduled sync at {}", next.format("%Y-%m-%d %H:%M:%S %Z"));
}
