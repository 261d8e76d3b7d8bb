//! The control loop: one-shot runs and the long-running mode, driven by events (schedule
//! ticks, file changes, a finished sync, signals) in one `tokio::select!` loop.
//!
//! Decisions:
//! - Signals are events, not work done in a handler. In the long-running mode the first
//!   SIGTERM, SIGINT or `interrupt` request (SIGUSR1) stops the triggers, lets a running sync
//!   finish and runs one final sync, bounded by `--shutdown-timeout`; a second SIGTERM or
//!   SIGINT stops rclone at once, further `interrupt` requests do not (they ask for what is
//!   already happening). In a one-shot run
//!   the first signal stops rclone. Either way `run` returns normally, so the private config is
//!   removed.
//! - Never two syncs at once: the running sync is the only task. A schedule tick that finds it
//!   running is skipped with a warning; file changes that arrive meanwhile wait, and cause
//!   exactly one follow-up sync when it is done.
//! - A failed run is logged and the triggers go on (retries happen inside the job). In watch
//!   mode the changes of a failed run are kept, the next run is a full sync, and it waits for a
//!   backoff so a broken remote is not hammered.
//! - The lease ([`crate::sync::lease`]) is taken at the start of every sync that does not hold it
//!   yet ([`Task::execute`]), so a long-running uploader refused with `remote-in-use` keeps
//!   trying on its schedule, and /healthz stays 503 until it holds the lease. Its loss is an
//!   event of the loop: the running sync is stopped at once, and the next one must take the
//!   lease again (refused while another writer holds it). In a one-shot run, and during the
//!   final sync, the loss stops rclone and the run fails (exit 1).
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

use crate::daemon::metrics::Metrics;
use crate::daemon::pidfile::PidFile;
use crate::daemon::schedule::Schedule;
use crate::daemon::summary::Summary;
use crate::daemon::watch::{Changes, TreeWatcher, WatchSettings};
use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::remote::rclone::Abort;
use crate::sync::lease::{self, Lease};
use crate::sync::outcome::Report;
use crate::sync::task::{SyncPlan, Task};

/// The longest a burst of changes waits for a quiet period before it is synced anyway.
const MAX_DEBOUNCE_WAIT: Duration = Duration::from_secs(60);

/// What `interrupt` sends: a request for a graceful shutdown that never escalates.
pub const INTERRUPT_REQUEST: &str = "an interrupt request (SIGUSR1)";

/// SIGTERM, SIGINT and `interrupt`'s SIGUSR1 as one stream of events.
pub struct Signals {
    term: Signal,
    int: Signal,
    usr1: Signal,
}

impl Signals {
    pub fn new() -> Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    /// The name of the next signal received ([`INTERRUPT_REQUEST`] for SIGUSR1).
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.usr1.recv() => INTERRUPT_REQUEST,
        }
    }

    /// The next signal that escalates a shutdown already under way: SIGTERM or SIGINT. More
    /// `interrupt` requests ask for what is already happening and are only logged.
    async fn recv_escalation(&mut self) -> &'static str {
        loop {
            match self.recv().await {
                INTERRUPT_REQUEST => {
                    tracing::info!("another interrupt request: the graceful shutdown is under way")
                }
                sig => return sig,
            }
        }
    }
}

/// Waits until the lease is lost (again); pends forever without a lease.
async fn lease_lost(lost: &mut Option<watch::Receiver<Option<String>>>) -> String {
    if let Some(rx) = lost {
        while rx.changed().await.is_ok() {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
        }
    }
    std::future::pending().await
}

/// Runs the task once; a signal stops rclone and the run fails as interrupted. The summary of
/// the run goes to `termination_message`, when given.
pub async fn run_once<T: Task>(
    task: &T,
    lease: Option<&Lease>,
    mut signals: Signals,
    termination_message: Option<&Path>,
) -> Result<()> {
    let (abort_tx, mut abort_rx) = watch::channel(None);
    let plan = SyncPlan::Full("one-shot run".into());
    let mut lost = lease.map(Lease::lost);
    if let Some(lease) = lease {
        // One run, then the release: the acquisition's rclone serves them all.
        lease.keep_server();
    }
    let run = task.execute(&plan, lease, &mut abort_rx);
    tokio::pin!(run);
    let report = loop {
        tokio::select! {
            report = &mut run => break report,
            sig = signals.recv() => {
                tracing::warn!("received {sig}: stopping rclone");
                let _ = abort_tx.send(Some(sig));
            }
            _ = lease_lost(&mut lost), if lost.is_some() => {
                lost = None;
                let _ = abort_tx.send(Some(lease::LOST_REASON));
            }
        }
    };
    // Released before the summary, which stays the run's last line.
    if let Some(lease) = lease {
        lease.release().await;
    }
    task.log_summary(&report, None, true);
    if let Some(path) = termination_message {
        Summary::of(task.direction(), &report.result, report.elapsed, None).write(path);
    }
    report.result.map(|_| ())
}

/// Settings of the long-running mode.
pub struct LongRunning<'a> {
    pub schedule: Option<Schedule>,
    pub watch: Option<WatchSettings>,
    pub shutdown_timeout: Duration,
    pub pid_path: &'a Path,
    pub metrics: Arc<Metrics>,
    /// The lease of an uploader.
    pub lease: Option<Arc<Lease>>,
    /// Where the summary of the last sync goes at the end (`--termination-message-path`).
    pub termination_message: Option<&'a Path>,
}

/// The sync in progress: its task, and the changes it is bringing over (put back on failure).
struct Running {
    handle: JoinHandle<Report>,
    changes: Changes,
}

/// The state of the long-running loop, owned by that loop alone.
struct Loop<'a, T> {
    task: Arc<T>,
    mode: LongRunning<'a>,
    abort: Abort,
    running: Option<Running>,
    /// Changes not yet handed to a sync (watch mode).
    changes: Changes,
    next_tick: Option<DateTime<Local>>,
    next_full: Option<Instant>,
    last_change: Instant,
    /// The first change not yet handed to a sync: bounds how long debouncing may wait.
    first_pending: Option<Instant>,
    last_start: Instant,
    /// After a failure in watch mode: no change-triggered sync before this.
    not_before: Instant,
    failures: u32,
}

impl<T: Task> Loop<'_, T> {
    /// Starts a sync now.
    fn start(&mut self, why: &str) {
        let changes = std::mem::take(&mut self.changes);
        self.first_pending = None;
        let plan = match (&self.mode.watch, self.task.watched()) {
            (Some(_), Some(dir)) => changes.plan(dir),
            _ => SyncPlan::Full(why.to_string()),
        };
        tracing::info!(trigger = why, "starting a sync");
        let task = Arc::clone(&self.task);
        let lease = self.mode.lease.clone();
        let mut abort = self.abort.clone();
        self.last_start = Instant::now();
        self.mode.metrics.sync_started();
        if let Some(watch) = &self.mode.watch
            && matches!(plan, SyncPlan::Full(_))
        {
            self.next_full = Some(Instant::now() + watch.full_sync_every);
        }
        self.running = Some(Running {
            handle: tokio::spawn(
                async move { task.execute(&plan, lease.as_deref(), &mut abort).await },
            ),
            changes,
        });
    }

    /// When the recorded changes should be synced, if they should.
    fn change_due(&self) -> Option<Instant> {
        let watch = self.mode.watch.as_ref()?;
        if self.changes.is_empty() || self.running.is_some() {
            return None;
        }
        // A tree that never goes quiet (a log appended every second) is still synced: the
        // quiet period is not awaited longer than MAX_DEBOUNCE_WAIT (or --debounce, if longer)
        // after the first pending change.
        let quiet = self.last_change + watch.debounce;
        let cap =
            self.first_pending.unwrap_or(self.last_change) + watch.debounce.max(MAX_DEBOUNCE_WAIT);
        Some(
            quiet
                .min(cap)
                .max(self.last_start + watch.min_interval)
                .max(self.not_before),
        )
    }

    /// The next time a sync is planned, for the log and the metrics.
    fn next_run(&self) -> Option<DateTime<Local>> {
        let full = self.next_full.map(|at| {
            Local::now() + chrono::Duration::from_std(at - Instant::now()).unwrap_or_default()
        });
        match (self.next_tick, full) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// /healthz is 503 (`remote-in-use`) while another writer holds the lease of the remote path.
    fn record_lease(&self, report: &Report) {
        if let Some(lease) = &self.mode.lease {
            let waiting = match &report.result {
                _ if lease.may_upload() => None,
                Err(e @ Error::Refused { rule, .. }) if *rule == lease::RULE => {
                    Some(format!("the lease of the remote path is not held: {e}"))
                }
                // Another writer is not the cause (a wrong key, a dead remote: the lease could
                // not even be read): the failure counts for consecutive-failures instead.
                Err(_) => None,
                Ok(_) => Some("the lease of the remote path is not held".into()),
            };
            self.mode.metrics.set_lease_wait(waiting);
        }
    }

    /// Records a finished sync: summary line, metrics, and in watch mode what to do next.
    fn finished(&mut self, report: Report, changes: Changes) {
        let next = self.next_run();
        self.task.log_summary(&report, next, false);
        self.mode
            .metrics
            .record(self.task.direction(), &report.result, report.elapsed);
        log_next(next, &self.mode.metrics);
        self.record_lease(&report);
        if report.result.is_ok() {
            self.failures = 0;
            return;
        }
        self.failures += 1;
        if self.mode.watch.is_some() {
            self.changes.merge(changes);
            self.changes.need_full("the previous sync failed");
            let backoff =
                Duration::from_secs(1 << self.failures.min(8)).min(Duration::from_secs(300));
            self.not_before = Instant::now() + backoff;
            tracing::warn!(
                "watch mode: the next sync is a full one, in {} at the earliest",
                format_duration(backoff)
            );
        } else {
            tracing::warn!("the schedule goes on after a failed sync");
        }
    }
}

/// Runs the task now and on every trigger (schedule tick, file changes, periodic full sync)
/// until a signal, then once more.
pub async fn run_long<T: Task>(
    task: Arc<T>,
    mode: LongRunning<'_>,
    mut signals: Signals,
) -> Result<()> {
    let pid_file = PidFile::create(mode.pid_path)?;
    // Watch before the first sync, so that no change made during it is missed.
    let mut watcher = match (&mode.watch, task.watched()) {
        (Some(_), Some(dir)) => Some(TreeWatcher::start(dir)?),
        _ => None,
    };
    let (abort_tx, abort_rx) = watch::channel(None);
    let now = Instant::now();
    let mut changes = Changes::default();
    changes.need_full("the first sync");
    let mut state = Loop {
        next_tick: mode.schedule.as_ref().map(|s| next_fire(s, Local::now())),
        next_full: None,
        task,
        mode,
        abort: abort_rx,
        running: None,
        changes,
        last_change: now,
        first_pending: None,
        last_start: now,
        not_before: now,
        failures: 0,
    };
    let schedule = state
        .mode
        .schedule
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let watch = state.mode.watch.is_some();
    tracing::info!(schedule = %schedule, watch, "long-running mode: syncing now, then on every trigger");
    let mut lost = state.mode.lease.as_ref().map(|l| l.lost());
    state.start("start");
    state.mode.metrics.set_ready();
    log_next(state.next_run(), &state.mode.metrics);

    let first_signal = loop {
        let change_due = state.change_due();
        tokio::select! {
            () = sleep_until(state.next_tick.map(instant_of)) => {
                if state.running.is_some() {
                    tracing::warn!("the previous sync is still running; skipping this scheduled run");
                } else {
                    state.changes.need_full("scheduled sync");
                    state.start("schedule");
                }
                let schedule = state.mode.schedule.as_ref().expect("ticks only with a schedule");
                let after = state.next_tick.unwrap_or_else(Local::now).max(Local::now());
                state.next_tick = Some(next_fire(schedule, after));
                log_next(state.next_run(), &state.mode.metrics);
            }
            () = sleep_until(change_due) => state.start("file changes"),
            () = sleep_until(state.next_full), if state.running.is_none() => {
                state.changes.need_full("periodic full sync (--full-sync-every)");
                state.start("periodic full sync");
            }
            changed = next_change(&mut watcher, &mut state.changes) => {
                // Reads (rclone's own included) must not postpone a pending sync forever.
                if changed {
                    state.last_change = Instant::now();
                    state.first_pending.get_or_insert(state.last_change);
                }
            }
            (report, changes) = join(&mut state.running) => {
                state.running = None;
                state.finished(report, changes);
            }
            sig = signals.recv() => break sig,
            why = lease_lost(&mut lost) => {
                // Stop writing at once (dropping the sync kills its rclone); the next sync
                // tries to take the lease again and is refused while the new writer holds it.
                if let Some(running) = &state.running {
                    running.handle.abort();
                }
                tracing::error!(
                    "lost the lease of the remote path: {why}; the running upload was stopped, \
                     and every sync first takes the lease again"
                );
                state.mode.metrics.set_lease_wait(Some(format!("lost the lease: {why}")));
            }
        }
    };

    tracing::info!(
        "received {first_signal}: no more scheduled runs; finishing the running sync, then one final \
         sync (at most {}; a further SIGTERM or SIGINT stops it at once)",
        format_duration(state.mode.shutdown_timeout)
    );
    let result = shutdown(&mut state, &mut watcher, abort_tx, &mut signals, lost).await;
    let code = match &result {
        Ok(()) => 0,
        Err(e) => e.exit_code(),
    };
    if let (Some(path), Some(summary)) = (
        state.mode.termination_message,
        state.mode.metrics.last_summary(),
    ) {
        summary.write(path);
    }
    pid_file.finish(code);
    result
}

/// Finishes the running sync, runs the final one; a second signal or the timeout aborts both.
async fn shutdown<T: Task>(
    state: &mut Loop<'_, T>,
    watcher: &mut Option<TreeWatcher>,
    abort_tx: watch::Sender<Option<&'static str>>,
    signals: &mut Signals,
    mut lost: Option<watch::Receiver<Option<String>>>,
) -> Result<()> {
    let timeout = state.mode.shutdown_timeout;
    let mut abort = state.abort.clone();
    // No run is planned any more: summaries and metrics must not announce one.
    state.next_tick = None;
    state.next_full = None;
    let final_sync = async {
        if let Some(running) = state.running.take() {
            tracing::info!("waiting for the running sync to finish");
            if let Ok(report) = running.handle.await {
                state.finished(report, running.changes);
            }
        }
        if let Some(reason) = *abort.borrow() {
            return Err(Error::Interrupted(reason));
        }
        if let Some(watcher) = watcher {
            // Let the events of writes made just before the signal arrive.
            tokio::time::sleep(Duration::from_millis(200)).await;
            watcher.drain(&mut state.changes);
        }
        let plan = match (&state.mode.watch, state.task.watched()) {
            (Some(_), Some(dir)) => state.changes.plan(dir),
            _ => SyncPlan::Full("final sync".into()),
        };
        tracing::info!("running the final sync");
        state.mode.metrics.sync_started();
        let report = state
            .task
            .execute(&plan, state.mode.lease.as_deref(), &mut abort)
            .await;
        state.task.log_summary(&report, None, true);
        state
            .mode
            .metrics
            .record(state.task.direction(), &report.result, report.elapsed);
        report.result.map(|_| ())
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
            sig = signals.recv_escalation(), if aborted.is_none() => {
                tracing::warn!("received {sig} again: stopping rclone now");
                aborted = Some(sig);
                let _ = abort_tx.send(aborted);
            }
            _ = lease_lost(&mut lost), if lost.is_some() && aborted.is_none() => {
                lost = None;
                aborted = Some(lease::LOST_REASON);
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

async fn join(running: &mut Option<Running>) -> (Report, Changes) {
    match running {
        Some(r) => {
            let report = (&mut r.handle).await.unwrap_or_else(|e| Report {
                result: Err(Error::Other(anyhow::anyhow!("sync task failed: {e}"))),
                elapsed: Duration::ZERO,
                attempts: 1,
                kind: "full",
                volume: Default::default(),
            });
            (report, std::mem::take(&mut r.changes))
        }
        None => std::future::pending().await,
    }
}

async fn next_change(watcher: &mut Option<TreeWatcher>, changes: &mut Changes) -> bool {
    match watcher {
        Some(w) => w.next(changes).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
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

fn log_next(next: Option<DateTime<Local>>, metrics: &Metrics) {
    if let Some(next) = next {
        metrics.set_next_sync(next);
        tracing::info!(
            next_run = %next.to_rfc3339(),
            "next scheduled sync at {}",
            next.format("%Y-%m-%d %H:%M:%S %Z")
        );
    }
}
