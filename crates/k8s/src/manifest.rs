//! `inject` over YAML: multi-document manifests in, the same documents out, with the core
//! ([`super::inject`]) applied to every pod template.
//!
//! Decisions:
//! - A document is kept as a generic YAML value and only its pod template is converted to the
//!   typed k8s-openapi form and back, so the rest of the document (and every document of a kind
//!   without a pod template) passes through as written.
//! - k8s-openapi ignores unknown fields when reading; re-serialising would silently drop a
//!   misspelt field of the app's pod template. So the typed round trip is compared with the
//!   input and any field that would be lost is an error naming it (like
//!   `kubectl --validate=strict`).
//! - The comment lines in front of a document are kept in front of its output: the manifests
//!   in deploy/kubernetes are generated and still explain themselves.
//! - A `List` (as `kubectl get -o yaml` prints) is injected item by item, never passed through
//!   with its workloads silently left alone.
//! - All output is built in memory; on any error nothing is printed.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_yaml::Value;

use super::inject::workload::{Workload, check as check_workload};
use super::inject::{InjectError, Outcome, POD_FIELD_PREFIX, Settings, inject};
use super::resource::PodFilesystemSync;
use super::resource::suggest::read;

/// Kinds with a pod template, and where it is.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        "Pod" => &[],
        _ => return None,
    })
}

/// One YAML document of a stream: its leading comment lines and its text.
struct RawDoc {
    comments: String,
    body: String,
    /// 1-based line of the document's start, for messages.
    line: usize,
}

/// Splits a YAML stream at `---` lines (a document marker always starts a line, and block
/// scalars are indented, so a line-based split is exact for marker lines).
fn split_documents(text: &str) -> Vec<RawDoc> {
    let mut docs = Vec::new();
    let mut current = RawDoc {
        comments: String::new(),
        body: String::new(),
        line: 1,
    };
    let mut in_body = false;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            docs.push(std::mem::replace(
                &mut current,
                RawDoc {
                    comments: String::new(),
                    body: String::new(),
                    line: i + 2,
                },
            ));
            in_body = false;
            continue;
        }
        let trimmed = line.trim_start();
        if !in_body && (trimmed.starts_with('#') || trimmed.is_empty()) {
            if trimmed.starts_with('#') {
                current.comments.push_str(line);
                current.comments.push('\n');
            }
            continue;
        }
        in_body = true;
        current.body.push_str(line);
        current.body.push('\n');
    }
    docs.push(current);
    docs
}

/// Reads the PodFilesystemSync documents of `text` (`source` names the file in messages).
pub fn read_syncs(text: &str, source: &str) -> Result<Vec<PodFilesystemSync>, String> {
    let mut out = Vec::new();
    for (index, doc) in split_documents(text).into_iter().enumerate() {
        if doc.body.trim().is_empty() {
            continue;
        }
        let where_ = format!("{source}: document {} (line {})", index + 1, doc.line);
        let value: Value =
            serde_yaml::from_str(&doc.body).map_err(|e| format!("{where_}: invalid YAML: {e}"))?;
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if kind != "PodFilesystemSync" || api_version != "riotkit.org/v1alpha1" {
            return Err(format!(
                "{where_}: expected kind PodFilesystemSync, apiVersion riotkit.org/v1alpha1, \
                 found kind {kind:?}, apiVersion {api_version:?}"
            ));
        }
        let sync = read(value).map_err(|e| format!("{where_} (PodFilesystemSync): {e}"))?;
        if sync.metadata.name.as_deref().unwrap_or("").is_empty() {
            return Err(format!(
                "{where_} (PodFilesystemSync): metadata.name is missing"
            ));
        }
        out.push(sync);
    }
    if out.is_empty() {
        return Err(format!("{source}: no PodFilesystemSync document"));
    }
    Ok(out)
}

/// Injects into every pod template of the manifests in `text` and returns the output stream.
pub fn inject_manifests(
    text: &str,
    source: &str,
    syncs: &[PodFilesystemSync],
    settings: &Settings,
) -> Result<String, String> {
    let mut out = String::new();
    let mut first = true;
    for (index, doc) in split_documents(text).into_iter().enumerate() {
        if doc.body.trim().is_empty() {
            continue;
        }
        let value: Value = serde_yaml::from_str(&doc.body).map_err(|e| {
            format!(
                "{source}: document {} (line {}): invalid YAML: {e}",
                index + 1,
                doc.line
            )
        })?;
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let where_ = format!(
            "{source}: document {} (line {}, {kind} {name:?})",
            index + 1,
            doc.line
        );
        let value =
            inject_document(value, &kind, syncs, settings).map_err(|e| format!("{where_}: {e}"))?;
        if !first {
            out.push_str("---\n");
        }
        first = false;
        out.push_str(&doc.comments);
        out.push_str(&serde_yaml::to_string(&value).map_err(|e| format!("{where_}: {e}"))?);
    }
    Ok(out)
}

fn inject_document(
    mut doc: Value,
    kind: &str,
    syncs: &[PodFilesystemSync],
    settings: &Settings,
) -> Result<Value, String> {
    if kind == "List" {
        // `kubectl get … -o yaml` wraps objects in a List: inject its items like documents.
        if let Some(Value::Sequence(items)) = doc.get_mut("items") {
            for (i, item) in items.iter_mut().enumerate() {
                let item_kind = item
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let taken = std::mem::take(item);
                *item = inject_document(taken, &item_kind, syncs, settings)
                    .map_err(|e| format!("items[{i}] ({item_kind}): {e}"))?;
            }
        }
        return Ok(doc);
    }
    let Some(path) = template_path(kind) else {
        return Ok(doc);
    };
    let namespace = doc
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    // What only the workload knows (replicas, rollout strategy) is read off the whole object.
    let workload = serde_json::to_value(&doc)
        .ok()
        .and_then(|json| Workload::of(kind, &json));
    let mut slot = &mut doc;
    for key in path {
        slot = slot
            .get_mut(*key)
            .ok_or_else(|| format!("{} is missing", path.join(".")))?;
    }
    let field = if path.is_empty() {
        "the Pod".to_string()
    } else {
        path.join(".")
    };
    // A Pod is its own template: metadata and spec, plus apiVersion/kind kept aside.
    let input = if path.is_empty() {
        let mut m = serde_yaml::Mapping::new();
        for key in ["metadata", "spec"] {
            if let Some(v) = slot.get(key) {
                m.insert(key.into(), v.clone());
            }
        }
        Value::Mapping(m)
    } else {
        slot.clone()
    };
    let template: PodTemplateSpec =
        serde_path_to_error::deserialize(input.clone()).map_err(|e| {
            format!(
                "{}: does not match the Kubernetes schema: {}",
                join_path(&field, &e.path().to_string()),
                e.inner()
            )
        })?;
    let roundtrip = serde_yaml::to_value(&template).map_err(|e| format!("{field}: {e}"))?;
    check_nothing_dropped(&input, &roundtrip, &field)?;
    let injected = match inject(&template, namespace.as_deref(), syncs, settings)
        .map_err(|e: InjectError| located(e, &field))?
    {
        Outcome::Unchanged => return Ok(doc),
        Outcome::Injected(t) => t,
    };
    // After the injection's own checks, so that an error of the resource is reported first.
    if let Some(workload) = &workload {
        check_workload(workload, &template, namespace.as_deref(), syncs)
            .map_err(|e| located(e, &field))?;
    }
    let new = serde_yaml::to_value(&*injected).map_err(|e| format!("{field}: {e}"))?;
    if path.is_empty() {
        for key in ["metadata", "spec"] {
            if let (Value::Mapping(target), Some(v)) = (&mut *slot, new.get(key)) {
                target.insert(key.into(), v.clone());
            }
        }
    } else {
        *slot = new;
    }
    Ok(doc)
}

/// The core names pod fields relative to the template; the message names them in the document.
fn located(e: InjectError, template_field: &str) -> String {
    match e.field.strip_prefix(POD_FIELD_PREFIX) {
        Some(rest) => format!("{}: {}", join_path(template_field, rest), e.message),
        None => e.to_string(),
    }
}

fn join_path(base: &str, rest: &str) -> String {
    match (base, rest) {
        (_, "" | ".") => base.to_string(),
        ("the Pod", _) => rest.to_string(),
        _ => format!("{base}.{rest}"),
    }
}

/// Fails when `roundtrip` (the input read into typed objects and written back) lacks a field
/// of `input`: k8s-openapi skipped it as unknown. Null values may vanish (they mean absent).
fn check_nothing_dropped(input: &Value, roundtrip: &Value, at: &str) -> Result<(), String> {
    match (input, roundtrip) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (key, value) in a {
                let key_text = key
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{key:?}"));
                let here = format!("{at}.{key_text}");
                match b.get(key) {
                    Some(other) => check_nothing_dropped(value, other, &here)?,
                    None if value.is_null() => {}
                    None if is_empty_collection(value) => {}
                    None => {
                        return Err(format!(
                            "unknown field {here}: not part of the Kubernetes schema (misspelt?)"
                        ));
                    }
                }
            }
            Ok(())
        }
        (Value::Sequence(a), Value::Sequence(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                check_nothing_dropped(x, y, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Tagged(_), _) => Err(format!("{at}: YAML tags are not supported")),
        _ => Ok(()),
    }
}

fn is_empty_collection(value: &Value) -> bool {
    matches!(value, Value::Mapping(m) if m.is_empty())
        || matches!(value, Value::Sequence(s) if s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_leading_comments_and_lines() {
        let docs = split_documents("# a\nkind: A\n---\n# b\n\nkind: B\n# inside\nx: 1\n---\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].comments, "# a\n");
        assert_eq!(docs[0].body, "kind: A\n");
        assert_eq!(docs[1].comments, "# b\n");
        assert_eq!(docs[1].body, "kind: B\n# inside\nx: 1\n");
        assert_eq!(docs[1].line, 4);
        assert!(docs[2].body.is_empty());
    }

    #[test]
    fn a_dropped_field_is_named() {
        let input: Value =
            serde_yaml::from_str("spec: {containers: [{name: a, imagee: x}]}").unwrap();
        let out: Value = serde_yaml::from_str("spec: {containers: [{name: a}]}").unwrap();
        let err = check_nothing_dropped(&input, &out, "t").unwrap_err();
        assert!(err.contains("t.spec.containers[0].imagee"), "{err}");
        let nulls: Value =
            serde_yaml::from_str("spec: {containers: [{name: a, env: null}]}").unwrap();
        check_nothing_dropped(&nulls, &out, "t").unwrap();
    }
}
