//! One sync: the safety valves, then rclone, then a one-line summary; retried with exponential
//! backoff when the failure is temporary.
//!
//! A [`Job`] is immutable and shared by every run of a schedule. The restore marker is written
//! before rclone starts and removed only after rclone succeeded, so an interrupted restore is
//! recognisable by the next run (see [`crate::sync::valves::safety`]). An upload is either a full
//! `rclone sync` or, in watch mode, an incremental one ([`SyncPlan::Incremental`]): `rclone copy`
//! of the changed paths and `rclone delete` of the removed ones, after the same valves. A
//! one-shot upload that would write nothing at all ends before taking the lease (`unchanged.rs`);
//! a full upload that takes the lease checks, and dry-runs its sync, while the lease settles
//! ([`Job::lease_step`]); when the dry run finds nothing to do, the sync is left out.
//!
//! Restore fidelity ([`crate::sync::fidelity`]): every successful upload is followed by the
//! manifest of the volume's metadata, when it changed (through the lease's rclone server in a
//! one-shot run, else an `rcat` started then); every restore applies the manifest after the
//! data sync, and the restore root's own attributes after the restore marker is gone.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Local};

use crate::error::{Error, Result};
use crate::logging::summary_event;
use crate::remote::crypt::KeyCheck;
use crate::remote::path::{INTERNAL_FILTER, RemoteEnd};
use crate::remote::rclone::DEFAULT_TRANSFER_FLAGS;
use crate::remote::rclone::rc::RcServer;
use crate::remote::rclone::{Abort, Rclone, aborted};
use crate::remote::stats::Stats;
use crate::sync::fidelity;
use crate::sync::lease::Lease;
use crate::sync::outcome::{
    Outcome, Report, Retries, VolumeSummary, result_label, unless_aborted, within_limit,
};
use crate::sync::task::{SyncPlan, Task};
use crate::sync::valves::crypt_marker::{MarkerWriter, PlainGuard};
use crate::sync::valves::mass_delete::Guard;
use crate::sync::valves::safety::{self};

mod lease_step;
mod restore;
mod unchanged;

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
    /// `--skip-if-never-uploaded`: a restore of a path no upload ever wrote is skipped.
    pub skip_if_never_uploaded: bool,
    /// The upload's `mass-delete` threshold in percent (`None`, or 100: off).
    pub max_delete_percent: Option<u8>,
    /// `--skip-objects-under-links`: the `link-conflict` rule warns instead of refusing.
    pub skip_objects_under_links: bool,
    /// `--restore-setid-bits`: an opt-in, not a valve; without it a restore drops setuid and
    /// setgid bits of files.
    pub restore_setid_bits: bool,
}

/// Everything one sync needs, validated.
#[derive(Debug)]
pub struct Job {
    pub direction: Direction,
    pub local: PathBuf,
    /// The remote path: what rclone syncs with (`remote:bucket/path/`, or `crypt:` when
    /// encryption is on), how the user named it, and where our objects live beside the data.
    pub remote: RemoteEnd,
    pub no_delete: bool,
    pub dry_run: bool,
    pub overrides: Overrides,
    pub rclone: Rclone,
    pub user_flags: Vec<String>,
    pub retries: u32,
    /// `--sync-timeout`: the bound of one run, retries and backoff included.
    pub sync_timeout: Option<Duration>,
    pub key_check: Option<KeyCheck>,
    /// Without encryption settings: refuses a path that holds encrypted data.
    pub plain_guard: Option<PlainGuard>,
    /// With encryption: the plain marker that keeps runs without the key away.
    pub encryption_marker: MarkerWriter,
    /// The `mass-delete` valve of uploads.
    pub mass_delete: Guard,
    /// Digest of the metadata manifest this process wrote last: an unchanged one is not
    /// written again (schedule and watch mode).
    pub last_manifest: Mutex<Option<u64>>,
}

/// What the read-only checks of a full upload found ([`Job::check_upload_reads`]): run during
/// the lease's settle delay, they spare the first attempt that time.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    /// The source's file count for the upload record (`None` with `--no-delete`).
    files: Option<u64>,
    /// With encryption: the key check object is missing (written once the lease is held).
    key_check_missing: bool,
    /// A dry run of the upload's sync, made while the lease settled, found nothing to change
    /// ([`Rclone::changes_nothing`]): the sync is left out.
    unchanged: bool,
    /// `Some` when the look before the lease found that the run writes nothing at all
    /// (`unchanged.rs`; it took no lease): the special files its metadata walk left out, for
    /// the summary.
    wrote_nothing: Option<u64>,
}

/// What a one-shot upload's look before the lease found (`unchanged.rs`).
enum Look {
    /// Nothing to write: the run ends without the lease.
    Nothing(Checked),
    /// The dry run found a change: the settle need not dry-run again.
    Changes,
    /// Not looked, or not known: the run takes the lease as usual.
    Unknown,
}

/// The arguments of a data sync from `from` to `to` (`excludes`: a file of rclone exclude
/// rules, a restore's links).
fn transfer_args(from: OsString, to: OsString, excludes: Option<&Path>) -> Vec<OsString> {
    let mut args = vec![
        from,
        to,
        "--create-empty-src-dirs".into(),
        // Symlinks are recorded in the metadata manifest; rclone need not warn about each.
        "--skip-links".into(),
        "--exclude".into(),
        INTERNAL_FILTER.into(),
    ];
    if let Some(excludes) = excludes {
        args.extend(["--exclude-from".into(), excludes.into()]);
    }
    args.extend(DEFAULT_TRANSFER_FLAGS.map(OsString::from));
    args
}

/// Writes rclone filter rules, closed by `- **`, to a temporary file.
fn filter_file(rules: &[String]) -> Result<tempfile::NamedTempFile> {
    rules_file(rules.iter().map(String::as_str).chain(["- **"]))
}

/// Writes rclone filter lines (as given) to a temporary file.
fn rules_file<S: AsRef<str>>(
    lines: impl IntoIterator<Item = S>,
) -> Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix("volume-syncing-operator-filter-")
        .tempfile()
        .context("cannot create a filter file in TMPDIR")?;
    for line in lines {
        writeln!(file, "{}", line.as_ref()).context("cannot write the filter file")?;
    }
    file.flush().context("cannot write the filter file")?;
    Ok(file)
}

impl Job {
    /// Forgets what this process remembers of the remote (the digest of the manifest it wrote
    /// last, the mass-delete record), so the next upload writes both: called when the lease is
    /// (re)acquired, because after a loss another writer may have replaced them. Costs the
    /// next sync one manifest write and one record read and write.
    pub fn forget_remote_state(&self) {
        *self.last_manifest.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.mass_delete.forget();
    }

    /// Runs the sync, retrying failures that can heal up to `retries` times, all within
    /// `--sync-timeout` when one is set. When the time is up, the running rclone is dropped,
    /// which kills it (`kill_on_drop`); an unfinished restore keeps its marker.
    /// `checked`: the read-only checks already passed for this run (the first attempt uses them).
    /// `server`: an rclone server the run may use for its small objects (the lease's, kept by a
    /// one-shot upload): the manifest and the upload record then cost a request each.
    pub async fn run(
        &self,
        plan: &SyncPlan,
        checked: Option<Checked>,
        server: Option<&RcServer>,
        abort: &mut Abort,
    ) -> Report {
        let started = Instant::now();
        let mut checked = checked;
        let mut retries = Retries::new(self.retries);
        let mut volume = VolumeSummary::default();
        let all = async {
            loop {
                retries.attempts += 1;
                volume = VolumeSummary {
                    metadata: "none",
                    ..VolumeSummary::default()
                };
                match self
                    .attempt(plan, checked.take(), server, abort, &mut volume)
                    .await
                {
                    Err(e) => retries.after_failure(e, abort).await?,
                    ok => return ok,
                }
            }
        };
        let result = within_limit(self.sync_timeout, all)
            .await
            .unwrap_or_else(|| Err(retries.timed_out(self.sync_timeout.unwrap_or_default())));
        Report {
            result,
            elapsed: started.elapsed(),
            attempts: retries.attempts,
            kind: match plan {
                SyncPlan::Full(_) => "full",
                SyncPlan::Incremental { .. } => "incremental",
            },
            volume,
        }
    }

    fn source_and_destination(&self) -> (String, String) {
        let local = self.local.display().to_string();
        match self.direction {
            Direction::Upload => (local, self.remote.shown().to_string()),
            Direction::Restore => (self.remote.shown().to_string(), local),
        }
    }

    /// Logs the one summary line of a run; `next_run` when a schedule or watch goes on.
    /// `error_follows`: the program exits next and prints the error as its last line, so a
    /// refusal's long reason is not printed twice; the summary names the rule only.
    pub fn log_summary(
        &self,
        report: &Report,
        next_run: Option<DateTime<Local>>,
        error_follows: bool,
    ) {
        let (source, destination) = self.source_and_destination();
        let mut message = match &report.result {
            Ok(Outcome::Synced(_)) => "sync finished".to_string(),
            Ok(Outcome::Skipped(why)) => format!("sync skipped: {why}"),
            Err(Error::Refused { rule, .. }) if error_follows => {
                format!("sync refused by safety rule '{rule}' (the reason follows)")
            }
            Err(e) => format!("sync failed: {e}"),
        };
        let volume = &report.volume;
        if volume.owners_not_set {
            // Said once, here: the files belong to this process, as without the manifest.
            message.push_str("; owners were not restored (not running as root)");
        }
        if volume.skipped_special > 0 {
            message.push_str(&format!(
                "; {} special files (FIFOs, sockets, devices) were not transferred",
                volume.skipped_special
            ));
        }
        let stats = report.stats();
        summary_event!(
            report.result.is_ok(),
            target: crate::logging::SUMMARY_TARGET_SYNC,
            direction = self.direction.as_str(),
            source,
            destination,
            result = result_label(&report.result),
            duration_seconds = report.elapsed.as_secs_f64(),
            attempts = report.attempts,
            transferred_files = stats.transfers,
            transferred_bytes = stats.bytes,
            deleted_files = stats.deletes,
            errors = report.errors(),
            dry_run = self.dry_run,
            kind = report.kind,
            skipped_special = volume.skipped_special,
            metadata = volume.metadata,
            next_run = next_run.map(|t| t.to_rfc3339()).unwrap_or_default(),
            "{message}"
        );
    }

    async fn attempt(
        &self,
        plan: &SyncPlan,
        checked: Option<Checked>,
        server: Option<&RcServer>,
        abort: &mut Abort,
        volume: &mut VolumeSummary,
    ) -> Result<Outcome> {
        match (self.direction, plan) {
            (Direction::Upload, SyncPlan::Full(_)) => {
                self.upload(checked, server, abort, volume).await
            }
            (Direction::Upload, SyncPlan::Incremental { upload, delete }) => {
                self.upload_incremental(upload, delete, abort, volume).await
            }
            (Direction::Restore, _) => self.restore(abort, volume).await,
        }
    }

    fn operation(&self) -> &'static str {
        if self.no_delete { "copy" } else { "sync" }
    }

    /// The data sync. `excludes`: a file of rclone exclude rules (a restore's links).
    async fn transfer(
        &self,
        from: OsString,
        to: OsString,
        excludes: Option<&Path>,
        abort: &mut Abort,
    ) -> Result<Stats> {
        let mut args = transfer_args(from, to, excludes);
        if self.dry_run {
            args.push("--dry-run".into());
        }
        self.rclone
            .run(self.operation(), &args, &self.user_flags, abort)
            .await
    }

    /// Whether the upload's sync would change nothing, by a dry run of it
    /// ([`Rclone::changes_nothing`]); `false` when that is not known.
    async fn upload_changes_nothing(&self, abort: &mut Abort) -> bool {
        let args = transfer_args(self.local.clone().into(), self.remote.data().into(), None);
        let preview = self
            .rclone
            .changes_nothing(self.operation(), &args, &self.user_flags, abort);
        preview.await.unwrap_or(false)
    }

    /// The checks before any upload, full or incremental: the valves, the key check, then the
    /// writes among them (a missing key check object, the encryption marker), made while the
    /// lease is held.
    async fn check_upload(&self, abort: &mut Abort) -> Result<()> {
        let (key_check_missing, _) = self.read_checks(false, abort).await?;
        self.ensure_key_objects(key_check_missing, abort).await
    }

    /// The read-only checks of a full upload: [`Job::check_upload`]'s but for the marker, and
    /// the `mass-delete` valve. They write nothing, so they may run while the lease settles.
    pub async fn check_upload_reads(&self, abort: &mut Abort) -> Result<Checked> {
        let (key_check_missing, files) = self.read_checks(!self.no_delete, abort).await?;
        Ok(Checked {
            files,
            key_check_missing,
            unchanged: false,
            wrote_nothing: None,
        })
    }

    /// With encryption and not a dry run: writes the key check object if it was missing, then
    /// makes sure of the plain marker. Only once the lease is held: a racer that loses it must
    /// not leave its key's check object over the winner's data.
    async fn ensure_key_objects(&self, key_check_missing: bool, abort: &mut Abort) -> Result<()> {
        if let Some(check) = &self.key_check
            && !self.dry_run
        {
            if key_check_missing {
                unless_aborted(abort, check.write(&self.rclone)).await?;
            }
            let marker = self.encryption_marker.ensure(&self.rclone, &check.end);
            unless_aborted(abort, marker).await?;
        }
        Ok(())
    }

    /// The valves and the key check (read-only), with the `mass-delete` valve when
    /// `mass_delete`: whether the key check object is missing, and the source's file count the
    /// mass-delete valve took. They read different objects, so they run at once (each is an
    /// rclone start and a request); their verdicts are then taken in one fixed order (the key,
    /// the plain guard, `empty-source`, `mass-delete`), so a run that several of them refuse
    /// always names the same rule.
    async fn read_checks(
        &self,
        mass_delete: bool,
        abort: &mut Abort,
    ) -> Result<(bool, Option<u64>)> {
        let o = &self.overrides;
        let source_without_files = safety::check_upload(
            &self.local,
            !self.no_delete,
            o.upload_empty,
            o.upload_partial,
        )?;
        let (rclone, local, remote) = (&self.rclone, &self.local, &self.remote);
        let key = async {
            match &self.key_check {
                Some(check) => check.inspect(rclone).await,
                None => Ok(false),
            }
        };
        let guard = async {
            let what =
                "an upload would delete every encrypted object (or mix plain files into them)";
            match &self.plain_guard {
                Some(guard) => guard.verify(rclone, what).await,
                None => Ok(()),
            }
        };
        let empty = async {
            if source_without_files {
                safety::check_upload_remote(rclone, local, remote).await
            } else {
                Ok(())
            }
        };
        let count = async {
            if mass_delete {
                self.mass_delete
                    .check(rclone, local, remote)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let all = async { Ok(tokio::join!(key, guard, empty, count)) };
        let (key, guard, empty, count) = unless_aborted(abort, all).await?;
        let key_check_missing = key?;
        guard?;
        empty?;
        Ok((key_check_missing, count?))
    }

    async fn upload(
        &self,
        checked: Option<Checked>,
        server: Option<&RcServer>,
        abort: &mut Abort,
        volume: &mut VolumeSummary,
    ) -> Result<Outcome> {
        if self.dry_run {
            return self.dry_run_upload(abort, volume).await;
        }
        let checked = match checked {
            Some(checked) => checked,
            None => self.check_upload_reads(abort).await?,
        };
        if let Some(skipped_special) = checked.wrote_nothing {
            tracing::info!(
                "nothing to upload: rclone's dry run of the sync found no change, and the \
                 remote's manifest and upload record are current; nothing was written (a run \
                 that writes nothing takes no lease)"
            );
            volume.skipped_special = skipped_special;
            volume.metadata = "unchanged";
            return Ok(Outcome::Synced(Stats::default()));
        }
        let files = checked.files;
        self.ensure_key_objects(checked.key_check_missing, abort)
            .await?;
        let (stats, record) = if checked.unchanged {
            tracing::info!(
                "nothing to upload: rclone's dry run of the sync, made while the lease settled, \
                 found no change (the sync is not run)"
            );
            (Stats::default(), self.record_tree().await)
        } else {
            // The metadata walk runs beside the sync (the manifest is still written only after
            // it succeeded): both read the live volume, and a restore matches the manifest
            // against what the data sync produced, entry by entry. A failed or interrupted
            // sync does not wait for the walk (dropped, its thread finishes on its own).
            let from = self.local.clone().into();
            let transfer = self.transfer(from, self.remote.data().into(), None, abort);
            let walk = self.record_tree();
            tokio::pin!(transfer, walk);
            let mut walked = None;
            let stats = loop {
                tokio::select! {
                    stats = &mut transfer => break stats?,
                    record = &mut walk, if walked.is_none() => walked = Some(record),
                }
            };
            let record = match walked {
                Some(record) => record,
                None => walk.await,
            };
            (stats, record)
        };
        self.write_recorded(record?, server, abort, volume).await?;
        if let Some(files) = files {
            self.record_upload(files, server).await;
        }
        Ok(Outcome::Synced(stats))
    }

    /// `--dry-run` of a full upload: the read-only checks, rclone's dry run of the sync and the
    /// metadata walk (it only counts what an upload would skip) run at once, since none of them
    /// changes anything. A check's refusal stops rclone (dropped, it is killed) and is the
    /// run's result, as it would be an upload's.
    async fn dry_run_upload(
        &self,
        abort: &mut Abort,
        volume: &mut VolumeSummary,
    ) -> Result<Outcome> {
        let mut checks_abort = abort.clone();
        let mut walk_abort = abort.clone();
        let checks = self.check_upload_reads(&mut checks_abort);
        let from = self.local.clone().into();
        let work = async {
            let transfer = self.transfer(from, self.remote.data().into(), None, abort);
            let walk = self.write_manifest(None, &mut walk_abort, volume);
            Ok(tokio::join!(transfer, walk))
        };
        let (_, (stats, walked)) = tokio::try_join!(checks, work)?;
        walked?;
        Ok(Outcome::Synced(stats?))
    }

    /// Records the source's file count for the `mass-delete` valve after a successful upload
    /// that could delete. A failure only weakens the next check, so it is a warning.
    async fn record_upload(&self, files: u64, server: Option<&RcServer>) {
        if self.dry_run || self.no_delete {
            return;
        }
        if let Err(e) = self
            .mass_delete
            .record(&self.rclone, server, &self.remote, files)
            .await
        {
            tracing::warn!(
                "cannot record the upload's file count (the mass-delete valve compares the next \
                 upload with it): {e:#}"
            );
        }
    }

    /// Records the tree's metadata (a walk of the volume, on a blocking thread).
    async fn record_tree(&self) -> Result<fidelity::format::Record> {
        let local = self.local.clone();
        tokio::task::spawn_blocking(move || fidelity::record(&local))
            .await
            .map_err(|e| Error::Other(anyhow::anyhow!("recording the metadata failed: {e}")))?
    }

    /// After a successful data sync: records the tree and writes the manifest (through
    /// `server` when the run has one), unless this process wrote the same one last time. A dry
    /// run writes nothing.
    async fn write_manifest(
        &self,
        server: Option<&RcServer>,
        abort: &mut Abort,
        volume: &mut VolumeSummary,
    ) -> Result<()> {
        let record = self.record_tree().await?;
        self.write_recorded(record, server, abort, volume).await
    }

    /// [`Job::write_manifest`] of a tree recorded already (beside the data sync).
    async fn write_recorded(
        &self,
        record: fidelity::format::Record,
        server: Option<&RcServer>,
        abort: &mut Abort,
        volume: &mut VolumeSummary,
    ) -> Result<()> {
        volume.skipped_special = record.skipped_special;
        if self.dry_run {
            tracing::info!("dry run: the metadata manifest is not written");
            return Ok(());
        }
        if self.no_delete && record.is_empty() {
            // Nothing was uploaded, and the remote's files are not this tree's: its manifest
            // still describes them better than an empty one would.
            volume.metadata = "unchanged";
            return Ok(());
        }
        let digest = record.digest();
        let last = *self.last_manifest.lock().unwrap_or_else(|p| p.into_inner());
        if last == Some(digest) {
            volume.metadata = "unchanged";
            return Ok(());
        }
        tokio::select! {
            reason = aborted(abort) => return Err(Error::Interrupted(reason)),
            written = fidelity::write(&self.rclone, &self.remote, server, &record) => written?,
        }
        *self.last_manifest.lock().unwrap_or_else(|p| p.into_inner()) = Some(digest);
        volume.metadata = "recorded";
        Ok(())
    }

    /// Uploads only what changed: `rclone copy` of the paths that exist and `rclone delete` of
    /// the ones that are gone, both as filter rules so rclone lists only what they touch.
    async fn upload_incremental(
        &self,
        upload: &[String],
        delete: &[String],
        abort: &mut Abort,
        volume: &mut VolumeSummary,
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
                    self.remote.data().into(),
                ],
            ),
            ("delete", delete, vec![self.remote.data().into()]),
        ] {
            if rules.is_empty() {
                continue;
            }
            let rules_file = filter_file(rules)?;
            let mut args = location;
            args.extend([
                "--skip-links".into(),
                "--exclude".into(),
                INTERNAL_FILTER.into(),
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
        // Metadata changes (a chmod, a new symlink or empty directory) reach the remote here.
        self.write_manifest(None, abort, volume).await?;
        // Deletions lower the count the mass-delete valve compares with; additions only raise
        // it, so a record lagging below them is merely less eager.
        if stats.deletes > 0 {
            match safety::count_files_to_upload(&self.local) {
                Ok(files) => self.record_upload(files, None).await,
                Err(e) => tracing::warn!("cannot count the files of {}: {e}", self.local.display()),
            }
        }
        Ok(Outcome::Synced(stats))
    }
}

impl Task for Job {
    /// Runs the job after the lease step: an upload takes the lease (a no-op while held), a
    /// restore waits for a writer that holds it. A failed lease step is the run's result.
    async fn execute(&self, plan: &SyncPlan, lease: Option<&Lease>, abort: &mut Abort) -> Report {
        let Some(lease) = lease else {
            return self.run(plan, None, None, abort).await;
        };
        let started = std::time::Instant::now();
        if self.dry_run && self.direction == Direction::Upload {
            // A dry run's lease step only reads the lease (and warns of a holder), so it runs
            // beside the run.
            let mut step_abort = abort.clone();
            let step = self.bounded_lease_step(plan, lease, &mut step_abort);
            let (stepped, report) = tokio::join!(step, self.run(plan, None, None, abort));
            return match stepped {
                Err(e) => self.failed_lease_step(plan, e, started),
                Ok(_) => report,
            };
        }
        let acquisitions = lease.acquisitions();
        let checked = match self.bounded_lease_step(plan, lease, abort).await {
            Ok(found) => found,
            Err(e) => return self.failed_lease_step(plan, e, started),
        };
        if lease.acquisitions() != acquisitions && checked.is_none() {
            // (Re)taken: after a loss, the other writer's manifest and record are there.
            self.forget_remote_state();
        }
        let server = lease.server();
        self.run(plan, checked, server.as_deref(), abort).await
    }

    fn log_summary(&self, report: &Report, next_run: Option<DateTime<Local>>, error_follows: bool) {
        Job::log_summary(self, report, next_run, error_follows);
    }

    fn direction(&self) -> &'static str {
        self.direction.as_str()
    }

    fn watched(&self) -> Option<&Path> {
        Some(&self.local)
    }
}
