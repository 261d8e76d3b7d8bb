//! The status of a `PodFilesystemSync`: did the last sync succeed, and when; written by the
//! operator alone ([`crate::operator::status`]), read by `kubectl get pfss` and by anyone who
//! wants to know whether a volume is backed up without finding its Pods.
//!
//! Decisions (Kubernetes API conventions):
//! - Times are RFC 3339 strings in UTC, as everywhere in the API; results are the sidecar's own
//!   words (`success`, `skipped`, `refused` with its rule, `failure`), so the status, the metrics
//!   and the log never disagree about what happened.
//! - `conditions` are the standard shape (`type`, `status`, `reason`, `message`,
//!   `lastTransitionTime`, `observedGeneration`); `Ready` is False until a sync succeeded, and
//!   False with the sidecar's health rule as its reason while one fails.
//! - `podStatuses` is capped ([`MAX_POD_STATUSES`]): a resource matching a thousand Pods must
//!   not grow an object past etcd's bound; `pods` still counts them all.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many entries in `podStatuses`.
pub const MAX_POD_STATUSES: usize = 20;

/// What the operator last observed of the resource's Pods and their syncs.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodFilesystemSyncStatus {
    /// The resource's metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Injected Pods that are running.
    #[serde(default)]
    pub pods: u32,
    /// When the last sync to the remote (of any Pod) ended, whatever its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// Its result: success, skipped, refused or failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_result: Option<String>,
    /// The safety rule that refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_rule: Option<String>,
    /// Why it failed, was refused or skipped (from the Pod's termination message; a running
    /// Pod's failure names its rule only: see its log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_message: Option<String>,
    /// The Pod that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_pod: Option<String>,
    /// How long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_duration_seconds: Option<f64>,
    /// The bytes it transferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transferred_bytes: Option<u64>,
    /// When the last successful sync ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<String>,
    /// The earliest next scheduled sync of the running Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<String>,
    /// The last restore (the init container) of any Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore: Option<LastRestore>,
    /// One entry per running injected Pod, by name; at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_statuses: Vec<PodSyncStatus>,
    /// Ready (a sync succeeded and none fails now) and Synchronizing (a sync runs now).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The last restore of the volume.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRestore {
    /// When it ended.
    pub time: String,
    /// The Pod whose init container ran it.
    pub pod: String,
    /// success, skipped, refused or failure.
    pub result: String,
    /// The safety rule that refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why it failed, was refused or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What one running Pod's sidecar reports.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSyncStatus {
    /// The Pod's name.
    pub name: String,
    /// The sidecar's health rules that fail now (consecutive-failures, no-recent-success,
    /// sync-running-too-long, remote-in-use); empty when healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unhealthy: Vec<String>,
    /// When its last sync ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// Its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_result: Option<String>,
    /// The safety rule that refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_rule: Option<String>,
    /// Failed or refused syncs since its last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Its next scheduled sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<String>,
    /// Why its sidecar could not be read (its /metrics), when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_error: Option<String>,
}

/// A condition, as the Kubernetes API conventions define it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready or Synchronizing.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// A CamelCase word: why.
    pub reason: String,
    /// The detail, for humans.
    pub message: String,
    /// When status last changed.
    pub last_transition_time: String,
    /// The metadata.generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl PodFilesystemSyncStatus {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
