//! What went wrong, in rclone's own words: picks the cause out of rclone's ERROR lines, names
//! it in a few words with a hint (`SignatureDoesNotMatch — wrong secret key?`), and says whether
//! retrying can help.
//!
//! Decisions:
//! - rclone repeats one root cause in many lines ("error reading destination root directory",
//!   "Failed to copy", "Attempt 1/1 failed"…) and wraps it in SDK noise. The cause we report is
//!   the first line that matches a known kind; failing that, the most frequent ERROR message, so
//!   one stray line does not hide the real cause. Matching is on stable tokens (S3 error codes,
//!   Go's network error texts), never on whole sentences.
//! - Whether a run is retried follows the kind, not only rclone's exit code: wrong credentials,
//!   an untrusted certificate, an unknown host or a missing bucket do not heal in seconds, so a
//!   retry only delays the error. Timeouts, 5xx and throttling may heal and are retried. A
//!   refused connection is not retried within the run either: nothing listens there, and
//!   retrying would break the promise that an unreachable endpoint fails within 30 s; the next
//!   scheduled run (or the Pod's restart of an init container) tries again.

use std::collections::HashMap;
use std::fmt;

/// The kinds of failure this program recognises in rclone's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Wrong or unauthorised credentials (403 and S3's credential error codes).
    Credentials,
    /// The TLS certificate is not trusted, or TLS failed.
    Tls,
    /// The endpoint's host name does not resolve.
    Dns,
    /// Nothing listens at the endpoint.
    Refused,
    /// The endpoint did not answer in time (connect or idle timeout).
    Timeout,
    /// The bucket does not exist.
    NoBucket,
    /// The server is overloaded or failed (5xx, SlowDown, throttling).
    Server,
    /// Anything else rclone logged as an error.
    Other,
}

impl Kind {
    /// Whether running the same sync again within seconds can succeed.
    pub fn may_heal(self) -> bool {
        matches!(self, Kind::Timeout | Kind::Server)
    }
}

/// One cause: its kind and a short text naming it, with a hint where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub kind: Kind,
    pub text: String,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// S3 error codes (and their hints) that mean the credentials are wrong.
const CREDENTIAL_CODES: [(&str, &str); 5] = [
    ("SignatureDoesNotMatch", "wrong secret key?"),
    ("InvalidAccessKeyId", "wrong access key id?"),
    ("AccessDenied", "do the credentials allow this bucket?"),
    ("ExpiredToken", "the session token has expired"),
    ("InvalidToken", "wrong session token?"),
];

/// Recognises one rclone error message; `None` when it is of no known kind.
pub fn classify(msg: &str) -> Option<Cause> {
    let lower = msg.to_ascii_lowercase();
    let endpoint = endpoint_in(msg);
    let at = |what: &str| match &endpoint {
        Some(e) => format!("{what} {e}"),
        None => what.to_string(),
    };
    let cause = |kind, text: String| Some(Cause { kind, text });
    for (code, hint) in CREDENTIAL_CODES {
        if msg.contains(code) {
            return cause(Kind::Credentials, format!("{code} — {hint}"));
        }
    }
    if msg.contains("NoSuchBucket") {
        return cause(
            Kind::NoBucket,
            match bucket_in(msg) {
                Some(b) => format!("bucket \"{b}\" does not exist"),
                None => "the bucket does not exist (NoSuchBucket)".into(),
            },
        );
    }
    if lower.contains("x509:") || lower.contains("certificate") {
        return cause(
            Kind::Tls,
            format!(
                "{} — a self-signed or private CA? set RCLONE_CA_CERT=FILE to its certificate \
                 (every rclone call sees it; -- --ca-cert reaches only the transfer)",
                at("TLS certificate not trusted for")
            ),
        );
    }
    if lower.contains("tls:")
        || lower.contains("tls handshake")
        || lower.contains("http response to https client")
    {
        return cause(
            Kind::Tls,
            format!("{} — is it an HTTPS endpoint?", at("TLS failed with")),
        );
    }
    // A name lookup that times out (no DNS server reachable) is a DNS failure, not a stall.
    if lower.contains("no such host")
        || lower.contains("server misbehaving")
        || lower.contains("temporary failure in name resolution")
        || (lower.contains("lookup ") && lower.contains("i/o timeout"))
    {
        return cause(
            Kind::Dns,
            format!("{} — check the endpoint's host name", at("cannot resolve")),
        );
    }
    if lower.contains("connection refused") {
        return cause(
            Kind::Refused,
            format!(
                "{} — is the endpoint right and the server up?",
                at("connection refused to")
            ),
        );
    }
    if lower.contains("i/o timeout")
        || lower.contains("deadline exceeded")
        || lower.contains("timeout awaiting")
        || lower.contains("connection reset")
        || lower.contains("network is unreachable")
        || lower.contains("no route to host")
        || lower.contains("unexpected eof")
    {
        return cause(
            Kind::Timeout,
            format!("{} (network timeout or reset)", at("no answer from")),
        );
    }
    if msg.contains("SlowDown")
        || lower.contains("throttl")
        || lower.contains("too many requests")
        || [
            "StatusCode: 500",
            "StatusCode: 502",
            "StatusCode: 503",
            "StatusCode: 504",
        ]
        .iter()
        .any(|s| msg.contains(s))
    {
        return cause(
            Kind::Server,
            format!("{} (server error or throttling)", at("the server failed:")),
        );
    }
    None
}

/// `scheme://host[:port]` of the first URL in a Go error message (`Get "http://h:1/b?x"`), or
/// the address of `dial tcp ADDR:`; never a path or query, which may hold object names.
fn endpoint_in(msg: &str) -> Option<String> {
    for scheme in ["https://", "http://"] {
        if let Some(start) = msg.find(scheme) {
            let rest = &msg[start + scheme.len()..];
            let end = rest
                .find(|c: char| c == '/' || c == '"' || c == '?' || c.is_whitespace())
                .unwrap_or(rest.len());
            let host = &rest[..end];
            // Credentials in a URL (user:pass@host) never reach a log line.
            let host = host.rsplit('@').next().unwrap_or(host);
            return Some(format!("{scheme}{host}"));
        }
    }
    let rest = msg.split("dial tcp ").nth(1)?;
    let addr = rest.split(": ").next()?;
    Some(addr.trim().to_string())
}

/// The bucket named in an S3 error line, when rclone names it (`bucket "x"` or `BucketName: x`).
fn bucket_in(msg: &str) -> Option<String> {
    let rest = msg.split("bucket \"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

/// Collects the causes seen in one rclone run.
#[derive(Debug, Default)]
pub struct Causes {
    first_known: Option<Cause>,
    counts: HashMap<String, (usize, usize)>,
}

impl Causes {
    /// Records one ERROR message.
    pub fn add(&mut self, msg: &str) {
        if self.first_known.is_none() {
            self.first_known = classify(msg);
        }
        let next = self.counts.len();
        let short = msg.trim().chars().take(300).collect::<String>();
        self.counts.entry(short).or_insert((0, next)).0 += 1;
    }

    /// The cause to report: the first recognised one, else the most frequent message (the
    /// earlier one on a tie).
    pub fn cause(&self) -> Option<Cause> {
        if let Some(known) = &self.first_known {
            return Some(known.clone());
        }
        self.counts
            .iter()
            .max_by_key(|(_, (count, order))| (*count, std::cmp::Reverse(*order)))
            .map(|(msg, _)| Cause {
                kind: Kind::Other,
                text: msg.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_causes_are_named_with_a_hint() {
        let cases = [
            (
                "operation error S3: ListObjects, https response error StatusCode: 403, api error SignatureDoesNotMatch: The request signature",
                Kind::Credentials,
                "SignatureDoesNotMatch — wrong secret key?",
            ),
            (
                "request send failed, Get \"http://127.0.0.1:1/b?delimiter=%2F\": dial tcp 127.0.0.1:1: connect: connection refused",
                Kind::Refused,
                "connection refused to http://127.0.0.1:1",
            ),
            (
                "Get \"https://user:pw@nohost.invalid/b\": dial tcp: lookup nohost.invalid: no such host",
                Kind::Dns,
                "cannot resolve https://nohost.invalid",
            ),
            (
                "Get \"https://127.0.0.1:9/b\": tls: failed to verify certificate: x509: certificate signed by unknown authority",
                Kind::Tls,
                "RCLONE_CA_CERT",
            ),
            (
                "api error NoSuchBucket: The specified bucket does not exist",
                Kind::NoBucket,
                "does not exist",
            ),
            (
                "Put \"http://h.invalid:1/b\": dial tcp: lookup h.invalid on 10.0.0.1:53: read udp 1->2: i/o timeout",
                Kind::Dns,
                "cannot resolve http://h.invalid:1",
            ),
            (
                "Get \"http://h:1/b\": read tcp 1->2: i/o timeout",
                Kind::Timeout,
                "no answer from http://h:1",
            ),
            (
                "https response error StatusCode: 503, api error SlowDown",
                Kind::Server,
                "throttling",
            ),
        ];
        for (msg, kind, text) in cases {
            let cause = classify(msg).unwrap_or_else(|| panic!("{msg}"));
            assert_eq!(cause.kind, kind, "{msg}");
            assert!(cause.text.contains(text), "{} lacks {text}", cause.text);
            assert!(!cause.text.contains("pw@"), "{}", cause.text);
        }
        assert_eq!(classify("not deleting files as there were IO errors"), None);
    }

    #[test]
    fn only_what_can_heal_is_retried() {
        assert!(Kind::Timeout.may_heal() && Kind::Server.may_heal());
        for kind in [
            Kind::Credentials,
            Kind::Tls,
            Kind::Dns,
            Kind::NoBucket,
            Kind::Refused,
        ] {
            assert!(!kind.may_heal(), "{kind:?}");
        }
    }

    #[test]
    fn the_first_known_or_the_most_frequent_message_is_the_cause() {
        let mut c = Causes::default();
        c.add("not deleting files as there were IO errors");
        c.add("Failed to copy: weird thing");
        c.add("Failed to copy: weird thing");
        assert_eq!(c.cause().unwrap().text, "Failed to copy: weird thing");
        c.add("api error InvalidAccessKeyId: nope");
        assert_eq!(c.cause().unwrap().kind, Kind::Credentials);
        assert_eq!(Causes::default().cause(), None);
    }
}
