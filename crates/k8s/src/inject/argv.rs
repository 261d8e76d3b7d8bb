//! Step 2, plan → argv: the command lines of the injected containers, the restore's, the
//! sidecar's and the sidecar's preStop hook (`interrupt`).
//!
//! Main decision: the arguments are spelled with the binary's own vocabulary (the valves'
//! override flags from [`vso_core::sync::valves::safety`], durations as
//! [`vso_core::duration`] prints them, a schedule the core's parser accepted), in a fixed order,
//! and nothing here can fail: every refusal happened in [`super::validate`], so a plan always
//! has its command lines and the same plan always has the same ones.

use std::time::Duration;

use super::common::{BINARY_PATH, GRACE_MARGIN_SECONDS, TERMINATION_MESSAGE_PATH};
use super::validate::{Plan, Restore, Sidecar, Trigger};
use vso_core::duration::format_duration;
use vso_core::sync::valves::safety::{FORCE_RESTORE, FORCE_UPLOAD_EMPTY};

/// The command lines of one injection.
pub(super) struct Argv {
    /// The restore init container's args, when the plan restores.
    pub restore: Option<Vec<String>>,
    /// The sidecar's args and its preStop command, when the plan uploads.
    pub sidecar: Option<SidecarArgv>,
}

/// The sidecar's command lines.
pub(super) struct SidecarArgv {
    pub args: Vec<String>,
    /// `interrupt` on the sidecar's PID file, waiting for the final sync plus a margin.
    pub pre_stop: Vec<String>,
}

impl Argv {
    pub fn of(plan: &Plan<'_>) -> Argv {
        Argv {
            restore: plan.restore.as_ref().map(|r| restore(plan, r)),
            sidecar: plan.sidecar.as_ref().map(|s| SidecarArgv {
                args: sidecar(plan, s),
                pre_stop: pre_stop(plan, s),
            }),
        }
    }
}

/// Formats a bound as the CLI reads it (`2m`, `90s`).
fn duration_arg(d: Duration) -> String {
    format_duration(d)
}

fn restore(plan: &Plan<'_>, r: &Restore) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "remote-to-local-sync".into(),
        "--if-local-empty".into(),
        "-s".into(),
        plan.remote.clone(),
        "-d".into(),
        plan.local.clone(),
    ];
    if !r.clean_up {
        args.push("-x".into());
    }
    if r.force {
        args.push(FORCE_RESTORE.into());
    }
    if r.skip_if_never_uploaded {
        args.push("--skip-if-never-uploaded".into());
    }
    args.extend(termination_message());
    args
}

/// The summary of the last sync becomes the container's termination message, which the
/// operator reads into the resource's status.
fn termination_message() -> [String; 2] {
    [
        "--termination-message-path".into(),
        TERMINATION_MESSAGE_PATH.into(),
    ]
}

fn sidecar(plan: &Plan<'_>, s: &Sidecar) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "sync-to-remote".into(),
        "-s".into(),
        plan.local.clone(),
        "-d".into(),
        plan.remote.clone(),
    ];
    match &s.trigger {
        Trigger::Schedule(schedule) => args.extend(["--schedule".into(), schedule.clone()]),
        Trigger::Watch {
            min_interval_minutes,
        } => {
            args.push("--watch".into());
            if let Some(n) = min_interval_minutes {
                args.extend(["--min-interval".to_string(), format!("{n}m")]);
            }
        }
    }
    args.extend([
        "--shutdown-timeout".into(),
        duration_arg(s.shutdown),
        "--pid-path".into(),
        plan.pid_path(),
    ]);
    if let Some(port) = s.metrics_port {
        args.extend(["--metrics-address".into(), format!("0.0.0.0:{port}")]);
    }
    if !s.clean_up {
        args.push("-x".into());
    }
    if s.force {
        args.push(FORCE_UPLOAD_EMPTY.into());
    }
    args.extend(termination_message());
    args
}

fn pre_stop(plan: &Plan<'_>, s: &Sidecar) -> Vec<String> {
    vec![
        BINARY_PATH.into(),
        "interrupt".into(),
        "--pid-path".into(),
        plan.pid_path(),
        "--timeout".into(),
        duration_arg(s.shutdown + Duration::from_secs(GRACE_MARGIN_SECONDS)),
    ]
}
