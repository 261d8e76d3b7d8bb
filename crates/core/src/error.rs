//! The user-facing error type and the one table that maps it to exit codes.
//!
//! Every failure the program can report ends up as an [`Error`]; `main` prints it once and
//! returns [`Error::exit_code`]. The codes are part of the interface (README, "Exit codes"):
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | failure: rclone failed, a sync was interrupted, an I/O error |
//! | 2 | usage or configuration error: nothing ran |
//! | 3 | refused by a safety valve: nothing changed |
//!
//! Several replication pairs with different outcomes exit with the worst code: 3, then 2, then 1.
//!
//! Messages are lowercase fragments without secrets: they name the variable or key that is
//! wrong, never its value.

use std::process::ExitCode;

use crate::remote::cause::{Cause, Kind};
use crate::remote::stats::Stats;

fn cause_suffix(cause: &Option<Cause>) -> String {
    cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
}

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a sync or an operation failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad command line or configuration; nothing was started.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a safety valve refused the run; neither end was changed.
pub const EXIT_REFUSED: u8 = 3;

/// A user-facing error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line or configuration, detected before anything ran.
    #[error("{0}")]
    Config(String),

    /// A safety valve fired. `rule` is the stable name of the rule (also used in logs and
    /// metrics), `override_hint` says how to override it.
    #[error("refused by safety rule '{rule}': {reason}; nothing was changed. {override_hint}")]
    Refused {
        rule: &'static str,
        reason: String,
        override_hint: String,
    },

    /// rclone ran and exited non-zero. The message ends with rclone's own cause, when its
    /// output named one ([`crate::remote::cause`]).
    #[error(
        "rclone {operation} failed with exit code {code} ({meaning}){}",
        cause_suffix(cause)
    )]
    Rclone {
        operation: String,
        code: i32,
        meaning: &'static str,
        /// The cause found in rclone's ERROR lines.
        cause: Option<Cause>,
        /// rclone's statistics up to the failure (its error count for the summary).
        stats: Stats,
    },

    /// One sync, retries included, ran longer than `--sync-timeout`; rclone was stopped.
    #[error(
        "the sync did not finish within --sync-timeout {limit}; rclone was stopped{}",
        last.as_deref().map(|l| format!(" (last failure: {l})")).unwrap_or_default()
    )]
    SyncTimeout {
        limit: String,
        /// The failure of an earlier attempt, if one failed before the time ran out.
        last: Option<String>,
    },

    /// Several pairs of a `remote-to-remote-sync` did not succeed; `code` is the worst of
    /// their exit codes ([`crate::sync::replicate`]).
    #[error("{failed} of {total} replication pairs did not succeed: {details}")]
    Replications {
        failed: usize,
        total: usize,
        details: String,
        code: u8,
    },

    /// The run was stopped by a signal before it completed.
    #[error("interrupted by {0} before the sync completed")]
    Interrupted(&'static str),

    /// Anything else (I/O, spawning a process, …); the chain carries the context.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// Shorthand for a configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// A refusal by the safety rule `rule`, overridable with `override_flag`.
    pub fn refused(rule: &'static str, reason: impl Into<String>, override_flag: &str) -> Self {
        Self::refused_with_hint(
            rule,
            reason,
            format!("If this is really intended, pass {override_flag}."),
        )
    }

    /// A refusal whose way out is not a flag but an action, described by `hint`.
    pub fn refused_with_hint(
        rule: &'static str,
        reason: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::Refused {
            rule,
            reason: reason.into(),
            override_hint: hint.into(),
        }
    }

    /// The process exit code for this error (see the module table).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => EXIT_USAGE,
            Error::Refused { .. } => EXIT_REFUSED,
            Error::Replications { code, .. } => *code,
            Error::Rclone { .. }
            | Error::SyncTimeout { .. }
            | Error::Interrupted(_)
            | Error::Other(_) => EXIT_FAILURE,
        }
    }

    /// True when retrying the same run could succeed, as rclone's own retries would judge it
    /// (an uncategorised error, exit 1, or a temporary one, exit 5), except for causes that
    /// cannot heal within seconds: wrong credentials, TLS, DNS, a missing bucket, a refused
    /// connection ([`crate::remote::cause`]). Usage errors, fatal errors (`--max-delete`) and the rest
    /// of rclone's codes are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Rclone { code, cause, .. } => {
                matches!(code, 1 | 5)
                    && cause
                        .as_ref()
                        .is_none_or(|c| c.kind.may_heal() || c.kind == Kind::Other)
            }
            _ => false,
        }
    }

    /// rclone's exit code, when this error is (or wraps) a failed rclone run.
    pub fn rclone_exit_code(&self) -> Option<i32> {
        match self {
            Error::Rclone { code, .. } => Some(*code),
            Error::Other(inner) => inner.downcast_ref::<Error>()?.rclone_exit_code(),
            _ => None,
        }
    }

    /// rclone's error count, for the summary line.
    pub fn rclone_errors(&self) -> u64 {
        match self {
            Error::Rclone { stats, .. } => stats.errors,
            _ => 0,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Other(e.into())
    }
}

/// Converts a result into the process exit code, reporting the error chain once: as an
/// `error: …` line, or, when the log is JSON, as one more JSON event (so every line parses).
pub fn report(result: Result<(), Error>, json_log: bool) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            // `{:#}` on anyhow prints the whole context chain on one line.
            let message = match &e {
                Error::Other(inner) => format!("{inner:#}"),
                other => other.to_string(),
            };
            let exit_code = e.exit_code();
            if json_log {
                tracing::error!(exit_code, "{message}");
            } else {
                let line = format!("error: {message}\n");
                let line = crate::logging::escape_text_line(line.as_bytes(), false);
                let _ = std::io::Write::write_all(&mut std::io::stderr(), &line);
            }
            ExitCode::from(exit_code)
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
