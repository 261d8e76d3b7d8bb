//! Observability end to end: the real binary against a real S3 server, scraped over real HTTP.
//!
//! - `/metrics` is parsed whole (every line must be valid Prometheus/OpenMetrics text, checked
//!   with the `prometheus-parse` crate) and its counters are compared with what really happened:
//!   the tree that was uploaded, the deletions, the summary lines in the log.
//! - `/healthz` follows the consecutive failed syncs (a stopped S3 server, a refused run) and
//!   recovers after a success; `/readyz` answers once the schedule is armed.
//! - `--log-format json` / `LOG_FORMAT=json`: every stderr line is one JSON object, the summary
//!   line carries its fields, rclone's lines are structured events with target `rclone`.
//!
//! The binary listens on `127.0.0.1:0` and the test reads the bound address from its log
//! (`serving /metrics, …  address=…`): no port race with other tests. Timings are generous; the
//! tests wait for states, never for fixed times.

use crate::support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::*;
use nix::sys::signal::Signal;
use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::Value as Json;

/// Long enough for any state change here, short enough that a hung test fails in time.
const LONG: Duration = Duration::from_secs(60);
/// rclone flags that make a sync against a stopped server fail within seconds.
const FAST_FAIL: [&str; 8] = [
    "--retries",
    "1",
    "--low-level-retries",
    "1",
    "--contimeout",
    "2s",
    "--timeout",
    "5s",
];
/// rclone flags for tests that compare byte counts exactly. The test server (`rclone serve s3`)
/// now and then answers concurrent PutObjects into a new directory with a 500 (its log:
/// "Dir.Rename error: file does not exist"); rclone retries at a low level and, rightly,
/// counts the resent bytes again, so `transferred_bytes` exceeds the tree. One transfer at a
/// time avoids the server's race; files, sizes and deletions are counted the same way.
const ONE_TRANSFER: [&str; 2] = ["--transfers", "1"];
const PREFIX: &str = "volume_syncing_operator_";

/// Every metric family the binary exports, with its OpenMetrics type.
const FAMILIES: [(&str, &str); 13] = [
    ("syncs", "counter"),
    ("sync_duration_seconds", "histogram"),
    ("last_success_timestamp_seconds", "gauge"),
    ("next_sync_timestamp_seconds", "gauge"),
    ("consecutive_failures", "gauge"),
    ("transferred_bytes", "counter"),
    ("transferred_files", "counter"),
    ("deleted_files", "counter"),
    ("refusals", "counter"),
    ("last_sync_timestamp_seconds", "gauge"),
    ("last_sync_duration_seconds", "gauge"),
    ("last_sync_transferred_bytes", "gauge"),
    ("last_sync_result", "gauge"),
];

/// The fields of every "sync finished" summary line.
const SUMMARY_FIELDS: [&str; 14] = [
    "direction",
    "source",
    "destination",
    "result",
    "duration_seconds",
    "attempts",
    "transferred_files",
    "transferred_bytes",
    "deleted_files",
    "errors",
    "kind",
    "skipped_special",
    "metadata",
    "next_run",
];

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// /metrics, parsed and validated
// ---------------------------------------------------------------------------------------------

/// One scrape of `/metrics`, validated line by line and parsed by `prometheus-parse`.
#[derive(Debug)]
struct Metrics {
    text: String,
    /// Family name → type, from the `# TYPE` lines.
    types: BTreeMap<String, String>,
    scrape: Scrape,
}

/// A metric name or label name as the exposition formats allow it.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The label pairs of a sample, `k="v",…`, checked strictly (prometheus-parse itself skips a
/// malformed pair silently).
#[track_caller]
fn check_labels(labels: &str, line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in labels.split(',') {
        let (k, v) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("label {pair:?} is not k=\"v\" in {line:?}"));
        assert!(valid_name(k), "bad label name {k:?} in {line:?}");
        assert!(
            v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
            "label value {v:?} is not quoted in {line:?}"
        );
        out.insert(k.to_string(), v[1..v.len() - 1].to_string());
    }
    out
}

impl Metrics {
    /// Validates the whole exposition and parses it.
    ///
    /// The binary serves OpenMetrics text (prometheus-client): counters are declared by their
    /// family name (`# TYPE …_syncs counter`) and sampled as `…_syncs_total`, a histogram as
    /// `_bucket`/`_sum`/`_count`, there are `# UNIT` lines and the body ends with `# EOF`.
    /// prometheus-parse does not choke on `# UNIT`/`# EOF` (it classifies them as ignored
    /// lines), so nothing is stripped; instead every line is classified here and anything that
    /// is neither a well-formed comment nor a sample that prometheus-parse parses fails the
    /// test. Types are checked from the `# TYPE` lines, because prometheus-parse looks a type up
    /// by the sample's name and so reports OpenMetrics counters (`_total`) as untyped.
    #[track_caller]
    fn parse(text: String) -> Metrics {
        assert!(
            text.ends_with("# EOF\n"),
            "an OpenMetrics exposition ends with `# EOF`:\n{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let (eof, body) = lines.split_last().unwrap();
        assert_eq!(*eof, "# EOF");
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in body {
            assert!(!line.trim().is_empty(), "empty line in\n{text}");
            if let Some(comment) = line.strip_prefix('#') {
                let words: Vec<&str> = comment.split_whitespace().collect();
                match words.first().copied() {
                    Some("HELP") => {
                        let parsed = LineInfo::parse(line);
                        assert!(
                            matches!(parsed, LineInfo::Doc { .. }),
                            "HELP line not parsed: {line:?}"
                        );
                    }
                    Some("TYPE") => {
                        let parsed = LineInfo::parse(line);
                        assert!(
                            matches!(parsed, LineInfo::Type { .. }),
                            "TYPE line not parsed: {line:?}"
                        );
                        assert_eq!(words.len(), 3, "{line:?}");
                        assert!(valid_name(words[1]), "{line:?}");
                        assert!(
                            types
                                .insert(words[1].to_string(), words[2].to_string())
                                .is_none(),
                            "family {} declared twice",
                            words[1]
                        );
                    }
                    Some("UNIT") => {
                        // OpenMetrics: the family name ends with the unit.
                        assert_eq!(words.len(), 3, "{line:?}");
                        assert!(words[1].ends_with(&format!("_{}", words[2])), "{line:?}");
                        assert!(types.contains_key(words[1]), "UNIT before TYPE: {line:?}");
                    }
                    _ => panic!("unexpected comment line {line:?} in\n{text}"),
                }
                continue;
            }
            let LineInfo::Sample {
                metric_name,
                labels,
                value,
                timestamp,
            } = LineInfo::parse(line)
            else {
                panic!("not a sample line: {line:?}");
            };
            assert!(valid_name(metric_name), "{line:?}");
            assert!(timestamp.is_none(), "no timestamps expected: {line:?}");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let labels = labels.map(|l| check_labels(l, line)).unwrap_or_default();
            // The sample belongs to a declared family, with a suffix its type allows.
            let (family, kind) = types
                .iter()
                .filter(|(family, _)| metric_name.starts_with(family.as_str()))
                .max_by_key(|(family, _)| family.len())
                .unwrap_or_else(|| panic!("sample of an undeclared family: {line:?}"));
            let suffix = &metric_name[family.len()..];
            let allowed: &[&str] = match kind.as_str() {
                "counter" => &["_total", "_created"],
                "gauge" => &[""],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                other => panic!("unexpected type {other} of {family}"),
            };
            assert!(
                allowed.contains(&suffix),
                "sample {metric_name} does not fit its {kind} family {family}"
            );
            assert_eq!(
                suffix == "_bucket",
                labels.contains_key("le"),
                "only buckets carry `le`: {line:?}"
            );
            samples.push((metric_name.to_string(), labels, value));
        }

        // The whole text through prometheus-parse: every sample line must come out of it.
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let buckets = samples
            .iter()
            .filter(|(name, _, _)| name.ends_with("_bucket"))
            .count();
        let parsed_buckets: usize = scrape
            .samples
            .iter()
            .map(|s| match &s.value {
                Value::Histogram(h) => h.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(buckets, parsed_buckets, "histogram buckets lost:\n{text}");
        for (name, labels, value) in samples.iter().filter(|(n, _, _)| !n.ends_with("_bucket")) {
            let found = scrape.samples.iter().any(|s| {
                s.metric == *name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(k) == Some(v.as_str()))
                    && scalar(&s.value).is_some_and(|x| x == *value)
            });
            assert!(
                found,
                "prometheus-parse did not parse {name}{labels:?} {value}:\n{text}"
            );
        }
        Metrics {
            text,
            types,
            scrape,
        }
    }

    /// Asserts that every family of the binary is declared with its type.
    #[track_caller]
    fn assert_families(&self) {
        for (family, kind) in FAMILIES {
            let name = format!("{PREFIX}{family}");
            assert_eq!(
                self.types.get(&name).map(String::as_str),
                Some(kind),
                "family {name} missing or of the wrong type:\n{}",
                self.text
            );
        }
    }

    /// The value of sample `name` (without the prefix) with exactly `labels`, if present.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let name = format!("{PREFIX}{name}");
        self.scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .and_then(|s| scalar(&s.value))
    }

    /// Like [`Metrics::get`], failing when the sample is absent.
    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{}", self.text))
    }

    /// `syncs_total{direction="upload",result}`, 0 while the series does not exist yet.
    fn uploads(&self, result: &str) -> f64 {
        self.get(
            "syncs_total",
            &[("direction", "upload"), ("result", result)],
        )
        .unwrap_or(0.0)
    }

    /// The cumulative buckets of the duration histogram: (le, count).
    #[track_caller]
    fn duration_buckets(&self) -> Vec<(f64, f64)> {
        let name = format!("{PREFIX}sync_duration_seconds");
        let sample = self
            .scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("no histogram {name} in\n{}", self.text));
        match &sample.value {
            Value::Histogram(h) => h.iter().map(|b| (b.less_than, b.count)).collect(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }
}

fn scalar(value: &Value) -> Option<f64> {
    match value {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => Some(*x),
        _ => None,
    }
}

/// The validator above is strict: each of these broken expositions is rejected (so a passing
/// scrape means something).
#[test]
fn the_metrics_validator_rejects_broken_expositions() {
    let good = "# HELP volume_syncing_operator_x X.\n# TYPE volume_syncing_operator_x counter\n\
                volume_syncing_operator_x_total{a=\"b\"} 1\n# EOF\n";
    Metrics::parse(good.to_string());
    for broken in [
        // no `# EOF`
        "# TYPE volume_syncing_operator_x counter\nvolume_syncing_operator_x_total 1\n",
        // a sample of an undeclared family
        "volume_syncing_operator_y 1\n# EOF\n",
        // a counter sample without `_total`
        "# TYPE volume_syncing_operator_x counter\nvolume_syncing_operator_x 1\n# EOF\n",
        // an unquoted label value
        "# TYPE volume_syncing_operator_x gauge\nvolume_syncing_operator_x{a=b} 1\n# EOF\n",
        // not a number
        "# TYPE volume_syncing_operator_x gauge\nvolume_syncing_operator_x one\n# EOF\n",
        // not a sample at all
        "# TYPE volume_syncing_operator_x gauge\n{} 1\n# EOF\n",
        // an unknown comment
        "# TYPE volume_syncing_operator_x gauge\n# HLEP x\nvolume_syncing_operator_x 1\n# EOF\n",
        // a UNIT that does not end the name
        "# TYPE volume_syncing_operator_x gauge\n# UNIT volume_syncing_operator_x seconds\n\
         volume_syncing_operator_x 1\n# EOF\n",
    ] {
        let result = std::panic::catch_unwind(|| Metrics::parse(broken.to_string()));
        assert!(result.is_err(), "accepted: {broken:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to the running binary
// ---------------------------------------------------------------------------------------------

/// The address the binary's HTTP server is bound to, read from its log line (text or JSON).
#[track_caller]
fn metrics_address(vso: &mut Running) -> String {
    vso.wait_for_output("serving /metrics, /healthz, /livez and /readyz", 1, LONG);
    let out = vso.output_so_far();
    let line = out
        .lines()
        .find(|l| l.contains("serving /metrics, /healthz, /livez and /readyz"))
        .unwrap();
    if let Ok(json) = serde_json::from_str::<Json>(line) {
        return json["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {line}"))
            .to_string();
    }
    line.split("address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address= in {line:?}"))
        .to_string()
}

#[track_caller]
fn get(address: &str, path: &str) -> HttpResponse {
    http_get(address, path).unwrap_or_else(|e| panic!("GET {path} on {address}: {e}"))
}

/// `GET /metrics`: 200, the OpenMetrics content type, a valid exposition.
#[track_caller]
fn scrape(address: &str) -> Metrics {
    let response = get(address, "/metrics");
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.headers.get("content-type").unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let metrics = Metrics::parse(response.body);
    metrics.assert_families();
    metrics
}

/// Scrapes until `cond` holds; returns that scrape.
#[track_caller]
fn scrape_until(address: &str, what: &str, mut cond: impl FnMut(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + LONG;
    loop {
        let m = scrape(address);
        if cond(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; last scrape:\n{}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scrape and the log that describe the same finished syncs: scrapes before and after reading
/// the output, until both agree on the number of syncs and the log holds as many summary lines.
/// (The summary line is logged right before the metrics are recorded, in the same step of the
/// single-threaded runtime, so only the pipe's delay can make them differ.)
#[track_caller]
fn settled(vso: &mut Running, address: &str) -> (Metrics, String) {
    let count = |m: &Metrics| m.get("sync_duration_seconds_count", &[]).unwrap_or(0.0) as usize;
    let deadline = Instant::now() + LONG;
    loop {
        let before = scrape(address);
        std::thread::sleep(Duration::from_millis(300));
        let out = vso.output_so_far();
        let after = scrape(address);
        let summaries = out
            .lines()
            .filter(|l| l.contains("sync finished") || l.contains("sync failed"))
            .count();
        if count(&before) == count(&after) && count(&after) == summaries {
            return (after, out);
        }
        assert!(
            Instant::now() < deadline,
            "metrics and log never agreed ({} vs {summaries} summary lines):\n{out}",
            count(&after)
        );
    }
}

/// The `key=value` fields of a text log line (values unquoted).
fn text_fields(line: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let key_start = rest[..eq].rfind(' ').map_or(0, |i| i + 1);
        let key = rest[key_start..eq].to_string();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], &quoted[(end + 1).min(quoted.len())..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        fields.insert(key, value.to_string());
        rest = next;
    }
    fields
}

/// The summary lines of a text log with their fields.
fn text_summaries(out: &str, marker: &str) -> Vec<BTreeMap<String, String>> {
    out.lines()
        .filter(|l| l.contains(marker))
        .map(text_fields)
        .collect()
}

/// Sum of a numeric field over the text summary lines.
fn field_sum(summaries: &[BTreeMap<String, String>], field: &str) -> f64 {
    summaries
        .iter()
        .map(|f| {
            f.get(field)
                .unwrap_or_else(|| panic!("no {field} in {f:?}"))
                .parse::<f64>()
                .unwrap()
        })
        .sum()
}

/// The status code of the answer to a raw request.
fn raw_status(address: &str, request: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

#[track_caller]
fn assert_health(address: &str, status: u16) -> HttpResponse {
    let response = get(address, "/healthz");
    assert_eq!(response.status, status, "/healthz: {response:?}");
    response
}

#[track_caller]
fn stop_cleanly(vso: Running) -> Output {
    vso.signal(Signal::SIGTERM);
    let out = vso.wait_output(LONG);
    out.assert_code(0);
    out
}

// ---------------------------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------------------------

/// Three files of known sizes, a deletion, a new file: the counters match the tree and the
/// summary lines, scrape after scrape.
#[test]
fn metrics_count_what_the_syncs_did() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let a = random_bytes(100, 1);
    let b = random_bytes(2048, 2);
    let c = random_bytes(5000, 3);
    let d = random_bytes(333, 4);
    let src = sandbox.tree(
        "src",
        &[("a.txt", &a), ("dir/b.bin", &b), ("dir/sub/c.bin", &c)],
    );
    let started = unix_now();
    let mut vso = spawn_upload(
        &sandbox,
        &server,
        &src,
        &[
            "--schedule",
            "@every 1s",
            "--metrics-address",
            "127.0.0.1:0",
        ],
        &ONE_TRANSFER,
    );
    let address = metrics_address(&mut vso);
    let ready = get(&address, "/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    // The first sync uploads the tree.
    let m = scrape_until(&address, "the first sync is recorded", |m| {
        m.uploads("success") >= 1.0
    });
    let tree_bytes = (a.len() + b.len() + c.len()) as f64;
    assert_eq!(m.value("transferred_files_total", &[]), 3.0, "{}", m.text);
    assert_eq!(m.value("transferred_bytes_total", &[]), tree_bytes);
    assert_eq!(m.value("deleted_files_total", &[]), 0.0);
    assert_eq!(m.value("consecutive_failures", &[]), 0.0);
    // Series with known labels exist before their first increase (or an alert on the first
    // failure or refusal could not see it), at 0.
    for result in ["failure", "refused", "skipped"] {
        let labels = [("direction", "upload"), ("result", result)];
        assert_eq!(m.get("syncs_total", &labels), Some(0.0), "{}", m.text);
    }
    for rule in [
        "empty-source",
        "restore-in-progress",
        "encryption-key-mismatch",
    ] {
        assert_eq!(m.get("refusals_total", &[("rule", rule)]), Some(0.0));
    }
    let last_success = m.value("last_success_timestamp_seconds", &[]);
    assert!(
        (started..=unix_now()).contains(&last_success),
        "last success {last_success} is not between the start {started} and now"
    );
    let next = m.value("next_sync_timestamp_seconds", &[]);
    assert!(
        next > started && next <= unix_now() + 1.5,
        "next sync {next} is not within the next second (@every 1s)"
    );
    assert_health(&address, 200);

    // A deletion is counted once; later syncs transfer nothing.
    fs::remove_file(src.join("dir/b.bin")).unwrap();
    let m = scrape_until(&address, "the deletion is counted", |m| {
        m.value("deleted_files_total", &[]) >= 1.0
    });
    assert!(!server.path("bucket/app/dir/b.bin").exists());
    assert_eq!(m.value("deleted_files_total", &[]), 1.0);
    assert_eq!(m.value("transferred_files_total", &[]), 3.0);

    // A new file adds its size.
    add_file(&src, "d.txt", &d);
    let m = scrape_until(&address, "the new file is counted", |m| {
        m.value("transferred_files_total", &[]) >= 4.0
    });
    assert_eq!(m.value("transferred_files_total", &[]), 4.0);
    assert_eq!(
        m.value("transferred_bytes_total", &[]),
        tree_bytes + d.len() as f64
    );
    assert_eq!(fs::read(server.path("bucket/app/d.txt")).unwrap(), d);

    // Metrics and log describe the same syncs.
    let (m, out) = settled(&mut vso, &address);
    let finished = text_summaries(&out, "sync finished");
    assert!(finished.len() >= 3, "{out}");
    assert_eq!(m.uploads("success"), finished.len() as f64, "{out}");
    assert_eq!(
        m.value("sync_duration_seconds_count", &[]),
        finished.len() as f64
    );
    assert_eq!(
        m.value("transferred_files_total", &[]),
        field_sum(&finished, "transferred_files")
    );
    assert_eq!(
        m.value("transferred_bytes_total", &[]),
        field_sum(&finished, "transferred_bytes")
    );
    assert_eq!(
        m.value("deleted_files_total", &[]),
        field_sum(&finished, "deleted_files")
    );
    let logged = field_sum(&finished, "duration_seconds");
    let sum = m.value("sync_duration_seconds_sum", &[]);
    assert!(
        (logged - sum).abs() < 1e-3,
        "histogram sum {sum} vs logged durations {logged}"
    );
    // Cumulative buckets, the last (+Inf) holding every sync; these syncs take well under 5s.
    let buckets = m.duration_buckets();
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
    );
    assert_eq!(
        buckets.last().copied(),
        Some((f64::INFINITY, finished.len() as f64))
    );
    let under_5s = buckets.iter().find(|(le, _)| *le == 5.0).unwrap().1;
    assert_eq!(under_5s, finished.len() as f64, "{}", m.text);

    // Unknown paths and other methods are answered, not hung.
    assert_eq!(get(&address, "/nope").status, 404);
    assert_eq!(
        raw_status(&address, "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        405
    );
    // A client that connects and says nothing is cut off after the 5s head timeout.
    let idle = std::net::TcpStream::connect(&address).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = (&idle).read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "an idle connection was held for {:?}",
        started.elapsed()
    );
    stop_cleanly(vso);
}

/// The S3 server goes away: scheduled syncs fail, `/healthz` turns 503 after
/// --max-consecutive-failures and back to 200 after the server returns and a sync succeeds.
#[test]
fn healthz_follows_consecutive_failures_and_recovers() {
    let mut server = S3Server::start_restartable();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let mut vso = spawn_upload(
        &sandbox,
        &server,
        &src,
        &[
            "--schedule",
            "@every 2s",
            "--max-consecutive-failures",
            "2",
            "--retries",
            "0",
            "--metrics-address",
            "127.0.0.1:0",
        ],
        &FAST_FAIL,
    );
    let address = metrics_address(&mut vso);
    scrape_until(&address, "the first sync succeeded", |m| {
        m.uploads("success") >= 1.0
    });
    let ok = assert_health(&address, 200);
    assert_eq!(ok.body, "ok\n");
    assert_eq!(get(&address, "/livez").status, 200);

    server.stop();
    let stopped = unix_now();
    // A file written during the outage, uploaded after it.
    add_file(
        &src,
        "during-outage.txt",
        b"written while the remote was down\n",
    );

    // Health is exactly "fewer than 2 consecutive failures": probed while the gauge stays at 1,
    // then at 2 (the same value scraped before and after the probe).
    let mut seen = [false; 3];
    let deadline = Instant::now() + LONG;
    while !(seen[1] && seen[2]) {
        let before = scrape(&address).value("consecutive_failures", &[]);
        let health = get(&address, "/healthz");
        let after = scrape(&address).value("consecutive_failures", &[]);
        assert!(
            before <= 2.0 && Instant::now() < deadline,
            "did not see 1 and then 2 consecutive failures (now {before}):\n{}",
            vso.output_so_far()
        );
        if before == after {
            let expected = if before >= 2.0 { 503 } else { 200 };
            assert_eq!(
                health.status, expected,
                "/healthz with {before} consecutive failures (limit 2): {health:?}"
            );
            seen[before as usize] = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // The reason is in the body.
    let unhealthy = get(&address, "/healthz");
    assert_eq!(unhealthy.status, 503);
    // One line per failing rule, led by its reason.
    assert!(
        unhealthy.body.starts_with("consecutive-failures: "),
        "{:?}",
        unhealthy.body
    );
    let failures: u32 = unhealthy
        .body
        .trim_start_matches("consecutive-failures: ")
        .split(" consecutive syncs failed")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failure count in {:?}", unhealthy.body));
    assert!(failures >= 2, "{:?}", unhealthy.body);
    assert!(
        unhealthy.body.contains("last: rclone sync failed"),
        "the reason names the last failure: {:?}",
        unhealthy.body
    );
    assert!(!unhealthy.body.contains(SECRET_KEY));
    // Consecutive failures are the one rule a restart may cure: the liveness probe fails too.
    let live = get(&address, "/livez");
    assert_eq!(live.status, 503, "{live:?}");
    assert!(
        live.body.starts_with("consecutive-failures: "),
        "{:?}",
        live.body
    );
    let ready = get(&address, "/readyz");
    assert_eq!(ready.status, 200, "readiness does not follow health");

    let (m, out) = settled(&mut vso, &address);
    let failed = text_summaries(&out, "sync failed");
    assert!(failed.len() >= 2, "{out}");
    assert!(failed.iter().all(|f| f["result"] == "failure"), "{out}");
    assert_eq!(m.uploads("failure"), failed.len() as f64, "{}", m.text);
    assert_eq!(
        m.value("consecutive_failures", &[]),
        failed.len() as f64,
        "no success since the outage began"
    );
    assert!(m.value("last_success_timestamp_seconds", &[]) < stopped);
    assert_eq!(
        m.value("refusals_total", &[("rule", "empty-source")]),
        0.0,
        "a failure is not a refusal"
    );

    // The remote comes back: the next sync succeeds and health returns.
    server.restart();
    support::wait_until("/healthz is 200 again", LONG, || {
        get(&address, "/healthz").status == 200
    });
    assert_eq!(get(&address, "/livez").status, 200);
    let m = scrape(&address);
    assert_eq!(m.value("consecutive_failures", &[]), 0.0, "{}", m.text);
    assert!(m.value("last_success_timestamp_seconds", &[]) > stopped);
    assert!(m.uploads("success") >= 2.0);
    assert_eq!(m.value("transferred_files_total", &[]), 2.0, "{}", m.text);
    assert_eq!(
        fs::read(server.path("bucket/app/during-outage.txt")).unwrap(),
        b"written while the remote was down\n"
    );
    stop_cleanly(vso);
}

/// A schedule on an empty source over a remote path holding files: every run is refused (rule
/// empty-source), counted by rule, and counts as a failure for health; data in the source
/// makes it healthy again.
#[test]
fn refusals_are_counted_by_rule_and_make_the_process_unhealthy() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let seed = sandbox.tree("seed", &[("kept.txt", b"kept\n")]);
    spawn_upload(&sandbox, &server, &seed, &[], &[])
        .wait_output(LONG)
        .assert_code(0);
    let src = sandbox.dir("empty-src");
    let mut vso = spawn_upload(
        &sandbox,
        &server,
        &src,
        &[
            "--schedule",
            "@every 1s",
            "--max-consecutive-failures",
            "2",
            "--metrics-address",
            "127.0.0.1:0",
        ],
        &[],
    );
    let address = metrics_address(&mut vso);
    support::wait_until("/healthz turns 503", LONG, || {
        get(&address, "/healthz").status == 503
    });
    let unhealthy = get(&address, "/healthz");
    assert!(
        unhealthy
            .body
            .contains("refused by safety rule 'empty-source'"),
        "{:?}",
        unhealthy.body
    );
    assert_eq!(get(&address, "/readyz").status, 200);

    let (m, out) = settled(&mut vso, &address);
    let refused = text_summaries(&out, "sync failed");
    assert!(refused.len() >= 2, "{out}");
    assert!(refused.iter().all(|f| f["result"] == "refused"), "{out}");
    let n = refused.len() as f64;
    assert_eq!(
        m.value("refusals_total", &[("rule", "empty-source")]),
        n,
        "{}",
        m.text
    );
    assert_eq!(m.uploads("refused"), n);
    assert_eq!(m.uploads("success"), 0.0);
    assert_eq!(m.uploads("failure"), 0.0);
    assert_eq!(m.value("consecutive_failures", &[]), n);
    assert_eq!(m.value("last_success_timestamp_seconds", &[]), 0.0);
    assert_eq!(m.value("transferred_files_total", &[]), 0.0);
    // The running uploader's lease (an internal object, issue 17) aside.
    assert_eq!(
        snapshot(&server.path("bucket"))
            .into_iter()
            .filter(|(name, _)| !name.starts_with("app/.volume-syncing-operator."))
            .collect::<Vec<_>>(),
        vec![
            ("app/".to_string(), None),
            ("app/kept.txt".to_string(), Some(b"kept\n".to_vec()))
        ],
        "nothing changed on the remote"
    );

    // Data appears (the volume got mounted): the next sync succeeds.
    add_file(&src, "data.txt", b"data\n");
    support::wait_until("/healthz is 200 again", LONG, || {
        get(&address, "/healthz").status == 200
    });
    assert_eq!(get(&address, "/livez").status, 200);
    let (m, out) = settled(&mut vso, &address);
    let refused_now = text_summaries(&out, "sync failed").len() as f64;
    assert_eq!(
        m.value("refusals_total", &[("rule", "empty-source")]),
        refused_now,
        "refusals stay counted after the recovery"
    );
    assert_eq!(m.value("consecutive_failures", &[]), 0.0);
    assert_eq!(m.value("transferred_files_total", &[]), 1.0);
    stop_cleanly(vso);
}

/// `--watch` serves the same endpoints; incremental syncs are counted like full ones, and the
/// next planned sync is the periodic full one.
#[test]
fn metrics_in_watch_mode() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let one = random_bytes(700, 5);
    let two = random_bytes(1300, 6);
    let src = sandbox.tree("src", &[("one.bin", &one), ("sub/two.bin", &two)]);
    let mut vso = spawn_upload(
        &sandbox,
        &server,
        &src,
        &[
            "--watch",
            "--debounce",
            "300ms",
            "--full-sync-every",
            "1h",
            "--metrics-address",
            "127.0.0.1:0",
        ],
        &ONE_TRANSFER,
    );
    let address = metrics_address(&mut vso);
    assert_eq!(get(&address, "/readyz").status, 200);
    let m = scrape_until(&address, "the first (full) sync is recorded", |m| {
        m.uploads("success") >= 1.0
    });
    assert_eq!(m.value("transferred_files_total", &[]), 2.0, "{}", m.text);
    assert_eq!(
        m.value("transferred_bytes_total", &[]),
        (one.len() + two.len()) as f64
    );
    let next = m.value("next_sync_timestamp_seconds", &[]);
    let in_an_hour = unix_now() + 3600.0;
    assert!(
        (in_an_hour - 120.0..=in_an_hour + 1.0).contains(&next),
        "the next planned sync is the full one in 1h: {next} vs {in_an_hour}"
    );

    let three = random_bytes(4321, 7);
    add_file(&src, "three.bin", &three);
    let m = scrape_until(&address, "the changed file is counted", |m| {
        m.value("transferred_files_total", &[]) >= 3.0
    });
    assert_eq!(m.value("transferred_files_total", &[]), 3.0);
    assert_eq!(
        m.value("transferred_bytes_total", &[]),
        (one.len() + two.len() + three.len()) as f64
    );
    fs::remove_file(src.join("one.bin")).unwrap();
    scrape_until(&address, "the removal is counted", |m| {
        m.value("deleted_files_total", &[]) >= 1.0
    });
    assert!(!server.path("bucket/app/one.bin").exists());

    let (m, out) = settled(&mut vso, &address);
    let finished = text_summaries(&out, "sync finished");
    assert_eq!(m.uploads("success"), finished.len() as f64, "{out}");
    assert!(
        finished.iter().any(|f| f["kind"] == "incremental"),
        "changes were synced incrementally:\n{out}"
    );
    assert_eq!(m.value("deleted_files_total", &[]), 1.0);
    assert_health(&address, 200);
    stop_cleanly(vso);
}

/// `--metrics-address` on an address in use is a configuration error: exit 2 before any sync,
/// no PID file, no config left behind.
#[test]
fn metrics_address_in_use_exits_2_before_anything_runs() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--schedule", "@every 1s"])
        .args(["--metrics-address", &address])
        .run();
    out.assert_code(2)
        .assert_contains(&format!("cannot listen on --metrics-address {address}"));
    let all = out.all();
    assert!(!all.contains("starting a sync"), "{all}");
    assert!(snapshot(&server.path("bucket")).is_empty(), "nothing ran");
    assert!(!sandbox.tmp().join("volume-syncing-operator.pid").exists());
    assert!(sandbox.leftover_configs().is_empty());
    drop(taken);
}

/// Without --schedule or --watch there is no long-running process to observe: exit 2.
#[test]
fn metrics_address_without_a_long_running_mode_exits_2() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let out = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--metrics-address", "127.0.0.1:0"])
        .run();
    out.assert_code(2).assert_contains("--schedule");
    let dst = sandbox.path("restored");
    let out = Vso::s3(&sandbox, &server)
        .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(&dst)
        .args(["--metrics-address", "127.0.0.1:0"])
        .run();
    out.assert_code(2);
    assert!(snapshot(&server.path("bucket")).is_empty(), "nothing ran");
    assert!(!dst.exists(), "nothing ran");
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// Every line of `stderr` as a JSON object.
#[track_caller]
fn json_lines(stderr: &str) -> Vec<serde_json::Map<String, Json>> {
    assert!(!stderr.trim().is_empty(), "no log at all");
    stderr
        .lines()
        .map(|line| {
            let value: Json = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nwhole log:\n{stderr}"));
            let Json::Object(map) = value else {
                panic!("not a JSON object: {line:?}");
            };
            for key in ["timestamp", "level", "target", "message"] {
                assert!(map.contains_key(key), "no {key} in {line}");
            }
            map
        })
        .collect()
}

fn message(line: &serde_json::Map<String, Json>) -> &str {
    line["message"].as_str().unwrap_or("")
}

/// The JSON summary lines whose message starts with `marker`.
fn json_summaries<'a>(
    lines: &'a [serde_json::Map<String, Json>],
    marker: &str,
) -> Vec<&'a serde_json::Map<String, Json>> {
    lines
        .iter()
        .filter(|l| message(l).starts_with(marker))
        .collect()
}

/// Asserts the fields of a "sync finished" JSON line; numbers are JSON numbers.
#[track_caller]
fn assert_json_summary(
    line: &serde_json::Map<String, Json>,
    src: &Path,
    files: u64,
    bytes: u64,
    deleted: u64,
) {
    for field in SUMMARY_FIELDS {
        assert!(line.contains_key(field), "no {field} in {line:?}");
    }
    assert_eq!(line["direction"], "upload");
    assert_eq!(line["source"], src.display().to_string());
    assert_eq!(line["destination"], "remote:bucket/app");
    assert_eq!(line["result"], "success");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["kind"], "full");
    assert_eq!(line["attempts"].as_u64(), Some(1));
    assert_eq!(line["transferred_files"].as_u64(), Some(files), "{line:?}");
    assert_eq!(line["transferred_bytes"].as_u64(), Some(bytes), "{line:?}");
    assert_eq!(line["deleted_files"].as_u64(), Some(deleted), "{line:?}");
    assert_eq!(line["errors"].as_u64(), Some(0));
    let duration = line["duration_seconds"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&duration), "{duration}");
}

/// A one-shot sync with `--log-format json -v`: JSON only, rclone's lines as events with target
/// `rclone` (one per copied file with `-v`), progress events with statistics, one summary line.
#[test]
fn json_log_of_a_one_shot_sync() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let a = random_bytes(1000, 8);
    let b = random_bytes(2500, 9);
    let src = sandbox.tree(
        "src",
        &[("a.bin", &a), ("dir/b.bin", &b), ("c.txt", b"c\n")],
    );
    let bytes = (a.len() + b.len() + 2) as u64;
    let out = Vso::s3(&sandbox, &server)
        .args(["--log-format", "json", "-v", "sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--"])
        .args(ONE_TRANSFER)
        .run();
    out.assert_code(0);
    assert_eq!(out.stdout, "", "logs go to stderr");
    let lines = json_lines(&out.stderr);

    let summaries = json_summaries(&lines, "sync finished");
    assert_eq!(summaries.len(), 1, "one summary line:\n{}", out.stderr);
    let summary = summaries[0];
    assert_json_summary(summary, &src, 3, bytes, 0);
    assert_eq!(summary["next_run"], "", "a one-shot run has no next run");
    assert_eq!(summary["target"], "volume_syncing_operator::job");
    assert!(
        std::ptr::eq(lines.last().unwrap(), summary),
        "the summary is the last line:\n{}",
        out.stderr
    );

    // rclone's own lines: structured, target rclone, with the object they are about.
    let rclone: Vec<_> = lines.iter().filter(|l| l["target"] == "rclone").collect();
    for name in ["a.bin", "dir/b.bin", "c.txt"] {
        assert!(
            rclone
                .iter()
                .any(|l| l["object"] == name && l["level"] == "INFO"),
            "no rclone event about {name}:\n{}",
            out.stderr
        );
    }
    let progress: Vec<_> = rclone
        .iter()
        .filter(|l| message(l).starts_with("progress: "))
        .collect();
    assert!(!progress.is_empty(), "no progress events:\n{}", out.stderr);
    for p in &progress {
        for field in [
            "transferred_bytes",
            "transferred_files",
            "deleted_files",
            "errors",
        ] {
            assert!(p[field].is_u64(), "no numeric {field} in {p:?}");
        }
    }
    let last = progress.last().unwrap();
    assert_eq!(last["transferred_bytes"].as_u64(), Some(bytes));
    assert_eq!(last["transferred_files"].as_u64(), Some(3));

    // A deletion, in the next run's summary.
    fs::remove_file(src.join("dir/b.bin")).unwrap();
    let out = Vso::s3(&sandbox, &server)
        .args(["--log-format", "json", "sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--"])
        .args(ONE_TRANSFER)
        .run();
    out.assert_code(0);
    let lines = json_lines(&out.stderr);
    let summaries = json_summaries(&lines, "sync finished");
    assert_eq!(summaries.len(), 1, "{}", out.stderr);
    assert_json_summary(summaries[0], &src, 0, 0, 1);
}

/// A scheduled run with LOG_FORMAT=json from the environment: JSON until
/// the exit, including the HTTP server's line, the next-run lines and the final sync.
#[test]
fn json_log_of_a_scheduled_run_from_the_environment() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let a = random_bytes(4096, 10);
    let src = sandbox.tree("src", &[("a.bin", &a), ("b.txt", b"bee\n")]);
    let bytes = (a.len() + 4) as u64;
    let mut vso = Vso::s3(&sandbox, &server);
    vso.env("LOG_FORMAT", "json")
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--schedule", "@every 1h"])
        .args(["--metrics-address", "127.0.0.1:0", "--"])
        .args(ONE_TRANSFER);
    let mut vso = vso.spawn();
    let address = metrics_address(&mut vso);
    let m = scrape_until(&address, "the first sync is recorded", |m| {
        m.uploads("success") >= 1.0
    });
    assert_eq!(
        m.value("transferred_bytes_total", &[]),
        bytes as f64,
        "{}",
        vso.output_so_far()
    );
    add_file(&src, "late.txt", b"late\n");
    let out = stop_cleanly(vso);
    assert_eq!(out.stdout, "");
    let lines = json_lines(&out.stderr);

    let serving = lines
        .iter()
        .find(|l| message(l) == "serving /metrics, /healthz, /livez and /readyz")
        .unwrap();
    assert_eq!(serving["address"], address.as_str());
    let summaries = json_summaries(&lines, "sync finished");
    assert_eq!(
        summaries.len(),
        2,
        "the first and the final sync:\n{}",
        out.stderr
    );
    assert_json_summary(summaries[0], &src, 2, bytes, 0);
    assert_json_summary(summaries[1], &src, 1, 5, 0);
    // The first sync names the next run (an hour away); the final one has none.
    let next = summaries[0]["next_run"].as_str().unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(next)
        .unwrap_or_else(|e| panic!("next_run {next:?}: {e}"));
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(
        (next.to_utc() - in_an_hour).num_seconds().abs() < 120,
        "{next}"
    );
    assert_eq!(summaries[1]["next_run"], "");
    assert!(
        lines
            .iter()
            .any(|l| message(l).starts_with("next scheduled sync at") && l["next_run"].is_string()),
        "{}",
        out.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| message(l).starts_with("received SIGTERM")),
        "{}",
        out.stderr
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["target"] == "rclone")
            .any(|l| message(l).starts_with("progress: ") && l["transferred_bytes"].is_u64()),
        "{}",
        out.stderr
    );
}

/// The default text format: the summary line carries every field as key=value.
#[test]
fn text_summary_line_has_every_field() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let a = random_bytes(3000, 12);
    let src = sandbox.tree("src", &[("a.bin", &a), ("b/c.txt", b"see\n")]);
    let out = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--"])
        .args(ONE_TRANSFER)
        .run();
    out.assert_code(0);
    let summaries = text_summaries(&out.stderr, "sync finished");
    assert_eq!(summaries.len(), 1, "{}", out.stderr);
    let fields = &summaries[0];
    for field in SUMMARY_FIELDS {
        assert!(fields.contains_key(field), "no {field}= in {fields:?}");
    }
    let src_display = src.display().to_string();
    for (field, expected) in [
        ("direction", "upload"),
        ("source", src_display.as_str()),
        ("destination", "remote:bucket/app"),
        ("result", "success"),
        ("attempts", "1"),
        ("transferred_files", "2"),
        ("transferred_bytes", "3004"),
        ("deleted_files", "0"),
        ("errors", "0"),
        ("kind", "full"),
        ("next_run", ""),
    ] {
        assert_eq!(fields[field], expected, "{field} in {fields:?}");
    }
    assert!(fields["duration_seconds"].parse::<f64>().is_ok());
    // The progress event carries the statistics as fields too.
    let progress = text_summaries(&out.stderr, "progress: ");
    assert!(
        progress
            .iter()
            .any(|p| p.get("transferred_bytes").map(String::as_str) == Some("3004")),
        "{}",
        out.stderr
    );
}
