//! `remote-to-remote-sync`: remote paths replicated to remote paths, server to server, with the
//! safety of the other commands (the bucket-to-bucket CronJob, made safe).
//!
//! A [`Replication`] is a list of [`Pair`]s run one after the other on every run. Each pair:
//! 1. the source's key check (when the source is encrypted; read only) — a wrong key refuses
//!    (exit 3, `encryption-key-mismatch`);
//! 2. the source must hold a file (this program's own files aside): a source path without one
//!    whose bucket does not exist is a configuration error (exit 2); one whose bucket exists is
//!    synced only when its destination holds no file either, or with `-x` (nothing can be
//!    deleted), else refused (exit 3, `empty-source`, override
//!    `--force-even-if-destination-would-be-cleared`);
//! 3. the lease of the destination path ([`crate::lease`], one writer per path), taken for the
//!    pair and released after it, so a restore from the replica waits for the pair rather than
//!    for the whole process; its loss stops the transfer;
//! 4. the destination's key check (when it is encrypted; the first run writes the check
//!    object);
//! 5. `rclone sync` (or `copy` with `-x`) from source to destination, retried as the other
//!    commands' syncs are, within `--sync-timeout` per pair. rclone streams the data from one
//!    endpoint to the other: nothing is staged on the local disk. The metadata manifest of a volume travels with it; the lease, key check
//!    and upload record of each side stay that side's own.
//!
//! Every pair logs its own summary line as it ends; a failing pair does not stop the others
//! (a signal does). A run of one pair fails with that pair's error; a run of several lists
//! every failing pair, and its exit code is the worst of theirs: a refusal (3) over a
//! configuration error (2) over a failure (1).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Local};

use crate::crypt::{KEY_CHECK_OBJECT, KeyCheck};
use crate::crypt_marker::{Found, MarkerWriter, PlainGuard};
use crate::error::{Error, Result};
use crate::job::{
    DEFAULT_TRANSFER_FLAGS, Outcome, Report, Retries, SyncPlan, result_label, unless_aborted,
    within_limit,
};
use crate::lease::{LEASE_OBJECT, Lease};
use crate::logging::summary_event;
use crate::mass_delete;
use crate::rclone::{Abort, Rclone, Stats};
use crate::safety;
use crate::supervisor::Task;

/// The override of the `empty-source` rule for replication.
pub const FORCE_EMPTY_SOURCE: &str = "--force-even-if-destination-would-be-cleared";

/// This program's objects that belong to one side and are never replicated: the lease, the
/// key check (of that side's key) and the upload record of the `mass-delete` valve. (The
/// metadata manifest describes the data, and travels with it.)
const OWN_OBJECTS_OF_A_SIDE: [&str; 3] = [LEASE_OBJECT, KEY_CHECK_OBJECT, mass_delete::RECORD];

/// One end of a pair.
#[derive(Debug)]
pub struct End {
    /// What rclone reads or writes: `source:bucket/path/`, or a crypt root (`source-crypt:`).
    pub path: String,
    /// How the user named it: `source:bucket/path`.
    pub shown: String,
    /// Set when this end is encrypted.
    pub key_check: Option<KeyCheck>,
    /// Set when it is not: what its remote path holds is looked at ([`crate::crypt_marker`]).
    pub plain_guard: Option<PlainGuard>,
    /// An encrypted destination's plain marker.
    pub encryption_marker: MarkerWriter,
}

/// One source path and the destination path it is replicated to.
pub struct Pair {
    pub source: End,
    pub destination: End,
    /// The lease of the destination path (a writer's; held only while the pair runs).
    pub lease: Arc<Lease>,
}

/// Every pair of a `remote-to-remote-sync`, and how they run.
pub struct Replication {
    pub pairs: Vec<Pair>,
    pub rclone: Rclone,
    pub no_delete: bool,
    pub dry_run: bool,
    pub force_empty_source: bool,
    pub user_flags: Vec<String>,
    pub retries: u32,
    /// `--sync-timeout`: the bound of one pair, retries and backoff included.
    pub sync_timeout: Option<Duration>,
}

/// How the pairs of a run ended, for the run's summary line.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    synced: usize,
    skipped: usize,
    failed: usize,
}

impl Replication {
    fn operation(&self) -> &'static str {
        if self.no_delete { "copy" } else { "sync" }
    }

    /// The source-side valves of a pair: `Some(why)` when the pair has nothing to do.
    async fn check_source(&self, pair: &Pair, abort: &mut Abort) -> Result<Option<String>> {
        let (source, destination) = (&pair.source, &pair.destination);
        if let Some(check) = &source.key_check {
            unless_aborted(abort, check.verify(&self.rclone, false, self.dry_run)).await?;
        }
        unless_aborted(abort, self.check_encryption(pair)).await?;
        let listed = unless_aborted(
            abort,
            safety::remote_has_entries(&self.rclone, &source.path),
        )
        .await;
        match listed {
            Ok(true) => return Ok(None),
            Err(e @ Error::Interrupted(_)) => return Err(e),
            Ok(false) | Err(_) => {}
        }
        // Nothing listed, or a failed listing: a missing bucket says so in its own words
        // (exit 2); else a failed listing is the pair's failure.
        unless_aborted(
            abort,
            safety::check_remote_root_exists(&self.rclone, &source.shown),
        )
        .await?;
        listed?;
        let why = format!(
            "{} holds no file (this program's own files aside)",
            source.shown
        );
        if self.no_delete {
            return Ok(Some(format!("{why}; -x: nothing to copy")));
        }
        let at_destination = unless_aborted(
            abort,
            safety::remote_has_entries(&self.rclone, &destination.path),
        )
        .await;
        match at_destination {
            Ok(false) => Ok(Some(format!(
                "{why}, and {} holds none either: nothing to replicate",
                destination.shown
            ))),
            _ if self.force_empty_source => Ok(None),
            Ok(true) => Err(Error::refused(
                "empty-source",
                format!(
                    "{why}, so replicating it would delete every file at {} (wrong source \
                     bucket or path, or wrong SOURCE_* credentials?)",
                    destination.shown
                ),
                FORCE_EMPTY_SOURCE,
            )),
            Err(e @ Error::Interrupted(_)) => Err(e),
            Err(e) => Err(Error::refused(
                "empty-source",
                format!(
                    "{why}, and whether {} holds files cannot be told, so replicating could \
                     delete them: {e:#}",
                    destination.shown
                ),
                FORCE_EMPTY_SOURCE,
            )),
        }
    }

    /// An end without encryption settings whose path holds encrypted data: replicated only as
    /// it is (ciphertext to a plain destination that is not plain data), never decrypted into,
    /// encrypted again, or overwritten by plain data.
    async fn check_encryption(&self, pair: &Pair) -> Result<()> {
        let (source, destination) = (&pair.source, &pair.destination);
        let source_raw = match &source.plain_guard {
            Some(guard) => guard.inspect(&self.rclone).await? == Found::Encrypted,
            None => false,
        };
        if source_raw && destination.key_check.is_some() {
            let guard = source.plain_guard.as_ref().expect("checked above");
            return Err(guard.refusal(
                "replicating it to an encrypted destination would encrypt the ciphertext again                  (set SOURCE_ENCRYPTION_PASSPHRASE, or SOURCE_ENCRYPTED_*)",
            ));
        }
        if let Some(guard) = &destination.plain_guard
            && !source_raw
            && guard.inspect(&self.rclone).await? == Found::Encrypted
        {
            return Err(guard.refusal(
                "replicating a plain source into it would delete every encrypted object",
            ));
        }
        Ok(())
    }

    /// The data transfer of a pair, after the destination's key check.
    async fn transfer(&self, pair: &Pair, abort: &mut Abort) -> Result<Stats> {
        if let Some(check) = &pair.destination.key_check {
            unless_aborted(abort, check.verify(&self.rclone, true, self.dry_run)).await?;
            if !self.dry_run {
                let marker = pair
                    .destination
                    .encryption_marker
                    .ensure(&self.rclone, &check.raw_remote);
                unless_aborted(abort, marker).await?;
            }
        }
        let mut args: Vec<OsString> = vec![
            pair.source.path.clone().into(),
            pair.destination.path.clone().into(),
            "--create-empty-src-dirs".into(),
        ];
        for object in OWN_OBJECTS_OF_A_SIDE {
            args.push("--exclude".into());
            args.push(format!("/{object}").into());
        }
        args.extend(DEFAULT_TRANSFER_FLAGS.map(OsString::from));
        if self.dry_run {
            args.push("--dry-run".into());
        }
        self.rclone
            .run(self.operation(), &args, &self.user_flags, abort)
            .await
    }

    /// One pair: valves, lease, transfer with retries (within `--sync-timeout`), release.
    async fn run_pair(&self, pair: &Pair, abort: &mut Abort) -> Report {
        let started = Instant::now();
        let mut retries = Retries::new(self.retries);
        let mut lost = pair.lease.lost();
        let all = async {
            retries.attempts += 1;
            if let Some(why) = self.check_source(pair, abort).await? {
                return Ok(Outcome::Skipped(why));
            }
            pair.lease.before_run(abort, self.retries).await?;
            loop {
                let attempt = async {
                    tokio::select! {
                        stats = self.transfer(pair, abort) => stats,
                        // Dropping the transfer kills its rclone.
                        why = until_lost(&mut lost) => Err(Error::Other(anyhow::anyhow!(
                            "stopped: lost the lease of {}: {why}",
                            pair.destination.shown
                        ))),
                    }
                };
                match attempt.await {
                    Ok(stats) => return Ok(Outcome::Synced(stats)),
                    Err(e) => retries.after_failure(e, abort).await?,
                }
                retries.attempts += 1;
            }
        };
        let result = within_limit(self.sync_timeout, all)
            .await
            .unwrap_or_else(|| Err(retries.timed_out(self.sync_timeout.unwrap_or_default())));
        pair.lease.release().await;
        Report {
            result,
            elapsed: started.elapsed(),
            attempts: retries.attempts,
            kind: "full",
            volume: Default::default(),
        }
    }

    /// The summary line of one pair.
    fn log_pair(&self, index: usize, pair: &Pair, report: &Report) {
        let message = match &report.result {
            Ok(Outcome::Synced(_)) => "replication finished".to_string(),
            Ok(Outcome::Skipped(why)) => format!("replication skipped: {why}"),
            Err(e) => format!("replication failed: {e}"),
        };
        let stats = report.stats();
        summary_event!(
            report.result.is_ok(),
            direction = "replicate",
            pair = format!("{}/{}", index + 1, self.pairs.len()),
            source = pair.source.shown,
            destination = pair.destination.shown,
            result = result_label(&report.result),
            duration_seconds = report.elapsed.as_secs_f64(),
            attempts = report.attempts,
            transferred_files = stats.transfers,
            transferred_bytes = stats.bytes,
            deleted_files = stats.deletes,
            errors = report.errors(),
            dry_run = self.dry_run,
            "{message}"
        );
    }

    /// Every pair, one after the other; the result is the worst of theirs.
    async fn run_all(&self, abort: &mut Abort) -> Report {
        let started = Instant::now();
        let mut total = Stats::default();
        let mut tally = Tally::default();
        let mut failed: Vec<(usize, Error)> = Vec::new();
        let mut attempts = 0;
        for (index, pair) in self.pairs.iter().enumerate() {
            if let Some(reason) = *abort.borrow() {
                failed.push((index, Error::Interrupted(reason)));
                tally.failed += self.pairs.len() - index;
                break;
            }
            let report = self.run_pair(pair, abort).await;
            self.log_pair(index, pair, &report);
            attempts = attempts.max(report.attempts);
            match report.result {
                Ok(Outcome::Synced(stats)) => {
                    tally.synced += 1;
                    total.add(&stats);
                }
                Ok(Outcome::Skipped(_)) => tally.skipped += 1,
                Err(e) => {
                    tally.failed += 1;
                    failed.push((index, e));
                }
            }
        }
        Report {
            result: self.combine(tally, total, failed),
            elapsed: started.elapsed(),
            attempts,
            kind: "full",
            volume: Default::default(),
        }
    }

    fn combine(
        &self,
        tally: Tally,
        total: Stats,
        mut failed: Vec<(usize, Error)>,
    ) -> Result<Outcome> {
        if failed.is_empty() {
            return Ok(if tally.synced == 0 {
                Outcome::Skipped(format!(
                    "none of the {} pairs had anything to replicate",
                    self.pairs.len()
                ))
            } else {
                Outcome::Synced(total)
            });
        }
        if failed.len() == 1 && self.pairs.len() == 1 {
            return Err(failed.remove(0).1);
        }
        let code = failed
            .iter()
            .map(|(_, e)| e.exit_code())
            .max_by_key(|code| severity(*code))
            .unwrap_or(crate::error::EXIT_FAILURE);
        let details = failed
            .iter()
            .map(|(index, e)| {
                let pair = &self.pairs[*index];
                format!(
                    "{} -> {}: {}",
                    pair.source.shown,
                    pair.destination.shown,
                    match e {
                        Error::Other(inner) => format!("{inner:#}"),
                        other => other.to_string(),
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(Error::Replications {
            failed: tally.failed,
            total: self.pairs.len(),
            details,
            code,
        })
    }
}

/// The order of exit codes for the worst of several pairs: a refusal (data at risk, a human
/// must decide) over a configuration error over a failure.
fn severity(code: u8) -> u8 {
    match code {
        crate::error::EXIT_REFUSED => 3,
        crate::error::EXIT_USAGE => 2,
        _ => 1,
    }
}

/// Waits until a held lease is lost; pends forever otherwise.
async fn until_lost(lost: &mut tokio::sync::watch::Receiver<Option<String>>) -> String {
    while lost.changed().await.is_ok() {
        if let Some(why) = lost.borrow_and_update().clone() {
            return why;
        }
    }
    std::future::pending().await
}

impl Task for Replication {
    async fn execute(&self, _plan: &SyncPlan, _lease: Option<&Lease>, abort: &mut Abort) -> Report {
        self.run_all(abort).await
    }

    fn log_summary(&self, report: &Report, next_run: Option<DateTime<Local>>, error_follows: bool) {
        let message = match &report.result {
            Ok(Outcome::Synced(_)) => "replication of every pair finished".to_string(),
            Ok(Outcome::Skipped(why)) => format!("replication skipped: {why}"),
            Err(_) if error_follows => "replication failed (the reason follows)".to_string(),
            Err(e) => format!("replication failed: {e}"),
        };
        let stats = report.stats();
        summary_event!(
            report.result.is_ok(),
            direction = "replicate",
            pairs = self.pairs.len(),
            result = result_label(&report.result),
            duration_seconds = report.elapsed.as_secs_f64(),
            transferred_files = stats.transfers,
            transferred_bytes = stats.bytes,
            deleted_files = stats.deletes,
            dry_run = self.dry_run,
            next_run = next_run.map(|t| t.to_rfc3339()).unwrap_or_default(),
            "{message}"
        );
    }

    fn direction(&self) -> &'static str {
        "replicate"
    }

    fn watched(&self) -> Option<&Path> {
        None
    }
}

/// The leases of the destinations: each renews itself while held (see [`Lease::keep`]).
pub fn keep_leases(replication: &Replication) {
    for pair in &replication.pairs {
        tokio::spawn(Arc::clone(&pair.lease).keep());
    }
}
