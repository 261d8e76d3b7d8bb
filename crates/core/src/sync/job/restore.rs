//! The restore half of a [`Job`]: the valves of a restore (emptiness, links, the bucket and the
//! remote path), the data sync into the volume, and the metadata manifest applied after it.

use std::ffi::OsString;
use std::path::Path;

use anyhow::Context;

use crate::error::{Error, Result};
use crate::remote::path::Internal;
use crate::remote::rclone::Abort;
use crate::sync::fidelity;
use crate::sync::outcome::{Outcome, VolumeSummary, unless_aborted};
use crate::sync::valves::safety::{self, RESTORE_MARKER, RestoreDecision};

use super::{Job, filter_file, rules_file};

/// What a restore's checks decided ([`Job::restore_reads`]).
enum Ready {
    /// The run restores nothing (`--if-local-empty`, `--skip-if-never-uploaded`).
    Skip(Outcome),
    /// The data sync may run: the target as it was found, and the exclude rules of its links.
    Go {
        local: safety::LocalState,
        excludes: Option<tempfile::NamedTempFile>,
    },
}

impl Job {
    /// Whether an upload ever wrote to the remote path: every upload leaves the metadata
    /// manifest or the upload record at its top. Listed without the user's filters (which could
    /// hide them); a path that does not exist was never uploaded to.
    async fn ever_uploaded(&self) -> Result<bool> {
        let mut args: Vec<OsString> = ["lsf", "--files-only", "--max-depth", "1"]
            .map(OsString::from)
            .to_vec();
        for object in [Internal::Manifest, Internal::UploadRecord] {
            args.push("--include".into());
            args.push(format!("/{}", object.name()).into());
        }
        args.push(self.remote.data().into());
        let single = self.rclone.for_single_objects();
        match single.first_line(&args, "lsf (ever uploaded)").await {
            Ok(line) => Ok(line.is_some()),
            Err(Error::Rclone { code: 3, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `--skip-if-never-uploaded` on a path no upload wrote: nothing is restored; files found
    /// there anyway (put by other means) are counted in a warning, not silently left behind.
    async fn never_uploaded(&self) -> Result<Outcome> {
        let shown = self.remote.shown();
        if safety::remote_has_entries(&self.rclone, self.remote.data())
            .await
            .unwrap_or(false)
        {
            tracing::warn!(
                "{shown} holds files but was never uploaded to by sync-to-remote (no metadata \
                 manifest, no upload record): they are not restored (--skip-if-never-uploaded), \
                 and this volume's first upload will replace them"
            );
        }
        Ok(Outcome::Skipped(format!(
            "--skip-if-never-uploaded: {shown} was never uploaded to (no metadata manifest, no \
             upload record), so this first start keeps its own data"
        )))
    }

    /// The restore's checks before its data sync. The local ones come first (they may skip
    /// the run); the remote ones (the key check, `--skip-if-never-uploaded`'s look,
    /// `empty-remote`, the plain guard, the links' `link-conflict` listing) only read, so they
    /// run at once, each an rclone start and a request or two; their verdicts are taken in one
    /// fixed order: the key first (through a wrong key our objects' names would not decrypt,
    /// and the path would look as if it had never been uploaded to), then whether it ever was,
    /// then emptiness (so that a remote that cannot be listed is its refusal), the guard, the
    /// links.
    async fn restore_reads(&self, abort: &mut Abort) -> Result<Ready> {
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
                return Ok(Ready::Skip(Outcome::Skipped(format!(
                    "--if-local-empty: {} already holds data (and no unfinished restore)",
                    self.local.display()
                ))));
            }
            RestoreDecision::Proceed { check_remote } => check_remote,
        };
        let key = async {
            match &self.key_check {
                Some(check) => check.verify(&self.rclone, false, self.dry_run).await,
                None => Ok(()),
            }
        };
        let uploaded = async {
            if o.skip_if_never_uploaded {
                self.ever_uploaded().await
            } else {
                Ok(true)
            }
        };
        let not_empty = async {
            if check_remote {
                safety::check_remote_not_empty(&self.rclone, self.remote.data()).await
            } else {
                Ok(())
            }
        };
        let guard = async {
            let what = "a restore would replace the local files with ciphertext";
            match &self.plain_guard {
                Some(guard) => guard.verify(&self.rclone, what).await,
                None => Ok(()),
            }
        };
        let mut links_abort = abort.clone();
        let links = self.exclude_links(&mut links_abort);
        let all = async { Ok(tokio::join!(key, uploaded, not_empty, guard, links)) };
        let (key, uploaded, not_empty, guard, links) = unless_aborted(abort, all).await?;
        key?;
        if !uploaded? {
            let skipped = unless_aborted(abort, self.never_uploaded()).await?;
            return Ok(Ready::Skip(skipped));
        }
        not_empty?;
        guard?;
        Ok(Ready::Go {
            local,
            excludes: links?,
        })
    }

    /// After the lease step: the checks ([`Job::restore_reads`]; not beside the lease read, since
    /// a writer that releases the lease meanwhile could have them read what it had not yet
    /// written), the data sync with the manifest read beside it, then the manifest applied.
    pub(super) async fn restore(
        &self,
        abort: &mut Abort,
        volume: &mut VolumeSummary,
    ) -> Result<Outcome> {
        let (local, excludes) = match self.restore_reads(abort).await? {
            Ready::Skip(outcome) => return Ok(outcome),
            Ready::Go { local, excludes } => (local, excludes),
        };
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
        // The manifest is fetched while the data comes: one more rclone, no more waiting. No
        // writer holds the lease (the lease step waited for it), so it is the one the data
        // belongs to, as much as one read after the sync would be.
        let mut fetch_abort = abort.clone();
        let fetch = async {
            if self.dry_run {
                None
            } else {
                Some(self.fetch_manifest(&mut fetch_abort).await)
            }
        };
        let transfer = self.transfer(
            self.remote.data().into(),
            self.local.clone().into(),
            excludes.as_ref().map(|f| f.path()),
            abort,
        );
        let (transferred, fetched) = tokio::join!(transfer, fetch);
        let stats = match transferred {
            Err(e @ Error::Rclone { code: 3, .. }) if !local.has_data => {
                return self.restore_not_found(e, &marker, written, abort).await;
            }
            other => other?,
        };
        let Some(fetched) = fetched else {
            return Ok(Outcome::Synced(stats)); // a dry run
        };
        let manifest = match fetched? {
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
