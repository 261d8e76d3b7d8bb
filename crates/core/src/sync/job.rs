//! One sync: the safety valves, then rclone, then a one-line summary; retried with exponential
//! backoff when the failure is temporary.
//!
//! A [`Job`] is immutable and shared by every run of a schedule. The restore marker is written
//! before rclone starts and removed only after rclone succeeded, so an interrupted restore is
//! recognisable by the next run (see [`crate::sync::valves::safety`]). An upload is either a full
//! `rclone sync` or, in watch mode, an incremental one ([`SyncPlan::Incremental`]): `rclone copy`
//! of the changed paths and `rclone delete` of the removed ones, after the same valves.
//!
//! Restore fidelity ([`crate::sync::fidelity`]): every successful upload is followed by the
//! manifest of the volume's metadata (its `rcat` started with the sync, fed after it); every
//! restore applies the manifest after the data sync, and the restore root's own attributes
//! after the restore marker is gone.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Local};

use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::logging::summary_event;
use crate::remote::crypt::KeyCheck;
use crate::remote::path::{INTERNAL_FILTER, RemoteEnd};
use crate::remote::rclone::DEFAULT_TRANSFER_FLAGS;
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
use crate::sync::valves::safety::{self, RESTORE_MARKER, RestoreDecision};

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
    pub async fn run(&self, plan: &SyncPlan, abort: &mut Abort) -> Report {
        let started = Instant::now();
        let mut retries = Retries::new(self.retries);
        let mut volume = VolumeSummary::default();
        let all = async {
            loop {
                retries.attempts += 1;
                volume = VolumeSummary {
                    metadata: "none",
                    ..VolumeSummary::default()
                };
                match self.attempt(plan, abort, &mut volume).await {
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
        abort: &mut Abort,
        volume: &mut VolumeSummary,
    ) -> Result<Outcome> {
        match (self.direction, plan) {
            (Direction::Upload, SyncPlan::Full(_)) => self.upload(abort, volume).await,
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
            if !self.dry_run {
                let marker = self.encryption_marker.ensure(&self.rclone, &check.end);
                unless_aborted(abort, marker).await?;
            }
        }
        if let Some(guard) = &self.plain_guard {
            let what =
                "an upload would delete every encrypted object (or mix plain files into them)";
            unless_aborted(abort, guard.verify(&self.rclone, what)).await?;
        }
        if source_without_files {
            unless_aborted(
                abort,
                safety::check_upload_remote(&self.rclone, &self.local, &self.remote),
            )
            .await?;
        }
        Ok(())
    }

    async fn upload(&self, abort: &mut Abort, volume: &mut VolumeSummary) -> Result<Outcome> {
        self.check_upload(abort).await?;
        let files = if self.no_delete {
            None
        } else {
            let check = self
                .mass_delete
                .check(&self.rclone, &self.local, &self.remote);
            Some(unless_aborted(abort, check).await?)
        };
        let writer = self.manifest_writer()?;
        let stats = self
            .transfer(
                self.local.clone().into(),
                self.remote.data().into(),
                None,
                abort,
            )
            .await?;
        self.write_manifest(writer, abort, volume).await?;
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

    /// Starts the manifest's `rcat` before the data sync, so its start-up costs no time; a
    /// dry run writes nothing.
    fn manifest_writer(&self) -> Result<Option<fidelity::Writer>> {
        if self.dry_run {
            return Ok(None);
        }
        fidelity::Writer::start(&self.rclone, &self.remote).map(Some)
    }

    /// After a successful data sync: records the tree and writes the manifest, unless this
    /// process wrote the same one last time.
    async fn write_manifest(
        &self,
        writer: Option<fidelity::Writer>,
        abort: &mut Abort,
        volume: &mut VolumeSummary,
    ) -> Result<()> {
        let local = self.local.clone();
        let record = tokio::task::spawn_blocking(move || fidelity::record(&local))
            .await
            .map_err(|e| Error::Other(anyhow::anyhow!("recording the metadata failed: {e}")))??;
        volume.skipped_special = record.skipped_special;
        let Some(writer) = writer else {
            tracing::info!("dry run: the metadata manifest is not written");
            return Ok(());
        };
        if self.no_delete && record.is_empty() {
            // Nothing was uploaded, and the remote's files are not this tree's: its manifest
            // still describes them better than an empty one would.
            writer.abandon();
            volume.metadata = "unchanged";
            return Ok(());
        }
        let digest = record.digest();
        let last = *self.last_manifest.lock().unwrap_or_else(|p| p.into_inner());
        if last == Some(digest) {
            writer.abandon();
            volume.metadata = "unchanged";
            return Ok(());
        }
        tokio::select! {
            reason = aborted(abort) => return Err(Error::Interrupted(reason)),
            written = writer.write(&record) => written?,
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
        let writer = self.manifest_writer()?;
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
        self.write_manifest(writer, abort, volume).await?;
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

    async fn restore(&self, abort: &mut Abort, volume: &mut VolumeSummary) -> Result<Outcome> {
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
                safety::check_remote_not_empty(&self.rclone, self.remote.data()),
            )
            .await?;
        }
        // After the emptiness valve, so that a remote that cannot be listed is its refusal.
        if let Some(guard) = &self.plain_guard {
            let what = "a restore would replace the local files with ciphertext";
            unless_aborted(abort, guard.verify(&self.rclone, what)).await?;
        }
        let excludes = self.exclude_links(abort).await?;
        let marker = self.local.join(RESTORE_MARKER);
        let written = MarkerWritten {
            had_marker: local.has_marker,
            created_dir: !self.local.exists(),
        };
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
            .transfer(
                self.remote.data().into(),
                self.local.clone().into(),
                excludes.as_ref().map(|f| f.path()),
                abort,
            )
            .await
        {
            Err(e @ Error::Rclone { code: 3, .. }) if !local.has_data => {
                return self.restore_not_found(e, &marker, written, abort).await;
            }
            other => other?,
        };
        if self.dry_run {
            return Ok(Outcome::Synced(stats));
        }
        let manifest = match self.fetch_manifest(abort).await? {
            fidelity::Fetched::Missing if !local.has_data && stats.transfers == 0 => {
                // Nothing came and no manifest: an empty remote path (on S3 an absent prefix
                // lists as empty, so the sync succeeded with nothing to do).
                return self.restore_found_empty(&marker, written, abort).await;
            }
            fetched => self.apply_manifest(fetched, volume).await?,
        };
        std::fs::remove_file(&marker)
            .with_context(|| format!("cannot remove the restore marker {}", marker.display()))?;
        if let Some(manifest) = manifest
            && fidelity::apply_root(&self.local, &manifest, Self::as_root())?
        {
            volume.metadata = "partial";
        }
        Ok(Outcome::Synced(stats))
    }

    /// Before a restore's data sync: the target's symlinks become exclude rules of the sync
    /// (rclone's `local` backend would write and delete through them), once the `link-conflict`
    /// rule has checked with one listing that the remote holds nothing beneath them. No links
    /// (the usual restore into an empty volume): no listing, `None`.
    async fn exclude_links(&self, abort: &mut Abort) -> Result<Option<tempfile::NamedTempFile>> {
        let local = self.local.clone();
        let links = tokio::task::spawn_blocking(move || safety::local_links(&local))
            .await
            .map_err(|e| Error::Other(anyhow::anyhow!("looking for symlinks failed: {e}")))?
            .with_context(|| format!("cannot read {}", self.local.display()))?;
        if links.is_empty() {
            return Ok(None);
        }
        let rules: Vec<String> = links.iter().map(|l| safety::link_subtree_rule(l)).collect();
        let check = filter_file(&rules.iter().map(|r| format!("+ {r}")).collect::<Vec<_>>())?;
        unless_aborted(
            abort,
            safety::check_links(
                &self.rclone,
                self.remote.data(),
                &links,
                check.path(),
                self.overrides.skip_objects_under_links,
            ),
        )
        .await?;
        tracing::debug!(
            links = links.len(),
            "the symlinks of the target and everything beneath them are left out of the restore"
        );
        rules_file(&rules).map(Some)
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
        marker: &Path,
        written: MarkerWritten,
        abort: &mut Abort,
    ) -> Result<Outcome> {
        let has_entries = unless_aborted(
            abort,
            safety::remote_has_entries(&self.rclone, self.remote.data()),
        )
        .await;
        match has_entries {
            Err(e @ Error::Interrupted(_)) => Err(e),
            Ok(false) => self.restore_found_empty(marker, written, abort).await,
            Ok(true) => Err(failure),
            // A listing that fails too: a missing bucket says so in its own words.
            Err(_) => {
                self.check_bucket(marker, written, abort).await?;
                Err(failure)
            }
        }
    }

    /// Both ends empty: nothing to restore and nothing to lose, the normal state before the
    /// first upload (the directory stays, ready for the app); but a missing bucket is not, it
    /// is a wrong remote path (exit 2).
    async fn restore_found_empty(
        &self,
        marker: &Path,
        written: MarkerWritten,
        abort: &mut Abort,
    ) -> Result<Outcome> {
        self.check_bucket(marker, written, abort).await?;
        if !self.dry_run && !written.had_marker {
            std::fs::remove_file(marker).with_context(|| {
                format!("cannot remove the restore marker {}", marker.display())
            })?;
        }
        Ok(Outcome::Skipped(format!(
            "{} is empty; nothing to restore",
            self.remote.shown()
        )))
    }

    /// Refuses (exit 2) a restore whose bucket does not exist, leaving the local side as it
    /// was: our marker removed, and the directory too if this restore created it.
    async fn check_bucket(
        &self,
        marker: &Path,
        written: MarkerWritten,
        abort: &mut Abort,
    ) -> Result<()> {
        let checked = unless_aborted(
            abort,
            safety::check_remote_root_exists(&self.rclone, self.remote.shown()),
        )
        .await;
        if matches!(checked, Err(Error::Config(_))) && !self.dry_run {
            if !written.had_marker {
                let _ = std::fs::remove_file(marker);
            }
            if written.created_dir {
                let _ = std::fs::remove_dir(&self.local);
            }
        }
        checked
    }
}

/// What a restore found before it wrote its marker, to undo exactly that.
#[derive(Clone, Copy)]
struct MarkerWritten {
    had_marker: bool,
    created_dir: bool,
}

impl Job {
    fn as_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// After the data sync of a restore: the manifest's bytes, if the remote path holds one.
    async fn fetch_manifest(&self, abort: &mut Abort) -> Result<fidelity::Fetched> {
        unless_aborted(abort, fidelity::fetch(&self.rclone, &self.remote)).await
    }

    /// Applies a fetched manifest (all but the restore root's own attributes, returned manifest
    /// in hand for after the marker is gone).
    async fn apply_manifest(
        &self,
        fetched: fidelity::Fetched,
        volume: &mut VolumeSummary,
    ) -> Result<Option<fidelity::Manifest>> {
        let bytes = match fetched {
            fidelity::Fetched::Found(bytes) => bytes,
            fidelity::Fetched::TooLarge => {
                tracing::warn!(
                    "the metadata manifest on {} is larger than {} MiB and was not read: the \
                     files are restored, but modes, owners, symlinks and empty directories are not",
                    self.remote.shown(),
                    fidelity::MAX_MANIFEST_BYTES >> 20
                );
                volume.metadata = "ignored";
                return Ok(None);
            }
            fidelity::Fetched::Missing => {
                tracing::warn!(
                    "{} holds no metadata manifest (written by an older release, or never uploaded \
                 by this one): the files are restored, but modes, owners, symlinks and empty \
                 directories were not recorded",
                    self.remote.shown()
                );
                volume.metadata = "not-recorded";
                return Ok(None);
            }
        };
        let manifest = match fidelity::parse(&bytes) {
            Ok(manifest) => manifest,
            Err(why) => {
                tracing::warn!(
                    "the metadata manifest on {} cannot be used ({why}): the files are restored, \
                     but modes, owners, symlinks and empty directories are not; the next \
                     successful upload writes a new one",
                    self.remote.shown()
                );
                volume.metadata = "ignored";
                return Ok(None);
            }
        };
        let local = self.local.clone();
        let options = fidelity::ApplyOptions {
            as_root: Self::as_root(),
            restore_setid_bits: self.overrides.restore_setid_bits,
        };
        let (manifest, applied) = tokio::task::spawn_blocking(move || {
            fidelity::apply(&local, &manifest, options).map(|a| (manifest, a))
        })
        .await
        .map_err(|e| Error::Other(anyhow::anyhow!("applying the metadata failed: {e}")))??;
        tracing::info!(
            generation = %manifest.generation,
            written = %manifest.written,
            files = applied.files,
            directories_created = applied.dirs_created,
            symlinks = applied.links_created,
            hard_links = applied.hard_links,
            mismatched = applied.mismatched,
            set_id_bits_dropped = applied.set_id_dropped,
            "applied the recorded metadata of the volume"
        );
        if applied.mismatched > 0 {
            tracing::warn!(
                mismatched = applied.mismatched,
                "{} recorded entries did not match the restored data (an upload that did not \
                 complete?) and were left as rclone restored them",
                applied.mismatched
            );
        }
        if applied.skipped.count > 0 {
            tracing::warn!(
                skipped = applied.skipped.count,
                "{} recorded entries could not be applied (a path or name too long, an error of \
                 the file system) and were left as rclone restored them; the first: {}",
                applied.skipped.count,
                applied.skipped.first.join("; ")
            );
        }
        if applied.times_skipped > 0 {
            tracing::warn!(
                times_skipped = applied.times_skipped,
                "{} recorded modification times are out of range (beyond the year 9999, or \
                 nanoseconds outside 0..1e9) and were not applied",
                applied.times_skipped
            );
        }
        if applied.set_id_dropped > 0 {
            tracing::warn!(
                set_id_bits_dropped = applied.set_id_dropped,
                "{} files were recorded with setuid or setgid bits and were restored without them; \
                 pass --restore-setid-bits to restore them",
                applied.set_id_dropped
            );
        }
        volume.skipped_special = applied.skipped_special;
        volume.owners_not_set = applied.owners_not_set;
        volume.metadata = if applied.is_partial() {
            "partial"
        } else {
            "applied"
        };
        Ok(Some(manifest))
    }
}

impl Task for Job {
    /// Runs the job after the lease step: an upload takes the lease (a no-op while held), a
    /// restore waits for a writer that holds it. A failed lease step is the run's result.
    async fn execute(&self, plan: &SyncPlan, lease: Option<&Lease>, abort: &mut Abort) -> Report {
        if let Some(lease) = lease {
            let started = std::time::Instant::now();
            let acquisitions = lease.acquisitions();
            // --sync-timeout bounds the lease step too: a stalled endpoint is found there first.
            let step = lease.before_run(abort, self.retries);
            let result = match self.sync_timeout {
                None => step.await,
                Some(limit) => tokio::time::timeout(limit, step).await.unwrap_or_else(|_| {
                    Err(Error::SyncTimeout {
                        limit: format_duration(limit),
                        last: None,
                    })
                }),
            };
            if let Err(e) = result {
                return Report {
                    result: Err(e),
                    elapsed: started.elapsed(),
                    attempts: 1,
                    kind: if matches!(plan, SyncPlan::Full(_)) {
                        "full"
                    } else {
                        "incremental"
                    },
                    volume: Default::default(),
                };
            }
            if lease.acquisitions() != acquisitions {
                // (Re)taken: after a loss, the other writer's manifest and record are there.
                self.forget_remote_state();
            }
        }
        self.run(plan, abort).await
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
