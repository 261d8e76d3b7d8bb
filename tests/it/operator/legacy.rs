//! Resources written for the original Go operator (riotkit-org/volume-syncing-operator), as its
//! READMEs documented them, against the real API server of [`super`]: the CRD must keep them as
//! written (the API server prunes unknown fields before any webhook runs) and the webhook must
//! inject from them what their canonical spelling means (tests/golden/original-* show the same
//! for `inject`).

use std::time::Duration;

use serde_json::Value;

use super::{APP_NS, Cluster, free_port, install, labelled, names, pod, start_operator};
use crate::support::Sandbox;

/// The two shapes of the original operator's READMEs, `kubectl apply`-ed as written.
const ORIGINAL_LATER_DESIGN: &str = r#"
apiVersion: riotkit.org/v1alpha1
kind: PodFilesystemSync
metadata:
    name: cloud-press
    namespace: apps
spec:
    podSelector:
        matchLabels:
            my-pod-label: later
    localPath: /data
    remotePath: '/example-org-bucket/{{ pod.ObjectMeta.Annotations["subdir"] }}'
    initContainerPlacement:
        containerReference: some-container-name
        placement: before
    syncOptions:
        method: "fsnotify"
        maxOneSyncPerMinutes: "15"
        permissions:
            uid: "1001"
            gid: "1001"
        allowedDirections:
            toRemote: true
            fromRemote: true
    env:
        SITE: '{{ pod.ObjectMeta.Labels["my-pod-label"] }}-{{ pod.Name }}.{{ pod.metadata.namespace }}'
    envFromSecrets:
        - name: cloud-press-secret-envs
    automaticEncryption:
        enabled: true
        secretName: cloud-press-remote-sync
"#;

const ORIGINAL_SHORT_FORM: &str = r#"
apiVersion: riotkit.org/v1alpha1
kind: PodFilesystemSync
metadata:
    name: short
    namespace: apps
spec:
    podSelector:
        my-pod-label: short
    localPath: /data
    remotePath: /example-org-bucket
    schedule: "@every 1m"
    envFromSecret:
        - ref: short-secret-envs
    # will generate a key, store it in `kind: Secret` and setup End-To-End encryption
    automaticEncryption: true
"#;

/// The value after `flag` in a container's args.
fn arg_after<'a>(container: &'a Value, flag: &str) -> &'a str {
    let args = container["args"].as_array().unwrap();
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args[at + 1].as_str().unwrap()
}

fn env_of<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name} in {}", container["env"]))
}

/// Resources written for the original operator: the API server accepts and keeps them as
/// written (the CRD lists the legacy shapes, nothing is pruned or defaulted into a conflict),
/// the webhook injects from them what their canonical spelling means, a value the original
/// never allowed is refused by the API server itself, and a resource the operator cannot read
/// refuses only the labelled Pods of its namespace (the cache still syncs).
#[test]
fn resources_written_for_the_original_operator() {
    let sandbox = Sandbox::new();
    let cluster = Cluster::start(&sandbox);
    let port = free_port();
    install(&cluster, &format!("https://127.0.0.1:{port}/mutate"));
    cluster.ok(&["create", "namespace", APP_NS], None);
    cluster.ok(&["create", "namespace", "broken"], None);
    cluster.ok(&["apply", "-f", "-"], Some(ORIGINAL_LATER_DESIGN));
    cluster.ok(&["apply", "-f", "-"], Some(ORIGINAL_SHORT_FORM));

    // Read back as written.
    let later = cluster.json(&["get", "pfss", "-n", APP_NS, "cloud-press"]);
    let options = &later["spec"]["syncOptions"];
    assert_eq!(options["maxOneSyncPerMinutes"], "15", "{later}");
    assert_eq!(options["permissions"]["uid"], "1001", "{later}");
    assert_eq!(options["allowedDirections"]["toRemote"], true, "{later}");
    assert!(options.get("allowedDirectories").is_none(), "{later}");
    assert!(options.get("schedule").is_none(), "defaulted: {later}");
    assert_eq!(
        later["spec"]["envFromSecrets"][0]["name"],
        "cloud-press-secret-envs"
    );
    let short = cluster.json(&["get", "pfss", "-n", APP_NS, "short"]);
    assert_eq!(short["spec"]["schedule"], "@every 1m", "{short}");
    assert_eq!(short["spec"]["podSelector"]["my-pod-label"], "short");
    assert_eq!(short["spec"]["automaticEncryption"], true, "{short}");
    assert!(
        short["spec"]["syncOptions"].get("schedule").is_none(),
        "a defaulted syncOptions.schedule would conflict with spec.schedule: {short}"
    );

    // What the original's Go types could not hold either is refused by the API server.
    let bad_minutes = ORIGINAL_SHORT_FORM
        .replace("name: short", "name: abc")
        .replace(
            "    schedule: \"@every 1m\"",
            "    syncOptions:\n        maxOneSyncPerMinutes: \"abc\"",
        );
    let out = cluster.kubectl(&["apply", "-f", "-"], Some(&bad_minutes));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "\"abc\" minutes were accepted");
    assert!(
        err.contains("spec.syncOptions.maxOneSyncPerMinutes"),
        "{err}"
    );

    // A typo inside automaticEncryption (which the CRD keeps as written) in another namespace.
    let typo = ORIGINAL_SHORT_FORM
        .replace("namespace: apps", "namespace: broken")
        .replace(
            "automaticEncryption: true",
            "automaticEncryption:\n        enabled: true\n        secretname: typo-key",
        );
    cluster.ok(&["apply", "-f", "-"], Some(&typo));

    // The operator starts with all three in the cache: the unreadable one does not stop it.
    let mut operator = start_operator(&sandbox, &cluster, port);

    // The later design: Go field names in the templates, strings of digits, allowedDirections,
    // envFromSecrets, the restore before the named init container.
    let mut later_pod = pod("later-1", labelled("x"));
    later_pod["metadata"]["labels"] = serde_json::json!({
        "my-pod-label": "later", "riotkit.org/volume-syncing-operator": "true"});
    later_pod["metadata"]["annotations"] = serde_json::json!({"subdir": "wordpress"});
    later_pod["spec"]["initContainers"] = serde_json::json!([
        {"name": "some-container-name", "image": "busybox:1", "command": ["true"]}]);
    let stored = cluster.create(&later_pod, &[]).unwrap();
    assert_eq!(
        names(&stored["spec"]["initContainers"]),
        ["init-volume-restore", "some-container-name"]
    );
    assert_eq!(
        names(&stored["spec"]["containers"]),
        ["app", "volume-syncing-sidecar"]
    );
    let sidecar = &stored["spec"]["containers"][1];
    assert_eq!(arg_after(sidecar, "-d"), "/example-org-bucket/wordpress");
    assert_eq!(arg_after(sidecar, "--min-interval"), "15m");
    assert_eq!(sidecar["securityContext"]["runAsUser"], 1001);
    assert_eq!(sidecar["securityContext"]["runAsGroup"], 1001);
    assert_eq!(
        env_of(sidecar, "SITE")["value"],
        "later-$(VSO_POD_NAME).$(VSO_POD_NAMESPACE)"
    );
    assert_eq!(
        sidecar["envFrom"][0]["secretRef"]["name"],
        "cloud-press-secret-envs"
    );
    assert_eq!(
        env_of(sidecar, "ENCRYPTION_PASSPHRASE")["valueFrom"]["secretKeyRef"]["name"],
        "cloud-press-remote-sync"
    );

    // The short form: top-level schedule, plain labels, automaticEncryption: true with the
    // default Secret, which the operator generated.
    let mut short_pod = pod("short-1", labelled("x"));
    short_pod["metadata"]["labels"] = serde_json::json!({
        "my-pod-label": "short", "riotkit.org/volume-syncing-operator": "true"});
    let stored = cluster.create(&short_pod, &[]).unwrap();
    let sidecar = &stored["spec"]["containers"][1];
    assert_eq!(sidecar["name"], "volume-syncing-sidecar");
    assert_eq!(arg_after(sidecar, "--schedule"), "@every 1m");
    assert_eq!(arg_after(sidecar, "-d"), "/example-org-bucket");
    assert_eq!(
        env_of(sidecar, "ENCRYPTION_PASSPHRASE")["valueFrom"]["secretKeyRef"]["name"],
        "short-remote-sync"
    );
    assert_eq!(
        sidecar["envFrom"][0]["secretRef"]["name"],
        "short-secret-envs"
    );
    let key = cluster.json(&["get", "secret", "-n", APP_NS, "short-remote-sync"]);
    assert!(key["data"]["ENCRYPTION_PASSPHRASE"].is_string(), "{key}");

    // The unreadable resource refuses the labelled Pods of its namespace, saying why.
    let mut broken_pod = pod("broken-1", labelled("x"));
    broken_pod["metadata"]["namespace"] = "broken".into();
    broken_pod["metadata"]["labels"] = serde_json::json!({
        "my-pod-label": "short", "riotkit.org/volume-syncing-operator": "true"});
    let err = cluster.create(&broken_pod, &[]).unwrap_err();
    assert!(err.contains("PodFilesystemSync short"), "{err}");
    assert!(err.contains("spec.automaticEncryption.secretname"), "{err}");
    assert!(
        err.contains("did you mean spec.automaticEncryption.secretName?"),
        "{err}"
    );
    assert!(!cluster.exists("pod", "broken", "broken-1"));
    assert!(
        operator
            .output_so_far()
            .contains("PodFilesystemSync cannot be read"),
        "the operator did not say which resource it cannot read"
    );
    // Stop it as the other test does: SIGTERM, the drain, SIGTERM again.
    operator.signal(nix::sys::signal::Signal::SIGTERM);
    operator.wait_for_output("still answering admissions", 1, Duration::from_secs(30));
    operator.signal(nix::sys::signal::Signal::SIGTERM);
    operator.wait_output(Duration::from_secs(30)).assert_code(0);
}
