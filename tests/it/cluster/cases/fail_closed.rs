//! Case fail_closed: With no operator replica a labelled Pod is refused and an unlabelled one
//! runs; with the operator back, the labelled Pod is admitted, injected, and its restore and
//! sidecar really run: the restore brings the remote's file before the app starts, the sidecar
//! uploads what the app writes.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::harness::{BUCKET, Cluster, INJECT_LABEL, OP_NS};
use crate::cluster::objects::{app_pod, container_state, names, sync_resource};
use crate::cluster::s3::{S3, snapshot};

pub fn run(c: &Cluster, s3: &S3) {
    // Its own namespace per run: a reused cluster may still be deleting the last one's.
    let ns = &format!("fail-closed-{}", std::process::id());
    c.fresh_namespace(ns);
    c.apply(&s3.secret(ns, "remote"));
    let remote = format!("{BUCKET}/fail-closed");
    c.apply(&sync_resource(ns, "fc", &remote, "remote"));
    let seed = s3.path(&remote).join("seed.txt");
    fs::create_dir_all(seed.parent().unwrap()).unwrap();
    fs::write(&seed, b"restored before the app started\n").unwrap();
    let labels = json!({"app": "fc", INJECT_LABEL: "true"});
    // The app checks that the restore ran before it, then writes.
    let script = "cat /data/seed.txt > /data/seen.txt && echo written-by-the-app > /data/app.txt \
                  && sleep 3600";

    c.scale_operator(0);
    c.wait_for(
        "no webhook endpoint",
        OP_NS,
        Duration::from_secs(90),
        || (c.webhook_endpoints() == 0).then_some(()),
    );
    let err = c
        .create(&app_pod(ns, "labelled-down", labels.clone(), script))
        .unwrap_err();
    assert!(err.contains("failed calling webhook"), "{err}");
    assert!(!c.exists("pod", ns, "labelled-down"));
    c.create(&app_pod(
        ns,
        "unlabelled",
        json!({"app": "fc"}),
        "sleep 3600",
    ))
    .expect("an unlabelled Pod is created while the operator is down");
    c.wait_for(
        "the unlabelled Pod Running",
        ns,
        Duration::from_secs(120),
        || {
            let p = c.pod(ns, "unlabelled");
            (p["status"]["phase"] == "Running").then_some(())
        },
    );
    let p = c.pod(ns, "unlabelled");
    assert_eq!(names(&p["spec"]["containers"]), ["app"]);
    assert!(p["spec"]["initContainers"].is_null());

    let started = Instant::now();
    c.scale_operator(2);
    c.ok(
        &[
            "rollout",
            "status",
            "-n",
            OP_NS,
            "deployment/volume-syncing-operator",
            "--timeout=180s",
        ],
        None,
    );
    eprintln!(
        "cluster: operator back from 0 to 2 Ready replicas in {:.0?}",
        started.elapsed()
    );
    // The Deployment is Ready when the Pods are; the endpoints follow a moment later: until then the
    // API server still refuses, as a controller's retry would meet.
    let stored = c.wait_for(
        "the labelled Pod admitted",
        ns,
        Duration::from_secs(60),
        || match c.create(&app_pod(ns, "labelled-up", labels.clone(), script)) {
            Ok(p) => Some(p),
            Err(e) if e.contains("failed calling webhook") => None,
            Err(e) => panic!("the labelled Pod was refused with the operator up: {e}"),
        },
    );
    assert_eq!(
        names(&stored["spec"]["initContainers"]),
        ["init-volume-restore"]
    );
    assert_eq!(
        names(&stored["spec"]["containers"]),
        ["app", "volume-syncing-sidecar"]
    );
    let started = Instant::now();
    c.wait_for(
        "the injected Pod Running with its sidecar",
        ns,
        Duration::from_secs(120),
        || {
            let p = c.pod(ns, "labelled-up");
            let init_done = container_state(&p, "init-volume-restore")
                .is_some_and(|s| s["state"]["terminated"]["exitCode"] == 0);
            let sidecar = container_state(&p, "volume-syncing-sidecar")
                .is_some_and(|s| s["state"]["running"].is_object());
            (init_done && sidecar && p["status"]["phase"] == "Running").then_some(())
        },
    );
    eprintln!(
        "cluster: injected Pod Running {:.0?} after creation",
        started.elapsed()
    );
    // The sidecar uploads what the app wrote, next to what the restore brought.
    c.wait_for(
        "the app's file at the S3 server",
        ns,
        Duration::from_secs(60),
        || {
            (fs::read(s3.path(&remote).join("seen.txt")).ok()?
                == b"restored before the app started\n"
                && fs::read(s3.path(&remote).join("app.txt")).ok()? == b"written-by-the-app\n")
                .then_some(())
        },
    );
    // Nothing else but the tool's own records (lease, manifest, upload record: README).
    let files: Vec<String> = snapshot(&s3.path(&remote)).into_keys().collect();
    let (own, data): (Vec<&String>, Vec<&String>) = files
        .iter()
        .partition(|f| f.starts_with(".volume-syncing-operator."));
    assert_eq!(data, ["app.txt", "seed.txt", "seen.txt"]);
    assert!(
        own.iter().any(|f| f.ends_with(".lease")),
        "the sidecar holds the writer's lease: {own:?}"
    );
    c.ok(&["delete", "namespace", ns, "--wait=false"], None);
}
