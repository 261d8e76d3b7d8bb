//! "Did you mean …?" for an unknown field of a `PodFilesystemSync`, and [`read`], which every
//! reader of a resource (`inject`, the operator's cache) goes through to get its errors so.
//!
//! Unknown fields stay an error (`deny_unknown_fields`); this only makes the error useful. The
//! known fields are read off the generated CRD schema (the one source of truth, legacy
//! spellings included), as full paths such as `spec.syncOptions.schedule` and
//! `spec.envFromSecret[].ref`. The suggestion for an unknown `name` under `parent` is the
//! nearest field by edit distance (case-insensitive, at most a third of the name's length, 1 to
//! 3 edits): among `parent`'s own fields first, else anywhere (a field written at the wrong
//! level, such as `spec.maxOneSyncPerMinutes`). A legacy spelling is suggested in its canonical
//! form (`spec.shedule` → `spec.syncOptions.schedule`).

use std::sync::OnceLock;

use serde_json::Value;

use super::PodFilesystemSync;
use super::legacy::ALIASES;

/// Every field path of the CRD's schema, below the root (`spec`, `spec.localPath`, …).
fn known_paths() -> &'static [String] {
    static PATHS: OnceLock<Vec<String>> = OnceLock::new();
    PATHS.get_or_init(|| {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(PodFilesystemSync::crd()).expect("the CRD serializes");
        let mut out = Vec::new();
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            walk(&version["schema"]["openAPIV3Schema"], "", &mut out);
        }
        out.sort();
        out.dedup();
        out
    })
}

fn walk(schema: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in properties {
            let path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{at}[]"), out);
    }
}

/// The edit distance of `a` and `b` ignoring case, with a case-only difference as a tie-break.
fn distance(a: &str, b: &str) -> (usize, usize) {
    (
        strsim::levenshtein(&a.to_lowercase(), &b.to_lowercase()),
        strsim::levenshtein(a, b),
    )
}

/// How far a name may be from a field to be taken for a misspelling of it.
fn threshold(name: &str) -> usize {
    (name.chars().count() / 3).clamp(1, 3)
}

/// The candidate nearest to `name`, if near enough.
pub fn nearest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (distance(name, c), c))
        .filter(|((d, _), _)| *d <= threshold(name))
        .min()
        .map(|(_, c)| c)
}

/// `spec.envFromSecret[3].reff` → `spec.envFromSecret[].reff`.
fn without_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

fn leaf(path: &str) -> &str {
    path.rsplit_once('.').map_or(path, |(_, l)| l)
}

/// The known field nearest to the unknown `name` under `parent` (a path such as `spec` or
/// `spec.syncOptions`; indices allowed), in its canonical spelling. `expected` are fields the
/// reader named at that level (for a level the schema leaves open, as `automaticEncryption`).
pub fn suggestion(parent: &str, name: &str, expected: &[&str]) -> Option<String> {
    let parent = without_indices(parent);
    let paths = known_paths();
    let prefix = if parent.is_empty() {
        String::new()
    } else {
        format!("{parent}.")
    };
    let siblings = paths
        .iter()
        .filter_map(|p| p.strip_prefix(&prefix))
        .filter(|rest| !rest.contains('.') && !rest.contains('['))
        .chain(expected.iter().copied());
    let here = nearest(name, siblings).map(|s| (distance(name, s), format!("{prefix}{s}")));
    // Anywhere in the same top-level object: a misspelt spec field is no status field.
    let top = parent.split(['.', '[']).next().unwrap_or("");
    let anywhere = paths
        .iter()
        .filter(|p| top.is_empty() || p.split(['.', '[']).next() == Some(top))
        .map(|p| (distance(name, leaf(p)), p))
        .filter(|((d, _), _)| *d <= threshold(name))
        .min()
        .map(|(d, p)| (d, p.clone()));
    let best = match (here, anywhere) {
        (Some(h), Some(a)) if a.0 < h.0 => a.1,
        (Some(h), _) => h.1,
        (None, a) => a?.1,
    };
    let canonical = ALIASES
        .iter()
        .find(|(legacy, _)| *legacy == best)
        .map_or(best.clone(), |(_, c)| c.to_string());
    Some(canonical)
}

/// Reads one resource (a YAML document, an object from the API server): the normalized
/// resource, or `PATH: does not match the schema: MESSAGE` with the suggestion.
pub fn read<'de, D: serde::Deserializer<'de>>(document: D) -> Result<PodFilesystemSync, String> {
    serde_path_to_error::deserialize(document).map_err(|e| {
        let path = e.path().to_string();
        format!(
            "{path}: does not match the schema: {}",
            explain(&path, &e.inner().to_string())
        )
    })
}

/// A deserialization error at `path` with `message`, with "did you mean …?" added to an
/// unknown field's message when a known field is near.
pub fn explain(path: &str, message: &str) -> String {
    let Some(name) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
    else {
        return message.to_string();
    };
    if message.contains("did you mean") {
        return message.to_string();
    }
    // serde's own unknown-field error is reported at the unknown key itself.
    let parent = match path.rsplit_once('.') {
        Some((parent, last)) if last == name => parent,
        None if path == name => "",
        _ => path,
    };
    // serde lists the fields of the level: "expected one of `a`, `b`" / "expected `a` or `b`".
    let expected: Vec<&str> = message
        .split_once("expected ")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    match suggestion(parent, name, &expected) {
        Some(s) => format!("{message}; did you mean {s}?"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paths_come_from_the_schema_with_the_legacy_spellings() {
        let paths = known_paths();
        for p in [
            "spec.syncOptions.schedule",
            "spec.schedule",
            "spec.envFromSecret[].ref",
            "spec.envFromSecrets[].name",
            "spec.syncOptions.allowedDirections.toRemote",
            "spec.podSelector.matchLabels",
        ] {
            assert!(paths.iter().any(|k| k == p), "{p} not in {paths:?}");
        }
    }

    #[test]
    fn a_misspelt_field_gets_its_nearest_known_field() {
        assert_eq!(
            suggestion("spec", "syncOption", &[]).as_deref(),
            Some("spec.syncOptions")
        );
        // A legacy spelling is suggested in its canonical form.
        assert_eq!(
            suggestion("spec", "shedule", &[]).as_deref(),
            Some("spec.syncOptions.schedule")
        );
        assert_eq!(
            suggestion("spec.syncOptions", "Schedule", &[]).as_deref(),
            Some("spec.syncOptions.schedule")
        );
        // A field at the wrong level is found where it lives.
        assert_eq!(
            suggestion("spec", "maxOneSyncPerMinutes", &[]).as_deref(),
            Some("spec.syncOptions.maxOneSyncPerMinutes")
        );
        assert_eq!(
            suggestion("spec.envFromSecret[2]", "reff", &[]).as_deref(),
            Some("spec.envFromSecret[].ref")
        );
        // Only fields of the same top-level object (spec, not status).
        assert!(known_paths().iter().any(|p| p.starts_with("status.")));
        assert_eq!(suggestion("spec", "lastSyncTime", &[]), None);
        // Nothing near: no guess.
        assert_eq!(suggestion("spec", "debug", &[]), None);
        assert_eq!(suggestion("spec", "x", &[]), None);
    }

    #[test]
    fn explain_adds_the_suggestion_to_unknown_fields_only() {
        let m = "unknown field `syncOption`, expected one of `podSelector`, `localPath`";
        assert_eq!(
            explain("spec.syncOption", m),
            format!("{m}; did you mean spec.syncOptions?")
        );
        assert_eq!(explain("spec.localPath", "invalid type"), "invalid type");
        let own = "unknown field `matchLabel`, did you mean spec.podSelector.matchLabels?";
        assert_eq!(explain("spec.podSelector", own), own);
        // A level the schema leaves open: the fields serde names there.
        let m = "unknown field `secretname`, expected `enabled` or `secretName`";
        assert_eq!(
            explain("spec.automaticEncryption.secretname", m),
            format!("{m}; did you mean spec.automaticEncryption.secretName?")
        );
    }
}
