//! The rules a workload (Deployment, ReplicaSet, StatefulSet, DaemonSet) must follow when its
//! Pods are injected: what only the workload knows (replicas, rollout strategy, whether its
//! Pods keep their names) decides whether its Pods can share a remote path safely.
//!
//! A remote path has one writer at a time (the lease), and a restore waits for that writer's
//! final sync. Three workload shapes therefore hang or lose data, and each is refused — by
//! `inject` and by the webhook, on CREATE and UPDATE of the workload — naming the rule and the
//! fix, so the user learns it when applying the workload instead of from a Pod stuck in
//! `Init:0/1`:
//! - `overlapping-rollout`: a Deployment whose rollout starts the new Pod before stopping the
//!   old one (RollingUpdate with a surge, the default). The new Pod's restore waits for the old
//!   Pod's lease; the old Pod is kept until the new one is Ready: every rollout deadlocks.
//!   Restoring without waiting would instead lose the old Pod's last writes, so that is never
//!   the way out. Fix: `strategy: Recreate` (or RollingUpdate with `maxSurge: 0`).
//! - `shared-remote-path`: more than one replica on one remote path (no `pod.name` in it):
//!   only one can write; the others wait at their restore until they give up.
//! - `unstable-pod-name`: `pod.name` in the remote path of a workload whose Pods get generated
//!   names (Deployment, ReplicaSet, DaemonSet): every new Pod restores from a path nothing was
//!   ever written to. Fix: a fixed path, or a StatefulSet (its Pods keep their names).
//!
//! Replicas changed through the scale subresource (`kubectl scale`, an autoscaler) are not seen
//! here; the restore's bounded wait and its message cover them.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::Value;

use super::common::{InjectError, field_err};
use super::matches;
use crate::resource::PodFilesystemSync;
use crate::template::{POD_NAME_REF, PodContext, render};

/// The kinds whose rules are checked here (others, a Job or a bare Pod, have none).
pub const CHECKED_KINDS: [&str; 4] = ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"];

/// What the rules read of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: String,
    /// `spec.replicas` (Kubernetes' default: 1; a DaemonSet has none).
    pub replicas: i32,
    /// Whether a rollout may run a new Pod beside an old one (a Deployment's strategy).
    pub rollout_overlaps: bool,
}

impl Workload {
    /// Reads `object` (a workload as JSON); None for a kind without rules here.
    pub fn of(kind: &str, object: &Value) -> Option<Workload> {
        if !CHECKED_KINDS.contains(&kind) {
            return None;
        }
        let spec = object.get("spec");
        let replicas = spec
            .and_then(|s| s.get("replicas"))
            .and_then(Value::as_i64)
            .map_or(1, |r| r.clamp(0, i32::MAX as i64) as i32);
        let rollout_overlaps = kind == "Deployment" && {
            let strategy = spec.and_then(|s| s.get("strategy"));
            let kind = strategy.and_then(|s| s.get("type")).and_then(Value::as_str);
            let surge = strategy
                .and_then(|s| s.get("rollingUpdate"))
                .and_then(|r| r.get("maxSurge"))
                .and_then(|v| serde_json::from_value::<IntOrString>(v.clone()).ok());
            kind != Some("Recreate") && surges(surge.as_ref())
        };
        Some(Workload {
            kind: kind.to_string(),
            replicas: if kind == "DaemonSet" { 1 } else { replicas },
            rollout_overlaps,
        })
    }

    /// Whether the Pods of this kind get generated names.
    fn generated_pod_names(&self) -> bool {
        self.kind != "StatefulSet"
    }
}

/// Whether a RollingUpdate's `maxSurge` lets a new Pod start before an old one stops (absent:
/// Kubernetes' default 25 %, which rounds up to at least one Pod).
fn surges(max_surge: Option<&IntOrString>) -> bool {
    match max_surge {
        None => true,
        Some(IntOrString::Int(n)) => *n > 0,
        Some(IntOrString::String(s)) => {
            let number = s.trim().trim_end_matches('%').trim();
            number.parse::<f64>().map_or(true, |n| n > 0.0)
        }
    }
}

/// Checks `workload`, whose Pod template is `template` in `namespace`, against every resource
/// of `syncs` that selects it; the error names the resource, the rule and the fix.
pub fn check(
    workload: &Workload,
    template: &PodTemplateSpec,
    namespace: Option<&str>,
    syncs: &[PodFilesystemSync],
) -> Result<(), InjectError> {
    let meta = template.metadata.clone().unwrap_or_default();
    let namespace = meta.namespace.as_deref().or(namespace);
    let labels = meta.labels.clone().unwrap_or_default();
    let ctx = PodContext {
        labels: labels.clone(),
        annotations: meta.annotations.clone().unwrap_or_default(),
    };
    for sync in syncs {
        if !matches(sync, namespace, &labels)? {
            continue;
        }
        let opts = &sync.spec.sync_options;
        let restores = opts.allowed_directories.from_remote;
        let writes = opts.allowed_directories.to_remote;
        // A template that does not render is the injection's error to report, not this one's.
        let Ok(remote) = render(&sync.spec.remote_path, &ctx) else {
            continue;
        };
        let per_pod = remote.contains(POD_NAME_REF);
        let refuse = |rule: &str, message: String| {
            Err(field_err(
                sync,
                "spec.remotePath",
                format!("{message} (rule {rule})"),
            ))
        };
        if per_pod && restores && workload.generated_pod_names() {
            return refuse(
                "unstable-pod-name",
                format!(
                    "the remote path {:?} names pod.name, and a {}'s Pods get a new generated \
                     name each: every new Pod would restore from a path nothing was written to. \
                     Use a path without pod.name, or a StatefulSet (its Pods keep their names)",
                    sync.spec.remote_path, workload.kind
                ),
            );
        }
        if !per_pod && writes && workload.replicas > 1 {
            let fix = if workload.kind == "StatefulSet" {
                "put {{ pod.name }} in remotePath (a path per Pod)"
            } else {
                "use replicas: 1, or a StatefulSet with {{ pod.name }} in remotePath"
            };
            return refuse(
                "shared-remote-path",
                format!(
                    "its {} replicas would share the remote path {remote:?}, which has one \
                     writer at a time (the lease): the others would wait at their restore until \
                     they give up. {fix}",
                    workload.replicas
                ),
            );
        }
        if workload.rollout_overlaps && restores && writes && !per_pod {
            return Err(InjectError {
                field: "spec.strategy".into(),
                message: format!(
                    "PodFilesystemSync {} restores its Pods' volume from {remote:?}, and this \
                     rollout strategy starts the new Pod before the old one stops \
                     (RollingUpdate with maxSurge above 0, the default): the new Pod's restore \
                     waits for the old Pod's final sync, and the old Pod is kept until the new \
                     one is Ready, so every rollout would hang (restoring without waiting would \
                     lose the old Pod's last writes). Set spec.strategy.type: Recreate (or \
                     RollingUpdate with maxSurge: 0) (rule overlapping-rollout)",
                    sync.name_any()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::PodFilesystemSyncSpec;
    use serde_json::json;

    fn sync(remote: &str, options: Value) -> PodFilesystemSync {
        let spec: PodFilesystemSyncSpec = serde_json::from_value(json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "localPath": "/data",
            "remotePath": remote,
            "syncOptions": options,
        }))
        .unwrap();
        PodFilesystemSync::new("backup", spec)
    }

    /// The rule that refuses `kind` with `spec`, or None when it is allowed.
    fn refused(kind: &str, spec: Value, s: &PodFilesystemSync) -> Option<String> {
        let object = json!({"kind": kind, "metadata": {"name": "w"}, "spec": spec});
        let workload = Workload::of(kind, &object)?;
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": []},
        }))
        .unwrap();
        let err = check(&workload, &template, None, std::slice::from_ref(s)).err()?;
        assert!(
            err.to_string().contains("PodFilesystemSync backup"),
            "{err}"
        );
        let rule = err.message.rsplit("(rule ").next().unwrap();
        Some(rule.trim_end_matches(')').to_string())
    }

    #[test]
    fn each_rule_with_the_shapes_that_break_it_and_those_that_do_not() {
        let fixed = sync("b/app", json!({}));
        let per_pod = sync("b/{{ pod.name }}", json!({}));
        let no_restore = sync(
            "b/app",
            json!({"allowedDirectories": {"fromRemote": false}}),
        );
        let rule = Some;
        let cases: [(&str, Value, &PodFilesystemSync, Option<&str>); 16] = [
            // The default strategy (RollingUpdate, 25 % surge) overlaps, also at one replica.
            ("Deployment", json!({}), &fixed, rule("overlapping-rollout")),
            (
                "Deployment",
                json!({"strategy": {"type": "RollingUpdate"}}),
                &fixed,
                rule("overlapping-rollout"),
            ),
            (
                "Deployment",
                json!({"strategy": {"rollingUpdate": {"maxSurge": "10%"}}}),
                &fixed,
                rule("overlapping-rollout"),
            ),
            (
                "Deployment",
                json!({"strategy": {"rollingUpdate": {"maxSurge": 1}}}),
                &fixed,
                rule("overlapping-rollout"),
            ),
            (
                "Deployment",
                json!({"strategy": {"type": "Recreate"}}),
                &fixed,
                None,
            ),
            (
                "Deployment",
                json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}}),
                &fixed,
                None,
            ),
            (
                "Deployment",
                json!({"strategy": {"rollingUpdate": {"maxSurge": "0%"}}}),
                &fixed,
                None,
            ),
            // Without a restore nothing waits for the old Pod.
            ("Deployment", json!({}), &no_restore, None),
            (
                "Deployment",
                json!({"replicas": 2, "strategy": {"type": "Recreate"}}),
                &fixed,
                rule("shared-remote-path"),
            ),
            (
                "ReplicaSet",
                json!({"replicas": 3}),
                &fixed,
                rule("shared-remote-path"),
            ),
            ("ReplicaSet", json!({"replicas": 1}), &fixed, None),
            (
                "StatefulSet",
                json!({"replicas": 2}),
                &fixed,
                rule("shared-remote-path"),
            ),
            ("StatefulSet", json!({"replicas": 2}), &per_pod, None),
            (
                "Deployment",
                json!({"strategy": {"type": "Recreate"}}),
                &per_pod,
                rule("unstable-pod-name"),
            ),
            ("DaemonSet", json!({}), &per_pod, rule("unstable-pod-name")),
            // Not a workload with rules: a Job.
            ("Job", json!({"parallelism": 5}), &fixed, None),
        ];
        for (kind, spec, s, want) in cases {
            assert_eq!(
                refused(kind, spec.clone(), s).as_deref(),
                want,
                "{kind} {spec} with remotePath {}",
                s.spec.remote_path
            );
        }
    }

    #[test]
    fn the_refusal_names_the_fix() {
        let object = json!({"kind": "Deployment", "spec": {}});
        let workload = Workload::of("Deployment", &object).unwrap();
        let template: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}})).unwrap();
        let err = check(&workload, &template, None, &[sync("b/app", json!({}))]).unwrap_err();
        assert!(
            err.message.contains("spec.strategy.type: Recreate"),
            "{err}"
        );
        assert!(err.message.contains("maxSurge: 0"), "{err}");
        // A template no resource selects is not checked.
        let other: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "db"}}})).unwrap();
        assert!(check(&workload, &other, None, &[sync("b/app", json!({}))]).is_ok());
    }
}
