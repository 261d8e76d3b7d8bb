//! Case burst: a StatefulSet of 20 labelled Pods (`podManagementPolicy: Parallel`: all created
//! at once) created at the moment one of the two operator replicas is deleted (`kubectl delete
//! pod`, concurrently with `kubectl create`). Admissions that meet the dying replica are refused
//! (failurePolicy Fail) and the StatefulSet controller retries them. (A StatefulSet, not a
//! ReplicaSet: a per-Pod `{{ pod.name }}` path with a restore on generated Pod names is refused
//! by the workload rule `unstable-pod-name`.) Every Pod object the API ever showed (a `kubectl get pods --watch` from before
//! the create to the end: every version of every Pod) carries the restore init container, the
//! sidecar and the injection record: none ran, or even existed, uninjected; in the end all 20
//! run, injected, each with its own remote path, and the operator is back to two Ready replicas.
//! The injected containers request 5m CPU each (the node has 2 cores).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::harness::{BUCKET, Cluster, INJECT_LABEL, OP_NS};
use crate::cluster::objects::{app_pod, container_state, names, ready, sync_resource};
use crate::cluster::s3::S3;

const REPLICAS: usize = 20;
const INJECTED_ANNOTATION: &str = "riotkit.org/volume-syncing-injected";

fn time(rfc3339: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap()
}

/// Why a Pod object is not (fully) injected, if it is not.
fn uninjected(p: &Value) -> Option<String> {
    let init = names(&p["spec"]["initContainers"]);
    let containers = names(&p["spec"]["containers"]);
    let record = &p["metadata"]["annotations"][INJECTED_ANNOTATION];
    (init != ["init-volume-restore"]
        || containers != ["app", "volume-syncing-sidecar"]
        || !record.is_string())
    .then(|| format!("init {init:?}, containers {containers:?}, record {record}"))
}

pub fn run(c: &Cluster, s3: &S3) {
    let ns = &format!("burst-{}", std::process::id());
    c.fresh_namespace(ns);
    c.apply(&s3.secret(ns, "remote"));
    let mut resource = sync_resource(
        ns,
        "burst",
        &format!("{BUCKET}/burst/{{{{ pod.name }}}}"),
        "remote",
    );
    resource["spec"]["syncOptions"]["schedule"] = json!("@every 1h");
    resource["spec"]["resources"] =
        json!({"requests": {"cpu": "5m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}});
    c.apply(&resource);
    let labels = json!({"app": "burst", INJECT_LABEL: "true"});
    let template = app_pod(
        ns,
        "unused",
        labels.clone(),
        "trap 'exit 0' TERM; sleep 3600 & wait",
    );
    let statefulset = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "burst", "namespace": ns},
        "spec": {
            "replicas": REPLICAS,
            "serviceName": "burst",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "burst"}},
            "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
        }
    });

    // Every version of every Pod of the namespace, from before the first one exists.
    let watch = c.watch(&["pods", "-n", ns]);
    let victims: Vec<String> = c
        .operator_pods()
        .iter()
        .filter(|p| ready(p))
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        victims.len(),
        2,
        "two Ready operator replicas before the burst"
    );
    let victim = &victims[0];
    let started = Instant::now();
    let deleted_at = std::thread::scope(|scope| {
        let deleting = scope.spawn(|| {
            c.ok(
                &["delete", "pod", "-n", OP_NS, victim, "--wait=false"],
                None,
            );
            // Still there (terminating: grace period). Its deletionTimestamp is the end of the
            // grace period: the deletion was that many seconds earlier.
            let meta = &c.json(&["get", "pod", "-n", OP_NS, victim])["metadata"];
            let grace = meta["deletionGracePeriodSeconds"].as_i64()?;
            Some(time(meta["deletionTimestamp"].as_str()?) - chrono::Duration::seconds(grace))
        });
        c.create(&statefulset).expect("the StatefulSet is created");
        deleting.join().unwrap()
    });
    let running = c.wait_for(
        "all 20 Pods Running with their sidecars",
        ns,
        Duration::from_secs(300),
        || {
            let pods = c.pods(ns, "app=burst");
            let running: Vec<Value> = pods
                .into_iter()
                .filter(|p| {
                    !p["metadata"]["deletionTimestamp"].is_string()
                        && p["status"]["phase"] == "Running"
                        && container_state(p, "volume-syncing-sidecar")
                            .is_some_and(|s| s["state"]["running"].is_object())
                })
                .collect();
            (running.len() == REPLICAS).then_some(running)
        },
    );
    eprintln!(
        "cluster: burst: {REPLICAS} Pods Running {:.0?} after the create",
        started.elapsed()
    );
    // When the Pods were admitted, relative to the replica's deletion (1 s resolution).
    if let Some(deleted_at) = deleted_at {
        let offsets: Vec<i64> = running
            .iter()
            .map(|p| {
                (time(p["metadata"]["creationTimestamp"].as_str().unwrap()) - deleted_at)
                    .num_seconds()
            })
            .collect();
        eprintln!(
            "cluster: burst: Pods admitted {}..{} s after {victim} was deleted",
            offsets.iter().min().unwrap(),
            offsets.iter().max().unwrap()
        );
    }
    // The sidecars' remote paths, one per Pod (the downward API expands $(VSO_POD_NAME)).
    for p in &running {
        assert!(uninjected(p).is_none(), "{:?}", uninjected(p));
        let sidecar = &p["spec"]["containers"][1];
        let args: Vec<&str> = sidecar["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            args.contains(&"bucket/burst/$(VSO_POD_NAME)"),
            "{}: {args:?}",
            p["metadata"]["name"]
        );
    }
    c.ok(
        &[
            "rollout",
            "status",
            "-n",
            OP_NS,
            "deployment/volume-syncing-operator",
            "--timeout=120s",
        ],
        None,
    );
    let operator: Vec<String> = c
        .operator_pods()
        .iter()
        .filter(|p| ready(p) && !p["metadata"]["deletionTimestamp"].is_string())
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        operator.len(),
        2,
        "two Ready operator replicas after: {operator:?}"
    );
    assert!(!operator.contains(victim), "{victim} was deleted");

    let seen = watch.stop();
    let mut pods: BTreeMap<String, usize> = BTreeMap::new();
    for p in &seen {
        let name = p["metadata"]["name"].as_str().unwrap_or("?").to_string();
        if let Some(why) = uninjected(p) {
            panic!("the watch showed {name} uninjected: {why}\n{p:#}");
        }
        *pods.entry(name).or_default() += 1;
    }
    assert!(
        pods.len() >= REPLICAS,
        "the watch saw {} Pods: {:?}",
        pods.len(),
        pods.keys()
    );
    let events = c.json(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "reason=FailedCreate",
    ]);
    let refused: u64 = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    eprintln!(
        "cluster: burst: {} Pod objects, {} versions watched, all injected; {refused} creations \
         refused and retried by the StatefulSet controller",
        pods.len(),
        seen.len()
    );
    c.drop_namespace(ns);
}
