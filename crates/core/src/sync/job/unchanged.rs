//! A one-shot upload that would write nothing takes no lease (issue 28).
//!
//! The lease exists so that two writers never change one remote path at once; its price is
//! the settle delay ([`crate::sync::lease::SETTLE`]), paid by every one-shot upload, most of
//! which (a CronJob, a `docker run` after a quiet day) find nothing to change. So before taking
//! the lease, a one-shot upload that nobody holds the lease of looks, read-only, at what it
//! would write:
//! - the data: rclone's dry run of the very sync ([`super::Job::upload_changes_nothing`]);
//! - the metadata manifest: the remote's is this volume's, byte for byte but for its header;
//! - the upload record (unless `--no-delete`): it already holds the source's file count;
//! - with encryption: the key check object decrypts with our key and the plain marker is there.
//!
//! When all four say so, the run writes nothing and ends (`INFO nothing to upload`) without
//! ever writing the lease. Nothing is weakened: a run that writes nothing is not a writer, so
//! the one-writer rule has nothing to guard; a writer that starts meanwhile finds no lease of
//! ours, and what it writes is what the remote holds after both runs, as if ours came first.
//! The valves have nothing to refuse either: they stop writes (`empty-source`, `mass-delete`)
//! or keys that do not fit (the key check, read here too). Anything else (a change, a lease
//! that is there, a read that fails, a dry run that cannot tell) and the run takes the lease as
//! before, having spent one dry run that stopped at its first change; the settle then makes no
//! second one.
//!
//! Only one-shot runs: a long-running uploader holds the lease from its first run on, so that a
//! restore in the Pod that replaces it waits for its final sync.

use std::sync::Arc;

use crate::remote::rclone::Abort;
use crate::remote::rclone::rc::RcServer;
use crate::sync::fidelity;
use crate::sync::lease::Lease;
use crate::sync::valves::safety;

use super::{Checked, Job, Look};

impl Job {
    /// The look before the lease (see the module doc), for a full upload of a one-shot run.
    pub(super) async fn look_before_writing(&self, lease: &Lease, abort: &mut Abort) -> Look {
        let Some(server) = lease.look_before_writing().await else {
            return Look::Unknown;
        };
        let o = &self.overrides;
        let (deletes, empty, partial) = (!self.no_delete, o.upload_empty, o.upload_partial);
        if safety::check_upload(&self.local, deletes, empty, partial).is_err() {
            return Look::Unknown; // the valve's refusal is the lease path's to give
        }
        let dry_run = self.upload_changes_nothing(abort);
        let (unchanged, written) = tokio::join!(dry_run, self.written_already(&server));
        match (unchanged, written) {
            (false, _) => Look::Changes,
            (true, Some(checked)) => Look::Nothing(checked),
            (true, None) => Look::Unknown,
        }
    }

    /// Whether the manifest, the upload record and the key objects are what this upload would
    /// leave there; then what the run needs to write none of them.
    async fn written_already(&self, server: &Arc<RcServer>) -> Option<Checked> {
        let local = self.local.clone();
        let walk = tokio::task::spawn_blocking(move || {
            let files = safety::count_files_to_upload(&local).ok()?;
            Some((fidelity::record(&local).ok()?, files))
        });
        let remote = fidelity::read_via(server, &self.remote);
        let (walked, remote) = tokio::join!(walk, remote);
        let (record, files) = walked.ok().flatten()?;
        let manifest = self.no_delete && record.is_empty()
            || matches!(remote, Ok(Some(bytes)) if record.is_written_in(&bytes));
        let counted = self.no_delete
            || self
                .mass_delete
                .is_recorded(server, &self.remote, files)
                .await;
        let keys = match &self.key_check {
            None => true,
            Some(check) => {
                let marker = self.encryption_marker.is_present(server, &check.end);
                let (missing, marker) = tokio::join!(check.inspect(&self.rclone), marker);
                matches!(missing, Ok(false)) && marker
            }
        };
        if !(manifest && counted && keys) {
            return None;
        }
        Some(Checked {
            files: None,
            key_check_missing: false,
            unchanged: true,
            wrote_nothing: Some(record.skipped_special),
        })
    }
}
