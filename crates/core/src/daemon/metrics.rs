//! Prometheus metrics and the health state of the long-running mode.
//!
//! Decisions:
//! - `prometheus-client` (the Prometheus project's Rust client) encodes the registry; every
//!   metric is prefixed `volume_syncing_operator_`.
//! - Health has three rules, each a reason of its own (`/healthz` body, `/readyz` body and the
//!   `unhealthy{reason}` gauge): `consecutive-failures` (`--max-consecutive-failures` failed
//!   syncs in a row), `no-recent-success` (no success for `--max-sync-age`, counted from the
//!   start while there was none) and `sync-running-too-long` (the running sync is older than
//!   `--max-sync-age`). The age rules catch what a failure count cannot: a sync that hangs never
//!   fails. A refusal by a safety valve counts as a failure (the backup did not happen); a
//!   skipped run is not a failure, but not a success either.
//! - The state is updated only by the supervisor after each run, so the HTTP side only reads.
//! - Every series whose labels are known in advance (every direction × every result, every
//!   safety rule) exists from the start with 0: a family without series is not exported at all,
//!   and a series that appears at 1 hides its first increase from `increase()`/`rate()`, so an
//!   alert on the first failure or refusal would never fire.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Local};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::daemon::summary::Summary;
use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::sync::outcome::{Outcome, result_label};

/// The values of the `direction` label of `syncs_total`: the commands that sync.
const DIRECTIONS: [&str; 3] = ["upload", "restore", "replicate"];

/// The values of the `result` label of `syncs_total`.
const RESULTS: [&str; 4] = ["success", "skipped", "refused", "failure"];

/// The reasons `/healthz` can fail for (the `reason` label of `unhealthy`).
const REASONS: [&str; 4] = [
    "consecutive-failures",
    "no-recent-success",
    "sync-running-too-long",
    "remote-in-use",
];

/// The safety rules (README, "Safety valves"; `Error::Refused::rule` in `safety`,
/// `mass_delete`, `lease` and `crypt`).
const RULES: [&str; 10] = [
    "empty-source",
    "link-conflict",
    "encrypted-remote",
    "mass-delete",
    "restore-in-progress",
    "system-directory",
    "foreign-owner",
    "empty-remote",
    "encryption-key-mismatch",
    "remote-in-use",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    direction: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
    rule: &'static str,
}

/// Every `(result, rule)` of `last_sync_result`: a refusal by each rule, the other results
/// without one.
fn result_series() -> impl Iterator<Item = ResultLabels> {
    RESULTS.into_iter().flat_map(|result| {
        let rules: &[&'static str] = if result == "refused" { &RULES } else { &[""] };
        rules.iter().map(move |&rule| ResultLabels { result, rule })
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The times health is judged by (monotonic clock).
#[derive(Debug)]
struct Times {
    started: Instant,
    last_success: Option<Instant>,
    running_since: Option<Instant>,
}

/// The metrics of one process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    syncs: Family<SyncLabels, Counter>,
    duration: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    next_sync: Gauge<f64, AtomicU64>,
    consecutive_failures_gauge: Gauge,
    transferred_bytes: Counter,
    transferred_files: Counter,
    deleted_files: Counter,
    refusals: Family<RuleLabels, Counter>,
    consecutive_failures: AtomicU32,
    max_consecutive_failures: u32,
    ready: AtomicBool,
    last_failure: Mutex<String>,
    /// Why an uploader does not hold the lease of its remote path ([`crate::sync::lease`]).
    lease_wait: Mutex<Option<String>>,
    max_sync_age: Duration,
    times: Mutex<Times>,
    running_sync_age: Gauge<f64, AtomicU64>,
    unhealthy: Family<ReasonLabels, Gauge>,
    last_sync: LastSyncGauges,
    /// The summary of the last finished sync ([`crate::daemon::summary`]).
    last_summary: Mutex<Option<Summary>>,
    last_success_at: Mutex<Option<SystemTime>>,
}

/// The last finished sync, whatever its result: what the operator reads into the status.
#[derive(Debug, Default)]
struct LastSyncGauges {
    at: Gauge<f64, AtomicU64>,
    duration: Gauge<f64, AtomicU64>,
    bytes: Gauge,
    result: Family<ResultLabels, Gauge>,
}

impl LastSyncGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "last_sync_timestamp",
            "Unix time the last finished sync ended, whatever its result",
            Unit::Seconds,
            self.at.clone(),
        );
        registry.register_with_unit(
            "last_sync_duration",
            "Duration of the last finished sync",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register(
            "last_sync_transferred_bytes",
            "Bytes transferred by the last finished sync",
            self.bytes.clone(),
        );
        registry.register(
            "last_sync_result",
            "1 for the result (and the refusing rule) of the last finished sync, else 0",
            self.result.clone(),
        );
        for labels in result_series() {
            drop(self.result.get_or_create(&labels));
        }
    }

    fn set(&self, summary: &Summary, result: &'static str, rule: &'static str) {
        self.at.set(unix_now());
        self.duration.set(summary.duration_seconds);
        self.bytes
            .set(i64::try_from(summary.transferred_bytes).unwrap_or(i64::MAX));
        for labels in result_series() {
            self.result.get_or_create(&labels).set(0);
        }
        // A rule not in RULES still gets its series.
        self.result
            .get_or_create(&ResultLabels { result, rule })
            .set(1);
    }
}

impl Metrics {
    pub fn new(max_consecutive_failures: u32, max_sync_age: Duration) -> Self {
        let mut registry = Registry::with_prefix("volume_syncing_operator");
        let syncs = Family::<SyncLabels, Counter>::default();
        registry.register(
            "syncs",
            "Finished syncs by direction and result",
            syncs.clone(),
        );
        let duration = Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
        ]);
        registry.register_with_unit(
            "sync_duration",
            "Duration of syncs",
            Unit::Seconds,
            duration.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "last_success_timestamp",
            "Unix time of the last successful sync",
            Unit::Seconds,
            last_success.clone(),
        );
        let next_sync = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "next_sync_timestamp",
            "Unix time of the next scheduled sync",
            Unit::Seconds,
            next_sync.clone(),
        );
        let consecutive_failures_gauge = Gauge::default();
        registry.register(
            "consecutive_failures",
            "Failed or refused syncs since the last success",
            consecutive_failures_gauge.clone(),
        );
        let transferred_bytes = Counter::default();
        registry.register(
            "transferred_bytes",
            "Bytes transferred by rclone",
            transferred_bytes.clone(),
        );
        let transferred_files = Counter::default();
        registry.register(
            "transferred_files",
            "Files transferred by rclone",
            transferred_files.clone(),
        );
        let deleted_files = Counter::default();
        registry.register(
            "deleted_files",
            "Files deleted at the destination by rclone",
            deleted_files.clone(),
        );
        let refusals = Family::<RuleLabels, Counter>::default();
        registry.register(
            "refusals",
            "Runs refused by a safety rule",
            refusals.clone(),
        );
        let running_sync_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "running_sync_age",
            "How long the running sync has been running; 0 when none runs",
            Unit::Seconds,
            running_sync_age.clone(),
        );
        let max_age_gauge = Gauge::<f64, AtomicU64>::default();
        max_age_gauge.set(max_sync_age.as_secs_f64());
        registry.register_with_unit(
            "max_sync_age",
            "The --max-sync-age health bound",
            Unit::Seconds,
            max_age_gauge,
        );
        let unhealthy = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "unhealthy",
            "1 while /healthz fails for this reason",
            unhealthy.clone(),
        );
        for reason in REASONS {
            drop(unhealthy.get_or_create(&ReasonLabels { reason }));
        }
        for direction in DIRECTIONS {
            for result in RESULTS {
                // Creating the series is the point; the guard is released at once.
                drop(syncs.get_or_create(&SyncLabels { direction, result }));
            }
        }
        for rule in RULES {
            drop(refusals.get_or_create(&RuleLabels { rule }));
        }
        let last_sync = LastSyncGauges::default();
        last_sync.register(&mut registry);
        Metrics {
            registry,
            syncs,
            duration,
            last_success,
            next_sync,
            consecutive_failures_gauge,
            transferred_bytes,
            transferred_files,
            deleted_files,
            refusals,
            consecutive_failures: AtomicU32::new(0),
            max_consecutive_failures,
            ready: AtomicBool::new(false),
            last_failure: Mutex::new(String::new()),
            lease_wait: Mutex::new(None),
            max_sync_age,
            times: Mutex::new(Times {
                started: Instant::now(),
                last_success: None,
                running_since: None,
            }),
            running_sync_age,
            unhealthy,
            last_sync,
            last_summary: Mutex::new(None),
            last_success_at: Mutex::new(None),
        }
    }

    /// The summary of the last finished sync, if one finished.
    pub fn last_summary(&self) -> Option<Summary> {
        self.last_summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A sync has started (for `sync-running-too-long` and `running_sync_age_seconds`).
    pub fn sync_started(&self) {
        self.times().running_since = Some(Instant::now());
    }

    /// Records a finished run.
    pub fn record(&self, direction: &'static str, result: &Result<Outcome>, elapsed: Duration) {
        let label = crate::sync::outcome::result_label(result);
        self.syncs
            .get_or_create(&SyncLabels {
                direction,
                result: label,
            })
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
        {
            let mut times = self.times();
            times.running_since = None;
            if matches!(result, Ok(Outcome::Synced(_))) {
                times.last_success = Some(Instant::now());
            }
        }
        match result {
            Ok(outcome) => {
                if let Outcome::Synced(stats) = outcome {
                    self.transferred_bytes.inc_by(stats.bytes);
                    self.transferred_files.inc_by(stats.transfers);
                    self.deleted_files.inc_by(stats.deletes);
                }
                self.last_success.set(unix_now());
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                if let Error::Refused { rule, .. } = e {
                    self.refusals.get_or_create(&RuleLabels { rule }).inc();
                }
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
            }
        }
        self.consecutive_failures_gauge
            .set(i64::from(self.consecutive_failures.load(Ordering::Relaxed)));
        let summary = {
            let mut last_success = self
                .last_success_at
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let summary = Summary::of(direction, result, elapsed, *last_success);
            if result_label(result) == "success" {
                *last_success = Some(SystemTime::now());
            }
            summary
        };
        let rule = match result {
            Err(Error::Refused { rule, .. }) => *rule,
            _ => "",
        };
        self.last_sync.set(&summary, result_label(result), rule);
        *self.last_summary.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
    }

    pub fn set_next_sync(&self, at: DateTime<Local>) {
        self.next_sync.set(at.timestamp_millis() as f64 / 1000.0);
    }

    /// An uploader without the lease is unhealthy, whatever its failure count: `None` once it
    /// holds the lease.
    pub fn set_lease_wait(&self, why: Option<String>) {
        *self.lease_wait.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// The schedule is armed: `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// `Ok(())` while healthy, else every reason, one sentence each.
    pub fn health(&self) -> std::result::Result<(), String> {
        let failing = self.failing();
        if failing.is_empty() {
            return Ok(());
        }
        Err(failing
            .into_iter()
            .map(|(reason, why)| format!("{reason}: {why}"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// For a liveness probe (`/livez`): fails only for what a restart can cure, the
    /// `consecutive-failures` rule (a new process re-reads its configuration and rotated
    /// credentials, and starts a new rclone). The other reasons stay on `/healthz` only: a
    /// restart would start a long first upload over (`sync-running-too-long`,
    /// `no-recent-success`) and cannot free a lease another writer holds (`remote-in-use`).
    pub fn liveness(&self) -> std::result::Result<(), String> {
        match self
            .failing()
            .into_iter()
            .find(|(reason, _)| *reason == "consecutive-failures")
        {
            None => Ok(()),
            Some((reason, why)) => Err(format!("{reason}: {why}")),
        }
    }

    /// The health rules that fail now, by reason label; also updates the health gauges.
    fn failing(&self) -> Vec<(&'static str, String)> {
        let mut failing = Vec::new();
        let failures = self.consecutive_failures.load(Ordering::Relaxed);
        let last = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if failures >= self.max_consecutive_failures {
            failing.push((
                "consecutive-failures",
                format!(
                    "{failures} consecutive syncs failed (--max-consecutive-failures {}); last: {last}",
                    self.max_consecutive_failures
                ),
            ));
        }
        let limit = format_duration(self.max_sync_age);
        let (since_success, running) = {
            let times = self.times();
            (
                match times.last_success {
                    Some(at) => (at.elapsed(), true),
                    None => (times.started.elapsed(), false),
                },
                times.running_since.map(|at| at.elapsed()),
            )
        };
        if since_success.0 > self.max_sync_age {
            let age = format_duration(Duration::from_secs(since_success.0.as_secs()));
            let what = if since_success.1 {
                format!("the last successful sync was {age} ago")
            } else {
                format!("no sync has succeeded in the {age} since the start")
            };
            let last = if last.is_empty() {
                String::new()
            } else {
                format!("; last failure: {last}")
            };
            failing.push((
                "no-recent-success",
                format!("{what} (--max-sync-age {limit}){last}"),
            ));
        }
        self.running_sync_age
            .set(running.map(|d| d.as_secs_f64()).unwrap_or(0.0));
        if let Some(running) = running.filter(|d| *d > self.max_sync_age) {
            failing.push((
                "sync-running-too-long",
                format!(
                    "the running sync started {} ago (--max-sync-age {limit}); is it stalled?",
                    format_duration(Duration::from_secs(running.as_secs()))
                ),
            ));
        }
        if let Some(why) = self
            .lease_wait
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            failing.push(("remote-in-use", why));
        }
        for reason in REASONS {
            let on = failing.iter().any(|(r, _)| *r == reason);
            self.unhealthy
                .get_or_create(&ReasonLabels { reason })
                .set(i64::from(on));
        }
        failing
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        // The time-based values are computed when asked for.
        self.failing();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::stats::Stats;

    #[test]
    fn health_follows_consecutive_failures() {
        let m = Metrics::new(2, Duration::from_secs(3600));
        let fail: Result<Outcome> = Err(Error::Interrupted("test"));
        let ok: Result<Outcome> = Ok(Outcome::Synced(Stats {
            bytes: 10,
            transfers: 2,
            ..Stats::default()
        }));
        m.record("upload", &fail, Duration::from_secs(1));
        assert!(m.health().is_ok());
        m.record("upload", &fail, Duration::from_secs(1));
        assert!(m.health().unwrap_err().contains("2 consecutive"));
        assert!(m.liveness().unwrap_err().contains("2 consecutive"));
        assert!(
            m.encode()
                .contains("volume_syncing_operator_unhealthy{reason=\"consecutive-failures\"} 1")
        );
        m.record("upload", &ok, Duration::from_secs(1));
        assert!(m.health().is_ok());
        let text = m.encode();
        for needle in [
            "volume_syncing_operator_syncs_total{direction=\"upload\",result=\"failure\"} 2",
            "volume_syncing_operator_syncs_total{direction=\"upload\",result=\"success\"} 1",
            "volume_syncing_operator_transferred_bytes_total 10",
            "volume_syncing_operator_transferred_files_total 2",
            "volume_syncing_operator_consecutive_failures 0",
            "volume_syncing_operator_sync_duration_seconds_count 3",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }

    #[test]
    fn refusals_are_counted_by_rule() {
        let m = Metrics::new(3, Duration::from_secs(3600));
        let refused: Result<Outcome> = Err(Error::refused("empty-source", "x", "--force"));
        m.record("upload", &refused, Duration::from_millis(5));
        assert!(
            m.encode()
                .contains("volume_syncing_operator_refusals_total{rule=\"empty-source\"} 1")
        );
    }

    #[test]
    fn every_known_series_exists_from_the_start() {
        let text = Metrics::new(3, Duration::from_secs(3600)).encode();
        for direction in DIRECTIONS {
            for result in RESULTS {
                let needle = format!(
                    "volume_syncing_operator_syncs_total{{direction=\"{direction}\",result=\"{result}\"}} 0\n"
                );
                assert!(text.contains(&needle), "{needle} missing in\n{text}");
            }
        }
        for rule in RULES {
            let needle = format!("volume_syncing_operator_refusals_total{{rule=\"{rule}\"}} 0\n");
            assert!(text.contains(&needle), "{needle} missing in\n{text}");
        }
    }

    #[test]
    fn health_fails_when_no_sync_succeeded_or_one_runs_for_longer_than_the_max_age() {
        let m = Metrics::new(3, Duration::from_millis(50));
        assert!(m.health().is_ok());
        m.sync_started();
        std::thread::sleep(Duration::from_millis(80));
        let why = m.health().unwrap_err();
        assert!(why.contains("no-recent-success"), "{why}");
        assert!(why.contains("sync-running-too-long"), "{why}");
        // A restart would start the long sync over: the liveness probe does not fail for it.
        assert_eq!(m.liveness(), Ok(()));
        let text = m.encode();
        assert!(
            text.contains("unhealthy{reason=\"sync-running-too-long\"} 1"),
            "{text}"
        );
        assert!(!text.contains("running_sync_age_seconds 0\n"), "{text}");
        m.record(
            "upload",
            &Ok(Outcome::Synced(Stats::default())),
            Duration::from_millis(80),
        );
        assert!(m.health().is_ok());
        assert!(m.encode().contains("running_sync_age_seconds 0.0\n"));
    }
}
