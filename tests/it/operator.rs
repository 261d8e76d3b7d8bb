//! The admission webhook (`operator`) against a real Kubernetes API server: etcd and
//! kube-apiserver (built by `make kube-apiserver` from Debian 12's kubernetes 1.20 sources) on
//! loopback with a token file and RBAC; the CRD, the RBAC and the MutatingWebhookConfiguration
//! are the ones `kubectl kustomize deploy/operator` renders (only the webhook's clientConfig is
//! pointed at the operator on 127.0.0.1, as there is no Service without a cluster network); the
//! operator runs as the real binary with the service account's token, so the shipped RBAC is
//! what it gets. Pods are created through the API and what the API server stored is read back.
//!
//! The API server is 1.20, so the operator (with `--native-sidecars auto`) injects classic
//! sidecars; 1.20 also prunes `restartPolicy` on init containers, so native sidecars cannot be
//! observed here and are covered by the part-1 golden files (tests/it/inject.rs). Pods are never
//! scheduled (no scheduler, no kubelet): admission is what is tested.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Running, Sandbox, Vso};
use serde_json::Value;

// Resources written for the original Go operator, against the same API server.
mod legacy;

const OP_NS: &str = "volume-syncing-operator";
const APP_NS: &str = "apps";
const ADMIN_TOKEN: &str = "admin-token-for-tests";
const OPERATOR_TOKEN: &str = "operator-token-for-tests";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A tool of tools/bin; fails loudly saying how to get it.
fn tool(name: &str) -> PathBuf {
    let path = repo("tools/bin").join(name);
    assert!(
        path.is_file(),
        "{} not found: run `make kube-apiserver` (it builds kube-apiserver from Debian 12's \
         kubernetes source package and unpacks Debian's etcd into tools/bin; `make test` does it)",
        path.display()
    );
    path
}

fn kubectl_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    });
    found.expect("kubectl not found on PATH: install it (Debian: kubernetes-client) to run tests/it/operator.rs")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Cluster {
    dir: PathBuf,
    admin_kubeconfig: PathBuf,
    operator_kubeconfig: PathBuf,
    _etcd: Proc,
    _apiserver: Proc,
}

fn kubeconfig(path: &Path, port: u16, token: &str) {
    fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: \
             https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  \
             user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: test\n    \
             user: u\ncurrent-context: c\n"
        ),
    )
    .unwrap();
}

impl Cluster {
    fn start(sandbox: &Sandbox) -> Cluster {
        let apiserver_bin = tool("kube-apiserver");
        let etcd_bin = tool("etcd");
        kubectl_binary();
        let dir = sandbox.dir("cluster");
        let log = |name: &str| fs::File::create(dir.join(name)).unwrap();
        let (client, peer) = (free_port(), free_port());
        let etcd = Command::new(etcd_bin)
            .args(["--data-dir", dir.join("etcd").to_str().unwrap()])
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
            .stdout(log("etcd.log"))
            .stderr(log("etcd.log"))
            .spawn()
            .expect("start etcd");
        let etcd = Proc(etcd);
        let key = dir.join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out", key.to_str().unwrap(), "2048"])
            .stderr(Stdio::null())
            .status()
            .expect("openssl is needed to make the service-account key");
        assert!(status.success(), "openssl genrsa failed");
        fs::write(
            dir.join("tokens.csv"),
            format!(
                "{ADMIN_TOKEN},admin,1,\"system:masters\"\n{OPERATOR_TOKEN},\
                 system:serviceaccount:{OP_NS}:volume-syncing-operator,2,\
                 \"system:serviceaccounts,system:serviceaccounts:{OP_NS}\"\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let apiserver = Command::new(apiserver_bin)
            .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .arg(format!("--secure-port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--insecure-port=0",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--service-account-issuer=https://kubernetes.default.svc",
                // No controller manager creates the default service accounts.
                "--disable-admission-plugins=ServiceAccount",
                "--enable-priority-and-fairness=false",
            ])
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!(
                "--token-auth-file={}",
                dir.join("tokens.csv").display()
            ))
            .arg(format!("--service-account-key-file={}", key.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                key.display()
            ))
            .stdout(log("apiserver.log"))
            .stderr(log("apiserver.log"))
            .spawn()
            .expect("start kube-apiserver");
        let cluster = Cluster {
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            operator_kubeconfig: dir.join("operator.kubeconfig"),
            dir,
            _etcd: etcd,
            _apiserver: Proc(apiserver),
        };
        kubeconfig(&cluster.admin_kubeconfig, port, ADMIN_TOKEN);
        kubeconfig(&cluster.operator_kubeconfig, port, OPERATOR_TOKEN);
        // Generous: the API server's start-up (bootstrap RBAC policy) is seconds on a busy CI
        // machine; the bound only keeps a broken start from hanging the test.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let out = cluster.kubectl(&["get", "--raw", "/readyz"], None);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver did not become ready; its log:\n{}",
                fs::read_to_string(cluster.dir.join("apiserver.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        cluster
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(kubectl_binary())
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .arg("--request-timeout=30s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all, None)).unwrap()
    }

    /// `kubectl create` of a JSON object; the stored object, or kubectl's error text.
    fn create(&self, object: &Value, extra: &[&str]) -> Result<Value, String> {
        let mut args = vec!["create", "-o", "json", "-f", "-"];
        args.extend(extra);
        let out = self.kubectl(&args, Some(&object.to_string()));
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn exists(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let out = self.kubectl(&["get", kind, "-n", namespace, name, "-o", "name"], None);
        if out.status.success() {
            return true;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("NotFound"), "kubectl get {kind} {name}: {err}");
        false
    }
}

/// The install as `kubectl kustomize deploy/operator` renders it, minus what needs a cluster
/// network (Deployment, Service), with the webhook called at `url`.
fn install(cluster: &Cluster, url: &str) {
    let out = Command::new(kubectl_binary())
        .args(["kustomize", repo("deploy/operator").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/operator failed"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut docs = Vec::new();
    let mut kinds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc).unwrap();
        let kind = v["kind"].as_str().unwrap().to_string();
        if kind == "Deployment" || kind == "Service" {
            continue;
        }
        if kind == "MutatingWebhookConfiguration" {
            for w in v["webhooks"].as_array_mut().unwrap() {
                // Pods: a labelled Pod never starts uninjected. Workloads: a check that changes
                // nothing, so the operator being down must not block them.
                let pods = w["name"] == "pods.volume-syncing-operator.riotkit.org";
                let (policy, effects, reinvocation) = if pods {
                    ("Fail", "NoneOnDryRun", "IfNeeded")
                } else {
                    ("Ignore", "None", "Never")
                };
                assert_eq!(w["failurePolicy"], policy, "{}", w["name"]);
                assert_eq!(w["sideEffects"], effects, "{}", w["name"]);
                assert!(w["timeoutSeconds"].as_i64().unwrap() <= 10);
                assert_eq!(w["reinvocationPolicy"], reinvocation, "{}", w["name"]);
                w["clientConfig"] = serde_json::json!({ "url": url });
            }
        }
        kinds.push(kind);
        docs.push(v);
    }
    for kind in [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} in deploy/operator"
        );
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs});
    cluster.ok(&["apply", "-f", "-"], Some(&list.to_string()));
    cluster.ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/podfilesystemsyncs.riotkit.org",
        ],
        None,
    );
}

fn start_operator(sandbox: &Sandbox, cluster: &Cluster, port: u16) -> Running {
    let mut operator = Vso::new(sandbox)
        .env("KUBECONFIG", &cluster.operator_kubeconfig)
        .args(["operator", "--namespace", OP_NS, "--cert-host", "127.0.0.1"])
        .arg(format!("--listen=127.0.0.1:{port}"))
        // Long, so that the drain after SIGTERM is seen whatever the load; a second signal ends it.
        .arg("--shutdown-delay=1m")
        .spawn();
    operator.wait_for_output("cache synced; ready", 1, Duration::from_secs(60));
    operator
}

fn sync(name: &str, app: &str, extra: Value) -> Value {
    let mut spec = serde_json::json!({
        "podSelector": {"matchLabels": {"app": app}},
        "localPath": "/data",
        "remotePath": format!("bucket/{app}"),
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::json!({
        "apiVersion": "riotkit.org/v1alpha1", "kind": "PodFilesystemSync",
        "metadata": {"name": name, "namespace": APP_NS},
        "spec": spec,
    })
}

fn pod(name: &str, labels: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": APP_NS, "labels": labels},
        "spec": {
            "containers": [{"name": "app", "image": "app:1",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    })
}

fn labelled(app: &str) -> Value {
    serde_json::json!({"app": app, "riotkit.org/volume-syncing-operator": "true"})
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_webhook_against_a_real_api_server() {
    let sandbox = Sandbox::new();
    let cluster = Cluster::start(&sandbox);
    let port = free_port();
    install(&cluster, &format!("https://127.0.0.1:{port}/mutate"));
    cluster.ok(&["create", "namespace", APP_NS], None);
    for s in [
        sync("plain", "plain", serde_json::json!({})),
        sync(
            "encrypted",
            "enc",
            serde_json::json!({"automaticEncryption": {"enabled": true, "secretName": "shared-key"}}),
        ),
        sync(
            "dry",
            "dry",
            serde_json::json!({"automaticEncryption": {"enabled": true, "secretName": "dry-key"}}),
        ),
        sync(
            "broken",
            "broken",
            serde_json::json!({"remotePath": "bucket/{{ pod.labels.nope }}"}),
        ),
    ] {
        cluster.create(&s, &[]).expect("create PodFilesystemSync");
    }
    let mut operator = start_operator(&sandbox, &cluster, port);

    // The caBundle is written by the operator: the CA of the Secret it generated.
    let config = cluster.json(&[
        "get",
        "mutatingwebhookconfiguration",
        "volume-syncing-operator",
    ]);
    let bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let secret = cluster.json(&["get", "secret", "-n", OP_NS, "volume-syncing-operator-tls"]);
    assert!(!bundle.is_empty(), "no caBundle written");
    assert_eq!(bundle, secret["data"]["ca.crt"].as_str().unwrap());

    // A labelled Pod gets the restore init container and the (classic, on 1.20) sidecar.
    let stored = cluster
        .create(&pod("app-1", labelled("plain")), &[])
        .unwrap();
    assert_eq!(
        names(&stored["spec"]["initContainers"]),
        ["init-volume-restore"]
    );
    assert_eq!(
        names(&stored["spec"]["containers"]),
        ["app", "volume-syncing-sidecar"]
    );
    let stored = cluster.json(&["get", "pod", "-n", APP_NS, "app-1"]);
    assert!(stored["metadata"]["annotations"]["riotkit.org/volume-syncing-injected"].is_string());

    // An unlabelled Pod is untouched (the objectSelector never sends it).
    let stored = cluster
        .create(&pod("plain-1", serde_json::json!({"app": "plain"})), &[])
        .unwrap();
    assert_eq!(names(&stored["spec"]["containers"]), ["app"]);
    assert!(stored["spec"]["initContainers"].is_null());

    // A labelled Pod no resource selects is denied with a message naming it.
    let err = cluster
        .create(&pod("lonely", labelled("nothing-selects-this")), &[])
        .unwrap_err();
    assert!(err.contains("denied the request"), "{err}");
    assert!(err.contains("apps/lonely"), "{err}");
    assert!(err.contains("no PodFilesystemSync"), "{err}");
    assert!(!cluster.exists("pod", APP_NS, "lonely"));

    // A template error is denied naming the Pod, the resource, the field and the missing key.
    let err = cluster
        .create(&pod("bad", labelled("broken")), &[])
        .unwrap_err();
    assert!(err.contains("apps/bad"), "{err}");
    assert!(
        err.contains("PodFilesystemSync broken: spec.remotePath"),
        "{err}"
    );
    assert!(err.contains("pod.labels.nope"), "{err}");

    // The operator's namespace is excluded by the label its install sets (1.20 sets no
    // kubernetes.io/metadata.name): a labelled Pod there is not sent to the webhook.
    let mut own = pod("own-1", labelled("nothing-selects-this"));
    own["metadata"]["namespace"] = OP_NS.into();
    let stored = cluster.create(&own, &[]).unwrap();
    assert_eq!(names(&stored["spec"]["containers"]), ["app"]);

    // Workloads whose Pods would be injected: a rollout that would hang, replicas that would
    // share a path, a per-Pod path on generated names are denied when applied, naming the rule
    // and the fix; a safe one is created, and changing it into an unsafe one is denied.
    let deployment = |name: &str, extra: Value| {
        let mut d = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": APP_NS},
            "spec": {
                "selector": {"matchLabels": {"app": "plain"}},
                "template": {
                    "metadata": {"labels": labelled("plain")},
                    "spec": pod("x", Value::Null)["spec"].clone(),
                }
            }
        });
        for (k, v) in extra.as_object().unwrap() {
            d["spec"][k] = v.clone();
        }
        d
    };
    let err = cluster
        .create(&deployment("rolling", serde_json::json!({})), &[])
        .unwrap_err();
    assert!(err.contains("Deployment apps/rolling"), "{err}");
    assert!(err.contains("rule overlapping-rollout"), "{err}");
    assert!(err.contains("spec.strategy.type: Recreate"), "{err}");
    assert!(!cluster.exists("deployment", APP_NS, "rolling"));
    let err = cluster
        .create(
            &deployment(
                "two",
                serde_json::json!({"replicas": 2, "strategy": {"type": "Recreate"}}),
            ),
            &[],
        )
        .unwrap_err();
    assert!(err.contains("rule shared-remote-path"), "{err}");
    let recreate = deployment(
        "recreate",
        serde_json::json!({"strategy": {"type": "Recreate"}}),
    );
    cluster
        .create(&recreate, &[])
        .expect("a Recreate Deployment");
    let no_surge = serde_json::json!({"strategy": {"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}});
    cluster
        .create(&deployment("no-surge", no_surge), &[])
        .expect("a RollingUpdate without surge");
    let mut rolling = recreate.clone();
    rolling["spec"]["strategy"] = serde_json::json!({"type": "RollingUpdate"});
    // kubectl replace: an UPDATE of the stored Deployment with a changed spec.
    let update = cluster.kubectl(&["replace", "-f", "-"], Some(&rolling.to_string()));
    let err = String::from_utf8_lossy(&update.stderr).into_owned();
    assert!(
        !update.status.success(),
        "an update to RollingUpdate was admitted"
    );
    assert!(err.contains("rule overlapping-rollout"), "{err}");
    // Unlabelled templates are not the operator's business.
    let mut plain = deployment("unlabelled", serde_json::json!({}));
    plain["spec"]["template"]["metadata"]["labels"] = serde_json::json!({"app": "plain"});
    cluster
        .create(&plain, &[])
        .expect("an unlabelled Deployment");

    // Dry run: the answer is injected, but no Secret is created (sideEffects NoneOnDryRun).
    let dry = cluster
        .create(&pod("dry-1", labelled("dry")), &["--dry-run=server"])
        .unwrap();
    assert_eq!(
        names(&dry["spec"]["containers"]),
        ["app", "volume-syncing-sidecar"]
    );
    assert!(!cluster.exists("secret", APP_NS, "dry-key"));
    assert!(!cluster.exists("pod", APP_NS, "dry-1"));

    // Two Pods created at once share one generated key.
    let mut children: Vec<Child> = ["enc-1", "enc-2"]
        .iter()
        .map(|name| {
            let mut child = Command::new(kubectl_binary())
                .arg(format!(
                    "--kubeconfig={}",
                    cluster.admin_kubeconfig.display()
                ))
                .args(["create", "-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let text = pod(name, labelled("enc")).to_string();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            child
        })
        .collect();
    for child in children.drain(..) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let key = cluster.json(&["get", "secret", "-n", APP_NS, "shared-key"]);
    let passphrase = key["data"]["ENCRYPTION_PASSPHRASE"].as_str().unwrap();
    assert!(
        passphrase.len() >= 43,
        "a 256-bit passphrase, base64: {passphrase}"
    );
    assert!(
        key["metadata"]["ownerReferences"].is_null(),
        "the key must outlive its users"
    );
    for name in ["enc-1", "enc-2"] {
        let p = cluster.json(&["get", "pod", "-n", APP_NS, name]);
        let sidecar = &p["spec"]["containers"][1];
        let refs: Vec<&Value> = sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "ENCRYPTION_PASSPHRASE")
            .collect();
        assert_eq!(
            refs[0]["valueFrom"]["secretKeyRef"]["name"], "shared-key",
            "{name}"
        );
    }
    let output = operator.output_so_far();
    assert!(!output.contains(passphrase), "the passphrase was logged");

    // SIGTERM: the operator drains, still answering admissions (a Pod the API server sends it
    // now is injected, not refused) while /readyz fails; a second SIGTERM stops it at once.
    operator.signal(nix::sys::signal::Signal::SIGTERM);
    operator.wait_for_output("still answering admissions", 1, Duration::from_secs(30));
    let stored = cluster
        .create(&pod("draining-1", labelled("plain")), &[])
        .expect("a Pod admitted while the operator drains");
    assert_eq!(
        names(&stored["spec"]["containers"]),
        ["app", "volume-syncing-sidecar"]
    );
    operator.signal(nix::sys::signal::Signal::SIGTERM);
    operator
        .wait_output(Duration::from_secs(30))
        .assert_code(0)
        .assert_contains("SIGTERM again: stopping now");

    // The operator stopped: labelled Pods are refused (failurePolicy Fail), others created.
    let err = cluster
        .create(&pod("down-1", labelled("plain")), &[])
        .unwrap_err();
    assert!(err.contains("failed calling webhook"), "{err}");
    assert!(!cluster.exists("pod", APP_NS, "down-1"));
    let stored = cluster
        .create(&pod("down-2", serde_json::json!({"app": "plain"})), &[])
        .unwrap();
    assert_eq!(names(&stored["spec"]["containers"]), ["app"]);
}

/// The kubelet's part, played by the test: the Pod runs at 127.0.0.1 with its containers in
/// `sidecar` state (a JSON ContainerState), written to the status subresource.
fn set_pod_status(cluster: &Cluster, name: &str, sidecar: Value) {
    let running = serde_json::json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
    let status = |name: &str, state: &Value| {
        serde_json::json!({"name": name, "image": "i", "imageID": "", "ready": true,
            "restartCount": 0, "state": state})
    };
    let patch = serde_json::json!({"status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "containerStatuses": [status("app", &running), status("volume-syncing-sidecar", &sidecar)],
    }});
    cluster.ok(
        &[
            "patch",
            "pod",
            "-n",
            APP_NS,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
}

/// Waits for the resource's status to satisfy `cond`; the last one seen and the writer's log
/// when it does not.
fn wait_status(
    cluster: &Cluster,
    writer: &mut Running,
    name: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = cluster.json(&["get", "pfss", "-n", APP_NS, name])["status"].clone();
        if cond(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 90s; status: {status:#}\nthe writer's log:\n{}",
            writer.output_so_far()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The status (issue 27): two operator replicas elect one writer through the Lease; the writer
/// reads a real sidecar's /metrics at the Pod's address and writes the status the printer
/// columns show; a Pod's final sync, left as its termination message by the real binary, shows
/// after the Pod is gone; when the writer dies, the other replica takes over.
#[test]
fn the_status_of_a_real_sidecar_through_a_real_api_server() {
    let sandbox = Sandbox::new();
    let cluster = Cluster::start(&sandbox);
    let (port_a, port_b) = (free_port(), free_port());
    install(&cluster, &format!("https://127.0.0.1:{port_a}/mutate"));
    cluster.ok(&["create", "namespace", APP_NS], None);
    let replica = |port: u16, identity: &str| {
        let mut operator = Vso::new(&sandbox)
            .env("KUBECONFIG", &cluster.operator_kubeconfig)
            .args(["operator", "--namespace", OP_NS, "--cert-host", "127.0.0.1"])
            .arg(format!("--listen=127.0.0.1:{port}"))
            .args([
                "--status-interval=1s",
                "--shutdown-delay=0s",
                "--identity",
                identity,
            ])
            .spawn();
        operator.wait_for_output("cache synced; ready", 1, Duration::from_secs(60));
        operator
    };
    let mut a = replica(port_a, "replica-a");
    a.wait_for_output("leading: this replica writes", 1, Duration::from_secs(30));
    let mut b = replica(port_b, "replica-b");

    // A real sidecar, on the port the resource names.
    let server = crate::support::S3Server::start();
    let metrics = free_port();
    let src = sandbox.tree("src", &[("a.txt", b"hello\n")]);
    let left = sandbox.path("termination-log");
    let mut sidecar = crate::support::spawn_upload(
        &sandbox,
        &server,
        &src,
        &[
            "--schedule",
            "@every 1h",
            "--metrics-address",
            &format!("127.0.0.1:{metrics}"),
            "--termination-message-path",
            left.to_str().unwrap(),
        ],
        &[],
    );
    sidecar.wait_for_output("sync finished", 1, Duration::from_secs(60));
    cluster
        .create(
            &sync("st", "st", serde_json::json!({"metricsPort": metrics})),
            &[],
        )
        .unwrap();
    let stored = cluster.create(&pod("st-0", labelled("st")), &[]).unwrap();
    assert_eq!(
        stored["metadata"]["labels"]["riotkit.org/volume-syncing-injected"], "true",
        "the operator watches injected Pods by this label"
    );
    let before = wait_status(&cluster, &mut a, "st", "no sync yet: Ready False", |s| {
        s["conditions"][0]["reason"] == "NoSuccessfulSync"
    });
    assert_eq!(before["pods"], 0, "{before:#}");
    set_pod_status(&cluster, "st-0", serde_json::json!({"running": {}}));
    let status = wait_status(
        &cluster,
        &mut a,
        "st",
        "the sidecar's sync, Ready True",
        |s| s["lastSyncResult"] == "success" && s["conditions"][0]["status"] == "True",
    );
    assert_eq!(status["pods"], 1, "{status:#}");
    assert_eq!(status["lastTransferredBytes"], 6, "{status:#}");
    assert_eq!(status["lastSyncPod"], "st-0", "{status:#}");
    assert_eq!(status["podStatuses"][0]["name"], "st-0", "{status:#}");
    assert!(status["nextSyncTime"].is_string(), "{status:#}");
    assert_eq!(status["observedGeneration"], 1, "{status:#}");
    let table = cluster.ok(&["get", "pfss", "-n", APP_NS, "-o", "wide"], None);
    for column in [
        "LAST SYNC",
        "NEXT SYNC",
        "RESULT",
        "PODS",
        "READY",
        "AGE",
        "BYTES",
        "RULE",
    ] {
        assert!(table.contains(column), "no {column} in\n{table}");
    }
    let row = table.lines().nth(1).unwrap_or("");
    for cell in ["st ", "success", " 1 ", "True", " 6 "] {
        assert!(row.contains(cell), "no {cell:?} in {row:?}");
    }
    let lease = cluster.json(&[
        "get",
        "lease",
        "-n",
        OP_NS,
        "volume-syncing-operator-status",
    ]);
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert!(
        !b.output_so_far().contains("leading: this replica"),
        "two writers"
    );

    // A second writer of the same remote path is refused (the lease): Ready False with the
    // sidecar's rule, and one Warning event naming the Pod, however many rounds see it.
    let metrics_2 = free_port();
    let mut refused = crate::support::spawn_upload(
        &sandbox,
        &server,
        &src,
        &[
            "--schedule",
            "@every 1h",
            "--metrics-address",
            &format!("127.0.0.1:{metrics_2}"),
            "--pid-path",
            sandbox.path("second.pid").to_str().unwrap(),
        ],
        &[],
    );
    refused.wait_for_output(
        "the schedule goes on after a failed sync",
        1,
        Duration::from_secs(60),
    );
    cluster
        .create(
            &sync("rf", "rf", serde_json::json!({"metricsPort": metrics_2})),
            &[],
        )
        .unwrap();
    cluster.create(&pod("rf-0", labelled("rf")), &[]).unwrap();
    set_pod_status(&cluster, "rf-0", serde_json::json!({"running": {}}));
    let status = wait_status(&cluster, &mut a, "rf", "the refusal, Ready False", |s| {
        s["lastSyncResult"] == "refused" && s["conditions"][0]["status"] == "False"
    });
    assert_eq!(status["lastSyncRule"], "remote-in-use", "{status:#}");
    assert_eq!(
        status["conditions"][0]["reason"], "RemoteInUse",
        "{status:#}"
    );
    std::thread::sleep(Duration::from_secs(5));
    let events = cluster.json(&["get", "events.v1.events.k8s.io", "-n", APP_NS]);
    let ours: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["regarding"]["name"] == "rf")
        .collect();
    assert_eq!(ours.len(), 1, "one event for one refusal: {ours:#?}");
    assert_eq!(ours[0]["reason"], "SyncRefused");
    assert_eq!(ours[0]["type"], "Warning");
    assert!(
        ours[0]["series"].is_null(),
        "published again: {:#}",
        ours[0]
    );
    let note = ours[0]["note"].as_str().unwrap();
    assert!(
        note.contains("pod rf-0") && note.contains("remote-in-use"),
        "{note}"
    );
    refused.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = refused.wait_output(Duration::from_secs(30));

    // The Pod stops: its final sync, left in the termination message, shows after it is gone.
    crate::support::add_file(&src, "last.txt", b"the final sync\n");
    sidecar.signal(nix::sys::signal::Signal::SIGTERM);
    sidecar.wait_output(Duration::from_secs(60)).assert_code(0);
    let summary: Value = serde_json::from_str(&fs::read_to_string(&left).unwrap()).unwrap();
    set_pod_status(
        &cluster,
        "st-0",
        serde_json::json!({"terminated": {"exitCode": 0,
            "message": serde_json::to_string(&summary).unwrap()}}),
    );
    cluster.ok(
        &["delete", "pod", "-n", APP_NS, "st-0", "--wait=false"],
        None,
    );
    let status = wait_status(
        &cluster,
        &mut a,
        "st",
        "the final sync of the gone Pod",
        |s| s["lastSyncTime"] == summary["finished"] && s["pods"] == 0,
    );
    assert_eq!(status["lastTransferredBytes"], 15, "{status:#}");
    assert_eq!(status["lastSyncPod"], "st-0", "{status:#}");
    assert_eq!(status["conditions"][0]["status"], "True", "{status:#}");

    // The writer dies: the other replica takes the Lease once it expires and writes on.
    a.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = a.wait_output(Duration::from_secs(30));
    b.wait_for_output("leading: this replica writes", 1, Duration::from_secs(60));
    cluster.ok(
        &[
            "patch",
            "pfss",
            "-n",
            APP_NS,
            "st",
            "--type=merge",
            "-p",
            r#"{"spec":{"syncOptions":{"schedule":"@every 2h"}}}"#,
        ],
        None,
    );
    wait_status(&cluster, &mut b, "st", "the new leader's status", |s| {
        s["observedGeneration"] == 2
    });
    let output = b.output_so_far();
    assert!(!output.contains("cannot write the status"), "{output}");
    b.signal(nix::sys::signal::Signal::SIGTERM);
    b.wait_output(Duration::from_secs(30)).assert_code(0);
}
