//! The injection core: a Pod template plus the `PodFilesystemSync` resources of its namespace
//! plus [`Settings`] → the Pod template with the restore init container and the sync sidecar.
//!
//! It is a pure function over typed k8s-openapi objects (no I/O, no clock, no API server), so
//! `inject` (offline) and the admission webhook are thin shells around the same code and the
//! same golden files test both. This file holds the entry ([`inject`], [`matches()`]) and the
//! orchestration: which resources apply, the checks over all of them and over the Pod, then
//! for each resource three steps, each in its own file:
//! - `validate.rs`: spec → plan (the resource and the Pod → a validated, typed plan, or the
//!   error that forbids it);
//! - `argv.rs`: plan → the restore's and the sidecar's command lines (cannot fail);
//! - `containers.rs`: plan + argv → the `Container`s, at their place in the Pod's spec;
//!
//! and `common.rs`, what the steps share (names, settings, errors, the Pod in progress): a
//! leaf, so no step imports this file and no import cycle is possible. `workload.rs` holds the
//! rules only a workload can break (replicas, rollout strategy, generated Pod names), checked
//! before its template is injected.
//!
//! Decisions:
//! - The containers mount the app's volume exactly as the app container with the longest
//!   mountPath above `localPath` does (same mountPath and subPath), so `localPath` means the
//!   same directory in every container. No such volume is an error, never a silent skip.
//! - Idempotent: an injected template carries [`INJECTED_ANNOTATION`] (what was added, as
//!   Istio's `sidecar.istio.io/status`) and is returned unchanged.
//! - Several resources on one Pod: sorted by name, the first gets the plain names
//!   (`init-volume-restore`, `volume-syncing-sidecar`), the next ones a `-2`, `-3` suffix; two
//!   for the same `localPath` are refused (they would fight over one directory).
//! - Only the injected containers get a security context (uid/gid from `permissions` or the
//!   Pod's annotations); the Pod-level one (fsGroup) belongs to the app and is left alone.

mod argv;
mod common;
mod containers;
mod validate;
pub mod workload;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::resource::PodFilesystemSync;
use super::template::PodContext;
use common::{DEFAULT_GRACE_SECONDS, GRACE_MARGIN_SECONDS, Ids, PodInjection, field_err, pod_err};
pub use common::{
    GROUP_ID_ANNOTATION, INJECTED_ANNOTATION, INJECTED_LABEL, InjectError, POD_FIELD_PREFIX,
    RESTORE_CONTAINER, SIDECAR_CONTAINER, Settings, TMP_VOLUME, USER_ID_ANNOTATION,
};
use containers::Added;

/// The result of [`inject`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// No resource matches, or the template was injected before: use it as it is.
    Unchanged,
    /// The injected template.
    Injected(Box<PodTemplateSpec>),
}

/// The value of [`INJECTED_ANNOTATION`].
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Record {
    resources: Vec<String>,
    init_containers: Vec<String>,
    containers: Vec<String>,
    volumes: Vec<String>,
}

/// The names of the injected containers of one resource in a Pod.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectedNames {
    pub restore: String,
    pub sidecar: String,
    /// The name of the sidecar's metrics port.
    pub metrics_port: String,
}

/// Every resource injected into a Pod with these annotations, with the names of its
/// containers, read from [`INJECTED_ANNOTATION`] (at most 64: the record is the Pod's, anyone
/// who may edit the Pod may edit it); empty when there is none or it does not parse.
pub fn injected_resources(annotations: &BTreeMap<String, String>) -> Vec<(String, InjectedNames)> {
    let Some(record) = annotations
        .get(INJECTED_ANNOTATION)
        .and_then(|r| serde_json::from_str::<Record>(r).ok())
    else {
        return Vec::new();
    };
    record
        .resources
        .into_iter()
        .take(64)
        .enumerate()
        .map(|(i, resource)| {
            let suffix = suffix(i);
            let names = InjectedNames {
                restore: format!("{RESTORE_CONTAINER}{suffix}"),
                sidecar: format!("{SIDECAR_CONTAINER}{suffix}"),
                metrics_port: format!("metrics{suffix}"),
            };
            (resource, names)
        })
        .collect()
}

/// The containers injected for the resource `sync` into a Pod with these annotations; None
/// when it was not injected for it.
pub fn injected_names(annotations: &BTreeMap<String, String>, sync: &str) -> Option<InjectedNames> {
    injected_resources(annotations)
        .into_iter()
        .find(|(r, _)| r == sync)
        .map(|(_, names)| names)
}

/// The suffix of the names of the `i`th resource's containers: `""`, `-2`, `-3`, …
fn suffix(i: usize) -> String {
    if i == 0 {
        String::new()
    } else {
        format!("-{}", i + 1)
    }
}

/// Whether `sync` applies to a Pod with `labels` in `namespace` (None: unknown, as for a
/// manifest without a namespace; then any resource's namespace matches).
pub fn matches(
    sync: &PodFilesystemSync,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, InjectError> {
    if let (Some(pod_ns), Some(sync_ns)) = (namespace, sync.metadata.namespace.as_deref())
        && pod_ns != sync_ns
    {
        return Ok(false);
    }
    selector_matches(&sync.spec.pod_selector, labels)
        .map_err(|(field, msg)| field_err(sync, &format!("spec.podSelector.{field}"), msg))
}

/// Kubernetes' LabelSelector semantics: all matchLabels and all matchExpressions must hold; an
/// empty selector matches everything.
fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, (String, String)> {
    let mut ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_deref().unwrap_or_default();
        let value = labels.get(&expr.key);
        let holds = match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err((
                    format!("matchExpressions[{i}].values"),
                    format!("operator {} needs values", expr.operator),
                ));
            }
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => !value.is_some_and(|v| values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err((
                    format!("matchExpressions[{i}].operator"),
                    format!("unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"),
                ));
            }
        };
        ok &= holds;
    }
    Ok(ok)
}

/// Injects every resource of `syncs` whose selector matches `template` (a Pod's metadata and
/// spec; `namespace` is the Pod's or its workload's, when known).
pub fn inject(
    template: &PodTemplateSpec,
    namespace: Option<&str>,
    syncs: &[PodFilesystemSync],
    settings: &Settings,
) -> Result<Outcome, InjectError> {
    let meta = template.metadata.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let labels = meta.labels.clone().unwrap_or_default();
    if annotations.contains_key(INJECTED_ANNOTATION) {
        return Ok(Outcome::Unchanged);
    }
    let namespace = meta.namespace.as_deref().or(namespace);
    let mut matching = Vec::new();
    for sync in syncs {
        if matches(sync, namespace, &labels)? {
            matching.push(sync);
        }
    }
    if matching.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    matching.sort_by_key(|s| s.name_any());
    validate::disjoint(&matching)?;

    let spec = template
        .spec
        .clone()
        .ok_or_else(|| pod_err("spec", "the Pod template has no spec"))?;
    // A classic sidecar never exits, so a run-to-completion Pod (a Job's) would never complete.
    let runs_to_completion = matches!(
        spec.restart_policy.as_deref(),
        Some("Never") | Some("OnFailure")
    );
    if runs_to_completion
        && !settings.native_sidecars
        && matching
            .iter()
            .any(|s| s.spec.sync_options.allowed_directories.to_remote)
    {
        return Err(pod_err(
            "spec.restartPolicy",
            "the Pod runs to completion (restartPolicy Never/OnFailure) and a classic sidecar \
             never exits, so it would never complete: use native sidecars (Kubernetes >= 1.29) \
             or set syncOptions.allowedDirectories.toRemote to false",
        ));
    }
    let ids = Ids::from_annotations(&annotations)?;
    let ctx = PodContext {
        labels,
        annotations: annotations.clone(),
    };
    let app_containers: Vec<Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .cloned()
        .collect();
    if spec.volumes.iter().flatten().any(|v| v.name == TMP_VOLUME) {
        return Err(pod_err(
            "spec.volumes",
            format!("a volume is already named {TMP_VOLUME}, which the injector adds"),
        ));
    }
    let used_ports: Vec<i32> = app_containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten().map(|p| p.container_port))
        .collect();
    let mut pod = PodInjection {
        settings,
        app_containers,
        ctx,
        ids,
        spec,
        used_ports,
    };

    let mut record = Record {
        volumes: vec![TMP_VOLUME.to_string()],
        ..Record::default()
    };
    let mut grace = None::<u64>;
    let mut first_metrics_port = None;
    for (i, sync) in matching.iter().enumerate() {
        let suffix = suffix(i);
        let added = pod.inject_one(sync, &suffix)?;
        record.resources.push(sync.name_any());
        record.init_containers.extend(added.init_containers);
        record.containers.extend(added.containers);
        if let Some(shutdown) = added.shutdown {
            let needed = shutdown.as_secs() + GRACE_MARGIN_SECONDS;
            grace = Some(grace.map_or(needed, |g| g.max(needed)));
        }
        if first_metrics_port.is_none() {
            first_metrics_port = added.metrics_port;
        }
    }

    let mut spec = pod.spec;
    spec.volumes
        .get_or_insert_with(Vec::new)
        .push(containers::tmp_volume());
    if let Some(needed) = grace {
        let current = spec
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        spec.termination_grace_period_seconds = Some(current.max(needed as i64));
    }

    let mut out_annotations = annotations;
    if let Some(port) = first_metrics_port
        && !out_annotations
            .keys()
            .any(|k| k.starts_with("prometheus.io/"))
    {
        out_annotations.insert("prometheus.io/scrape".into(), "true".into());
        out_annotations.insert("prometheus.io/port".into(), port.to_string());
        out_annotations.insert("prometheus.io/path".into(), "/metrics".into());
    }
    out_annotations.insert(
        INJECTED_ANNOTATION.into(),
        serde_json::to_string(&record).expect("the record serializes"),
    );
    let mut meta = meta;
    meta.annotations = Some(out_annotations);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(INJECTED_LABEL.into(), "true".into());
    Ok(Outcome::Injected(Box::new(PodTemplateSpec {
        metadata: Some(meta),
        spec: Some(spec),
    })))
}

impl PodInjection<'_> {
    /// Adds one resource's containers (`suffix` makes their names unique): spec → argv →
    /// containers.
    fn inject_one(&mut self, sync: &PodFilesystemSync, suffix: &str) -> Result<Added, InjectError> {
        let plan = validate::plan(self, sync, suffix)?;
        let argv = argv::Argv::of(&plan);
        containers::add(self, &plan, argv)
    }
}
