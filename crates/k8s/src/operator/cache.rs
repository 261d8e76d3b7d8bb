//! The operator's cache of `PodFilesystemSync` resources, read one resource at a time.
//!
//! The reflector holds the resources as the API server stores them (`DynamicObject`s) and each
//! is read here through the same reader as `inject` ([`crate::resource::suggest::read`], which
//! also normalizes the original operator's spellings). Why not a typed reflector: the API
//! server keeps some fields as written (`podSelector`'s plain labels, `automaticEncryption` as a
//! boolean or an object, so also a misspelt `secretname` inside it), and a typed list fails as
//! a whole on one resource it cannot read: the cache would never sync and every labelled Pod of
//! the cluster would be refused. Read one by one, a resource that cannot be read refuses only
//! the labelled Pods of its own namespace (one of them may be a Pod it was meant to select,
//! which must not start without its sync), with a message naming the resource and the field.
//! The status writer ([`super::status`]) reads the same cache the same way.

use std::sync::Arc;

use kube::ResourceExt;
use kube::core::DynamicObject;

use crate::resource::PodFilesystemSync;
use crate::resource::suggest::read;

/// A resource the cache holds but cannot read.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub namespace: String,
    pub name: String,
    /// `PATH: does not match the schema: …`.
    pub error: String,
}

/// The cache's resources, read.
#[derive(Debug, Default)]
pub struct Resources {
    pub readable: Vec<PodFilesystemSync>,
    pub unreadable: Vec<Unreadable>,
}

/// Reads one stored resource.
pub fn read_one(object: &DynamicObject) -> Result<PodFilesystemSync, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    read(value)
}

/// Reads every resource of the cache.
pub fn read_all(objects: impl IntoIterator<Item = Arc<DynamicObject>>) -> Resources {
    let mut out = Resources::default();
    for object in objects {
        match read_one(&object) {
            Ok(sync) => out.readable.push(sync),
            Err(error) => out.unreadable.push(Unreadable {
                namespace: object.namespace().unwrap_or_default(),
                name: object.name_any(),
                error,
            }),
        }
    }
    out
}

impl Resources {
    /// For a labelled Pod `who` in `namespace`: the refusal when a resource of that namespace
    /// cannot be read (the decision made without it cannot be trusted).
    pub fn refusal(&self, namespace: &str, who: &str) -> Option<String> {
        let broken: Vec<String> = self
            .unreadable
            .iter()
            .filter(|u| u.namespace == namespace)
            .map(|u| format!("PodFilesystemSync {}: {}", u.name, u.error))
            .collect();
        if broken.is_empty() {
            return None;
        }
        Some(format!(
            "Pod {who}: {}; until it is fixed, no labelled Pod of namespace {namespace} is \
             admitted (one it selects would start without its sync)",
            broken.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(name: &str, namespace: &str, spec: serde_json::Value) -> Arc<DynamicObject> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "riotkit.org/v1alpha1", "kind": "PodFilesystemSync",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn one_unreadable_resource_refuses_only_its_namespace() {
        let good = object(
            "good",
            "a",
            json!({"podSelector": {"app": "web"}, "localPath": "/d", "remotePath": "b/d",
                   "schedule": "@every 1m", "automaticEncryption": true}),
        );
        let bad = object(
            "bad",
            "b",
            json!({"podSelector": {"app": "web"}, "localPath": "/d", "remotePath": "b/d",
                   "automaticEncryption": {"enabled": true, "secretname": "k"}}),
        );
        let resources = read_all([good, bad]);
        assert_eq!(resources.readable.len(), 1);
        // Read normalized, like inject reads it.
        let sync = &resources.readable[0];
        assert_eq!(sync.spec.sync_options.schedule, "@every 1m");
        assert_eq!(
            sync.encryption_secret(),
            Some(Ok("good-remote-sync".to_string()))
        );
        assert_eq!(resources.unreadable.len(), 1);
        assert!(resources.refusal("a", "a/pod").is_none());
        let refusal = resources.refusal("b", "b/pod").unwrap();
        assert!(
            refusal.starts_with("Pod b/pod: PodFilesystemSync bad: "),
            "{refusal}"
        );
        assert!(
            refusal.contains("spec.automaticEncryption.secretname"),
            "{refusal}"
        );
        assert!(
            refusal.contains("did you mean spec.automaticEncryption.secretName?"),
            "{refusal}"
        );
    }
}
