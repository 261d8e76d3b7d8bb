//! Case rollouts: a one-replica Deployment (`strategy: Recreate`) of injected Pods whose app
//! appends a numbered line every second to /data/log.txt (an emptyDir: it dies with the Pod),
//! rolled out three times in a row (`kubectl patch` of an annotation in the Pod template). The
//! sidecar syncs only on its final sync (schedule 1 h), so every line that survives a rollout
//! went through the old Pod's final sync and the new Pod's restore. The app also appends each
//! line to a witness file of its own on the node (a hostPath the injected containers do not
//! see), so the test knows every line each Pod wrote, up to its SIGTERM. After each rollout the
//! new Pod's restored file is, byte for byte, everything written before (the previous restore
//! plus the old Pod's witness), the bucket's copy begins with it, and the app continued the
//! numbering from its last line: no line lost, none repeated. The same Deployment with the
//! default strategy (RollingUpdate) is refused when applied, naming `strategy: Recreate`.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::harness::{BUCKET, Cluster, INJECT_LABEL, state_dir};
use crate::cluster::objects::{app_pod, container_state, sync_resource};
use crate::cluster::s3::S3;

const ROLLOUTS: usize = 3;

/// The app: continues from the restored file's last number, writes each line to the volume
/// and to its witness file (one `tee`: SIGTERM goes to the shell, which runs its trap only
/// after the pipeline, so a line is in both or in neither); on SIGTERM it stops at once.
const SCRIPT: &str = "f=/data/log.txt; trap 'exit 0' TERM; \
    n=0; if [ -s $f ]; then n=$(tail -n 1 $f | cut -d ' ' -f 1); fi; \
    echo \"start $n\"; \
    while true; do n=$((n + 1)); echo \"$n $HOSTNAME\" | tee -a $f /witness/$HOSTNAME >/dev/null; \
    sleep 1 & wait $!; done";

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
    // The witness files, on the node, writable by the Pods' user (hostPath gets no fsGroup).
    let witness = state_dir().join("witness").join(ns);
    fs::create_dir_all(&witness).unwrap();
    nix::unistd::chown(&witness, Some(65312.into()), Some(65312.into())).unwrap();
    let mut template = app_pod(ns, "unused", labels.clone(), SCRIPT);
    template["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "witness", "mountPath": "/witness"}));
    template["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "witness",
        "hostPath": {"path": witness.to_str().unwrap(), "type": "Directory"}}));
    let mut deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "roll", "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "roll"}},
            "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
        }
    });
    // The default strategy (RollingUpdate, 25 % surge) would start each new Pod before the old
    // one stops, and its restore would wait for the old Pod's lease for ever: the operator
    // refuses the Deployment when it is applied, naming the rule and the fix (issue 26, 1).
    let err = c.create(&deployment).unwrap_err();
    for says in ["rule overlapping-rollout", "spec.strategy.type: Recreate"] {
        assert!(err.contains(says), "{err}");
    }
    assert!(
        !c.exists("deployment", ns, "roll"),
        "a refused Deployment was stored"
    );
    deployment["spec"]["strategy"] = json!({"type": "Recreate"});
    c.apply(&deployment);
    let mut pod = c.wait_for(
        "the first Pod Running with its sidecar",
        ns,
        Duration::from_secs(120),
        || live_pod(c, ns, &Value::Null),
    );
    let first = pod["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(first_log_line(c, ns, &first), "start 0");
    // Every line written so far by the Pods that are gone: what the next restore must bring.
    let mut expected: Vec<u8> = Vec::new();
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
        // Recreate: the new Pod is created once the old one is gone, i.e. after its final sync
        // and after its app stopped writing.
        pod = c.wait_for(
            &format!("rollout {round}: the new Pod restored and Running"),
            ns,
            Duration::from_secs(120),
            || live_pod(c, ns, &old_uid),
        );
        let new = pod["metadata"]["name"].as_str().unwrap().to_string();
        let wrote = fs::read(witness.join(&old)).expect("the old Pod's witness file");
        assert!(!wrote.is_empty(), "rollout {round}: {old} wrote nothing");
        expected.extend_from_slice(&wrote);
        let last = *numbers(&expected).last().unwrap();
        eprintln!(
            "cluster: rollout {round}: {new} restored and Running {:.0?} after the patch \
             ({last} lines)",
            patched.elapsed()
        );
        assert_eq!(
            first_log_line(c, ns, &new),
            format!("start {last}"),
            "rollout {round}: the new app did not start from the old one's last line \
             {:?}: lines were lost or repeated",
            String::from_utf8_lossy(&wrote).lines().last()
        );
        let copy = fs::read(&bucket_log).expect("log.txt in the bucket");
        assert!(
            copy.starts_with(&expected),
            "rollout {round}: the bucket's copy after {old}'s final sync lacks lines it wrote"
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
            now.starts_with(&expected),
            "rollout {round}: {new}'s file does not begin, byte for byte, with every line \
             written before"
        );
        assert!(
            String::from_utf8_lossy(&now[expected.len()..])
                .lines()
                .all(|l| l.ends_with(&format!(" {new}"))),
            "rollout {round}: after the restored lines, only {new}'s own"
        );
        let all = numbers(&now);
        assert_eq!(
            all,
            (1..=all.len() as u64).collect::<Vec<_>>(),
            "rollout {round}: the numbering has a gap or a repeat"
        );
        assert!(
            all.len() as u64 > last,
            "rollout {round}: {new} appends nothing"
        );
    }
    c.drop_namespace(ns);
}
