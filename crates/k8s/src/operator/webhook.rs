//! The admission webhook's decisions: an `AdmissionReview` for a Pod CREATE in, allowed /
//! patched / denied out; and for a workload's CREATE or UPDATE, allowed or denied by the rules
//! of [`crate::inject::workload`] (a rollout that would hang, replicas that would share a path).
//!
//! A thin shell around the injection core ([`crate::inject`]): the Pod becomes a template, the
//! core injects, and the answer is the JSON Patch of the difference between the Pod as read and
//! the Pod as injected (both through the same typed form, so a field the types do not know is
//! never touched by the patch). Decisions:
//! - Only Pods labelled [`POD_LABEL`]`: "true"` are handled (the webhook configuration's
//!   objectSelector sends only those; a Pod without it is allowed unchanged should one come).
//! - A labelled Pod that no resource selects, or any error of the core, is denied with a
//!   message naming the Pod, the resource and the field: a Pod that asked for its volume must
//!   not start without its restore, and is never admitted half-injected.
//! - An already injected Pod (reinvocation) is allowed unchanged: the core is idempotent.
//! - A workload is checked only when its Pod template carries [`POD_LABEL`]`: "true"`, and an
//!   UPDATE only when its spec changed (or it is being deleted: never): the controllers' own
//!   updates of a workload that broke a rule before the operator came must not be refused.
//! - The generated encryption keys are an effect, not part of the decision: the decision lists
//!   the Secrets the Pod needs and [`super::run`] gets or creates them (not on a dry run).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};

use crate::inject::workload::{Workload, check as check_workload};
use crate::inject::{INJECTED_ANNOTATION, Outcome, POD_FIELD_PREFIX, Settings, inject, matches};
use crate::resource::PodFilesystemSync;

/// The label that asks for injection; the webhook configuration selects on it.
pub const POD_LABEL: &str = "riotkit.org/volume-syncing-operator";

/// What to answer.
#[derive(Debug)]
pub enum Decision {
    /// Admit as it is.
    Allow,
    /// Admit with this patch, once the named Secrets (in the Pod's namespace) hold a key.
    Patch {
        patch: json_patch::Patch,
        secrets: Vec<String>,
    },
    /// Refuse with this message.
    Deny(String),
}

/// `namespace/name` of the Pod for messages (a generated name shows as `prefix*`).
pub fn pod_name(req: &AdmissionRequest<Pod>) -> String {
    let ns = req.namespace.as_deref().unwrap_or("");
    let name = match &req.object {
        Some(pod) => match (&pod.metadata.name, &pod.metadata.generate_name) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(g)) => format!("{g}*"),
            _ => req.name.clone(),
        },
        None => req.name.clone(),
    };
    format!("{ns}/{name}")
}

/// Decides on one admission request with the resources of the cache.
pub fn decide(
    req: &AdmissionRequest<Pod>,
    syncs: &[PodFilesystemSync],
    settings: &Settings,
) -> Decision {
    if req.operation != Operation::Create || req.kind.kind != "Pod" {
        return Decision::Allow;
    }
    let Some(pod) = &req.object else {
        return Decision::Deny(format!("Pod {}: the request has no object", pod_name(req)));
    };
    let who = pod_name(req);
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if labels.get(POD_LABEL).map(String::as_str) != Some("true") {
        return Decision::Allow;
    }
    if pod.annotations().contains_key(INJECTED_ANNOTATION) {
        return Decision::Allow;
    }
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone());
    let template = PodTemplateSpec {
        metadata: Some(pod.metadata.clone()),
        spec: pod.spec.clone(),
    };
    let injected = match inject(&template, namespace.as_deref(), syncs, settings) {
        Ok(Outcome::Injected(t)) => t,
        Ok(Outcome::Unchanged) => {
            return Decision::Deny(format!(
                "Pod {who} is labelled {POD_LABEL}=true but no PodFilesystemSync in namespace \
                 {} selects it (spec.podSelector against the Pod's labels {}): create one, or \
                 remove the label",
                namespace.as_deref().unwrap_or("?"),
                show_labels(&labels),
            ));
        }
        Err(e) => {
            let field = match e.field.strip_prefix(POD_FIELD_PREFIX) {
                Some(rest) => format!("Pod field {rest}"),
                None => e.field.clone(),
            };
            return Decision::Deny(format!("Pod {who}: {field}: {}", e.message));
        }
    };
    let mut new_pod = pod.clone();
    new_pod.metadata = injected.metadata.unwrap_or_default();
    new_pod.spec = injected.spec;
    let before = serde_json::to_value(pod).expect("a Pod serializes");
    let after = serde_json::to_value(&new_pod).expect("a Pod serializes");
    let patch = json_patch::diff(&before, &after);
    let mut secrets: Vec<String> = Vec::new();
    for sync in syncs {
        let applies = matches!(matches(sync, namespace.as_deref(), &labels), Ok(true));
        if applies
            && let Some(Ok(name)) = sync.encryption_secret()
            && !secrets.contains(&name)
        {
            secrets.push(name);
        }
    }
    Decision::Patch { patch, secrets }
}

/// Decides on a workload's CREATE or UPDATE (Deployment, ReplicaSet, StatefulSet, DaemonSet):
/// allowed, or denied naming the rule that its Pods would break and the fix.
pub fn decide_workload(
    req: &AdmissionRequest<DynamicObject>,
    syncs: &[PodFilesystemSync],
) -> Decision {
    let Some(object) = &req.object else {
        return Decision::Allow;
    };
    let Ok(json) = serde_json::to_value(object) else {
        return Decision::Allow;
    };
    let Some(workload) = Workload::of(&req.kind.kind, &json) else {
        return Decision::Allow;
    };
    let unchanged_spec = || {
        let old = req
            .old_object
            .as_ref()
            .and_then(|o| serde_json::to_value(o).ok());
        old.as_ref().and_then(|o| o.get("spec")) == json.get("spec")
    };
    let deleting = object.metadata.deletion_timestamp.is_some();
    match req.operation {
        Operation::Create => {}
        Operation::Update if !deleting && !unchanged_spec() => {}
        _ => return Decision::Allow,
    }
    let Some(template) = json
        .pointer("/spec/template")
        .and_then(|t| serde_json::from_value::<PodTemplateSpec>(t.clone()).ok())
    else {
        return Decision::Allow;
    };
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    if labels.and_then(|l| l.get(POD_LABEL)).map(String::as_str) != Some("true") {
        return Decision::Allow;
    }
    match check_workload(&workload, &template, req.namespace.as_deref(), syncs) {
        Ok(()) => Decision::Allow,
        Err(e) => Decision::Deny(format!(
            "{} {}/{}: {e}",
            workload.kind,
            req.namespace.as_deref().unwrap_or(""),
            req.name
        )),
    }
}

fn show_labels(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;

    fn request(pod: serde_json::Value) -> AdmissionRequest<Pod> {
        let review: AdmissionReview<Pod> = serde_json::from_value(serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "app",
                "namespace": "apps",
                "operation": "CREATE",
                "userInfo": {},
                "object": pod,
                "dryRun": false
            }
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn pod(labels: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "app", "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "app",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "emptyDir": {}}]}
        })
    }

    fn sync(encrypted: bool) -> PodFilesystemSync {
        let mut s: PodFilesystemSync = serde_json::from_value(serde_json::json!({
            "apiVersion": "riotkit.org/v1alpha1", "kind": "PodFilesystemSync",
            "metadata": {"name": "backup", "namespace": "apps"},
            "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "localPath": "/data",
                     "remotePath": "bucket/x"}
        }))
        .unwrap();
        if encrypted {
            s.spec.automatic_encryption.enabled = true;
            s.spec.automatic_encryption.secret_name = Some("key".into());
        }
        s
    }

    fn settings() -> Settings {
        Settings {
            native_sidecars: false,
            default_image: "img".into(),
        }
    }

    #[test]
    fn a_labelled_pod_gets_a_patch_and_its_secrets() {
        let req = request(pod(serde_json::json!({POD_LABEL: "true", "app": "x"})));
        match decide(&req, &[sync(true)], &settings()) {
            Decision::Patch { patch, secrets } => {
                assert_eq!(secrets, vec!["key".to_string()]);
                let text = serde_json::to_string(&patch).unwrap();
                assert!(text.contains("volume-syncing-sidecar"), "{text}");
                assert!(text.contains("init-volume-restore"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unlabelled_pod_is_allowed_and_an_unmatched_labelled_one_denied() {
        let req = request(pod(serde_json::json!({"app": "x"})));
        assert!(matches!(
            decide(&req, &[sync(false)], &settings()),
            Decision::Allow
        ));
        let req = request(pod(serde_json::json!({POD_LABEL: "true", "app": "y"})));
        match decide(&req, &[sync(false)], &settings()) {
            Decision::Deny(m) => {
                assert!(m.contains("apps/app"), "{m}");
                assert!(m.contains("spec.podSelector"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_core_error_names_the_resource_and_field() {
        let mut s = sync(false);
        s.spec.local_path = "/elsewhere".into();
        let req = request(pod(serde_json::json!({POD_LABEL: "true", "app": "x"})));
        match decide(&req, &[s], &settings()) {
            Decision::Deny(m) => {
                assert!(m.contains("Pod apps/app"), "{m}");
                assert!(
                    m.contains("PodFilesystemSync backup: spec.localPath"),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
