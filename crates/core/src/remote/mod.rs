//! The remote end: everything that talks to rclone and the remote through it.
//!
//! - [`path`]: what a remote path may be, and [`path::RemoteEnd`], a checked path that knows
//!   where our internal objects live beside the data;
//! - [`config`]: `REMOTE_*` / `-p` → a private rclone.conf (removed on every exit path);
//! - [`crypt`]: the `ENCRYPTED_*` settings and the encryption key check;
//! - [`rclone`]: the child process (own process group, streamed log, bounded stop), with its
//!   transfer statistics in [`stats`]; and [`rclone::rc`], one `rclone rcd` on a private unix
//!   socket for a burst of small calls (the lease's acquisition) without a process start each;
//! - [`cause`]: what a failed call's log says went wrong (DNS, refused, TLS, auth, ...);
//! - [`scrub`]: secret values kept out of rclone's log lines.
//!
//! Nothing here knows about valves, leases or schedules: those are [`crate::sync`] and
//! [`crate::daemon`], which use this layer.

pub mod cause;
pub mod config;
pub mod crypt;
pub mod path;
pub mod rclone;
pub mod scrub;
pub mod stats;
