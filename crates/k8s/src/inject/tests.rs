//! The injection core's unit tests: selector semantics, mount lookup, local path rules and
//! whole-template behaviours (idempotence, naming, grace period, refusals) that the golden
//! cases (tests/golden, run by tests/inject.rs) do not isolate.

use super::validate::{check_local_path, find_mount};
use super::*;
use k8s_openapi::api::core::v1::{PodSpec, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};

use crate::resource::PodFilesystemSyncSpec;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sync(name: &str, local: &str) -> PodFilesystemSync {
    let spec: PodFilesystemSyncSpec = serde_json::from_value(serde_json::json!({
        "podSelector": {"matchLabels": {"app": "web"}},
        "localPath": local,
        "remotePath": format!("b/{name}"),
    }))
    .unwrap();
    PodFilesystemSync::new(name, spec)
}

fn template(mounts: &[(&str, &str)]) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&[("app", "web")])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                volume_mounts: Some(
                    mounts
                        .iter()
                        .map(|(name, path)| VolumeMount {
                            name: name.to_string(),
                            mount_path: path.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn settings(native: bool) -> Settings {
    Settings {
        native_sidecars: native,
        default_image: "vso:test".into(),
    }
}

fn injected(outcome: Outcome) -> PodTemplateSpec {
    match outcome {
        Outcome::Injected(t) => *t,
        Outcome::Unchanged => panic!("nothing was injected"),
    }
}

#[test]
fn selector_semantics() {
    let pod = labels(&[("app", "web"), ("tier", "front")]);
    let expr = |key: &str, op: &str, values: &[&str]| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }]),
        ..Default::default()
    };
    assert!(selector_matches(&LabelSelector::default(), &pod).unwrap());
    assert!(selector_matches(&expr("app", "In", &["web", "api"]), &pod).unwrap());
    assert!(!selector_matches(&expr("app", "NotIn", &["web"]), &pod).unwrap());
    assert!(selector_matches(&expr("zone", "NotIn", &["a"]), &pod).unwrap());
    assert!(selector_matches(&expr("tier", "Exists", &[]), &pod).unwrap());
    assert!(!selector_matches(&expr("tier", "DoesNotExist", &[]), &pod).unwrap());
    assert!(selector_matches(&expr("app", "Like", &["w"]), &pod).is_err());
    assert!(selector_matches(&expr("app", "In", &[]), &pod).is_err());
    let mixed = LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        ..expr("tier", "In", &["back"])
    };
    assert!(!selector_matches(&mixed, &pod).unwrap());
}

#[test]
fn the_longest_mount_above_the_path_wins() {
    let t = template(&[("root", "/var"), ("data", "/var/lib/"), ("x", "/var/li")]);
    let containers = t.spec.unwrap().containers;
    assert_eq!(
        find_mount(&containers, "/var/lib/app").unwrap().name,
        "data"
    );
    assert_eq!(find_mount(&containers, "/var/lib").unwrap().name, "data");
    assert_eq!(find_mount(&containers, "/var/libx").unwrap().name, "root");
    assert!(find_mount(&containers, "/srv").is_err());
}

#[test]
fn one_path_two_volumes_is_ambiguous() {
    let mut t = template(&[("a", "/data")]);
    let spec = t.spec.as_mut().unwrap();
    let mut other = spec.containers[0].clone();
    other.name = "other".into();
    other.volume_mounts.as_mut().unwrap()[0].name = "b".into();
    spec.containers.push(other);
    let err = find_mount(&spec.containers, "/data/x").unwrap_err();
    assert!(err.contains("ambiguous"), "{err}");
}

#[test]
fn injecting_an_injected_template_is_a_no_op() {
    let syncs = [sync("one", "/data")];
    let once = injected(
        inject(
            &template(&[("data", "/data")]),
            None,
            &syncs,
            &settings(true),
        )
        .unwrap(),
    );
    assert_eq!(
        inject(&once, None, &syncs, &settings(true)).unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn no_match_and_other_namespace_leave_the_pod_alone() {
    let mut other = sync("one", "/data");
    other.spec.pod_selector.match_labels = Some(labels(&[("app", "api")]));
    let t = template(&[("data", "/data")]);
    assert_eq!(
        inject(&t, None, &[other], &settings(true)).unwrap(),
        Outcome::Unchanged
    );
    let mut elsewhere = sync("one", "/data");
    elsewhere.metadata.namespace = Some("a".into());
    assert_eq!(
        inject(
            &t,
            Some("b"),
            std::slice::from_ref(&elsewhere),
            &settings(true)
        )
        .unwrap(),
        Outcome::Unchanged
    );
    assert!(matches!(
        inject(&t, Some("a"), &[elsewhere], &settings(true)).unwrap(),
        Outcome::Injected(_)
    ));
}

#[test]
fn several_resources_get_unique_names_in_name_order() {
    let t = template(&[("a", "/a"), ("b", "/b"), ("c", "/c")]);
    let mut syncs = [sync("zeta", "/c"), sync("alpha", "/a"), sync("mid", "/b")];
    syncs[1].spec.metrics_port = 9091;
    syncs[2].spec.metrics_port = 9092;
    let out = injected(inject(&t, None, &syncs, &settings(false)).unwrap());
    let spec = out.spec.unwrap();
    let names = |list: &[Container]| list.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(spec.init_containers.as_deref().unwrap()),
        [
            "init-volume-restore",
            "init-volume-restore-2",
            "init-volume-restore-3"
        ]
    );
    assert_eq!(
        names(&spec.containers),
        [
            "app",
            "volume-syncing-sidecar",
            "volume-syncing-sidecar-2",
            "volume-syncing-sidecar-3"
        ]
    );
    // alpha (first by name) restores /a into the plain-named container.
    let args = spec.init_containers.unwrap()[0].args.clone().unwrap();
    assert!(args.contains(&"b/alpha".to_string()), "{args:?}");
    assert_eq!(spec.volumes.unwrap().len(), 1, "one shared temp volume");
}

#[test]
fn the_grace_period_covers_the_longest_final_sync_and_is_never_lowered() {
    let mut s = sync("one", "/data");
    s.spec.shutdown_timeout = "10m".into();
    let out = injected(
        inject(
            &template(&[("data", "/data")]),
            None,
            &[s.clone()],
            &settings(true),
        )
        .unwrap(),
    );
    assert_eq!(
        out.spec.unwrap().termination_grace_period_seconds,
        Some(660)
    );
    let mut long = template(&[("data", "/data")]);
    long.spec.as_mut().unwrap().termination_grace_period_seconds = Some(3600);
    let out = injected(inject(&long, None, &[s], &settings(true)).unwrap());
    assert_eq!(
        out.spec.unwrap().termination_grace_period_seconds,
        Some(3600)
    );
}

#[test]
fn a_classic_sidecar_in_a_job_is_refused() {
    let mut t = template(&[("data", "/data")]);
    t.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    let err = inject(&t, None, &[sync("one", "/data")], &settings(false)).unwrap_err();
    assert_eq!(err.field, "pod template: spec.restartPolicy");
    assert!(matches!(
        inject(&t, None, &[sync("one", "/data")], &settings(true)).unwrap(),
        Outcome::Injected(_)
    ));
}

#[test]
fn nested_local_paths_are_refused_siblings_are_not() {
    let t = template(&[("data", "/data")]);
    let err = inject(
        &t,
        None,
        &[sync("a", "/data"), sync("b", "/data/sub/")],
        &settings(true),
    )
    .unwrap_err();
    assert!(err.message.contains("nested"), "{err}");
    let mut b = sync("b", "/data-2");
    b.spec.metrics_port = 9091;
    let t = template(&[("data", "/data"), ("d2", "/data-2")]);
    assert!(matches!(
        inject(&t, None, &[sync("a", "/data"), b], &settings(true)).unwrap(),
        Outcome::Injected(_)
    ));
}

#[test]
fn local_path_rules() {
    for bad in ["data", "/", "/data/../etc", "/data/./x", ""] {
        assert!(check_local_path(bad).is_err(), "{bad:?}");
    }
    check_local_path("/data/x/").unwrap();
}
