//! The summary of a process's last sync, for whoever watches it without reading its log.
//!
//! With `--termination-message-path` the process writes it there when it ends: a one-shot run
//! (the restore init container) after its run, the long-running mode after its final sync.
//! Kubernetes keeps that file as the container's termination message, and the operator reads
//! it into the PodFilesystemSync's status, so a Pod that is gone still reports its last sync.
//!
//! Decisions:
//! - One small JSON document (format version `v: 1`), at most [`MAX_BYTES`] — the kubelet
//!   keeps 4 KiB of a termination message. The error message is cut to fit, never the fields.
//! - Times are RFC 3339 in UTC; the result is the `result` label of the metrics
//!   (`success`, `skipped`, `refused` with its `rule`, `failure`).
//! - The message is the error's own text, the one the log already shows: the errors never hold
//!   a secret (the config is scrubbed from rclone's output before it becomes an error).
//! - Reading ([`Summary::parse`]) is for the operator, which reads what a Pod's container left:
//!   anything that is not a version-1 summary within the size bound is `None`, never a panic.
//! - Writing never fails the run: the sync's result is the exit code; a summary that cannot be
//!   written is a warning.

use std::path::Path;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sync::outcome::{Outcome, result_label};

/// The most a termination message may hold (the kubelet's bound).
pub const MAX_BYTES: usize = 4096;

/// The format version this build writes and reads.
const VERSION: u32 = 1;

/// One finished sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The format version (1).
    pub v: u32,
    /// `upload`, `restore` or `replicate`.
    pub direction: String,
    /// `success`, `skipped`, `refused` or `failure`.
    pub result: String,
    /// The safety rule of a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why it failed, was refused or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it ended (RFC 3339, UTC).
    pub finished: String,
    pub duration_seconds: f64,
    pub transferred_bytes: u64,
    pub transferred_files: u64,
    /// The end of this process's last successful sync, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
}

impl Summary {
    /// The summary of a run of `direction` that ended now with `result` after `elapsed`;
    /// `last_success` is that of the process (this run's end when it succeeded).
    pub fn of(
        direction: &str,
        result: &Result<Outcome>,
        elapsed: Duration,
        last_success: Option<SystemTime>,
    ) -> Summary {
        let now = SystemTime::now();
        let (rule, message, bytes, files) = match result {
            Ok(Outcome::Synced(stats)) => (None, None, stats.bytes, stats.transfers),
            Ok(Outcome::Skipped(why)) => (None, Some(why.clone()), 0, 0),
            Err(e) => {
                let rule = match e {
                    Error::Refused { rule, .. } => Some((*rule).to_string()),
                    _ => None,
                };
                (rule, Some(e.to_string()), 0, 0)
            }
        };
        let last_success = match result {
            Ok(Outcome::Synced(_)) => Some(now),
            _ => last_success,
        };
        Summary {
            v: VERSION,
            direction: direction.to_string(),
            result: result_label(result).to_string(),
            rule,
            message,
            finished: rfc3339(now),
            duration_seconds: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            transferred_bytes: bytes,
            transferred_files: files,
            last_success: last_success.map(rfc3339),
        }
    }

    /// The JSON document, at most [`MAX_BYTES`]: a longer message is cut (on a character
    /// boundary) and ends with `…`.
    pub fn to_json(&self) -> String {
        let json = serde_json::to_string(self).expect("a summary serializes");
        if json.len() <= MAX_BYTES {
            return json;
        }
        let mut cut = self.clone();
        let message = cut.message.take().unwrap_or_default();
        // The message's JSON escaping can only grow it: cut until the whole fits.
        let mut keep = message.len().saturating_sub(json.len() - MAX_BYTES + 8);
        loop {
            while !message.is_char_boundary(keep) {
                keep -= 1;
            }
            cut.message = Some(format!("{}…", &message[..keep]));
            let json = serde_json::to_string(&cut).expect("a summary serializes");
            if json.len() <= MAX_BYTES || keep == 0 {
                return json;
            }
            keep = keep.saturating_sub(json.len() - MAX_BYTES + 8);
        }
    }

    /// A summary read back (a container's termination message): `None` for anything else.
    pub fn parse(text: &str) -> Option<Summary> {
        if text.len() > MAX_BYTES * 2 {
            return None;
        }
        let summary: Summary = serde_json::from_str(text.trim()).ok()?;
        let known = ["success", "skipped", "refused", "failure"];
        let valid = summary.v == VERSION
            && known.contains(&summary.result.as_str())
            && summary.duration_seconds.is_finite()
            && summary.duration_seconds >= 0.0
            && parse_time(&summary.finished).is_some()
            && summary
                .last_success
                .as_deref()
                .is_none_or(|t| parse_time(t).is_some());
        valid.then_some(summary)
    }

    /// Writes the summary to `path` (the container's termination message file); a failure is
    /// a warning, not the run's result.
    pub fn write(&self, path: &Path) {
        if let Err(e) = std::fs::write(path, self.to_json()) {
            tracing::warn!(
                path = %path.display(),
                "cannot write the summary of the last sync (--termination-message-path): {e}"
            );
        }
    }
}

/// `at` as RFC 3339 in UTC, to the second.
pub fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An RFC 3339 time, or `None`.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::stats::Stats;

    #[test]
    fn a_success_a_refusal_and_a_failure_read_back() {
        let ok = Summary::of(
            "upload",
            &Ok(Outcome::Synced(Stats {
                bytes: 42,
                transfers: 3,
                ..Stats::default()
            })),
            Duration::from_millis(1500),
            None,
        );
        assert_eq!(ok.result, "success");
        assert_eq!(ok.last_success.as_deref(), Some(ok.finished.as_str()));
        assert_eq!(Summary::parse(&ok.to_json()), Some(ok.clone()));
        let refused = Summary::of(
            "upload",
            &Err(Error::refused(
                "mass-delete",
                "too much",
                "--max-delete-percent 100",
            )),
            Duration::from_secs(1),
            Some(SystemTime::UNIX_EPOCH),
        );
        assert_eq!(refused.rule.as_deref(), Some("mass-delete"));
        assert_eq!(refused.result, "refused");
        assert_eq!(
            refused.last_success.as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        assert!(refused.message.as_deref().unwrap().contains("too much"));
        let back = Summary::parse(&refused.to_json()).unwrap();
        assert_eq!(back, refused);
        let failed = Summary::of(
            "restore",
            &Err(Error::Interrupted("SIGTERM")),
            Duration::ZERO,
            None,
        );
        assert_eq!(failed.result, "failure");
        assert_eq!(failed.rule, None);
    }

    #[test]
    fn a_long_message_is_cut_to_fit_the_kubelets_bound() {
        for unit in ["x", "é", "\"", "\u{1}"] {
            let mut s = Summary::of(
                "upload",
                &Err(Error::Interrupted("x")),
                Duration::ZERO,
                None,
            );
            s.message = Some(unit.repeat(10_000));
            let json = s.to_json();
            assert!(json.len() <= MAX_BYTES, "{unit:?}: {}", json.len());
            let back = Summary::parse(&json).unwrap();
            assert!(back.message.unwrap().ends_with('…'));
        }
    }

    #[test]
    fn anything_else_is_not_a_summary() {
        let ok = Summary::of(
            "upload",
            &Ok(Outcome::Skipped("x".into())),
            Duration::ZERO,
            None,
        );
        let json = ok.to_json();
        for bad in [
            String::new(),
            "not json".into(),
            "{}".into(),
            json.replace("\"v\":1", "\"v\":2"),
            json.replace("skipped", "great"),
            json.replace(&ok.finished, "yesterday"),
            format!("{json}{}", " ".repeat(MAX_BYTES * 2)),
        ] {
            assert_eq!(Summary::parse(&bad), None, "{bad}");
        }
    }
}
