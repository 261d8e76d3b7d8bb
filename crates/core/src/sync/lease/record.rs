//! The lease object: who holds it ([`Holder`]), what it says ([`Record`]: holder, renewal,
//! expiry) and its parser. The object comes from the remote and may be hostile: it is read with
//! a size cap, its times are checked (an expiry more than [`MAX_TTL`] after its renewal is not
//! believed), and nothing in it can panic or turn the rule off.

use std::fmt;
use std::io::Read;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::logging::untrusted;

/// Who holds a lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub id: String,
}

impl fmt::Display for Holder {
    /// Read from the remote, so escaped for the log ([`untrusted`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pid {}, id {})",
            untrusted(&self.host),
            self.pid,
            untrusted(&self.id)
        )
    }
}

impl Holder {
    /// This process: host or Pod name, pid, and a random id (pids repeat across containers).
    pub(super) fn me() -> Result<Holder> {
        let host = ["POD_NAME", "HOSTNAME"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|v| !v.trim().is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "unknown-host".into());
        let mut bytes = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("cannot read /dev/urandom for the lease id")?;
        Ok(Holder {
            host,
            pid: std::process::id(),
            id: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

/// The content of the lease object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub holder: Holder,
    pub started: String,
    pub renewed: String,
    pub expires: String,
}

impl Record {
    /// Our lease, written at `now`, and its expiry. Checked: a TTL the flags did not bound
    /// must not overflow into a panic or into a year no writer can parse back.
    pub(super) fn new(
        holder: Holder,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<(Record, DateTime<Utc>)> {
        let expires = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .filter(|t| t.year() <= 9999)
            .ok_or_else(|| {
                Error::config(format!(
                    "--lease-ttl {} puts the lease's expiry out of range",
                    format_duration(ttl)
                ))
            })?;
        let record = Record {
            holder,
            started: rfc3339(started),
            renewed: rfc3339(now),
            expires: rfc3339(expires),
        };
        Ok((record, expires))
    }

    fn renewed_at(&self) -> Option<DateTime<Utc>> {
        parse_time(&self.renewed)
    }

    fn expires_at(&self) -> Option<DateTime<Utc>> {
        parse_time(&self.expires)
    }

    /// When this lease, read from the remote, counts as expiring: its `expires`, unless that
    /// does not parse or lies more than the longest TTL after the lease was written ([`Expiry`]).
    pub(super) fn expiry(&self, now: DateTime<Utc>, max_skew: Duration) -> Expiry {
        let renewed = self
            .renewed_at()
            .filter(|r| *r <= add(now, max_skew).unwrap_or(DateTime::<Utc>::MAX_UTC));
        let Some(anchor) = renewed else {
            return Expiry::Unanchored(format!(
                "its renewal time {:?} does not parse or lies in the future",
                untrusted(&self.renewed)
            ));
        };
        let cap = add(anchor, MAX_TTL).unwrap_or(DateTime::<Utc>::MAX_UTC);
        match self.expires_at() {
            Some(expires) if expires <= cap => Expiry::Stated(expires),
            Some(_) => Expiry::Capped(
                cap,
                format!(
                    "its expiry {:?} lies more than the longest --lease-ttl ({}) after its renewal",
                    untrusted(&self.expires),
                    format_duration(MAX_TTL)
                ),
            ),
            None => Expiry::Capped(
                cap,
                format!("its expiry {:?} does not parse", untrusted(&self.expires)),
            ),
        }
    }
}

/// What a lease read from the remote says about its expiry. Any writer of the bucket can put
/// anything there, so an expiry is believed only up to [`MAX_TTL`] after the lease's renewal
/// time; a lease whose times say nothing usable is judged by when the object was written.
/// Never "forever" (which would block every writer), never ignored (which would turn the lease
/// off): an absurd lease counts as live for at most a day after it was written, with a warning.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expiry {
    /// The lease's own, plausible expiry.
    Stated(DateTime<Utc>),
    /// The lease's renewal time plus [`MAX_TTL`], and why its own expiry was not believed.
    Capped(DateTime<Utc>, String),
    /// No usable renewal time: the object's modification time is needed (one more call).
    Unanchored(String),
}

/// The longest TTL a writer may set (`--lease-ttl`): how far a lease's expiry may lie after its
/// renewal before it is not believed.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);

/// The longest lease object that is read (`rclone cat --count`): ours are ~250 bytes.
pub(super) const MAX_LEASE_BYTES: usize = 64 * 1024;

/// `t + d`, or `None` when out of range.
pub(super) fn add(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(chrono::Duration::from_std(d).ok()?)
}

/// Whether a lease expiring at `expires` is still live at `now`, allowing for the clock skew.
pub(super) fn is_live(expires: DateTime<Utc>, now: DateTime<Utc>, max_skew: Duration) -> bool {
    add(expires, max_skew).is_none_or(|until| now <= until)
}

/// Parses the bytes of a lease object; never panics (fuzzed). `Err` says why it is not a lease
/// (not JSON, no holder, too long). The times are strings, judged later (`Expiry`): a lease
/// whose times do not parse is still a lease, whose holder is worth naming.
pub fn parse_lease(bytes: &[u8]) -> Result<Record, String> {
    if bytes.len() > MAX_LEASE_BYTES {
        return Err(format!(
            "longer than {MAX_LEASE_BYTES} bytes; a lease is a few hundred"
        ));
    }
    serde_json::from_slice::<Record>(bytes)
        .map_err(|e| format!("not a lease: {}", untrusted(&e.to_string())))
}

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
