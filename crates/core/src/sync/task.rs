//! What the daemon runs: a [`Task`] (a [`crate::sync::job::Job`] or a
//! [`crate::sync::replicate::Replication`]) and the [`SyncPlan`] of one run. Defined here, in
//! the sync layer, so the daemon depends on the sync and never the other way round.

use std::path::Path;

use chrono::{DateTime, Local};

use crate::remote::rclone::Abort;
use crate::sync::lease::Lease;
use crate::sync::outcome::Report;

/// How to bring the destination up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncPlan {
    /// `rclone sync` of the whole tree, for the reason given.
    Full(String),
    /// Filter rules for `rclone copy` (paths that exist) and `rclone delete` (paths that are
    /// gone); either may be empty.
    Incremental {
        upload: Vec<String>,
        delete: Vec<String>,
    },
}

/// What the supervisor runs: a [`crate::sync::job::Job`] (one sync of a directory), or a
/// [`crate::sync::replicate::Replication`] (remote paths to remote paths).
pub trait Task: Send + Sync + 'static {
    /// One run, with its lease step: `lease` is the uploader's or restorer's lease of the
    /// process (a replication keeps its leases itself, and gets `None`).
    fn execute(
        &self,
        plan: &SyncPlan,
        lease: Option<&Lease>,
        abort: &mut Abort,
    ) -> impl Future<Output = Report> + Send;

    /// Logs the summary line of a run (see [`crate::sync::job::Job::log_summary`]).
    fn log_summary(&self, report: &Report, next_run: Option<DateTime<Local>>, error_follows: bool);

    /// The `direction` label of the metrics.
    fn direction(&self) -> &'static str;

    /// The directory watch mode watches; `None` for a task that cannot be watched.
    fn watched(&self) -> Option<&Path>;
}
