//! The restore side of the lease: a one-shot restore waits, bounded, while a writer holds it,
//! so that a new Pod's init container restores what the old Pod's final sync wrote.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::logging::untrusted;

use super::Lease;
use super::record::{is_live, rfc3339};
use super::transport::{Found, Via};

/// Why a writer may never stop while a restore waits: the one case we know of, named in the
/// restore's wait and its timeout (the restore cannot see the writer, only its lease).
const WAITING_ON_US: &str = "If that writer is the Pod this one replaces and it waits for this \
     Pod to become Ready (a Deployment's RollingUpdate starts the new Pod first), it will not \
     stop: use strategy: Recreate";
impl Lease {
    pub(super) async fn wait_for_writer(&self, wait: Duration, max_skew: Duration) -> Result<()> {
        if wait.is_zero() {
            return Ok(());
        }
        let start = Instant::now();
        let mut last_log: Option<Instant> = None;
        let mut judged: Option<((String, String, String), DateTime<Utc>)> = None;
        loop {
            let found = match self.remote.read(Via::Process).await {
                Ok(found) => found,
                // The restore's own checks decide what a remote that cannot be read means.
                Err(e) => {
                    tracing::warn!("cannot read the lease {} ({e}); not waiting", self.display);
                    return Ok(());
                }
            };
            let record = match found {
                Found::Lease(record) => record,
                Found::Nothing => return Ok(()),
                Found::Unreadable(why) => {
                    tracing::warn!("ignoring the unreadable lease {} ({why})", self.display);
                    return Ok(());
                }
            };
            let now = Utc::now();
            // Judged (and warned about) once per lease seen, not once per poll.
            let key = (
                record.holder.id.clone(),
                record.renewed.clone(),
                record.expires.clone(),
            );
            let expires = match &judged {
                Some((seen, expires)) if *seen == key => *expires,
                _ => match self
                    .judged_expiry(&record, now, max_skew, Via::Process)
                    .await
                {
                    Ok(expires) => {
                        judged = Some((key, expires));
                        expires
                    }
                    Err(e) => {
                        tracing::warn!("cannot read the lease {} ({e}); not waiting", self.display);
                        return Ok(());
                    }
                },
            };
            if !is_live(expires, now, max_skew) {
                tracing::warn!(
                    holder = %record.holder,
                    expired = rfc3339(expires),
                    "the writer's lease {} has expired without release; restoring what it left",
                    self.display
                );
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= wait {
                return Err(Error::Other(anyhow::anyhow!(
                    "a writer, {}, still holds the lease {} after waiting --wait-for-writer {}: \
                     it is still running (it renewed the lease at {}; it expires {}), and a \
                     restore now could miss its last sync. Stop that writer (its final sync \
                     releases the lease), or wait longer. {WAITING_ON_US}",
                    record.holder,
                    self.display,
                    format_duration(wait),
                    untrusted(&record.renewed),
                    rfc3339(expires),
                )));
            }
            if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::info!(
                    holder = %record.holder,
                    expires = rfc3339(expires),
                    waited_seconds = waited.as_secs(),
                    "waiting for the writer holding {} to finish (at most {} in all). {WAITING_ON_US}",
                    self.display,
                    format_duration(wait)
                );
                last_log = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_secs(1).min(wait - waited)).await;
        }
    }
}
