//! Templates in `remotePath` and `env` values, rendered over the Pod (minijinja, sandboxed).
//!
//! The context is `pod.name`, `pod.namespace`, `pod.labels`, `pod.annotations`. A Pod's name
//! (and, for a workload's template, its namespace) is not known when the template is injected —
//! a Deployment's pods get generated names — so those two render as the Kubernetes references
//! `$(VSO_POD_NAME)` / `$(VSO_POD_NAMESPACE)`, which the kubelet expands in args and env from
//! variables the injector defines with the downward API. Labels and annotations are known.
//!
//! The same values are also there under the spellings of the original Go operator, whose
//! templates were rendered over the Go `Pod` struct (`pod.ObjectMeta.Annotations["subdir"]`, and
//! through Go's embedding `pod.Name`, `pod.Namespace`, `pod.Labels`, `pod.Annotations`), and
//! under the Kubernetes JSON names (`pod.metadata.labels`, …). They are aliases in the context,
//! not a rewriting of the template text: a template means what it says, and an error names the
//! spelling it used.
//!
//! Decisions: a missing key is an error, never an empty string (an empty segment would merge
//! the data of different pods into one remote path); rendering runs with a fuel bound, no
//! loader and no includes, so a template cannot loop or read anything; the rendered remote path
//! is checked with [`vso_core::remote::path::problem`], the sync commands' own rule.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior, Value};

/// Kubernetes reference to the Pod's name, expanded by the kubelet.
pub const POD_NAME_REF: &str = "$(VSO_POD_NAME)";
/// Kubernetes reference to the Pod's namespace, expanded by the kubelet.
pub const POD_NAMESPACE_REF: &str = "$(VSO_POD_NAMESPACE)";

/// Bound on the work one template may do (minijinja fuel units; a plain path uses a few dozen).
const FUEL: u64 = 20_000;

/// What a template sees of the Pod.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Renders `template` over `pod`; the error says what is wrong (not which field: the caller
/// knows that).
pub fn render(template: &str, pod: &PodContext) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    let labels = Value::from_pairs(pod.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let annotations = Value::from_pairs(
        pod.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    // Go's field names: ObjectMeta's, and the same promoted onto the Pod by embedding.
    let go_meta = minijinja::context! {
        Name => POD_NAME_REF,
        Namespace => POD_NAMESPACE_REF,
        Labels => labels.clone(),
        Annotations => annotations.clone(),
    };
    let ctx = minijinja::context! {
        pod => minijinja::context! {
            name => POD_NAME_REF,
            namespace => POD_NAMESPACE_REF,
            labels => labels.clone(),
            annotations => annotations.clone(),
            metadata => minijinja::context! {
                name => POD_NAME_REF,
                namespace => POD_NAMESPACE_REF,
                labels => labels.clone(),
                annotations => annotations.clone(),
            },
            ObjectMeta => go_meta.clone(),
            ..go_meta
        }
    };
    env.render_str(template, ctx).map_err(|e| {
        // minijinja's Display names the kind and the template line; the detail says which key
        // (its `debug` feature).
        let mut msg = e.kind().to_string();
        if let Some(detail) = e.detail() {
            msg.push_str(": ");
            msg.push_str(detail);
        }
        // minijinja's detail names the missing key (its `debug` feature); say what there is.
        if e.kind() == minijinja::ErrorKind::UndefinedError {
            let keys = known_keys(&msg, pod);
            msg.push_str(&keys);
        }
        format!("template {template:?}: {msg}")
    })
}

/// The spellings of the two maps (longest first: `pod.Labels` is no part of
/// `pod.ObjectMeta.Labels`, but the order keeps it so for any future spelling).
const MAPS: [(&str, bool); 8] = [
    ("pod.ObjectMeta.Annotations", false),
    ("pod.metadata.annotations", false),
    ("pod.ObjectMeta.Labels", true),
    ("pod.metadata.labels", true),
    ("pod.Annotations", false),
    ("pod.annotations", false),
    ("pod.Labels", true),
    ("pod.labels", true),
];

/// For the error `msg` of a missing key, the keys the map it reads has, in the spelling the
/// template used: " (pod.labels has: app)".
fn known_keys(msg: &str, pod: &PodContext) -> String {
    let found = MAPS.iter().find(|(name, _)| {
        msg.match_indices(name).any(|(at, _)| {
            matches!(
                msg[at + name.len()..].chars().next(),
                Some('.' | '[' | '`' | ' ')
            )
        })
    });
    let Some(&(name, is_labels)) = found else {
        return " (the context has pod.name, pod.namespace, pod.labels, pod.annotations; also \
                spelt pod.metadata.name … and, as the original operator did, pod.ObjectMeta.Name \
                … or pod.Name …)"
            .into();
    };
    let map = if is_labels {
        &pod.labels
    } else {
        &pod.annotations
    };
    if map.is_empty() {
        return format!(" ({name} is empty)");
    }
    let keys: Vec<&str> = map.keys().map(String::as_str).take(20).collect();
    format!(" ({name} has: {})", keys.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodContext {
        PodContext {
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: [("team".to_string(), "blue".to_string())].into(),
        }
    }

    #[test]
    fn renders_labels_annotations_and_references() {
        assert_eq!(
            render(
                "b/{{ pod.namespace }}/{{ pod.labels.app }}/{{ pod.annotations['team'] }}/{{ pod.name }}",
                &pod()
            )
            .unwrap(),
            "b/$(VSO_POD_NAMESPACE)/web/blue/$(VSO_POD_NAME)"
        );
        assert_eq!(render("plain/path", &pod()).unwrap(), "plain/path");
        assert_eq!(
            render("b/{{ pod.annotations.team | upper }}", &pod()).unwrap(),
            "b/BLUE"
        );
    }

    #[test]
    fn a_missing_key_is_an_error_not_an_empty_string() {
        let err = render("b/{{ pod.labels.missing }}/x", &pod()).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
        // The message names the key that is missing and those that are there.
        assert!(err.contains("`pod.labels.missing`"), "{err}");
        assert!(err.contains("pod.labels has: app"), "{err}");
        let err = render("b/{{ pod.annotations['nope'] }}", &pod()).unwrap_err();
        assert!(err.contains("pod.annotations['nope']"), "{err}");
        assert!(err.contains("pod.annotations has: team"), "{err}");
        let err = render("b/{{ nothing }}", &pod()).unwrap_err();
        assert!(err.contains("`nothing`"), "{err}");
        assert!(render("b/{{ nothing }}", &pod()).is_err());
        assert!(render("b/{{ pod.labels.app", &pod()).is_err());
    }

    #[test]
    fn the_original_operators_and_kubernetes_spellings_are_aliases() {
        let canonical = render(
            "b/{{ pod.namespace }}/{{ pod.name }}/{{ pod.labels.app }}/{{ pod.annotations['team'] }}",
            &pod(),
        )
        .unwrap();
        for template in [
            // The original's README: Go field names of the Pod struct.
            r#"b/{{ pod.ObjectMeta.Namespace }}/{{ pod.ObjectMeta.Name }}/{{ pod.ObjectMeta.Labels["app"] }}/{{ pod.ObjectMeta.Annotations["team"] }}"#,
            // Go's embedding promotes ObjectMeta's fields onto the Pod.
            r#"b/{{ pod.Namespace }}/{{ pod.Name }}/{{ pod.Labels.app }}/{{ pod.Annotations["team"] }}"#,
            // The Kubernetes JSON names.
            "b/{{ pod.metadata.namespace }}/{{ pod.metadata.name }}/{{ pod.metadata.labels.app }}/{{ pod.metadata.annotations['team'] }}",
        ] {
            assert_eq!(render(template, &pod()).unwrap(), canonical, "{template}");
        }
    }

    #[test]
    fn a_missing_key_names_the_spelling_used() {
        for (template, map, has) in [
            (
                r#"b/{{ pod.ObjectMeta.Annotations["subdir"] }}"#,
                "pod.ObjectMeta.Annotations",
                "team",
            ),
            (
                "b/{{ pod.metadata.labels.release }}",
                "pod.metadata.labels",
                "app",
            ),
            ("b/{{ pod.Labels.release }}", "pod.Labels", "app"),
            ("b/{{ pod.Annotations.release }}", "pod.Annotations", "team"),
        ] {
            let err = render(template, &pod()).unwrap_err();
            assert!(err.contains("undefined"), "{err}");
            assert!(err.contains(&format!("{map} has: {has}")), "{err}");
        }
        let err = render("b/{{ pod.ObjectMeta.Uid }}", &pod()).unwrap_err();
        assert!(err.contains("pod.ObjectMeta.Name"), "{err}");
    }

    #[test]
    fn endless_templates_run_out_of_fuel() {
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &pod(),
        )
        .unwrap_err();
        assert!(err.contains("fuel"), "{err}");
    }
}
