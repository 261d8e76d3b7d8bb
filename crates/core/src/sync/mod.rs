//! One sync, and what keeps it safe: the layer above [`crate::remote`].
//!
//! - [`job`]: one sync of a directory (valves, then rclone, then the metadata and a summary);
//! - [`replicate`]: remote paths to remote paths (`remote-to-remote-sync`), pair by pair;
//! - [`valves`]: the safety valves that refuse a run that would wipe data (exit 3);
//! - [`lease`]: one writer per remote path;
//! - [`fidelity`]: what rclone cannot keep (modes, owners, links, empty directories), in a
//!   manifest beside the data;
//! - [`outcome`]: the result of a run, its summary and the retry policy, shared by a job and a
//!   replication.
//!
//! - [`task`]: what the daemon runs (a job or a replication) and the plan of one run.

pub mod fidelity;
pub mod job;
pub mod lease;
pub mod outcome;
pub mod replicate;
pub mod task;
pub mod valves;
