//! Reads a running sidecar's `/metrics` at its Pod's address: the numbers the status is made
//! of (last sync, its result and rule, next run, failures, unhealthy reasons, bytes).
//!
//! Decisions:
//! - Plain HTTP/1.1 over a TCP connection, one request, bounded in time ([`TIMEOUT`] for the
//!   whole exchange) and in size ([`MAX_BODY`]): the sidecar serves plain text on the Pod
//!   network, and a hung or hostile endpoint costs one bounded task, never the loop.
//! - Only the series this module names are read, by exact name; anything else (and any line
//!   that does not parse) is ignored. A body without `last_sync_timestamp_seconds` is not a
//!   sidecar of ours: an error naming what was missing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bound of one scrape: connect, request and response.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a response that is read (a sidecar's metrics are about 8 KiB).
const MAX_BODY: usize = 1 << 20;
const PREFIX: &str = "volume_syncing_operator_";

/// What one sidecar reports; times are Unix seconds (0: never).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub last_sync: f64,
    pub last_sync_duration: f64,
    pub last_sync_bytes: u64,
    /// `(result, rule)` of the last sync; rule `""` for none.
    pub last_result: Option<(String, String)>,
    pub last_success: f64,
    pub next_sync: f64,
    pub consecutive_failures: u32,
    /// The health rules that fail now.
    pub unhealthy: Vec<String>,
    /// A sync runs now.
    pub running: bool,
}

/// GETs `http://address/metrics` and reads it.
pub async fn scrape(address: SocketAddr) -> Result<Scrape, String> {
    let body = tokio::time::timeout(TIMEOUT, get(address))
        .await
        .map_err(|_| format!("GET http://{address}/metrics: no answer within 5s"))?
        .map_err(|e| format!("GET http://{address}/metrics: {e}"))?;
    parse(&body).map_err(|e| format!("GET http://{address}/metrics: {e}"))
}

async fn get(address: SocketAddr) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_BODY as u64)
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered {status:?}"));
    }
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

/// The body of a chunked response (sizes in hex, each chunk followed by CRLF).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 || rest.len() < size || !rest.is_char_boundary(size) {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The sidecar's health rules, most telling first (its own order, README "Metrics and
/// health"): a wrong key or a dead remote fails every sync, and the lease, which every sync
/// reads first, is then not held either; `consecutive-failures` says what happens,
/// `remote-in-use` would point at another writer.
const RULES_BY_RANK: [&str; 4] = [
    "consecutive-failures",
    "no-recent-success",
    "sync-running-too-long",
    "remote-in-use",
];

/// The rank of a health rule in [`RULES_BY_RANK`]; an unknown one (a newer sidecar's) last.
pub fn rule_rank(rule: &str) -> usize {
    RULES_BY_RANK
        .iter()
        .position(|r| *r == rule)
        .unwrap_or(RULES_BY_RANK.len())
}

/// One sample: its labels and value.
type Sample<'a> = (BTreeMap<&'a str, &'a str>, f64);

/// Reads the series of [`Scrape`] from OpenMetrics text.
pub fn parse(text: &str) -> Result<Scrape, String> {
    let mut values: BTreeMap<&str, Vec<Sample<'_>>> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((series, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if !value.is_finite() {
            continue;
        }
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        values.entry(name).or_default().push((labels, value));
    }
    let one = |name: &str| -> Option<f64> { values.get(name).and_then(|v| v.first()).map(|v| v.1) };
    let Some(last_sync) = one("last_sync_timestamp_seconds") else {
        return Err(format!(
            "no {PREFIX}last_sync_timestamp_seconds: not a volume-syncing-operator sidecar \
             (or one older than this operator)"
        ));
    };
    let on = |name: &str| -> Vec<&BTreeMap<&str, &str>> {
        values
            .get(name)
            .map(|v| {
                v.iter()
                    .filter(|(_, x)| *x >= 1.0)
                    .map(|(l, _)| l)
                    .collect()
            })
            .unwrap_or_default()
    };
    let last_result = on("last_sync_result").first().map(|l| {
        (
            l.get("result").unwrap_or(&"").to_string(),
            l.get("rule").unwrap_or(&"").to_string(),
        )
    });
    let mut unhealthy: Vec<String> = on("unhealthy")
        .iter()
        .filter_map(|l| l.get("reason").map(|r| r.to_string()))
        .collect();
    // The exposition lists a family's series in no fixed order (a hash map's).
    unhealthy.sort_by_key(|r| (rule_rank(r), r.clone()));
    let clamp = |x: Option<f64>| x.unwrap_or(0.0).max(0.0);
    Ok(Scrape {
        last_sync: clamp(Some(last_sync)),
        last_sync_duration: clamp(one("last_sync_duration_seconds")),
        last_sync_bytes: clamp(one("last_sync_transferred_bytes")) as u64,
        last_result: last_result.filter(|(result, _)| !result.is_empty()),
        last_success: clamp(one("last_success_timestamp_seconds")),
        next_sync: clamp(one("next_sync_timestamp_seconds")),
        consecutive_failures: clamp(one("consecutive_failures")).min(f64::from(u32::MAX)) as u32,
        unhealthy,
        running: clamp(one("running_sync_age_seconds")) > 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vso_core::daemon::metrics::Metrics;
    use vso_core::error::Error;
    use vso_core::remote::stats::Stats;
    use vso_core::sync::outcome::Outcome;

    #[test]
    fn reads_what_the_sidecar_exports() {
        // The sidecar's own encoder: the two sides cannot drift apart unnoticed.
        let m = Metrics::new(1, Duration::from_secs(3600));
        let before = parse(&m.encode()).unwrap();
        assert_eq!(before.last_sync, 0.0);
        assert_eq!(before.last_result, None);
        let ok = Ok(Outcome::Synced(Stats {
            bytes: 1234,
            ..Stats::default()
        }));
        m.record("upload", &ok, Duration::from_millis(2500));
        let s = parse(&m.encode()).unwrap();
        assert!(s.last_sync > 1.0e9, "{s:?}");
        assert_eq!(s.last_sync_bytes, 1234);
        assert_eq!(s.last_sync_duration, 2.5);
        assert_eq!(s.last_result, Some(("success".into(), String::new())));
        assert!(s.unhealthy.is_empty());
        let refused = Err(Error::refused(
            "mass-delete",
            "x",
            "--max-delete-percent 100",
        ));
        m.record("upload", &refused, Duration::from_secs(1));
        let s = parse(&m.encode()).unwrap();
        assert_eq!(
            s.last_result,
            Some(("refused".into(), "mass-delete".into()))
        );
        assert_eq!(s.consecutive_failures, 1);
        assert_eq!(s.unhealthy, vec!["consecutive-failures".to_string()]);
    }

    #[test]
    fn anything_else_is_an_error_or_ignored() {
        assert!(
            parse("")
                .unwrap_err()
                .contains("not a volume-syncing-operator sidecar")
        );
        let s = parse(
            "volume_syncing_operator_last_sync_timestamp_seconds 5\n\
             volume_syncing_operator_consecutive_failures NaN\n\
             volume_syncing_operator_next_sync_timestamp_seconds -7\n\
             garbage{{{ 1\n",
        )
        .unwrap();
        assert_eq!(s.last_sync, 5.0);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.next_sync, 0.0);
    }

    #[test]
    fn the_unhealthy_rules_come_most_telling_first() {
        // As a sidecar with a wrong key exposes them (the family in hash-map order).
        let s = parse(
            "volume_syncing_operator_last_sync_timestamp_seconds 5\n\
             volume_syncing_operator_unhealthy{reason=\"no-recent-success\"} 0\n\
             volume_syncing_operator_unhealthy{reason=\"remote-in-use\"} 1\n\
             volume_syncing_operator_unhealthy{reason=\"some-future-rule\"} 1\n\
             volume_syncing_operator_unhealthy{reason=\"consecutive-failures\"} 1\n",
        )
        .unwrap();
        assert_eq!(
            s.unhealthy,
            ["consecutive-failures", "remote-in-use", "some-future-rule"]
        );
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(dechunk("zz\r\nabc"), "");
    }

    #[tokio::test]
    async fn an_endpoint_that_does_not_answer_is_cut() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let err = scrape(address).await.unwrap_err();
        assert!(err.contains("no answer within 5s"), "{err}");
    }
}
