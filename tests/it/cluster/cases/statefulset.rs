//! Case statefulset: a StatefulSet of 2 replicas, volumeClaimTemplates bound to hostPath PVs, the data
//! mounted with a subPath, `remotePath` per Pod (`{{ pod.name }}`), sidecar only on the final
//! sync (schedule 1 h): a file written just before the Pods are deleted (`kubectl scale --replicas=0`)
//! is at the S3 server after it; the volume is then emptied, and the recreated Pod's restore (scaled
//! back to 2) brings back the same bytes, modes and empty directory before the app starts (the app
//! sees its file at start).

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::harness::{BUCKET, Cluster, INJECT_LABEL, state_dir};
use crate::cluster::objects::{app_pod, container_state, names, sync_resource};
use crate::cluster::s3::{S3, snapshot};

pub fn run(c: &Cluster, s3: &S3) {
    let ns = &format!("sts-{}", std::process::id());
    c.fresh_namespace(ns);
    c.apply(&s3.secret(ns, "remote"));
    let mut resource = sync_resource(
        ns,
        "sts",
        &format!("{BUCKET}/sts/{{{{ pod.name }}}}"),
        "remote",
    );
    resource["spec"]["syncOptions"]["schedule"] = json!("@every 1h");
    c.apply(&resource);
    // The PVs' directories, writable by the Pods' user (hostPath gets no fsGroup).
    let pv_root = state_dir().join("pv").join(ns);
    for i in 0..2 {
        let dir = pv_root.join(format!("pv{i}"));
        fs::create_dir_all(dir.join("app")).unwrap();
        for d in [dir.clone(), dir.join("app")] {
            nix::unistd::chown(&d, Some(65312.into()), Some(65312.into())).unwrap();
        }
        c.apply(&json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": format!("{ns}-pv{i}")},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": ns, "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": dir.to_str().unwrap(), "type": "Directory"},
            }
        }));
    }
    let script = "trap 'exit 0' TERM; \
                  if [ -f /data/a.txt ]; then echo restored > /tmp/start; \
                  else mkdir -p /data/empty /data/sub && printf '%s\\n' \"$HOSTNAME\" > /data/sub/a.txt \
                  && chmod 640 /data/sub/a.txt && echo x > /data/a.txt && chmod 600 /data/a.txt; fi; \
                  sleep 3600 & wait";
    let mut template = app_pod(
        ns,
        "unused",
        json!({"app": "sts", INJECT_LABEL: "true"}),
        script,
    );
    template["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data", "subPath": "app"}]);
    template["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "tmp", "mountPath": "/tmp"}));
    template["spec"]["volumes"] = json!([{"name": "tmp", "emptyDir": {}}]);
    c.apply(&json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "sts", "namespace": ns},
        "spec": {
            "replicas": 2, "serviceName": "sts", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "sts"}},
            "template": {"metadata": {"labels": template["metadata"]["labels"]}, "spec": template["spec"]},
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": ns,
                         "resources": {"requests": {"storage": "1Gi"}}},
            }],
        }
    }));
    let running = |name: &str| {
        let p = c.pod(ns, name);
        (p["status"]["phase"] == "Running"
            && container_state(&p, "volume-syncing-sidecar")
                .is_some_and(|s| s["state"]["running"].is_object()))
        .then_some(p)
    };
    for name in ["sts-0", "sts-1"] {
        let p = c.wait_for(
            &format!("{name} Running"),
            ns,
            Duration::from_secs(180),
            || running(name),
        );
        assert_eq!(names(&p["spec"]["initContainers"]), ["init-volume-restore"]);
        assert_eq!(
            names(&p["spec"]["containers"]),
            ["app", "volume-syncing-sidecar"]
        );
    }
    // Which PV each Pod got.
    let host_dir = |pod: &str| {
        let pvc = c.json(&["get", "pvc", "-n", ns, &format!("data-{pod}")]);
        let pv = c.json(&["get", "pv", pvc["spec"]["volumeName"].as_str().unwrap()]);
        PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().unwrap()).join("app")
    };
    let dir0 = host_dir("sts-0");
    c.ok(
        &[
            "exec",
            "-n",
            ns,
            "sts-0",
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "printf 'late\\n' > /data/late.txt && chmod 604 /data/late.txt",
        ],
        None,
    );
    let before = snapshot(&dir0);
    assert!(
        before.contains_key("late.txt") && before.contains_key("empty"),
        "{:?}",
        before.keys()
    );
    let remote0 = s3.path(&format!("{BUCKET}/sts/sts-0"));
    assert!(
        !remote0.join("late.txt").exists(),
        "no sync before the delete (schedule 1 h)"
    );
    // Scaling to zero deletes the Pods the way `kubectl delete pod` does (SIGTERM, the sidecar's
    // final sync) without the StatefulSet recreating sts-0 at once: its volume can be emptied
    // only once the old Pod is gone, and a recreated Pod could otherwise win that race.
    let old_uid = c.pod(ns, "sts-0")["metadata"]["uid"].clone();
    let deleted = Instant::now();
    c.ok(
        &["scale", "-n", ns, "statefulset/sts", "--replicas=0"],
        None,
    );
    c.wait_for(
        "the final sync of sts-0",
        ns,
        Duration::from_secs(60),
        || (fs::read(remote0.join("late.txt")).ok()? == b"late\n").then_some(()),
    );
    eprintln!(
        "cluster: final sync at the S3 server {:.0?} after its Pod was deleted",
        deleted.elapsed()
    );
    // The final sync ends with the manifest (modes, empty directories), after the data: the Pod
    // object goes once every container has exited (15-20 s later: 1.20's status manager).
    c.wait_for("sts-0 and sts-1 gone", ns, Duration::from_secs(120), || {
        c.pods(ns, "app=sts").is_empty().then_some(())
    });
    eprintln!(
        "cluster: old sts-0 gone {:.0?} after its deletion",
        deleted.elapsed()
    );
    for entry in fs::read_dir(&dir0).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            fs::remove_dir_all(&path).unwrap()
        } else {
            fs::remove_file(&path).unwrap()
        }
    }
    c.ok(
        &["scale", "-n", ns, "statefulset/sts", "--replicas=2"],
        None,
    );
    c.wait_for(
        "sts-0 recreated and Running",
        ns,
        Duration::from_secs(180),
        || {
            let p = running("sts-0")?;
            (p["metadata"]["uid"] != old_uid
                && !p["metadata"]["deletionTimestamp"].is_string()
                && container_state(&p, "init-volume-restore")?["state"]["terminated"]["exitCode"]
                    == 0)
                .then_some(())
        },
    );
    eprintln!(
        "cluster: sts-0 restored and Running {:.0?} after its deletion",
        deleted.elapsed()
    );
    let after = snapshot(&dir0);
    assert_eq!(
        after, before,
        "the restored volume differs (bytes, modes or directories)"
    );
    let start = c.ok(
        &[
            "exec",
            "-n",
            ns,
            "sts-0",
            "-c",
            "app",
            "--",
            "cat",
            "/tmp/start",
        ],
        None,
    );
    assert_eq!(
        start, "restored\n",
        "the app did not find its data at start"
    );
    // sts-1 kept its own path.
    assert!(
        !s3.path(&format!("{BUCKET}/sts/sts-1"))
            .join("late.txt")
            .exists()
    );
    c.ok(&["delete", "namespace", ns, "--wait=false"], None);
}
