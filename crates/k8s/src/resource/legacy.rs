//! The original operator's spellings of a `PodFilesystemSync`, read and normalized to the
//! canonical types of [`super`].
//!
//! Users come from riotkit-org/volume-syncing-operator (Go) with the resources its READMEs
//! document. Two shapes are accepted as written:
//! - the later design: `syncOptions.maxOneSyncPerMinutes: "15"` and `permissions.uid: "1001"`
//!   (strings of digits), `syncOptions.allowedDirections` (for `allowedDirectories`),
//!   `envFromSecrets: [{name: …}]` (for `envFromSecret: [{ref: …}]`), and templates with Go
//!   field names (`pod.ObjectMeta.Annotations`, which [`crate::template`] understands);
//! - the earliest README's short form: `spec.schedule` (for `syncOptions.schedule`), a
//!   `podSelector` that is a plain map of labels (for `matchLabels`), and
//!   `automaticEncryption: true` (for `{enabled: true}`, with the default Secret name
//!   [`default_secret_name`]).
//!
//! Decisions:
//! - Normalization is deserialization: the spec's `Deserialize` reads [`RawSpec`] (the canonical
//!   fields plus the legacy ones, unknown fields still denied) and converts it, so `inject`, the
//!   webhook and the operator's cache never see a legacy spelling, and serializing writes the
//!   canonical form. The raw forms' fields are read by the same deserializer, so an error keeps
//!   its precise path (`spec.syncOptions.maxOneSyncPerMinutes: …`).
//! - A legacy field and its canonical twin both set to different values is an error naming
//!   both; the same value twice is accepted.
//! - The API server prunes unknown fields before any webhook sees them, so the generated schema
//!   lists the legacy shapes itself ([`super::shapes`]: the field readers and schemas, and the
//!   transforms that add `spec.schedule`, `envFromSecrets` and `allowedDirections`). Defaults of
//!   fields that have a legacy twin are left out of the schema: a default the API server writes
//!   for `syncOptions.schedule` would look like a conflict with `spec.schedule`.
//! - `automaticEncryption: true` means `{enabled: true}`; the Secret's name then defaults to
//!   `<metadata.name>-remote-sync` ([`super::default_secret_name`]).
//! - Nothing names this module: the types reach it through their `Deserialize`, so the types
//!   and their readers form no import cycle.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::shapes::{minutes, pod_selector};
use super::{
    AllowedDirectories, AutomaticEncryption, CleanUp, InitContainerPlacement, Permissions,
    PodFilesystemSyncSpec, SecretReference, SyncMethod, SyncOptions, default_metrics_port,
    default_schedule, default_shutdown_timeout, default_true,
};

/// Legacy spelling → canonical spelling, for suggestions.
pub const ALIASES: [(&str, &str); 3] = [
    ("spec.schedule", "spec.syncOptions.schedule"),
    ("spec.envFromSecrets", "spec.envFromSecret"),
    (
        "spec.syncOptions.allowedDirections",
        "spec.syncOptions.allowedDirectories",
    ),
];

/// A spec as users may write it: the canonical fields and the original operator's.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSpec {
    #[serde(deserialize_with = "pod_selector")]
    pod_selector: LabelSelector,
    local_path: String,
    remote_path: String,
    #[serde(default)]
    init_container_placement: InitContainerPlacement,
    #[serde(default)]
    sync_options: Option<RawSyncOptions>,
    /// Legacy: `syncOptions.schedule`.
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    env_from_secret: Option<Vec<SecretReference>>,
    /// Legacy: `envFromSecret`, as Kubernetes SecretReferences (`name`).
    #[serde(default)]
    env_from_secrets: Option<Vec<NamedSecret>>,
    #[serde(default, deserialize_with = "automatic_encryption")]
    automatic_encryption: AutomaticEncryption,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    resources: Option<ResourceRequirements>,
    #[serde(default = "default_shutdown_timeout")]
    shutdown_timeout: String,
    #[serde(default = "default_metrics_port")]
    metrics_port: u16,
}

/// `syncOptions` as users may write it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSyncOptions {
    #[serde(default)]
    method: SyncMethod,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default, deserialize_with = "minutes")]
    max_one_sync_per_minutes: Option<u32>,
    #[serde(default)]
    permissions: Permissions,
    #[serde(default)]
    clean_up: CleanUp,
    #[serde(default)]
    allowed_directories: Option<AllowedDirectories>,
    /// Legacy: `allowedDirectories`.
    #[serde(default)]
    allowed_directions: Option<AllowedDirectories>,
    #[serde(default = "default_true")]
    restore_remote_on_first_run: bool,
}

/// An absent `syncOptions`: the same defaults as an empty one.
impl Default for RawSyncOptions {
    fn default() -> Self {
        RawSyncOptions {
            method: SyncMethod::default(),
            schedule: None,
            max_one_sync_per_minutes: None,
            permissions: Permissions::default(),
            clean_up: CleanUp::default(),
            allowed_directories: None,
            allowed_directions: None,
            restore_remote_on_first_run: default_true(),
        }
    }
}

/// The original's `envFromSecrets` item (a Kubernetes SecretReference, without a namespace:
/// a Pod reads Secrets of its own namespace only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedSecret {
    /// The Secret's name.
    name: String,
}

/// `a` and its twin `b` (full paths in the messages), one value: either, or both when equal.
fn one_of<T: PartialEq + Serialize>(
    a: (&str, Option<T>),
    b: (&str, Option<T>),
) -> Result<Option<T>, String> {
    let json = |v: &T| serde_json::to_string(v).unwrap_or_default();
    match (a.1, b.1) {
        (Some(x), Some(y)) if x != y => Err(format!(
            "{} ({}) and {} ({}) are both set, to different values; they are two spellings of \
             one setting: keep {}",
            a.0,
            json(&x),
            b.0,
            json(&y),
            b.0
        )),
        (x, y) => Ok(y.or(x)),
    }
}

impl TryFrom<RawSpec> for PodFilesystemSyncSpec {
    type Error = String;

    fn try_from(raw: RawSpec) -> Result<Self, String> {
        let mut options = raw.sync_options.unwrap_or_default();
        let schedule = one_of(
            ("spec.schedule", raw.schedule),
            ("spec.syncOptions.schedule", options.schedule.take()),
        )?;
        let env_from_secrets = raw.env_from_secrets.map(|list| {
            list.into_iter()
                .map(|s| SecretReference { reference: s.name })
                .collect::<Vec<_>>()
        });
        let env_from_secret = one_of(
            ("spec.envFromSecrets", env_from_secrets),
            ("spec.envFromSecret", raw.env_from_secret),
        )?;
        let allowed_directories = one_of(
            (
                "spec.syncOptions.allowedDirections",
                options.allowed_directions,
            ),
            (
                "spec.syncOptions.allowedDirectories",
                options.allowed_directories,
            ),
        )?;
        Ok(PodFilesystemSyncSpec {
            pod_selector: raw.pod_selector,
            local_path: raw.local_path,
            remote_path: raw.remote_path,
            init_container_placement: raw.init_container_placement,
            sync_options: SyncOptions {
                method: options.method,
                schedule: schedule.unwrap_or_else(default_schedule),
                max_one_sync_per_minutes: options.max_one_sync_per_minutes,
                permissions: options.permissions,
                clean_up: options.clean_up,
                allowed_directories: allowed_directories.unwrap_or_default(),
                restore_remote_on_first_run: options.restore_remote_on_first_run,
            },
            env: raw.env,
            env_from_secret: env_from_secret.unwrap_or_default(),
            automatic_encryption: raw.automatic_encryption,
            image: raw.image,
            resources: raw.resources,
            shutdown_timeout: raw.shutdown_timeout,
            metrics_port: raw.metrics_port,
        })
    }
}

impl<'de> Deserialize<'de> for PodFilesystemSyncSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawSpec::deserialize(deserializer)?
            .try_into()
            .map_err(de::Error::custom)
    }
}

/// `automaticEncryption`: `{enabled, secretName}`, or a boolean (the short form).
fn automatic_encryption<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<AutomaticEncryption, D::Error> {
    struct EncryptionVisitor;
    impl<'de> Visitor<'de> for EncryptionVisitor {
        type Value = AutomaticEncryption;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("true, false or {enabled, secretName}")
        }

        fn visit_bool<E: de::Error>(self, enabled: bool) -> Result<AutomaticEncryption, E> {
            Ok(AutomaticEncryption {
                enabled,
                secret_name: None,
            })
        }

        fn visit_unit<E: de::Error>(self) -> Result<AutomaticEncryption, E> {
            Ok(AutomaticEncryption::default())
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AutomaticEncryption, A::Error> {
            AutomaticEncryption::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_any(EncryptionVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::default_secret_name;
    use serde_json::{Value, json};

    fn spec(v: Value) -> Result<PodFilesystemSyncSpec, String> {
        serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    fn base(extra: Value) -> Value {
        let mut v = json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "localPath": "/data",
            "remotePath": "bucket/web",
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn the_later_design_equals_its_canonical_spelling() {
        let legacy = spec(base(json!({
            "syncOptions": {
                "method": "fsnotify",
                "maxOneSyncPerMinutes": "15",
                "permissions": {"uid": "1001", "gid": "1001"},
                "allowedDirections": {"toRemote": true, "fromRemote": false},
            },
            "envFromSecrets": [{"name": "creds"}],
        })))
        .unwrap();
        let canonical = spec(base(json!({
            "syncOptions": {
                "method": "fsnotify",
                "maxOneSyncPerMinutes": 15,
                "permissions": {"uid": 1001, "gid": 1001},
                "allowedDirectories": {"toRemote": true, "fromRemote": false},
            },
            "envFromSecret": [{"ref": "creds"}],
        })))
        .unwrap();
        assert_eq!(legacy, canonical);
        assert_eq!(legacy.sync_options.max_one_sync_per_minutes, Some(15));
        assert_eq!(legacy.sync_options.permissions.uid, Some(1001));
        assert!(!legacy.sync_options.allowed_directories.from_remote);
        assert_eq!(legacy.env_from_secret[0].reference, "creds");
    }

    #[test]
    fn the_short_form_equals_its_canonical_spelling() {
        let legacy = spec(json!({
            "podSelector": {"my-pod-label": "test"},
            "localPath": "/data",
            "remotePath": "/example-org-bucket",
            "schedule": "@every 1m",
            "automaticEncryption": true,
        }))
        .unwrap();
        let canonical = spec(json!({
            "podSelector": {"matchLabels": {"my-pod-label": "test"}},
            "localPath": "/data",
            "remotePath": "/example-org-bucket",
            "syncOptions": {"schedule": "@every 1m"},
            "automaticEncryption": {"enabled": true},
        }))
        .unwrap();
        assert_eq!(legacy, canonical);
        assert_eq!(legacy.sync_options.schedule, "@every 1m");
        assert!(legacy.automatic_encryption.enabled);
        let off = spec(base(json!({"automaticEncryption": false}))).unwrap();
        assert_eq!(off.automatic_encryption, AutomaticEncryption::default());
        // An empty plain map is the empty selector, as `{}` always was.
        let all = spec(json!({"podSelector": {}, "localPath": "/d", "remotePath": "b/d"})).unwrap();
        assert_eq!(all.pod_selector, LabelSelector::default());
        // Without syncOptions, its defaults; with an empty one, the same.
        let empty = spec(base(json!({"syncOptions": {}}))).unwrap();
        assert_eq!(spec(base(json!({}))).unwrap(), empty);
        assert_eq!(empty.sync_options, SyncOptions::default());
    }

    #[test]
    fn serializing_writes_the_canonical_form() {
        let legacy = spec(base(json!({
            "schedule": "@every 1m",
            "syncOptions": {"maxOneSyncPerMinutes": "15"},
            "automaticEncryption": true,
        })))
        .unwrap();
        let written = serde_json::to_value(&legacy).unwrap();
        assert!(written.get("schedule").is_none(), "{written}");
        assert_eq!(written["syncOptions"]["schedule"], "@every 1m");
        assert_eq!(written["syncOptions"]["maxOneSyncPerMinutes"], 15);
        assert_eq!(written["automaticEncryption"], json!({"enabled": true}));
        // And reads back as itself.
        assert_eq!(spec(written).unwrap(), legacy);
    }

    #[test]
    fn twins_with_different_values_are_an_error_naming_both() {
        let err = spec(base(json!({
            "schedule": "@every 1m",
            "syncOptions": {"schedule": "@every 5m"},
        })))
        .unwrap_err();
        assert!(err.contains("spec.schedule"), "{err}");
        assert!(err.contains("spec.syncOptions.schedule"), "{err}");
        assert!(err.contains("different values"), "{err}");
        // The same value twice is one setting.
        let same = spec(base(json!({
            "schedule": "@every 1m",
            "syncOptions": {"schedule": "@every 1m"},
        })))
        .unwrap();
        assert_eq!(same.sync_options.schedule, "@every 1m");
        let err = spec(base(json!({
            "syncOptions": {
                "allowedDirections": {"toRemote": false},
                "allowedDirectories": {"fromRemote": false},
            },
        })))
        .unwrap_err();
        assert!(err.contains("spec.syncOptions.allowedDirections"), "{err}");
        assert!(err.contains("spec.syncOptions.allowedDirectories"), "{err}");
        let err = spec(base(json!({
            "envFromSecret": [{"ref": "a"}],
            "envFromSecrets": [{"name": "b"}],
        })))
        .unwrap_err();
        assert!(err.contains("spec.envFromSecrets"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let err = spec(base(
            json!({"syncOptions": {"maxOneSyncPerMinutes": "abc"}}),
        ))
        .unwrap_err();
        assert!(
            err.starts_with("syncOptions.maxOneSyncPerMinutes: "),
            "{err}"
        );
        assert!(err.contains("\"abc\""), "{err}");
        assert!(spec(base(json!({"syncOptions": {"maxOneSyncPerMinutes": "-1"}}))).is_err());
        assert!(spec(base(json!({"syncOptions": {"maxOneSyncPerMinutes": -1}}))).is_err());
        let err = spec(base(
            json!({"syncOptions": {"permissions": {"uid": "root"}}}),
        ))
        .unwrap_err();
        assert!(err.starts_with("syncOptions.permissions.uid: "), "{err}");
        let err = spec(base(json!({"automaticEncryption": "yes"}))).unwrap_err();
        assert!(err.starts_with("automaticEncryption: "), "{err}");
        // Inside the object form, the path goes on.
        let err = spec(base(json!({"automaticEncryption": {"enabled": "yes"}}))).unwrap_err();
        assert!(err.starts_with("automaticEncryption.enabled: "), "{err}");
    }

    #[test]
    fn a_selector_is_structured_or_plain_never_both() {
        let err = spec(json!({
            "podSelector": {"matchLabels": {"app": "web"}, "tier": "db"},
            "localPath": "/d", "remotePath": "b/d",
        }))
        .unwrap_err();
        assert!(err.contains("mixes"), "{err}");
        assert!(err.contains("tier"), "{err}");
        let err = spec(json!({
            "podSelector": {"matchLabel": {"app": "web"}},
            "localPath": "/d", "remotePath": "b/d",
        }))
        .unwrap_err();
        assert!(err.contains("unknown field `matchLabel`"), "{err}");
        let (path, message) = err.split_once(": ").unwrap();
        assert!(
            crate::resource::suggest::explain(&format!("spec.{path}"), message)
                .ends_with("did you mean spec.podSelector.matchLabels?"),
            "{err}"
        );
        let err = spec(json!({
            "podSelector": {"version": 1},
            "localPath": "/d", "remotePath": "b/d",
        }))
        .unwrap_err();
        assert!(err.contains("a label's value is a string"), "{err}");
        let err = spec(json!({
            "podSelector": {"matchExpressions": [{"key": "app", "operator": 3}]},
            "localPath": "/d", "remotePath": "b/d",
        }))
        .unwrap_err();
        assert!(
            err.starts_with("podSelector.matchExpressions[0].operator: "),
            "{err}"
        );
    }

    /// The fields serde's unknown-field error lists for `value`'s level.
    fn accepted(value: Value, at: &str) -> Vec<String> {
        let err = spec(value).unwrap_err();
        let list = err
            .split_once("expected one of ")
            .unwrap_or_else(|| panic!("{at}: {err}"))
            .1;
        let mut out: Vec<String> = list
            .split(", ")
            .map(|s| s.trim_matches('`').into())
            .collect();
        out.sort();
        out
    }

    /// The schema's properties at `pointer` in the CRD.
    fn listed(pointer: &str) -> Vec<String> {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(crate::resource::PodFilesystemSync::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut out: Vec<String> = schema
            .pointer(pointer)
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{pointer}"))
            .keys()
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// The API server keeps exactly what the reader accepts: every field the raw forms read is
    /// in the schema (else it would be pruned before the webhook saw it), and every field of the
    /// schema is read (else it would be stored and refused).
    #[test]
    fn the_schema_lists_exactly_the_fields_that_are_read() {
        assert_eq!(
            accepted(base(json!({"zzz": 1})), "spec"),
            listed("/properties/spec/properties")
        );
        assert_eq!(
            accepted(base(json!({"syncOptions": {"zzz": 1}})), "syncOptions"),
            listed("/properties/spec/properties/syncOptions/properties")
        );
        let schema = listed("/properties/spec/properties/syncOptions/properties");
        assert!(schema.contains(&"allowedDirections".to_string()));
    }

    #[test]
    fn the_schema_has_no_default_that_would_look_like_a_conflict() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(crate::resource::PodFilesystemSync::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["syncOptions"]["default"], json!({}));
        assert!(spec["envFromSecret"].get("default").is_none());
        let options = &spec["syncOptions"]["properties"];
        assert!(options["schedule"].get("default").is_none());
        assert!(options["allowedDirectories"].get("default").is_none());
        assert!(options["allowedDirections"].get("default").is_none());
        // Fields without a twin keep theirs.
        assert_eq!(options["method"]["default"], "scheduler");
        assert_eq!(spec["metricsPort"]["default"], 9090);
    }

    #[test]
    fn the_default_secret_is_named_after_the_resource() {
        assert_eq!(
            default_secret_name("cloud-press").unwrap(),
            "cloud-press-remote-sync"
        );
        assert!(default_secret_name("").is_err());
        assert!(default_secret_name(&"a".repeat(250)).is_err());
    }
}
