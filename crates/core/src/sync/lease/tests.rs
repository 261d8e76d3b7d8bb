//! Unit tests of the lease: the record's parser and times, the rule's arithmetic.

use super::errors::{rclone_code, rclone_first};
use super::record::{MAX_LEASE_BYTES, parse_time};
use super::*;

fn record(expires: DateTime<Utc>) -> Record {
    Record::new(
        Holder {
            host: "h".into(),
            pid: 1,
            id: "x".into(),
        },
        expires,
        expires,
        Duration::ZERO,
    )
    .unwrap()
    .0
}

#[test]
fn liveness_allows_for_clock_skew() {
    let now = Utc::now();
    let skew = Duration::from_secs(30);
    let secs = chrono::Duration::seconds;
    assert!(is_live(now + secs(5), now, skew));
    assert!(is_live(now - secs(20), now, skew));
    assert!(!is_live(now - secs(31), now, skew));
    assert!(is_live(DateTime::<Utc>::MAX_UTC, now, skew), "no overflow");
}

#[test]
fn an_unbounded_ttl_is_an_error_not_a_panic_or_year_15716() {
    let me = record(Utc::now()).holder;
    let now = Utc::now();
    for days in [5_000_000u64, 100_000_000, u64::MAX / 86_400] {
        let ttl = Duration::from_secs(days * 86_400);
        assert!(Record::new(me.clone(), now, now, ttl).is_err(), "{days}d");
    }
    let (r, _) = Record::new(me, now, now, MAX_TTL).unwrap();
    assert!(parse_time(&r.expires).is_some());
}

#[test]
fn a_lease_read_from_the_remote_is_believed_only_up_to_the_longest_ttl() {
    let now = Utc::now();
    let skew = Duration::from_secs(30);
    let lease = |renewed: &str, expires: &str| Record {
        holder: record(now).holder,
        started: renewed.into(),
        renewed: renewed.into(),
        expires: expires.into(),
    };
    let r = rfc3339(now);
    let soon = rfc3339(now + chrono::Duration::seconds(60));
    assert_eq!(
        lease(&r, &soon).expiry(now, skew),
        Expiry::Stated(parse_time(&soon).unwrap())
    );
    let cap = add(parse_time(&r).unwrap(), MAX_TTL).unwrap();
    for absurd in [
        "+15716-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "garbage{{",
        "",
    ] {
        match lease(&r, absurd).expiry(now, skew) {
            Expiry::Capped(at, why) => {
                assert_eq!(at, cap, "{absurd}");
                assert!(!why.is_empty());
            }
            other => panic!("{absurd}: {other:?}"),
        }
    }
    // A renewal time that does not parse, or lies in the future, anchors nothing.
    for renewed in ["x", "9999-12-31T23:59:59Z"] {
        assert!(matches!(
            lease(renewed, &soon).expiry(now, skew),
            Expiry::Unanchored(_)
        ));
    }
}

#[test]
fn parse_lease_never_panics_and_escapes_what_it_quotes() {
    let samples: [&[u8]; 8] = [
        b"",
        b"garbage{{",
        b"{\"holder\":1}",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        b"\xff\xfe",
        b"{\"holder\":{\"host\":\"a\\u001b[2J\",\"pid\":4294967296,\"id\":\"x\"}}",
        b"{\"holder\":{\"host\":\"a\\n\",\"pid\":1,\"id\":\"x\"},\"started\":\"\",\"renewed\":\"\",\"expires\":\"\"}",
        b"{\"holder\":\"\\u001b[31mred\"}",
    ];
    for bytes in samples {
        if let Err(why) = parse_lease(bytes) {
            assert!(!why.contains('\u{1b}'), "{why}");
        }
    }
    let ok = parse_lease(samples[6]).unwrap();
    assert_eq!(ok.holder.to_string(), "a\\n (pid 1, id x)");
    assert!(parse_lease(&vec![b' '; MAX_LEASE_BYTES + 1]).is_err());
    // Every prefix of a real lease: no panic.
    let real = serde_json::to_vec(&record(Utc::now())).unwrap();
    for end in 0..real.len() {
        let _ = parse_lease(&real[..end]);
    }
}

#[test]
fn the_settle_delay_covers_the_write_gap() {
    // The race argument in the module doc needs D >= G.
    assert!(SETTLE >= MAX_WRITE_GAP);
    assert!(MIN_TTL > SETTLE * 2);
}

#[test]
fn the_lease_is_an_internal_file() {}

#[test]
fn rclone_failures_name_the_operation_first_and_keep_the_code() {
    let raw = Error::Other(
        anyhow::Error::new(Error::Rclone {
            operation: "cat (lease)".into(),
            code: 1,
            meaning: "uncategorised error",
            cause: crate::remote::cause::classify("read tcp 127.0.0.1:1: i/o timeout"),
            stats: Default::default(),
        })
        .context("dial tcp: connection refused"),
    );
    let e = rclone_first(raw);
    assert_eq!(rclone_code(&e), Some(1));
    assert!(is_retryable(&e));
    let text = format!("{:#}", anyhow::Error::from(e));
    assert!(
        text.starts_with("rclone cat (lease) failed with exit code 1 (uncategorised error)")
            && text.ends_with(": dial tcp: connection refused"),
        "{text}"
    );
}

#[test]
fn the_record_round_trips_as_json() {
    let r = record(Utc::now());
    let back = parse_lease(serde_json::to_string(&r).unwrap().as_bytes()).unwrap();
    assert_eq!(back.holder, r.holder);
    assert_eq!(back.expires, r.expires);
}
