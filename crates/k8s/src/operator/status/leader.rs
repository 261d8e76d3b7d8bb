//! Leader election among the operator's replicas: one writer of status, through a
//! `coordination.k8s.io/v1` Lease in the operator's namespace.
//!
//! Decisions:
//! - The usual client-go protocol, by hand (kube-rs has none): the holder renews every
//!   [`RENEW_EVERY`]; another replica takes the Lease over only once `renewTime +
//!   leaseDurationSeconds` has passed; every write carries the `resourceVersion` it read, so two
//!   replicas that race for an expired Lease cannot both win (the API server refuses the
//!   second with a conflict).
//! - A leader that cannot renew stops acting as one before its Lease can expire for the others
//!   ([`RENEW_DEADLINE`] < [`LEASE_DURATION`]): two writers of status never overlap, short of a
//!   clock running 5 s late.
//! - Losing leadership is not fatal: the replica keeps answering admissions and tries again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// How long a Lease lives without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that has not renewed for this long stops writing.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the holder renews, and a follower looks.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);
/// The bound of one call to the API server.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// This replica's view of the election.
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    leading: AtomicBool,
}

impl Election {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Arc<Self> {
        Arc::new(Election {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            leading: AtomicBool::new(false),
        })
    }

    /// Whether this replica leads now.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Campaigns and renews forever.
    pub async fn run(self: Arc<Self>) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            let attempt = tokio::time::timeout(CALL_TIMEOUT, self.try_acquire_or_renew()).await;
            let now_leading = match attempt {
                Ok(Ok(held)) => {
                    if held {
                        last_renewal = Some(Instant::now());
                    }
                    held
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.name, "leader election: {e}");
                    last_renewal.is_some_and(|at| at.elapsed() < RENEW_DEADLINE)
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "leader election: the API server did not answer within 5s");
                    last_renewal.is_some_and(|at| at.elapsed() < RENEW_DEADLINE)
                }
            };
            if !now_leading {
                last_renewal = None;
            }
            let was = self.leading.swap(now_leading, Ordering::SeqCst);
            if was != now_leading {
                tracing::info!(
                    lease = %self.name,
                    identity = %self.identity,
                    "{}",
                    if now_leading {
                        "leading: this replica writes the PodFilesystemSync status"
                    } else {
                        "not leading any more: another replica writes the status"
                    }
                );
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// One round: true when this replica holds the Lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: acquired.or_else(|| Some(now.clone())),
            renew_time: Some(now.clone()),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        let transitions = current.lease_transitions.unwrap_or(0);
        let ours = current.holder_identity.as_deref() == Some(self.identity.as_str());
        if ours {
            lease.spec = Some(spec(transitions, current.acquire_time));
        } else if expired(&current, &now) {
            lease.spec = Some(spec(transitions.saturating_add(1), None));
        } else {
            return Ok(false);
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Somebody else wrote it since we read it: they hold it (or renewed it).
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A Lease is free when nobody holds it or its holder has not renewed within its duration.
fn expired(spec: &LeaseSpec, now: &MicroTime) -> bool {
    let (Some(_), Some(renewed)) = (&spec.holder_identity, &spec.renew_time) else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0).clamp(0, 3600));
    renewed.0.as_second().saturating_add(duration) < now.0.as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> MicroTime {
        MicroTime(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn a_lease_expires_after_its_duration_without_renewal() {
        let held = LeaseSpec {
            holder_identity: Some("a".into()),
            renew_time: Some(at(1000)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(!expired(&held, &at(1010)));
        assert!(!expired(&held, &at(1015)));
        assert!(expired(&held, &at(1016)));
        assert!(expired(&LeaseSpec::default(), &at(0)));
        // A hostile duration cannot keep it forever.
        let forever = LeaseSpec {
            lease_duration_seconds: Some(i32::MAX),
            ..held
        };
        assert!(expired(&forever, &at(1000 + 3601)));
    }
}
