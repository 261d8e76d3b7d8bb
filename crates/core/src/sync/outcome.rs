//! How a run ends, for a job and a replication alike: its [`Outcome`] and [`Report`] (what the
//! summary line and the metrics show), the [`Retries`] with exponential backoff, and
//! `unless_aborted` for checks a signal must be able to cut.

use std::time::Duration;

use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::remote::rclone::{Abort, aborted};
use crate::remote::stats::Stats;

/// Runs a check that asks the remote, so that an abort (a signal) stops it: a listing of an
/// unreachable remote can take minutes of rclone retries. Dropping the check kills its rclone
/// (`kill_on_drop`); nothing has been changed at that point.
pub(crate) async fn unless_aborted<T>(
    abort: &mut Abort,
    check: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        reason = aborted(abort) => Err(Error::Interrupted(reason)),
        result = check => result,
    }
}

/// How a run ended when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Synced(Stats),
    Skipped(String),
}

/// First backoff delay; doubled after every failed attempt, capped at [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The retries of one run: failures that can heal ([`Error::is_retryable`]) are retried up to
/// `--retries` times with exponential backoff; the last one is kept for the message of
/// `--sync-timeout`.
#[derive(Debug)]
pub struct Retries {
    max: u32,
    /// Attempts started so far.
    pub attempts: u32,
    backoff: Duration,
    last_failure: Option<String>,
}

impl Retries {
    pub fn new(max: u32) -> Self {
        Retries {
            max,
            attempts: 0,
            backoff: FIRST_BACKOFF,
            last_failure: None,
        }
    }

    /// After a failed attempt: waits the backoff and returns `Ok` when the failure may heal
    /// and retries are left, else gives the error back (or the abort that came first).
    pub async fn after_failure(&mut self, e: Error, abort: &mut Abort) -> Result<()> {
        if !e.is_retryable() || self.attempts > self.max {
            return Err(e);
        }
        tracing::warn!(
            attempt = self.attempts,
            retries = self.max,
            "sync attempt failed with an error that may heal: {e}; retrying in {}",
            format_duration(self.backoff)
        );
        self.last_failure = Some(e.to_string());
        tokio::select! {
            reason = aborted(abort) => return Err(Error::Interrupted(reason)),
            () = tokio::time::sleep(self.backoff) => {}
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    /// The error of a run cut by `--sync-timeout` after `limit`.
    pub fn timed_out(&self, limit: Duration) -> Error {
        Error::SyncTimeout {
            limit: format_duration(limit),
            last: self.last_failure.clone(),
        }
    }
}

/// Awaits `run` within `limit` (`--sync-timeout`) when one is set; `None` when time ran out
/// (the run is dropped, which kills its rclone).
pub async fn within_limit<T>(
    limit: Option<Duration>,
    run: impl std::future::Future<Output = T>,
) -> Option<T> {
    match limit {
        None => Some(run.await),
        Some(limit) => tokio::time::timeout(limit, run).await.ok(),
    }
}

/// What a run did with the volume's metadata (see [`crate::sync::fidelity`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeSummary {
    /// FIFOs, sockets and devices not transferred (each logged at WARN).
    pub skipped_special: u64,
    /// `recorded`, `unchanged` (upload); `applied`, `partial`, `not-recorded`, `ignored`
    /// (restore); `none` when the run did not get that far or was a dry run.
    pub metadata: &'static str,
    /// A restore could not set the recorded owners: not running as root.
    pub owners_not_set: bool,
}

/// The `result` of a summary line and of the metrics: `success`, `skipped`, `refused` (by a
/// safety valve; also the worst of several replication pairs) or `failure`.
pub fn result_label(result: &Result<Outcome>) -> &'static str {
    match result {
        Ok(Outcome::Synced(_)) => "success",
        Ok(Outcome::Skipped(_)) => "skipped",
        Err(e) if e.exit_code() == crate::error::EXIT_REFUSED => "refused",
        Err(_) => "failure",
    }
}

/// A finished run: its result, how long it took and how many attempts it made.
#[derive(Debug)]
pub struct Report {
    pub result: Result<Outcome>,
    pub elapsed: Duration,
    pub attempts: u32,
    /// `full` or `incremental`.
    pub kind: &'static str,
    pub volume: VolumeSummary,
}

impl Report {
    /// rclone's statistics of a run that synced; zero otherwise.
    pub fn stats(&self) -> Stats {
        match &self.result {
            Ok(Outcome::Synced(stats)) => stats.clone(),
            _ => Stats::default(),
        }
    }

    /// rclone's error count, also when it failed.
    pub fn errors(&self) -> u64 {
        match &self.result {
            Ok(Outcome::Synced(stats)) => stats.errors,
            Ok(Outcome::Skipped(_)) => 0,
            Err(e) => e.rclone_errors(),
        }
    }
}
