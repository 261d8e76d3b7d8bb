//! Case rollouts: a one-replica Deployment (`strategy: Recreate`) of injected Pods whose app
//! appends a numbered line every second to /data/log.txt, rolled out three times in a row
//! (`kubectl patch` of an annotation in the Pod template). The sidecar syncs only on its final
//! sync (schedule 1 h), so every line that survives a rollout went through the old Pod's final
//! sync and the new Pod's restore. After each rollout: the bucket's copy after the final sync
//! ends with the old app's last line (its termination message: what it had written when it
//! got SIGTERM), the new Pod's app found exactly that copy at start (its file begins with those
//! bytes) and continued the numbering from it; in the end the file is 1, 2, 3 … without a gap.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::harness::{BUCKET, Cluster, INJECT_LABEL};
use crate::cluster::objects::{app_pod, container_state, sync_resource};
use crate::cluster::s3::S3;

const ROLLOUTS: usize = 3;

/// The app: continues from the restored file's last number; on SIGTERM it stops at once and
/// leaves its last line as its termination message (the kubelet keeps it in the Pod's status).
const SCRIPT: &str = "f=/data/log.txt; \
    trap 'tail -n 1 $f > /dev/termination-log; exit 0' TERM; \
    n=0; if [ -s $f ]; then n=$(tail -n 1 $f | cut -d ' ' -f 1); fi; \
    echo \"start $n\"; \
    while true; do n=$((n + 1)); echo \"$n $HOSTNAME\" >> $f; sleep 1 & wait $!; done";

/// The numbers of the lines `N pod-name`, checking each has that form.
fn numbers(log: &[u8]) -> Vec<u64> {
    String::from_utf8(log.to_vec())
        .expect("the log is text")
        .lines()
        .map(|l| {
            let (n, host) = l.split_once(' ').unwrap_or_else(|| panic!("line {l:?}"));
            assert!(host.starts_with("roll-"), "line {l:?}");
            n.parse().unwrap_or_else(|_| panic!("line {l:?}"))
        })
        .collect()
}

/// The Deployment's one live Pod (not terminating) with its app and sidecar running.
fn live_pod(c: &Cluster, ns: &str, not_uid: &Value) -> Option<Value> {
    let pods = c.pods(ns, "app=roll");
    let p = pods.into_iter().find(|p| {
        &p["metadata"]["uid"] != not_uid && !p["metadata"]["deletionTimestamp"].is_string()
    })?;
    let running =
        |name: &str| container_state(&p, name).is_some_and(|s| s["state"]["running"].is_object());
    let restored = container_state(&p, "init-volume-restore")
        .is_some_and(|s| s["state"]["terminated"]["exitCode"] == 0);
    (restored && running("app") && running("volume-syncing-sidecar")).then_some(p)
}

/// The app's first line of output (what it found at start).
fn first_log_line(c: &Cluster, ns: &str, pod: &str) -> String {
    c.wait_for("the app's first line", ns, Duration::from_secs(20), || {
        c.logs(ns, pod, "app").lines().next().map(str::to_string)
    })
}

pub fn run(c: &Cluster, s3: &S3) {
    let ns = &format!("roll-{}", std::process::id());
    c.fresh_namespace(ns);
    c.apply(&s3.secret(ns, "remote"));
    let remote = format!("{BUCKET}/roll");
    let mut resource = sync_resource(ns, "roll", &remote, "remote");
    resource["spec"]["syncOptions"]["schedule"] = json!("@every 1h");
    c.apply(&resource);
    let bucket_log = s3.path(&remote).join("log.txt");
    let labels = json!({"app": "roll", INJECT_LABEL: "true"});
    let template = app_pod(ns, "unused", labels.clone(), SCRIPT);
    c.apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "roll", "namespace": ns},
        "spec": {
            "replicas": 1, "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": "roll"}},
            "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
        }
    }));
    let mut pod = c.wait_for(
        "the first Pod Running with its sidecar",
        ns,
        Duration::from_secs(120),
        || live_pod(c, ns, &Value::Null),
    );
    let first = pod["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(first_log_line(c, ns, &first), "start 0");
    for round in 1..=ROLLOUTS {
        // A few lines of this Pod's own.
        std::thread::sleep(Duration::from_secs(3));
        let old = pod["metadata"]["name"].as_str().unwrap().to_string();
        let old_uid = pod["metadata"]["uid"].clone();
        let patched = Instant::now();
        c.ok(
            &[
                "patch",
                "deployment",
                "-n",
                ns,
                "roll",
                "-p",
                &json!({"spec": {"template": {"metadata": {"annotations": {
                    "rollout": round.to_string()}}}}})
                .to_string(),
            ],
            None,
        );
        // The old Pod stays (terminating) until both its containers ended: then the final sync
        // is done and the bucket holds what the new Pod will restore.
        let (last_line, copy) = c.wait_for(
            &format!("rollout {round}: the old Pod {old}'s app and sidecar ended"),
            ns,
            Duration::from_secs(90),
            || {
                let out = c.kubectl(&["get", "pod", "-n", ns, &old, "-o", "json"], None);
                assert!(
                    out.status.success(),
                    "rollout {round}: {old} disappeared before its containers were seen ended \
                     (polled every 0.5 s): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let p: Value = serde_json::from_slice(&out.stdout).unwrap();
                let app = &container_state(&p, "app")?["state"]["terminated"];
                let sidecar = &container_state(&p, "volume-syncing-sidecar")?["state"];
                if !(app.is_object() && sidecar["terminated"].is_object()) {
                    return None;
                }
                assert_eq!(
                    sidecar["terminated"]["exitCode"], 0,
                    "rollout {round}: the final sync of {old} failed: {sidecar:#}"
                );
                let line = app["message"].as_str().unwrap_or("").to_string();
                Some((line, fs::read(&bucket_log).expect("log.txt in the bucket")))
            },
        );
        eprintln!(
            "cluster: rollout {round}: {old}'s final sync done {:.0?} after the patch",
            patched.elapsed()
        );
        assert!(
            !last_line.is_empty() && copy.ends_with(last_line.as_bytes()),
            "rollout {round}: the bucket's copy after {old}'s final sync does not end with the \
             app's last line {last_line:?}: lines were lost; the copy ends with {:?}",
            String::from_utf8_lossy(&copy[copy.len().saturating_sub(80)..])
        );
        let restored = *numbers(&copy).last().unwrap();
        pod = c.wait_for(
            &format!("rollout {round}: the new Pod restored and Running"),
            ns,
            Duration::from_secs(120),
            || live_pod(c, ns, &old_uid),
        );
        let new = pod["metadata"]["name"].as_str().unwrap().to_string();
        eprintln!(
            "cluster: rollout {round}: {new} restored and Running {:.0?} after the patch \
             ({restored} lines)",
            patched.elapsed()
        );
        assert_eq!(
            first_log_line(c, ns, &new),
            format!("start {restored}"),
            "rollout {round}: the new app did not start from the restored line"
        );
        let now = c
            .ok(
                &[
                    "exec",
                    "-n",
                    ns,
                    &new,
                    "-c",
                    "app",
                    "--",
                    "cat",
                    "/data/log.txt",
                ],
                None,
            )
            .into_bytes();
        assert!(
            now.starts_with(&copy),
            "rollout {round}: {new}'s file does not begin with the bucket's copy byte for byte"
        );
        let all = numbers(&now);
        assert_eq!(
            all,
            (1..=all.len() as u64).collect::<Vec<_>>(),
            "rollout {round}: the numbering has a gap or a repeat"
        );
        assert!(
            all.len() as u64 > restored,
            "rollout {round}: {new} appends nothing"
        );
    }
    c.drop_namespace(ns);
}
