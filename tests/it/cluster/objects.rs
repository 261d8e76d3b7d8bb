//! The objects the cases create (Pods, PodFilesystemSyncs) and what they read back from a Pod.

use serde_json::{Value, json};

use super::harness::busybox_image;

pub fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The state of container `name` (init or not) of a Pod, as the kubelet reports it.
pub fn container_state<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|s| s["name"] == name)
}

pub fn pod_security() -> Value {
    // The image's user for everything; fsGroup makes the volume writable by the app and the
    // injected containers (README: Kubernetes).
    json!({"runAsNonRoot": true, "runAsUser": 65312, "runAsGroup": 65312, "fsGroup": 65312})
}

/// A PodFilesystemSync for Pods labelled app=APP, syncing /data every 2 s.
pub fn sync_resource(namespace: &str, app: &str, remote_path: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "riotkit.org/v1alpha1", "kind": "PodFilesystemSync",
        "metadata": {"name": app, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "localPath": "/data",
            "remotePath": remote_path,
            "envFromSecret": [{"ref": secret}],
            "syncOptions": {"schedule": "@every 2s"},
            "shutdownTimeout": "30s",
        }
    })
}

/// A busybox Pod running `script` with an emptyDir at /data.
pub fn app_pod(namespace: &str, name: &str, labels: Value, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "securityContext": pod_security(),
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "app", "image": busybox_image(), "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }
    })
}
