//! What the status of one resource is, from what was observed: the previous status, the
//! running Pods' sidecars (scraped) and the summaries their containers left when they ended
//! (termination messages). Pure: no API calls, unit-tested here.
//!
//! Decisions:
//! - The last sync is the newest of all candidates, the previous status included: a Pod that is
//!   gone keeps counting through what it left there, and an operator restart loses nothing.
//! - `Ready` is False until a sync has succeeded; then False while a sidecar's health rule fails
//!   (reason: that rule) or the last sync failed or was refused; Unknown while no running Pod
//!   could be read and nothing says otherwise.
//! - An event is due for a failed or refused sync or restore newer than the previous status's:
//!   each is reported once, by the one writer.

use std::cmp::Ordering;

use chrono::{DateTime, TimeZone, Utc};
use vso_core::daemon::summary::{Summary, parse_time, rfc3339};

use super::scrape::Scrape;
use crate::status::{
    Condition, LastRestore, MAX_POD_STATUSES, PodFilesystemSyncStatus, PodSyncStatus,
};

/// A running Pod and what its sidecar said (None: it has no sidecar or no metrics port).
pub struct LivePod {
    pub name: String,
    pub scrape: Option<Result<Scrape, String>>,
}

/// What a Pod's containers left when they ended (also of Pods that are gone).
#[derive(Debug, Clone, Default)]
pub struct Left {
    pub pod: String,
    pub sidecar: Option<Summary>,
    pub restore: Option<Summary>,
}

/// An event to publish on the resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// One sync, from wherever it was seen.
#[derive(Debug, Clone)]
struct Sync {
    time: DateTime<Utc>,
    result: String,
    rule: Option<String>,
    message: Option<String>,
    pod: Option<String>,
    duration: Option<f64>,
    bytes: Option<u64>,
}

fn unix(seconds: f64) -> Option<DateTime<Utc>> {
    (seconds > 0.0)
        .then(|| Utc.timestamp_opt(seconds as i64, 0).single())
        .flatten()
}

fn time_str(t: DateTime<Utc>) -> String {
    rfc3339(t.into())
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The newest of `a` and `b`; `a` on a tie (it came first: the previous status, which may hold
/// the message a scrape lacks).
fn newest(a: Option<Sync>, b: Option<Sync>) -> Option<Sync> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.time.cmp(&a.time) == Ordering::Greater {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

fn of_summary(pod: &str, s: &Summary) -> Option<Sync> {
    Some(Sync {
        time: parse_time(&s.finished)?,
        result: s.result.clone(),
        rule: s.rule.clone(),
        message: s.message.clone(),
        pod: Some(pod.to_string()),
        duration: Some(s.duration_seconds),
        bytes: Some(s.transferred_bytes),
    })
}

fn of_scrape(pod: &str, s: &Scrape) -> Option<Sync> {
    let (result, rule) = s.last_result.clone()?;
    Some(Sync {
        time: unix(s.last_sync)?,
        result,
        rule: non_empty(&rule),
        message: None,
        pod: Some(pod.to_string()),
        duration: Some(s.last_sync_duration),
        bytes: Some(s.last_sync_bytes),
    })
}

fn of_status(s: &PodFilesystemSyncStatus) -> Option<Sync> {
    Some(Sync {
        time: parse_time(s.last_sync_time.as_deref()?)?,
        result: s.last_sync_result.clone()?,
        rule: s.last_sync_rule.clone(),
        message: s.last_sync_message.clone(),
        pod: s.last_sync_pod.clone(),
        duration: s.last_sync_duration_seconds,
        bytes: s.last_transferred_bytes,
    })
}

fn max_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

/// The sidecar's health rule as a condition reason: `consecutive-failures` →
/// `ConsecutiveFailures`.
fn camel(rule: &str) -> String {
    rule.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The new status and the events due, at `now`.
pub fn compute(
    previous: &PodFilesystemSyncStatus,
    generation: Option<i64>,
    live: &[LivePod],
    left: &[Left],
    now: DateTime<Utc>,
) -> (PodFilesystemSyncStatus, Vec<Note>) {
    let before = of_status(previous);
    let mut last = before.clone();
    let mut last_success = previous.last_success_time.as_deref().and_then(parse_time);
    let mut next: Option<DateTime<Utc>> = None;
    let mut restore: Option<(DateTime<Utc>, LastRestore)> = previous
        .last_restore
        .as_ref()
        .and_then(|r| Some((parse_time(&r.time)?, r.clone())));
    let restore_before = restore.as_ref().map(|r| r.0);
    for l in left {
        if let Some(s) = &l.sidecar {
            last = newest(last, of_summary(&l.pod, s));
            last_success = max_time(last_success, s.last_success.as_deref().and_then(parse_time));
        }
        if let Some(s) = &l.restore
            && let Some(t) = parse_time(&s.finished)
            && restore.as_ref().is_none_or(|r| t > r.0)
        {
            restore = Some((
                t,
                LastRestore {
                    time: time_str(t),
                    pod: l.pod.clone(),
                    result: s.result.clone(),
                    rule: s.rule.clone(),
                    message: s.message.clone(),
                },
            ));
        }
    }
    let mut pods = Vec::new();
    let mut unhealthy: Vec<(String, String)> = Vec::new();
    let mut read = 0;
    let mut scrape_errors = Vec::new();
    let mut running = Vec::new();
    for pod in live {
        let mut entry = PodSyncStatus {
            name: pod.name.clone(),
            ..Default::default()
        };
        match &pod.scrape {
            Some(Ok(s)) => {
                read += 1;
                let sync = of_scrape(&pod.name, s);
                if let Some(sync) = &sync {
                    entry.last_sync_time = Some(time_str(sync.time));
                    entry.last_sync_result = Some(sync.result.clone());
                    entry.last_sync_rule = sync.rule.clone();
                }
                last = newest(last, sync);
                if s.last_result.as_ref().is_some_and(|r| r.0 == "success") {
                    last_success = max_time(last_success, unix(s.last_success));
                }
                if let Some(n) = unix(s.next_sync) {
                    next = Some(next.map_or(n, |m| m.min(n)));
                    entry.next_sync_time = Some(time_str(n));
                }
                entry.consecutive_failures = s.consecutive_failures;
                entry.unhealthy = s.unhealthy.clone();
                for reason in &s.unhealthy {
                    unhealthy.push((pod.name.clone(), reason.clone()));
                }
                if s.running {
                    running.push(pod.name.clone());
                }
            }
            Some(Err(e)) => {
                entry.scrape_error = Some(e.clone());
                scrape_errors.push(format!("{}: {e}", pod.name));
            }
            None => {}
        }
        pods.push(entry);
    }
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods.truncate(MAX_POD_STATUSES);

    let mut notes = Vec::new();
    if let Some(l) = &last
        && before.as_ref().is_none_or(|b| l.time > b.time)
        && (l.result == "failure" || l.result == "refused")
    {
        notes.push(Note {
            warning: true,
            reason: if l.result == "refused" {
                "SyncRefused"
            } else {
                "SyncFailed"
            },
            message: describe(
                "sync",
                l.pod.as_deref(),
                &l.result,
                l.rule.as_deref(),
                l.message.as_deref(),
            ),
        });
    }
    if let Some((t, r)) = &restore
        && restore_before.is_none_or(|b| *t > b)
        && (r.result == "failure" || r.result == "refused")
    {
        notes.push(Note {
            warning: true,
            reason: if r.result == "refused" {
                "RestoreRefused"
            } else {
                "RestoreFailed"
            },
            message: describe(
                "restore",
                Some(&r.pod),
                &r.result,
                r.rule.as_deref(),
                r.message.as_deref(),
            ),
        });
    }

    // The most telling rule of any Pod is the reason (each Pod's list is in that order).
    let worst = unhealthy
        .iter()
        .min_by_key(|(_, rule)| super::scrape::rule_rank(rule));
    let (ready, reason, message) = if let Some((_, rule)) = worst {
        let all: Vec<String> = unhealthy.iter().map(|(p, r)| format!("{p}: {r}")).collect();
        (
            "False",
            camel(rule),
            format!("a sidecar's health rule fails ({})", all.join(", ")),
        )
    } else if !live.is_empty() && read == 0 && !scrape_errors.is_empty() {
        (
            "Unknown",
            "ScrapeFailed".into(),
            format!("no sidecar could be read: {}", scrape_errors.join("; ")),
        )
    } else if let Some(l) = last.as_ref().filter(|l| l.result == "failure") {
        (
            "False",
            "LastSyncFailed".into(),
            describe(
                "sync",
                l.pod.as_deref(),
                &l.result,
                None,
                l.message.as_deref(),
            ),
        )
    } else if let Some(l) = last.as_ref().filter(|l| l.result == "refused") {
        (
            "False",
            "LastSyncRefused".into(),
            describe(
                "sync",
                l.pod.as_deref(),
                &l.result,
                l.rule.as_deref(),
                l.message.as_deref(),
            ),
        )
    } else if last_success.is_none() {
        let why = if live.is_empty() {
            "no sync has succeeded yet, and no injected Pod is running"
        } else {
            "no sync has succeeded yet"
        };
        ("False", "NoSuccessfulSync".into(), why.into())
    } else {
        let at = last_success.map(time_str).unwrap_or_default();
        (
            "True",
            "Synced".into(),
            format!("the last sync succeeded; last success at {at}"),
        )
    };
    let synchronizing = if running.is_empty() {
        (
            "False",
            "Idle".to_string(),
            "no sync is running".to_string(),
        )
    } else {
        (
            "True",
            "SyncRunning".to_string(),
            format!("a sync is running in {}", running.join(", ")),
        )
    };
    let conditions = vec![
        condition(previous, "Ready", ready, reason, message, generation, now),
        condition(
            previous,
            "Synchronizing",
            synchronizing.0,
            synchronizing.1,
            synchronizing.2,
            generation,
            now,
        ),
    ];
    let status = PodFilesystemSyncStatus {
        observed_generation: generation,
        pods: u32::try_from(live.len()).unwrap_or(u32::MAX),
        last_sync_time: last.as_ref().map(|l| time_str(l.time)),
        last_sync_result: last.as_ref().map(|l| l.result.clone()),
        last_sync_rule: last.as_ref().and_then(|l| l.rule.clone()),
        last_sync_message: last.as_ref().and_then(|l| l.message.clone()),
        last_sync_pod: last.as_ref().and_then(|l| l.pod.clone()),
        last_sync_duration_seconds: last.as_ref().and_then(|l| l.duration),
        last_transferred_bytes: last.as_ref().and_then(|l| l.bytes),
        last_success_time: last_success.map(time_str),
        next_sync_time: next.map(time_str),
        last_restore: restore.map(|r| r.1),
        pod_statuses: pods,
        conditions,
    };
    (status, notes)
}

/// `pod web-0: sync refused by the safety rule mass-delete: …`.
fn describe(
    what: &str,
    pod: Option<&str>,
    result: &str,
    rule: Option<&str>,
    message: Option<&str>,
) -> String {
    let mut out = match pod {
        Some(p) => format!("pod {p}: {what} "),
        None => format!("{what} "),
    };
    out.push_str(match result {
        "refused" => "refused",
        "failure" => "failed",
        other => other,
    });
    if let Some(rule) = rule {
        out.push_str(&format!(" by the safety rule {rule}"));
    }
    match message {
        Some(m) => out.push_str(&format!(": {m}")),
        None if result == "failure" || result == "refused" => {
            out.push_str(" (the cause is in the sidecar's log)")
        }
        None => {}
    }
    // An event's note holds at most 1 KiB.
    if out.len() > 1000 {
        let mut cut = 997;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// A condition whose transition time moves only when its status does.
fn condition(
    previous: &PodFilesystemSyncStatus,
    type_: &str,
    status: &str,
    reason: String,
    message: String,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let last_transition_time = match previous.condition(type_) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => time_str(now),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason,
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(last: i64, result: &str, rule: &str) -> Scrape {
        Scrape {
            last_sync: last as f64,
            last_sync_duration: 1.5,
            last_sync_bytes: 10,
            last_result: Some((result.into(), rule.into())),
            last_success: if result == "success" {
                last as f64
            } else {
                0.0
            },
            next_sync: (last + 60) as f64,
            ..Default::default()
        }
    }

    fn live(name: &str, s: Scrape) -> LivePod {
        LivePod {
            name: name.into(),
            scrape: Some(Ok(s)),
        }
    }

    fn summary(finished: i64, result: &str, message: &str) -> Summary {
        Summary {
            v: 1,
            direction: "upload".into(),
            result: result.into(),
            rule: None,
            message: non_empty(message),
            finished: time_str(unix(finished as f64).unwrap()),
            duration_seconds: 2.0,
            transferred_bytes: 7,
            transferred_files: 1,
            last_success: (result == "success").then(|| time_str(unix(finished as f64).unwrap())),
        }
    }

    fn now() -> DateTime<Utc> {
        unix(2_000_000_000.0).unwrap()
    }

    #[test]
    fn ready_only_after_a_success_and_false_with_the_failing_rule() {
        let empty = PodFilesystemSyncStatus::default();
        let (s, notes) = compute(&empty, Some(1), &[], &[], now());
        assert_eq!(s.condition("Ready").unwrap().status, "False");
        assert_eq!(s.condition("Ready").unwrap().reason, "NoSuccessfulSync");
        assert!(notes.is_empty());

        let (s, _) = compute(
            &empty,
            Some(1),
            &[live("web-0", scrape(1_000, "success", ""))],
            &[],
            now(),
        );
        assert_eq!(s.condition("Ready").unwrap().status, "True");
        assert_eq!(s.last_sync_result.as_deref(), Some("success"));
        assert_eq!(s.pods, 1);
        assert_eq!(s.next_sync_time.as_deref(), Some("1970-01-01T00:17:40Z"));

        let mut failing = scrape(1_100, "failure", "");
        failing.unhealthy = vec!["consecutive-failures".into()];
        failing.last_success = 1_000.0;
        let (s2, notes) = compute(&s, Some(1), &[live("web-0", failing)], &[], now());
        let ready = s2.condition("Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ConsecutiveFailures")
        );
        assert_eq!(s2.last_success_time, s.last_success_time);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].reason, "SyncFailed");
        assert!(notes[0].message.contains("pod web-0"), "{notes:?}");
        // The same observation again: no second event, the transition time stays.
        let (s3, notes) = compute(
            &s2,
            Some(1),
            &[live("web-0", scrape(1_100, "failure", ""))],
            &[],
            now(),
        );
        assert!(notes.is_empty());
        assert_eq!(
            s3.condition("Ready").unwrap().last_transition_time,
            s2.condition("Ready").unwrap().last_transition_time
        );
    }

    #[test]
    fn a_gone_pods_final_sync_counts_and_its_message_is_kept() {
        let mut prev = PodFilesystemSyncStatus::default();
        let (s, _) = compute(
            &prev,
            None,
            &[live("web-0", scrape(1_000, "success", ""))],
            &[],
            now(),
        );
        prev = s;
        let left = Left {
            pod: "web-0".into(),
            sidecar: Some(summary(1_050, "success", "")),
            restore: Some(summary(900, "refused", "local data")),
        };
        let (s, notes) = compute(&prev, None, &[], std::slice::from_ref(&left), now());
        assert_eq!(s.last_sync_time.as_deref(), Some("1970-01-01T00:17:30Z"));
        assert_eq!(s.last_transferred_bytes, Some(7));
        assert_eq!(s.pods, 0);
        assert_eq!(s.condition("Ready").unwrap().status, "True");
        assert_eq!(s.last_restore.as_ref().unwrap().result, "refused");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].reason, "RestoreRefused");
        // An older scrape does not undo it.
        let (s2, notes) = compute(
            &s,
            None,
            &[live("web-1", scrape(1_020, "failure", ""))],
            &[left],
            now(),
        );
        assert_eq!(s2.last_sync_time, s.last_sync_time);
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn unreadable_sidecars_make_ready_unknown_and_pods_are_capped() {
        let prev = PodFilesystemSyncStatus::default();
        let pods: Vec<LivePod> = (0..30)
            .map(|i| LivePod {
                name: format!("p{i:02}"),
                scrape: Some(Err("connection refused".into())),
            })
            .collect();
        let (s, _) = compute(&prev, None, &pods, &[], now());
        assert_eq!(s.pods, 30);
        assert_eq!(s.pod_statuses.len(), MAX_POD_STATUSES);
        let ready = s.condition("Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("Unknown", "ScrapeFailed")
        );
        assert!(ready.message.contains("connection refused"));
    }

    #[test]
    fn the_reason_is_the_most_telling_rule_of_any_pod() {
        let mut wrong_key = scrape(1_100, "failure", "");
        wrong_key.unhealthy = vec!["remote-in-use".into()];
        let mut failing = wrong_key.clone();
        failing.unhealthy = vec!["consecutive-failures".into(), "remote-in-use".into()];
        let (s, _) = compute(
            &PodFilesystemSyncStatus::default(),
            None,
            &[live("a", wrong_key), live("b", failing)],
            &[],
            now(),
        );
        assert_eq!(s.condition("Ready").unwrap().reason, "ConsecutiveFailures");
    }

    #[test]
    fn refusals_name_their_rule() {
        let (s, notes) = compute(
            &PodFilesystemSyncStatus::default(),
            None,
            &[live("a", scrape(5, "refused", "mass-delete"))],
            &[],
            now(),
        );
        assert_eq!(s.last_sync_rule.as_deref(), Some("mass-delete"));
        assert_eq!(s.condition("Ready").unwrap().reason, "LastSyncRefused");
        assert!(
            notes[0].message.contains("safety rule mass-delete"),
            "{notes:?}"
        );
        assert_eq!(camel("sync-running-too-long"), "SyncRunningTooLong");
    }
}
