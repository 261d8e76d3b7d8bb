//! Case replication: the job of `deploy/replication/cronjob.yaml` with the Secret of
//! `deploy/replication/secret.yaml`. Kubernetes 1.20 serves CronJob only as batch/v1beta1 (batch/v1
//! came with 1.21) and knows no `timeZone` (1.24+), so the manifest itself is refused (checked
//! with a server-side dry run) and its `spec.jobTemplate` runs as a batch/v1 Job, unchanged but
//! for `imagePullPolicy: Never` (the image is only on this engine). The Secret is the file's with
//! the addresses and credentials replaced: SOURCE_* point at the test S3 server, REMOTE_* at a
//! second one (the other data center; one server for both would make each pair's equal source
//! and destination paths overlap, which the program refuses). The source buckets are filled
//! with files (nested, binary, empty), a destination holds a stale file; after the Job completes
//! every destination bucket equals its source byte for byte (this program's own objects aside).

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::harness::{Cluster, IMAGE, repo};
use crate::cluster::s3::{S3, snapshot};

const OWN: &str = ".volume-syncing-operator.";

/// A manifest of deploy/replication as JSON.
fn manifest(name: &str) -> Value {
    let path = repo("deploy/replication").join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files under `dir`, by path, without this program's own objects.
fn data(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    snapshot(dir)
        .into_iter()
        .filter(|(path, _)| !path.rsplit('/').next().unwrap().starts_with(OWN))
        .filter_map(|(path, (_, content))| Some((path, content?)))
        .collect()
}

/// Pseudo-random bytes (no compression or dedup shortcut can fake them).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn run(c: &Cluster) {
    let ns = &format!("repl-{}", std::process::id());
    c.fresh_namespace(ns);
    let cronjob_file = repo("deploy/replication/cronjob.yaml");
    let refused = c.kubectl(
        &[
            "apply",
            "--dry-run=server",
            "-n",
            ns,
            "-f",
            cronjob_file.to_str().unwrap(),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("no matches for kind \"CronJob\" in version \"batch/v1\""),
        "1.20 has no batch/v1 CronJob; kubectl said: {err}"
    );

    let cronjob = manifest("cronjob.yaml");
    let name = cronjob["metadata"]["name"].as_str().unwrap();
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "labels": cronjob["metadata"]["labels"]},
        "spec": cronjob["spec"]["jobTemplate"]["spec"],
    });
    let container = &mut job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], IMAGE);
    container["imagePullPolicy"] = json!("Never");
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        manifest("secret.yaml")["metadata"]["name"]
    );
    // The pairs: -s SOURCE -d DESTINATION ...
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "remote-to-remote-sync");
    let pairs: Vec<(String, String)> = args[1..]
        .chunks(4)
        .map(|p| {
            assert_eq!((p[0], p[2]), ("-s", "-d"), "{args:?}");
            (p[1].to_string(), p[3].to_string())
        })
        .collect();
    assert_eq!(pairs.len(), 4, "{args:?}");
    // Both servers start with their buckets (they cache the list of buckets).
    let source = S3::serve(&c.bridge, |root| {
        for (i, (bucket, _)) in pairs.iter().enumerate() {
            let dir = root.join(bucket);
            fs::create_dir_all(dir.join("nested/deeper")).unwrap();
            fs::write(dir.join("readme.txt"), format!("pair {i}: {bucket}\n")).unwrap();
            fs::write(
                dir.join("nested/deeper/blob.bin"),
                noise(200_000 + i, i as u64),
            )
            .unwrap();
            fs::write(dir.join("nested/empty.txt"), b"").unwrap();
        }
    });
    let destination = S3::serve(&c.bridge, |root| {
        for (_, bucket) in &pairs {
            fs::create_dir_all(root.join(bucket)).unwrap();
            fs::write(
                root.join(bucket).join("stale.txt"),
                b"not in the source: deleted\n",
            )
            .unwrap();
        }
    });
    let mut secret = manifest("secret.yaml");
    secret["metadata"]["namespace"] = json!(ns);
    let keys: Vec<String> = secret["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for (prefix, server) in [("SOURCE", &source), ("REMOTE", &destination)] {
        let ours = server.secret(ns, "unused")["stringData"].clone();
        for (key, value) in ours.as_object().unwrap() {
            let key = key.replacen("REMOTE", prefix, 1);
            assert!(keys.contains(&key), "{key} is not in secret.yaml");
            secret["stringData"][key] = value.clone();
        }
    }
    assert!(
        keys.iter().all(|k| !secret["stringData"][k]
            .as_str()
            .unwrap()
            .contains("CHANGE-ME")),
        "a placeholder left: {:#}",
        secret["stringData"]
    );
    c.apply(&secret);
    c.apply(&job);
    // `kubectl wait --for=condition=complete`, but failing at the first failed Pod (the Job
    // would retry twice, with back-off, before giving up).
    let started = Instant::now();
    c.wait_for(
        "the replication Job complete",
        ns,
        Duration::from_secs(180),
        || {
            let job = c.json(&["get", "job", "-n", ns, name]);
            if job["status"]["failed"].as_u64().unwrap_or(0) > 0 {
                let logs = c.kubectl(
                    &["logs", "-n", ns, &format!("job/{name}"), "--tail=50"],
                    None,
                );
                panic!(
                    "a Pod of the replication Job failed: {:#}\nlog:\n{}",
                    job["status"],
                    String::from_utf8_lossy(&logs.stdout)
                );
            }
            job["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
                .then_some(())
        },
    );
    eprintln!(
        "cluster: replication Job complete {:.0?} after its creation",
        started.elapsed()
    );
    let status = c.json(&["get", "job", "-n", ns, name]);
    assert_eq!(status["status"]["succeeded"], 1, "{:#}", status["status"]);
    assert!(
        status["status"]["failed"].is_null(),
        "no failed Pod: {:#}",
        status["status"]
    );
    for (from, dest) in &pairs {
        let want = data(&source.path(from));
        assert_eq!(want.len(), 3, "{from}: {:?}", want.keys());
        let got = data(&destination.path(dest));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{dest} does not hold {from}'s files"
        );
        assert!(got == want, "{dest} differs from {from} in content");
    }
    c.drop_namespace(ns);
}
