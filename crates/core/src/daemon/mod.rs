//! The long-running process around [`crate::sync`]: the layer that decides when a sync runs.
//!
//! - [`supervisor`]: one-shot or scheduled/watched runs until SIGTERM, then a final sync;
//! - [`schedule`]: `@every`, cron, `@daily`; the next fire time;
//! - [`watch`]: file changes → what to sync;
//! - [`pidfile`]: `interrupt` (the preStop hook) finds the process and waits for it;
//! - [`metrics`] and [`http`]: `/metrics`, `/healthz`, `/livez`, `/readyz`;
//! - [`summary`]: the last sync as a small JSON document (the container's termination message).

pub mod http;
pub mod metrics;
pub mod pidfile;
pub mod schedule;
pub mod summary;
pub mod supervisor;
pub mod watch;
