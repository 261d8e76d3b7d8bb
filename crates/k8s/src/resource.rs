//! The `PodFilesystemSync` custom resource (`riotkit.org/v1alpha1`, short name `pfss`): what a
//! user writes to have a Pod's directory kept in a remote.
//!
//! These Rust types are the one source of truth: the CRD YAML under `deploy/crd/` is generated
//! from them (`CustomResource` derive + schemars), so the schema, its enums and its defaults
//! cannot drift from what the injection core reads. Every struct denies unknown fields: a typo
//! in a resource is an error at injection time, never a silently ignored setting.
//!
//! Defaults live in serde (`#[serde(default = …)]`), which schemars also writes into the
//! schema, so the API server and `inject` (offline, no API server) apply the same values.
//!
//! Resources written for the original Go operator are accepted as written: the spec is read
//! through the raw forms of the `legacy` module, which also take the original's spellings and
//! normalize them, so every reader (`inject`, the webhook's cache) sees only the canonical types
//! below and serializing writes the canonical form; the `shapes` module has the field-level
//! readers and the schema of those spellings. An unknown field is still an error; [`suggest`]
//! names the nearest known one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;

pub use crate::status::PodFilesystemSyncStatus;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod legacy;
mod shapes;
pub mod suggest;

/// What to sync, where, and how: turned into a restore init container and a sync sidecar in
/// every Pod the selector matches.
// (Not a doc comment, which would go into the CRD.) Read through the `legacy` module's raw
// form, the canonical fields plus the original operator's spellings; the schema lists both.
#[derive(CustomResource, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "riotkit.org",
    version = "v1alpha1",
    kind = "PodFilesystemSync",
    namespaced,
    shortname = "pfss",
    doc = "Keeps a directory of the matching Pods in sync with an rclone remote.",
    status = "PodFilesystemSyncStatus",
    printcolumn = r#"{"name":"Last Sync","type":"string","format":"date-time","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Next Sync","type":"string","format":"date-time","jsonPath":".status.nextSyncTime"}"#,
    printcolumn = r#"{"name":"Result","type":"string","jsonPath":".status.lastSyncResult"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.pods"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Bytes","type":"integer","priority":1,"jsonPath":".status.lastTransferredBytes"}"#,
    printcolumn = r#"{"name":"Rule","type":"string","priority":1,"jsonPath":".status.lastSyncRule"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = shapes::spec_schema)]
pub struct PodFilesystemSyncSpec {
    /// The Pods (by their labels) that get the containers; in the same namespace. Also a plain
    /// map of labels (the original operator's short form), meaning matchLabels.
    #[schemars(schema_with = "shapes::pod_selector_schema")]
    pub pod_selector: LabelSelector,
    /// The directory inside the app's volume, as the app's containers see it (absolute).
    pub local_path: String,
    /// The path on the remote (bucket/path); a template over the Pod (name, namespace, labels,
    /// annotations).
    pub remote_path: String,
    /// Where the restore init container goes among the Pod's init containers.
    #[serde(default)]
    pub init_container_placement: InitContainerPlacement,
    /// How and when to sync.
    #[serde(default)]
    pub sync_options: SyncOptions,
    /// Environment variables of both containers; values are templates like remotePath.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secrets whose keys become environment variables of both containers (e.g. REMOTE_*).
    #[serde(default)]
    pub env_from_secret: Vec<SecretReference>,
    /// End-to-end encryption with the passphrase from a Secret; `true` is short for
    /// `{enabled: true}`.
    #[serde(default)]
    #[schemars(schema_with = "shapes::automatic_encryption_schema")]
    pub automatic_encryption: AutomaticEncryption,
    /// The container image of both containers (default: the injector's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resource requests and limits of both containers (default: 50m/64Mi requested, 500m/256Mi
    /// limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Upper bound for the sidecar's final sync when the Pod stops (e.g. 2m, 90s). The Pod's
    /// terminationGracePeriodSeconds is raised to at least this plus one minute.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: String,
    /// The sidecar serves /metrics, /healthz, /livez and /readyz on this port (0: off); its
    /// liveness probe is /livez.
    #[serde(default = "default_metrics_port")]
    pub metrics_port: u16,
}

fn default_shutdown_timeout() -> String {
    "2m".to_string()
}

fn default_metrics_port() -> u16 {
    9090
}

fn default_true() -> bool {
    true
}

fn default_schedule() -> String {
    "@every 5m".to_string()
}

/// Where the restore init container goes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitContainerPlacement {
    /// The init container that `before` / `after` refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_reference: Option<String>,
    /// first, last, or before/after containerReference.
    #[serde(default)]
    pub placement: Placement,
}

/// The position of the restore init container among the Pod's init containers.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    Before,
    After,
    First,
    #[default]
    Last,
}

/// How and when the sidecar syncs, and what may be deleted.
// Read as part of the spec (through the `legacy` module's raw form), never on its own.
#[derive(Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = shapes::sync_options_schema)]
pub struct SyncOptions {
    /// scheduler: on `schedule`; fsnotify: on file changes.
    #[serde(default)]
    pub method: SyncMethod,
    /// With method scheduler: `@every 5m`, cron, @hourly …
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// With method fsnotify: at most one sync per this many minutes (default: no limit); a
    /// number, or a string of digits as the original operator wrote it ("15").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "shapes::minutes_schema")]
    pub max_one_sync_per_minutes: Option<u32>,
    /// The uid/gid both containers run as (Pod annotations riotkit.org/volume-user-id and
    /// riotkit.org/volume-group-id win).
    #[serde(default)]
    pub permissions: Permissions,
    /// Whether a sync may delete at its destination, and the safety-valve overrides.
    #[serde(default)]
    pub clean_up: CleanUp,
    /// Which directions run: toRemote (the sidecar), fromRemote (the restore).
    #[serde(default)]
    pub allowed_directories: AllowedDirectories,
    /// Restore the volume from the remote even on the first start of a remote path (true), or
    /// only once an upload has written that path (false: the first Pod ever to use it keeps
    /// its own data; decided at run time by the restore, per remote path).
    #[serde(default = "default_true")]
    pub restore_remote_on_first_run: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            method: SyncMethod::default(),
            schedule: default_schedule(),
            max_one_sync_per_minutes: None,
            permissions: Permissions::default(),
            clean_up: CleanUp::default(),
            allowed_directories: AllowedDirectories::default(),
            restore_remote_on_first_run: true,
        }
    }
}

/// What triggers the sidecar's syncs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncMethod {
    #[default]
    Scheduler,
    Fsnotify,
}

/// The uid and gid of the containers: numbers, or strings of digits as the original operator
/// wrote them ("1001").
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Permissions {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "shapes::id"
    )]
    #[schemars(schema_with = "shapes::id_schema")]
    pub uid: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "shapes::id"
    )]
    #[schemars(schema_with = "shapes::id_schema")]
    pub gid: Option<i64>,
}

/// Deletion at the destination: false copies without deleting (`-x`); force passes the
/// override flag of the safety valves.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleanUp {
    /// The sidecar deletes on the remote what was deleted locally.
    #[serde(default = "default_true")]
    pub remote: bool,
    /// The restore deletes local files that are not on the remote.
    #[serde(default = "default_true")]
    pub local: bool,
    /// The sidecar uploads even an empty directory (--force-even-if-remote-would-be-cleared).
    #[serde(default)]
    pub force_remote: bool,
    /// The restore deletes local data even when refused (--force-delete-local-dir).
    #[serde(default)]
    pub force_local: bool,
}

impl Default for CleanUp {
    fn default() -> Self {
        CleanUp {
            remote: true,
            local: true,
            force_remote: false,
            force_local: false,
        }
    }
}

/// The directions that run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedDirectories {
    /// The sidecar (local → remote).
    #[serde(default = "default_true")]
    pub to_remote: bool,
    /// The restore init container (remote → local).
    #[serde(default = "default_true")]
    pub from_remote: bool,
}

impl Default for AllowedDirectories {
    fn default() -> Self {
        AllowedDirectories {
            to_remote: true,
            from_remote: true,
        }
    }
}

/// A Secret in the Pod's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretReference {
    /// The Secret's name.
    #[serde(rename = "ref")]
    pub reference: String,
}

/// End-to-end encryption (rclone crypt).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutomaticEncryption {
    /// Encrypt.
    #[serde(default)]
    pub enabled: bool,
    /// The Secret holding the passphrase under the key ENCRYPTION_PASSPHRASE (default: the
    /// resource's name followed by `-remote-sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// Suffix of the default Secret of `automaticEncryption` (after the resource's name).
const DEFAULT_SECRET_SUFFIX: &str = "-remote-sync";

/// The Secret of the passphrase when `automaticEncryption` names none: `<resource>-remote-sync`.
pub fn default_secret_name(resource: &str) -> Result<String, String> {
    if resource.is_empty() {
        return Err("no secretName, and the resource has no name to derive one from".into());
    }
    let name = format!("{resource}{DEFAULT_SECRET_SUFFIX}");
    // A Secret's name is a DNS subdomain (at most 253 characters).
    if name.len() > 253 {
        return Err(format!(
            "no secretName, and the default {name:?} is longer than a Secret's name may be \
             (253): set secretName"
        ));
    }
    Ok(name)
}

impl PodFilesystemSync {
    /// With encryption enabled, the Secret of its passphrase: `secretName`, or the default
    /// ([`default_secret_name`]); an error (for `spec.automaticEncryption.secretName`) when
    /// `secretName` is blank or the default would not be a valid Secret name.
    pub fn encryption_secret(&self) -> Option<Result<String, String>> {
        let encryption = &self.spec.automatic_encryption;
        if !encryption.enabled {
            return None;
        }
        Some(match encryption.secret_name.as_deref() {
            Some(name) if name.trim().is_empty() => Err(
                "is empty: name the Secret holding the passphrase, or leave secretName out \
                     for the default"
                    .into(),
            ),
            Some(name) => Ok(name.to_string()),
            None => default_secret_name(self.metadata.name.as_deref().unwrap_or("")),
        })
    }
}

/// The key of the encryption passphrase in `automaticEncryption.secretName` (the same name as
/// the environment variable, so one Secret also works with `envFrom`).
pub const PASSPHRASE_KEY: &str = "ENCRYPTION_PASSPHRASE";

/// The CRD as YAML, as committed under deploy/crd/.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = PodFilesystemSync::crd();
    let mut out = String::from(
        "# Generated from crates/k8s/src/resource.rs by `volume-syncing-operator crd`; do not edit.\n\
         # Regenerate: REFRESH_GOLDEN=1 cargo test --test it inject::\n",
    );
    out.push_str(&serde_yaml::to_string(&crd).expect("the CRD serializes"));
    out
}
