//! One sync: the safety valves, then rclone, then a one-line summary; retried with exponential
//! backoff when the failure is temporary.
//!
//! A [`Job`] is immutable and shared by every run of a schedule. The restore marker is written
//! before rclone starts and removed only after rclone succeeded, so an interrupted restore is
//! recognisable by the next run (see [`crate::safety`]). An upload is either a full
//! `rclone sync` or, in watch mode, an incremental one ([`SyncPlan::Incremental`]): `rclone copy`
//! of the changed paths and `rclone delete` of the removed ones, after the same valves.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Local};

use crate::crypt::KeyCheck;
use crate::error::{Error, Result};
use crate::mass_delete::Guard;
use crate::rclone::{Abort, Rclone, Stats, aborted};
use crate::safety::{self, INTERNAL_FILES_FILTER, RESTORE_MARKER, RestoreDecision};
pub use crate::watch::SyncPlan;

/// rclone's concurrency for our transfers, chosen by measurement (issue 18, BENCHMARKS.md
/// section 6): at a real bucket's 10-50 ms per request, a volume of small files is bound by
/// round trips, and rclone's defaults (4 transfers, 8 checkers) leave most of that time idle.
/// 16 transfers saturate what we measured (32 and 64 were no faster) while bounding the memory
/// of large files (rclone buffers up to `--buffer-size` per transfer, and S3 multipart uploads
/// `--s3-upload-concurrency` chunks per transfer); checkers only list and compare, so they get
/// more. No `--fast-list`: it holds the whole remote listing in memory, which grows with the
/// file count, and the checkers already list directories in parallel. They come before the
/// user's flags after `--`, which rclone lets win (the last value of a flag counts).
pub const DEFAULT_TRANSFER_FLAGS: [&str; 4] = ["--transfers", "16", "--checkers", "32"];

/// Which way the data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// sync-to-remote: local directory → remote.
    Upload,
    /// remote-to-local-sync: remote → local directory.
    Restore,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Restore => "restore",
        }
    }
}

/// The overrides of the safety valves.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub upload_empty: bool,
    pub upload_partial: bool,
    pub restore: bool,
    pub if_local_empty: bool,
    /// The upload's `mass-delete` threshold in percent (`None`, or 100: off).
    pub max_delete_percent: Option<u8>,
}

/// Everything one sync needs, validated.
#[derive(Debug)]
pub struct Job {
    pub direction: Direction,
    pub local: PathBuf,
    /// The rclone path the sync reads or writes: `remote:bucket/path`, or `crypt:` when
    /// encryption is on.
    pub remote: String,
    /// How the remote is shown to the user: always `remote:bucket/path`.
    pub remote_display: String,
    pub no_delete: bool,
    pub dry_run: bool,
    pub overrides: Overrides,
    pub rclone: Rclone,
    pub user_flags: Vec<String>,
    pub retries: u32,
    pub key_check: Option<KeyCheck>,
    /// The `mass-delete` valve of uploads.
    pub mass_delete: Guard,
}

/// Runs a check that asks the remote, so that an abort (a signal) stops it: a listing of an
/// unreachable remote can take minutes of rclone retries. Dropping the check kills its rclone
/// (`kill_on_drop`); nothing has been changed at that point.
async fn unless_aborted<T>(
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

/// Writes rclone filter rules, closed by `- **`, to a temporary file.
fn filter_file(rules: &[String]) -> Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix("volume-syncing-operator-filter-")
        .tempfile()
        .context("cannot create a filter file in TMPDIR")?;
    for rule in rules {
        writeln!(file, "{rule}").context("cannot write the filter file")?;
    }
    writeln!(file, "- **").context("cannot write the filter file")?;
    Ok(file)
}

/// First backoff delay; doubled after every failed attempt, capped at [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A finished run: its result, how long it took and how many attempts it made.
#[derive(Debug)]
pub struct Report {
    pub result: Result<Outcome>,
    pub elapsed: Duration,
    pub attempts: u32,
    /// `full` or `incremental`.
    pub kind: &'static str,
}

impl Job {
    /// Runs the sync, retrying temporary failures up to `retries` times.
    pub async fn run(&self, plan: &SyncPlan, abort: &mut Abort) -> Report {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.attempt(plan, abort).await {
                Err(e) if e.is_retryable() && attempt <= self.retries => {
                    tracing::warn!(
                        attempt,
                        retries = self.retries,
                        "sync attempt failed with a temporary error: {e}; retrying in {backoff:?}"
                    );
                    tokio::select! {
                        reason = aborted(abort) => break Err(Error::Interrupted(reason)),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => break other,
            }
        };
        Report {
            result,
            elapsed: started.elapsed(),
            attempts: attempt,
            kind: match plan {
                SyncPlan::Full(_) => "full",
                SyncPlan::Incremental { .. } => "incremental",
            },
        }
    }

    fn source_and_destination(&self) -> (String, String) {
        let local = self.local.display().to_string();
        match self.direction {
            Direction::Upload => (local, self.remote_display.clone()),
            Direction::Restore => (self.remote_display.clone(), local),
        }
    }

    /// Logs the one summary line of a run; `next_run` when a schedule or watch goes on.
    pub fn log_summary(&self, report: &Report, next_run: Option<DateTime<Local>>) {
        let (source, destination) = self.source_and_destination();
        let zero = Stats::default();
        let (result, stats, message) = match &report.result {
            Ok(Outcome::Synced(stats)) => ("success", stats, "sync finished".to_string()),
            Ok(Outcome::Skipped(why)) => ("skipped", &zero, format!("sync skipped: {why}")),
            Err(e @ Error::Refused { .. }) => ("refused", &zero, format!("sync failed: {e}")),
            Err(e) => ("failure", &zero, format!("sync failed: {e}")),
        };
        // Every summary line carries every field, whatever the result, so log queries and
        // dashboards can rely on them.
        macro_rules! summary {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    direction = self.direction.as_str(),
                    source,
                    destination,
                    result,
                    duration_seconds = report.elapsed.as_secs_f64(),
                    attempts = report.attempts,
                    transferred_files = stats.transfers,
                    transferred_bytes = stats.bytes,
                    deleted_files = stats.deletes,
                    errors = stats.errors,
                    dry_run = self.dry_run,
                    kind = report.kind,
                    next_run = next_run.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    "{message}"
                )
            };
        }
        if report.result.is_ok() {
            summary!(tracing::Level::INFO);
        } else {
            summary!(tracing::Level::ERROR);
        }
    }

    async fn attempt(&self, plan: &SyncPlan, abort: &mut Abort) -> Result<Outcome> {
        match (self.direction, plan) {
            (Direction::Upload, SyncPlan::Full(_)) => self.upload(abort).await,
            (Direction::Upload, SyncPlan::Incremental { upload, delete }) => {
                self.upload_incremental(upload, delete, abort).await
            }
            (Direction::Restore, _) => self.restore(abort).await,
        }
    }

    fn operation(&self) -> &'static str {
        if self.no_delete { "copy" } else { "sync" }
    }

    async fn transfer(&self, from: OsString, to: OsString, abort: &mut Abort) -> Result<Stats> {
        let mut args = vec![
            from,
            to,
            "--create-empty-src-dirs".into(),
            "--exclude".into(),
            INTERNAL_FILES_FILTER.into(),
        ];
        args.extend(DEFAULT_TRANSFER_FLAGS.map(OsString::from));
        if self.dry_run {
            args.push("--dry-run".into());
        }
        self.rclone
            .run(self.operation(), &args, &self.user_flags, abort)
            .await
    }

    /// The checks before any upload, full or incremental: the valves, then the key check.
    async fn check_upload(&self, abort: &mut Abort) -> Result<()> {
        let o = &self.overrides;
        let source_without_files = safety::check_upload(
            &self.local,
            !self.no_delete,
            o.upload_empty,
            o.upload_partial,
        )?;
        if let Some(check) = &self.key_check {
            unless_aborted(abort, check.verify(&self.rclone, true, self.dry_run)).await?;
        }
        if source_without_files {
            unless_aborted(
                abort,
                safety::check_upload_remote(
                    &self.rclone,
                    &self.local,
                    &self.remote,
                    &self.remote_display,
                ),
            )
            .await?;
        }
        Ok(())
    }

    async fn upload(&self, abort: &mut Abort) -> Result<Outcome> {
        self.check_upload(abort).await?;
        let files = if self.no_delete {
            None
        } else {
            let check = self.mass_delete.check(
                &self.rclone,
                &self.local,
                &self.remote,
                &self.remote_display,
            );
            Some(unless_aborted(abort, check).await?)
        };
        let stats = self
            .transfer(self.local.clone().into(), self.remote.clone().into(), abort)
            .await?;
        if let Some(files) = files {
            self.record_upload(files).await;
        }
        Ok(Outcome::Synced(stats))
    }

    /// Records the source's file count for the `mass-delete` valve after a successful upload
    /// that could delete. A failure only weakens the next check, so it is a warning.
    async fn record_upload(&self, files: u64) {
        if self.dry_run || self.no_delete {
            return;
        }
        if let Err(e) = self
            .mass_delete
            .record(&self.rclone, &self.remote, files)
            .await
        {
            tracing::warn!(
                "cannot record the upload's file count (the mass-delete valve compares the next \
                 upload with it): {e:#}"
            );
        }
    }

    /// Uploads only what changed: `rclone copy` of the paths that exist and `rclone delete` of
    /// the ones that are gone, both as filter rules so rclone lists only what they touch.
    async fn upload_incremental(
        &self,
        upload: &[String],
        delete: &[String],
        abort: &mut Abort,
    ) -> Result<Outcome> {
        self.check_upload(abort).await?;
        let delete = if self.no_delete { &[][..] } else { delete };
        if upload.is_empty() && delete.is_empty() {
            return Ok(Outcome::Skipped(
                "nothing changed since the last sync".into(),
            ));
        }
        tracing::info!(
            changed = upload.len(),
            removed = delete.len() / 2,
            "incremental upload of the changed paths"
        );
        let mut stats = Stats::default();
        for (operation, rules, location) in [
            (
                "copy",
                upload,
                vec![
                    self.local.clone().into_os_string(),
                    self.remote.clone().into(),
                ],
            ),
            ("delete", delete, vec![self.remote.clone().into()]),
        ] {
            if rules.is_empty() {
                continue;
            }
            let rules_file = filter_file(rules)?;
            let mut args = location;
            args.extend([
                "--exclude".into(),
                INTERNAL_FILES_FILTER.into(),
                "--filter-from".into(),
            ]);
            args.push(rules_file.path().into());
            if operation == "copy" {
                args.push("--no-traverse".into());
                args.extend(DEFAULT_TRANSFER_FLAGS.map(OsString::from));
            }
            if self.dry_run {
                args.push("--dry-run".into());
            }
            stats.add(
                &self
                    .rclone
                    .run(operation, &args, &self.user_flags, abort)
                    .await?,
            );
        }
        // Deletions lower the count the mass-delete valve compares with; additions only raise
        // it, so a record lagging below them is merely less eager.
        if stats.deletes > 0 {
            match safety::count_files_to_upload(&self.local) {
                Ok(files) => self.record_upload(files).await,
                Err(e) => tracing::warn!("cannot count the files of {}: {e}", self.local.display()),
            }
        }
        Ok(Outcome::Synced(stats))
    }

    async fn restore(&self, abort: &mut Abort) -> Result<Outcome> {
        let o = &self.overrides;
        let euid = nix::unistd::geteuid().as_raw();
        let (decision, local) = safety::check_restore_local(
            &self.local,
            !self.no_delete,
            o.restore,
            o.if_local_empty,
            euid,
        )?;
        let check_remote = match decision {
            RestoreDecision::SkipLocalNotEmpty => {
                return Ok(Outcome::Skipped(format!(
                    "--if-local-empty: {} already holds data (and no unfinished restore)",
                    self.local.display()
                )));
            }
            RestoreDecision::Proceed { check_remote } => check_remote,
        };
        if let Some(check) = &self.key_check {
            unless_aborted(abort, check.verify(&self.rclone, false, self.dry_run)).await?;
        }
        if check_remote {
            unless_aborted(
                abort,
                safety::check_remote_not_empty(&self.rclone, &self.remote),
            )
            .await?;
        }
        let marker = self.local.join(RESTORE_MARKER);
        if !self.dry_run {
            std::fs::create_dir_all(&self.local)
                .with_context(|| format!("cannot create {}", self.local.display()))?;
            std::fs::write(
                &marker,
                b"a restore into this directory has not completed yet\n",
            )
            .with_context(|| format!("cannot write the restore marker {}", marker.display()))?;
        }
        let stats = match self
            .transfer(self.remote.clone().into(), self.local.clone().into(), abort)
            .await
        {
            Err(e @ Error::Rclone { code: 3, .. }) if !local.has_data => {
                return self.restore_not_found(e, &marker, abort).await;
            }
            other => other?,
        };
        if !self.dry_run {
            std::fs::remove_file(&marker).with_context(|| {
                format!("cannot remove the restore marker {}", marker.display())
            })?;
        }
        Ok(Outcome::Synced(stats))
    }

    /// A restore into an empty directory whose rclone failed with "directory not found"
    /// (exit code 3): the remote path does not exist, the normal state before the first upload
    /// on remotes with directories (on S3 an absent prefix is merely empty, and the sync
    /// succeeds with nothing to do). Both ends empty is nothing to lose, so a success, once a
    /// listing confirms that the remote path holds no file: exit code 3 can also mean that a
    /// directory vanished during the sync, which stays a failure.
    ///
    /// This replaces a listing before every such restore (issue 18: each rclone call is at
    /// least one round trip to the bucket; an init container's restore into an empty volume is
    /// the common case, and an absent remote path the rare one).
    async fn restore_not_found(
        &self,
        failure: Error,
        marker: &std::path::Path,
        abort: &mut Abort,
    ) -> Result<Outcome> {
        let has_entries = unless_aborted(
            abort,
            safety::remote_has_entries(&self.rclone, &self.remote),
        )
        .await;
        match has_entries {
            Err(e @ Error::Interrupted(_)) => Err(e),
            Ok(false) => {
                if !self.dry_run {
                    std::fs::remove_file(marker).with_context(|| {
                        format!("cannot remove the restore marker {}", marker.display())
                    })?;
                }
                Ok(Outcome::Skipped(format!(
                    "{} is empty; nothing to restore",
                    self.remote_display
                )))
            }
            Ok(true) | Err(_) => Err(failure),
        }
    }
}
