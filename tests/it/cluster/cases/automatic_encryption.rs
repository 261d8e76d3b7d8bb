//! Case automatic_encryption: a PodFilesystemSync with `automaticEncryption` and a `remotePath`
//! per Pod (`{{ pod.labels.slot }}`); two labelled Pods created at the same moment (two
//! concurrent `kubectl create`). The operator generates one key: exactly one Secret labelled
//! `riotkit.org/generated-by`, and both Pods' injected containers take ENCRYPTION_PASSPHRASE
//! from it. The bucket then holds only ciphertext: no object contains the plaintext or the
//! passphrase, no object name the file's name, every data object starts with rclone crypt's
//! header, and the plain marker `.volume-syncing-operator.encrypted` is there. A Pod deleted
//! (final sync) and created again restores the plaintext byte for byte before its app starts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::harness::{BUCKET, Cluster, INJECT_LABEL};
use crate::cluster::objects::{app_pod, container_state, names, sync_resource};
use crate::cluster::s3::{S3, snapshot};

const KEY_SECRET: &str = "enc-key";
const GENERATED: &str = "riotkit.org/generated-by=volume-syncing-operator";
const MARKER: &str = ".volume-syncing-operator.encrypted";

/// What the app of slot `slot` writes (and what a restore must bring back).
fn plaintext(slot: &str) -> Vec<u8> {
    (0..200)
        .map(|i| format!("top secret line {i} of slot {slot}\n"))
        .collect::<String>()
        .into_bytes()
}

fn pod(ns: &str, slot: &str) -> Value {
    // The same lines as `plaintext`, unless the restore brought them.
    let script = format!(
        "trap 'exit 0' TERM; \
         if [ -f /data/plain.txt ]; then echo restored; else \
         i=0; while [ $i -lt 200 ]; do echo \"top secret line $i of slot {slot}\"; i=$((i + 1)); \
         done > /data/plain.txt; echo written; fi; sleep 3600 & wait"
    );
    app_pod(
        ns,
        &format!("enc-{slot}"),
        json!({"app": "enc", "slot": slot, INJECT_LABEL: "true"}),
        &script,
    )
}

fn running(c: &Cluster, ns: &str, name: &str) -> Option<Value> {
    let p = c.pod(ns, name);
    (p["status"]["phase"] == "Running"
        && container_state(&p, "volume-syncing-sidecar")
            .is_some_and(|s| s["state"]["running"].is_object()))
    .then_some(p)
}

/// The generated Secrets of the namespace, by name.
fn generated(c: &Cluster, ns: &str) -> Vec<String> {
    let list = c.json(&["get", "secrets", "-n", ns, "-l", GENERATED]);
    names(
        &list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["metadata"].clone())
            .collect(),
    )
}

/// Both injected containers of `p` take the passphrase from the generated Secret.
#[track_caller]
fn uses_the_key(p: &Value) {
    let name = p["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        names(&p["spec"]["initContainers"]),
        ["init-volume-restore"],
        "{name}"
    );
    assert_eq!(
        names(&p["spec"]["containers"]),
        ["app", "volume-syncing-sidecar"],
        "{name}"
    );
    let injected = p["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p["spec"]["containers"].as_array().unwrap().iter().skip(1));
    for container in injected {
        let env = container["env"].as_array().cloned().unwrap_or_default();
        let passphrase: Vec<&Value> = env
            .iter()
            .filter(|e| e["name"] == "ENCRYPTION_PASSPHRASE")
            .collect();
        assert_eq!(
            passphrase,
            [
                &json!({"name": "ENCRYPTION_PASSPHRASE", "valueFrom": {"secretKeyRef":
                {"name": KEY_SECRET, "key": "ENCRYPTION_PASSPHRASE"}}})
            ],
            "{name}/{}",
            container["name"]
        );
    }
}

pub fn run(c: &Cluster, s3: &S3) {
    let ns = &format!("enc-{}", std::process::id());
    c.fresh_namespace(ns);
    c.apply(&s3.secret(ns, "remote"));
    let mut resource = sync_resource(
        ns,
        "enc",
        &format!("{BUCKET}/enc/{{{{ pod.labels.slot }}}}"),
        "remote",
    );
    resource["spec"]["automaticEncryption"] = json!({"enabled": true, "secretName": KEY_SECRET});
    c.apply(&resource);
    assert!(!c.exists("secret", ns, KEY_SECRET));

    // Two admissions at once: both race to create the key.
    let created: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["a", "b"]
            .map(|slot| scope.spawn(move || c.create(&pod(ns, slot))))
            .into_iter()
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("the labelled Pod is admitted"))
            .collect()
    });
    assert_eq!(generated(c, ns), [KEY_SECRET], "one generated key");
    for p in &created {
        uses_the_key(p);
    }
    let key = c.ok(
        &[
            "get",
            "secret",
            "-n",
            ns,
            KEY_SECRET,
            "-o",
            "go-template={{ index .data \"ENCRYPTION_PASSPHRASE\" | base64decode }}",
        ],
        None,
    );
    assert_eq!(key.len(), 43, "256 bits in unpadded base64");
    for slot in ["a", "b"] {
        c.wait_for(
            &format!("enc-{slot} Running with its sidecar"),
            ns,
            Duration::from_secs(120),
            || running(c, ns, &format!("enc-{slot}")),
        );
    }
    // Both deleted and gone: their final syncs are done, nothing is being written.
    let deleted = Instant::now();
    c.ok(
        &[
            "delete",
            "pod",
            "-n",
            ns,
            "enc-a",
            "enc-b",
            "--timeout=120s",
        ],
        None,
    );
    eprintln!(
        "cluster: enc-a and enc-b gone {:.0?} after kubectl delete pod",
        deleted.elapsed()
    );
    let dir = |slot: &str| s3.path(&format!("{BUCKET}/enc/{slot}"));
    for slot in ["a", "b"] {
        let files = snapshot(&dir(slot));
        assert!(
            files
                .get(MARKER)
                .is_some_and(|(_, content)| content.is_some()),
            "no plain marker in {slot}: {:?}",
            files.keys()
        );
        let mut data = 0;
        for (path, (_, content)) in &files {
            assert!(
                !path.contains("plain"),
                "a plain object name: {slot}/{path}"
            );
            let Some(content) = content else { continue };
            let has = |needle: &[u8]| content.windows(needle.len()).any(|w| w == needle);
            assert!(!has(b"top secret"), "plaintext in {slot}/{path}");
            assert!(!has(key.as_bytes()), "the passphrase in {slot}/{path}");
            if path != MARKER {
                assert!(
                    content.starts_with(b"RCLONE\0\0"),
                    "{slot}/{path} is not rclone crypt ciphertext"
                );
                data += 1;
            }
        }
        // plain.txt, and this program's own objects (key check, manifest …), all encrypted.
        assert!(data >= 2, "{slot}: {:?}", files.keys());
    }

    // enc-a again: its restore decrypts.
    let again = c.create(&pod(ns, "a")).expect("enc-a admitted again");
    uses_the_key(&again);
    c.wait_for("enc-a again Running", ns, Duration::from_secs(120), || {
        running(c, ns, "enc-a")
    });
    let p = c.pod(ns, "enc-a");
    assert_eq!(
        container_state(&p, "init-volume-restore").unwrap()["state"]["terminated"]["exitCode"],
        0
    );
    let restored = c.ok(
        &[
            "exec",
            "-n",
            ns,
            "enc-a",
            "-c",
            "app",
            "--",
            "cat",
            "/data/plain.txt",
        ],
        None,
    );
    assert_eq!(
        restored.as_bytes(),
        plaintext("a"),
        "the restored plaintext differs"
    );
    let said = c.wait_for("enc-a's first line", ns, Duration::from_secs(20), || {
        c.logs(ns, "enc-a", "app")
            .lines()
            .next()
            .map(str::to_string)
    });
    assert_eq!(said, "restored", "the app did not find its file at start");
    assert_eq!(generated(c, ns), [KEY_SECRET], "still one key");
    c.drop_namespace(ns);
}
