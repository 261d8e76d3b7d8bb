//! A run's lease step: an upload takes the lease, a restore waits for a writer that holds it.
//! A one-shot upload first looks at what it would write (`unchanged.rs`); while a new lease
//! settles, a full upload checks and dry-runs its sync; a dry run's step only reads, beside the
//! run.

use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::remote::rclone::Abort;
use crate::sync::lease::Lease;
use crate::sync::outcome::Report;
use crate::sync::task::SyncPlan;

use super::{Checked, Direction, Job, Look};

impl Job {
    /// The lease step of a run. A one-shot full upload first looks at what it would write
    /// ([`Job::look_before_writing`]): nothing, and the run ends without the lease (the
    /// `Checked` returned says so); a change found by that look's dry run spares the settle
    /// its own. While a new lease settles ([`Lease::written`]), a full upload
    /// runs its read-only checks ([`Job::check_upload_reads`]), then a dry run of its sync
    /// ([`Job::upload_changes_nothing`]; after the checks, so that their rclone processes and
    /// its own do not add up in the run's peak memory), so the settle delay costs the run no
    /// time of its own: when the dry run finds nothing to change, the sync is left out. They
    /// start only after our lease is written, so whatever a previous holder wrote before its
    /// release is what they read. What they found counts only if the lease is acquired, and by
    /// that very write (not one withdrawn as too slow): a refusal is then the run's result,
    /// another failure makes the run check again as usual. A dry run still running when the
    /// lease is acquired is waited for: it lists what the sync would list, and stops at the
    /// first change it finds, so it costs no more than the sync it may spare.
    pub(super) async fn lease_step(
        &self,
        plan: &SyncPlan,
        lease: &Lease,
        abort: &mut Abort,
    ) -> Result<Option<Checked>> {
        let upload = self.direction == Direction::Upload && matches!(plan, SyncPlan::Full(_));
        let mut settle_dry_run = true;
        if upload {
            match self.look_before_writing(lease, abort).await {
                Look::Nothing(checked) => return Ok(Some(checked)),
                Look::Changes => settle_dry_run = false,
                Look::Unknown => {}
            }
        }
        let mut written = lease.written();
        let before = *written.borrow_and_update();
        let mut settle_abort = abort.clone();
        let settle_work = async {
            if written.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let write = *written.borrow_and_update();
            // Whatever this process remembered of the remote may be another writer's now.
            self.forget_remote_state();
            let checked = self.check_upload_reads(&mut settle_abort).await;
            let unchanged = settle_dry_run
                && checked.is_ok()
                && self.upload_changes_nothing(&mut settle_abort).await;
            (write, checked, unchanged)
        };
        let step = lease.before_run(abort, self.retries);
        if !upload {
            return step.await.map(|()| None);
        }
        tokio::pin!(step, settle_work);
        let mut done = None;
        let stepped = loop {
            tokio::select! {
                stepped = &mut step => break stepped,
                found = &mut settle_work, if done.is_none() => done = Some(found),
            }
        };
        stepped?;
        let acquired = *lease.written().borrow();
        if acquired == before {
            return Ok(None); // held already, or a dry run: nothing settled
        }
        let (write, checked, unchanged) = match done {
            Some(found) => found,
            None => settle_work.await,
        };
        if write != acquired {
            // Started after a write that was withdrawn (too slow): another writer may have come
            // and gone since, so what they found is not this lease's to use.
            return Ok(None);
        }
        match checked {
            // The lease is ours, so a refusal is the run's verdict: checking again would only
            // list the remote twice.
            Err(refused @ Error::Refused { .. }) => Err(refused),
            // Another failure is left to the run, which retries what can heal.
            Err(_) => Ok(None),
            Ok(checked) => Ok(Some(Checked {
                unchanged,
                ..checked
            })),
        }
    }

    /// The lease step, bounded by `--sync-timeout` too: a stalled endpoint is found there first.
    pub(super) async fn bounded_lease_step(
        &self,
        plan: &SyncPlan,
        lease: &Lease,
        abort: &mut Abort,
    ) -> Result<Option<Checked>> {
        let step = self.lease_step(plan, lease, abort);
        match self.sync_timeout {
            None => step.await,
            Some(limit) => tokio::time::timeout(limit, step).await.unwrap_or_else(|_| {
                Err(Error::SyncTimeout {
                    limit: format_duration(limit),
                    last: None,
                })
            }),
        }
    }

    /// The report of a run whose lease step failed: that failure is the run's result.
    pub(super) fn failed_lease_step(
        &self,
        plan: &SyncPlan,
        e: Error,
        started: std::time::Instant,
    ) -> Report {
        Report {
            result: Err(e),
            elapsed: started.elapsed(),
            attempts: 1,
            kind: if matches!(plan, SyncPlan::Full(_)) {
                "full"
            } else {
                "incremental"
            },
            volume: Default::default(),
        }
    }
}
