//! `remote-to-remote-sync`: remote paths replicated to remote paths, server to server, with the
//! safety of the other commands (the bucket-to-bucket CronJob, made safe).
//!
//! A [`Replication`] is a list of [`Pair`]s run one after the other on every run. Each pair:
//! 1. the source's key check (when the source is encrypted; read only) — a wrong key refuses
//!    (exit 3, `encryption-key-mismatch`);
//! 2. the source must hold a file (this program's own files aside; counted with one
//!    `rclone size --json` listing of the source, which replaces the one-line emptiness check
//!    unless `-x`, and so costs a full listing of the source where that cost one page): a
//!    source path without one
//!    whose bucket does not exist is a configuration error (exit 2); one whose bucket exists is
//!    synced only when its destination holds no file either, or with `-x` (nothing can be
//!    deleted), else refused (exit 3, `empty-source`, override
//!    `--force-even-if-destination-would-be-cleared`);
//! 3. the lease of the destination path ([`crate::sync::lease`], one writer per path), taken
//!    once the source passed 1 and 2, and released as soon as the pair ends; its loss stops
//!    the transfer. Steps 1 to 3 run for all pairs at once before the first transfer: each
//!    lease acquisition waits the settle delay, and together they wait it once per run, not
//!    once per pair (a restore from a replica then waits at most for the pairs up to its
//!    own). Two pairs whose destinations overlap are refused before anything runs (exit 2);
//! 4. the `mass-delete` valve ([`crate::sync::valves::mass_delete`]): the source's file count against the
//!    upload record at the destination (read once per pair and run: one small GET, since the
//!    lease was released after the last run and another writer may have written it), refused
//!    (exit 3) when more than `--max-delete-percent` (default 50) of the recorded files would
//!    go; the record is rewritten after a successful sync when the count changed (one PUT);
//! 5. the destination's key check (when it is encrypted; the first run writes the check
//!    object);
//! 6. `rclone sync` (or `copy` with `-x`) from source to destination, retried as the other
//!    commands' syncs are, within `--sync-timeout` per pair. rclone streams the data from one
//!    endpoint to the other: nothing is staged on the local disk. The metadata manifest of a volume travels with it; the lease, key check
//!    and upload record of each side stay that side's own. The summary counts the user's files
//!    only: the manifest, when it travelled, is `internal_files` (see [`crate::rclone`]).
//!
//! A pair whose source and destination overlap on the same remote (equal paths, or one inside
//! the other) is refused before anything runs (exit 2, [`check_overlap`]): syncing `a/b` to `a`
//! deletes the source's objects, and `a` to `a/b` copies the destination's live lease and
//! records into the source.
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

use crate::error::{Error, Result};
use crate::logging::summary_event;
use crate::remote::config::Options;
use crate::remote::crypt::KeyCheck;
use crate::remote::path::{Internal, RemoteEnd};
use crate::remote::rclone::DEFAULT_TRANSFER_FLAGS;
use crate::remote::rclone::{Abort, Rclone};
use crate::remote::stats::Stats;
use crate::sync::lease::Lease;
use crate::sync::outcome::{Outcome, Report, Retries, result_label, unless_aborted, within_limit};
use crate::sync::task::{SyncPlan, Task};
use crate::sync::valves::crypt_marker::{Found, MarkerWriter, PlainGuard};
use crate::sync::valves::mass_delete::{self, Guard};
use crate::sync::valves::safety;

/// The override of the `empty-source` rule for replication.
pub const FORCE_EMPTY_SOURCE: &str = "--force-even-if-destination-would-be-cleared";

/// This program's objects that belong to one side and are never replicated: the lease, the
/// key check (of that side's key) and the upload record of the `mass-delete` valve. (The
/// metadata manifest describes the data, and travels with it.)
const OWN_OBJECTS_OF_A_SIDE: [&str; 3] = [
    Internal::Lease.name(),
    Internal::KeyCheck.name(),
    Internal::UploadRecord.name(),
];

/// One end of a pair.
#[derive(Debug)]
pub struct End {
    /// The remote path: what rclone reads or writes (`source:bucket/path/`, or a crypt root
    /// such as `source-crypt:`) and how the user named it (`source:bucket/path`).
    pub remote: RemoteEnd,
    /// Set when this end is encrypted.
    pub key_check: Option<KeyCheck>,
    /// Set when it is not: what its remote path holds is looked at ([`crate::sync::valves::crypt_marker`]).
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
    /// The `mass-delete` valve, with its record at the destination.
    pub guard: Guard,
}

/// What the source-side checks of a pair decided.
enum SourceChecked {
    /// Nothing to do, and why.
    Skip(String),
    /// Go on; the source's file count when it was taken (not with `-x`).
    Go(Option<u64>),
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

    /// The source-side valves of a pair.
    async fn check_source(&self, pair: &Pair, abort: &mut Abort) -> Result<SourceChecked> {
        let (source, destination) = (&pair.source, &pair.destination);
        if let Some(check) = &source.key_check {
            unless_aborted(abort, check.verify(&self.rclone, false, self.dry_run)).await?;
        }
        unless_aborted(abort, self.check_encryption(pair)).await?;
        // A sync that can delete counts the source's files (for mass-delete, and for the
        // record even when the valve is off), which also tells whether it holds any.
        let mut files = None;
        let listed = if self.no_delete {
            unless_aborted(
                abort,
                safety::remote_has_entries(&self.rclone, source.remote.data()),
            )
            .await
        } else {
            unless_aborted(
                abort,
                mass_delete::count_remote_files(&self.rclone, source.remote.data()),
            )
            .await
            .map(|count| {
                files = Some(count);
                count > 0
            })
        };
        match listed {
            Ok(true) => return Ok(SourceChecked::Go(files)),
            Err(e @ Error::Interrupted(_)) => return Err(e),
            Ok(false) | Err(_) => {}
        }
        // Nothing listed, or a failed listing: a missing bucket says so in its own words
        // (exit 2); else a failed listing is the pair's failure.
        unless_aborted(
            abort,
            safety::check_remote_root_exists(&self.rclone, source.remote.shown()),
        )
        .await?;
        listed?;
        let why = format!(
            "{} holds no file (this program's own files aside)",
            source.remote.shown()
        );
        if self.no_delete {
            return Ok(SourceChecked::Skip(format!("{why}; -x: nothing to copy")));
        }
        let at_destination = unless_aborted(
            abort,
            safety::remote_has_entries(&self.rclone, destination.remote.data()),
        )
        .await;
        match at_destination {
            Ok(false) => Ok(SourceChecked::Skip(format!(
                "{why}, and {} holds none either: nothing to replicate",
                destination.remote.shown()
            ))),
            _ if self.force_empty_source => Ok(SourceChecked::Go(files)),
            Ok(true) => Err(Error::refused(
                "empty-source",
                format!(
                    "{why}, so replicating it would delete every file at {} (wrong source \
                     bucket or path, or wrong SOURCE_* credentials?)",
                    destination.remote.shown()
                ),
                FORCE_EMPTY_SOURCE,
            )),
            Err(e @ Error::Interrupted(_)) => Err(e),
            Err(e) => Err(Error::refused(
                "empty-source",
                format!(
                    "{why}, and whether {} holds files cannot be told, so replicating could \
                     delete them: {e:#}",
                    destination.remote.shown()
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
                "replicating it to an encrypted destination would encrypt the ciphertext again \
                 (set SOURCE_ENCRYPTION_PASSPHRASE, or SOURCE_ENCRYPTED_*)",
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
                    .ensure(&self.rclone, &check.end);
                unless_aborted(abort, marker).await?;
            }
        }
        let mut args: Vec<OsString> = vec![
            pair.source.remote.data().into(),
            pair.destination.remote.data().into(),
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

    /// Checks every pair's source and takes its destination's lease, all pairs at once,
    /// before the first transfer: each lease acquisition waits the settle delay, and together
    /// they wait it once per run instead of once per pair. A pair's lease is taken only after
    /// its source passed (a refused or misconfigured pair writes nothing at its destination).
    async fn prepare_all(&self, abort: &Abort) -> Vec<Prepared> {
        let mut preparations = Vec::new();
        for pair in &self.pairs {
            let mut abort = abort.clone();
            preparations.push(async move {
                let started = Instant::now();
                // Subscribed before the lease is taken: a loss while earlier pairs run counts.
                let lost = pair.lease.lost();
                let prepare = async {
                    let checked = self.check_source(pair, &mut abort).await?;
                    if let SourceChecked::Go(_) = &checked {
                        pair.lease.before_run(&mut abort, self.retries).await?;
                    }
                    Ok(checked)
                };
                // Within the pair's --sync-timeout, like the rest of the pair.
                let checked = within_limit(self.sync_timeout, prepare)
                    .await
                    .unwrap_or_else(|| {
                        let limit = self.sync_timeout.unwrap_or_default();
                        Err(Retries::new(self.retries).timed_out(limit))
                    });
                Prepared {
                    checked,
                    took: started.elapsed(),
                    lost,
                }
            });
        }
        join_all(preparations).await
    }

    /// One pair: the source check and lease ([`Self::prepare_all`]), the mass-delete valve,
    /// the transfer with retries (within `--sync-timeout`), release.
    async fn run_pair(&self, pair: &Pair, prepared: Prepared, abort: &mut Abort) -> Report {
        let Prepared {
            checked,
            took: prepared_in,
            mut lost,
        } = prepared;
        let started = Instant::now();
        let mut retries = Retries::new(self.retries);
        let all = async {
            retries.attempts += 1;
            let files = match checked? {
                SourceChecked::Skip(why) => return Ok(Outcome::Skipped(why)),
                SourceChecked::Go(files) => files,
            };
            // The lease was released after the last run: another writer may have written the
            // record since, so it is read again under the lease.
            pair.guard.forget();
            if let Some(files) = files {
                let source = format!("{} holds {files} files", pair.source.remote.shown());
                let check =
                    pair.guard
                        .check_count(&self.rclone, files, &source, &pair.destination.remote);
                unless_aborted(abort, check).await?;
            }
            loop {
                let attempt = async {
                    tokio::select! {
                        stats = self.transfer(pair, abort) => stats,
                        // Dropping the transfer kills its rclone.
                        why = until_lost(&mut lost) => Err(Error::Other(anyhow::anyhow!(
                            "stopped: lost the lease of {}: {why}",
                            pair.destination.remote.shown()
                        ))),
                    }
                };
                match attempt.await {
                    Ok(stats) => {
                        if let Some(files) = files.filter(|_| !self.dry_run) {
                            self.record(pair, files).await;
                        }
                        return Ok(Outcome::Synced(stats));
                    }
                    Err(e) => retries.after_failure(e, abort).await?,
                }
                retries.attempts += 1;
            }
        };
        let limit = self.sync_timeout.map(|l| l.saturating_sub(prepared_in));
        let result = within_limit(limit, all)
            .await
            .unwrap_or_else(|| Err(retries.timed_out(self.sync_timeout.unwrap_or_default())));
        pair.lease.release().await;
        Report {
            result,
            elapsed: prepared_in + started.elapsed(),
            attempts: retries.attempts,
            kind: "full",
            volume: Default::default(),
        }
    }

    /// Records the source's file count at the destination after a successful sync, for the
    /// next run's `mass-delete` valve. A failure only weakens the next check: a warning.
    async fn record(&self, pair: &Pair, files: u64) {
        if let Err(e) = pair
            .guard
            .record(&self.rclone, None, &pair.destination.remote, files)
            .await
        {
            tracing::warn!(
                destination = pair.destination.remote.shown(),
                "cannot record the replication's file count (the mass-delete valve compares the \
                 next run with it): {e:#}"
            );
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
            target: crate::logging::SUMMARY_TARGET_REPLICATION,
            direction = "replicate",
            pair = format!("{}/{}", index + 1, self.pairs.len()),
            source = pair.source.remote.shown(),
            destination = pair.destination.remote.shown(),
            result = result_label(&report.result),
            duration_seconds = report.elapsed.as_secs_f64(),
            attempts = report.attempts,
            transferred_files = stats.transfers,
            transferred_bytes = stats.bytes,
            deleted_files = stats.deletes,
            internal_files = stats.internal_files,
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
        let mut prepared = self.prepare_all(abort).await.into_iter();
        for (index, pair) in self.pairs.iter().enumerate() {
            let preparation = prepared.next().expect("one preparation per pair");
            if let Some(reason) = *abort.borrow() {
                failed.push((index, Error::Interrupted(reason)));
                tally.failed += self.pairs.len() - index;
                break;
            }
            let report = self.run_pair(pair, preparation, abort).await;
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
        // The pairs a signal left unrun still hold the leases taken for them.
        for pair in &self.pairs {
            pair.lease.release().await;
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
                    pair.source.remote.shown(),
                    pair.destination.remote.shown(),
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
            target: crate::logging::SUMMARY_TARGET_REPLICATION,
            direction = "replicate",
            pairs = self.pairs.len(),
            result = result_label(&report.result),
            duration_seconds = report.elapsed.as_secs_f64(),
            transferred_files = stats.transfers,
            transferred_bytes = stats.bytes,
            deleted_files = stats.deletes,
            internal_files = stats.internal_files,
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

/// Whether two sections name the same remote: equal options, or, when in doubt, the same type
/// and the same address (`endpoint`, `host`, `url`, `account`, `port`; all absent for a local
/// disk, which is then one remote). Credentials may differ and still reach the same bucket.
pub fn same_remote(a: &Options, b: &Options) -> bool {
    const ADDRESS: [&str; 6] = ["type", "endpoint", "host", "url", "account", "port"];
    a == b || ADDRESS.iter().all(|key| a.get(*key) == b.get(*key))
}

/// Whether two remote paths overlap: equal, or one a segment-wise prefix of the other (`a` and
/// `a/b` do, `a` and `ab` do not). An absolute path (`/srv`) never overlaps a relative one.
pub fn paths_overlap(a: &str, b: &str) -> bool {
    let split = |p: &str| {
        (
            p.starts_with('/'),
            p.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
    };
    let ((abs_a, a), (abs_b, b)) = (split(a), split(b));
    let shorter = a.len().min(b.len());
    abs_a == abs_b && a[..shorter] == b[..shorter]
}

/// Refuses (exit 2) a pair whose source and destination overlap on the same remote: syncing
/// `a/b` to `a` deletes the source's objects; `a` to `a/b` copies the destination's lease and
/// records into the source.
pub fn check_overlap(source: &Options, destination: &Options, src: &str, dst: &str) -> Result<()> {
    if same_remote(source, destination) && paths_overlap(src, dst) {
        return Err(Error::config(format!(
            "-s/--src {src} and -d/--dst {dst} overlap on the same remote ([source] and [remote] \
             have the same type and address): replicating one into the other would delete or \
             overwrite the source's objects; use paths that do not contain each other"
        )));
    }
    Ok(())
}

/// A pair's source check and lease, taken before the first transfer.
struct Prepared {
    /// How the source check and the lease went.
    checked: Result<SourceChecked>,
    /// How long they took (part of the pair's duration).
    took: Duration,
    /// The lease's loss, watched from before it was taken.
    lost: tokio::sync::watch::Receiver<Option<String>>,
}

/// Runs `futures` concurrently on this task and returns their outputs in order (the futures
/// borrow the replication, so they cannot be spawned).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Options {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overlapping_paths_are_segment_wise_prefixes() {
        for (a, b) in [
            ("a", "a"),
            ("a", "a/b"),
            ("a/b", "a"),
            ("b/x/y", "b/x"),
            ("/srv", "/srv/x"),
        ] {
            assert!(paths_overlap(a, b), "{a} {b}");
        }
        for (a, b) in [
            ("a", "ab"),
            ("a/b", "a/c"),
            ("a", "b"),
            ("/a", "a"),
            ("ab/c", "a"),
        ] {
            assert!(!paths_overlap(a, b), "{a} {b}");
        }
    }

    #[test]
    fn the_same_remote_is_the_same_type_and_address() {
        let a = options(&[
            ("type", "s3"),
            ("endpoint", "http://x"),
            ("secret_access_key", "1"),
        ]);
        let b = options(&[
            ("type", "s3"),
            ("endpoint", "http://x"),
            ("secret_access_key", "2"),
        ]);
        let c = options(&[("type", "s3"), ("endpoint", "http://y")]);
        assert!(same_remote(&a, &a));
        assert!(same_remote(&a, &b), "other credentials, same server");
        assert!(!same_remote(&a, &c));
        let local = options(&[("type", "local")]);
        assert!(same_remote(
            &local,
            &options(&[("type", "local"), ("links", "true")])
        ));
        assert!(check_overlap(&a, &b, "bucket/a/b", "bucket/a").is_err());
        assert!(check_overlap(&a, &b, "bucket/a", "bucket/ab").is_ok());
        assert!(check_overlap(&a, &c, "bucket/a", "bucket/a").is_ok());
    }
}
