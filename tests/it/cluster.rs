//! The operator in a real single-node Kubernetes 1.20.2 (issue 26): etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and a kubelet running Pods on the local Docker engine
//! through dockershim, all built from Debian 12's sources by `make kubernetes` and started by
//! `scripts/cluster/up.sh` (see its header for the addresses: nothing listens beyond loopback and
//! the Docker bridge, there is no kube-proxy and nothing is sent to a Service IP). The operator is
//! installed by `kubectl apply -k` of an overlay of deploy/operator that only sets the locally
//! built image (and the API server's address, for want of kube-proxy); the kubelet really runs
//! the injected init container and sidecar against an S3 server (`rclone serve s3`) on the
//! bridge address, and the data is checked there byte for byte.
//!
//! The cases share one cluster and run in order in one test (fail-closed scales the operator to
//! zero, which no other case may see). `CLUSTER_CASES=install,statefulset` runs only those
//! (cases: install, fail_closed, statefulset).
//! The cluster is started here unless `make cluster-up` left a healthy one (then it is reused and
//! left running); one started here is always stopped and cleaned (`scripts/cluster/down.sh`) when
//! the test ends, passed or failed. `make cluster-test` runs this and then `make cluster-down`.
//! Needs root (the kubelet), Docker, kubectl, `make kubernetes`, `make image`, `make tools`.
//!
//! Self-contained on purpose (its own small helpers, not tests/support): it drives a cluster, not
//! the binary on the host.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const OP_NS: &str = "volume-syncing-operator";
const OP_LABEL: &str = "app.kubernetes.io/name=volume-syncing-operator";
const INJECT_LABEL: &str = "riotkit.org/volume-syncing-operator";
const IMAGE: &str = "volume-syncing-operator:dev";
const ACCESS_KEY: &str = "cluster-access";
const SECRET_KEY: &str = "cluster-secret-key";
const BUCKET: &str = "bucket";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn state_dir() -> PathBuf {
    std::env::var_os("VSO_CLUSTER_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target/cluster"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The images the tests' Pods use: built by up.sh from local files, never pulled.
fn busybox_image() -> String {
    std::env::var("BUSYBOX_IMAGE").unwrap_or_else(|_| "volume-syncing-operator/busybox:test".into())
}

/// The cluster, started by this test (and then stopped and cleaned on drop, also when a case
/// panics) or reused from `make cluster-up` (then left running).
struct Cluster {
    kubeconfig: PathBuf,
    bridge: String,
    started_here: bool,
}

impl Cluster {
    fn kubectl_cmd(kubeconfig: &Path) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--request-timeout=30s");
        cmd
    }

    fn healthy(kubeconfig: &Path) -> bool {
        kubeconfig.is_file()
            && Self::kubectl_cmd(kubeconfig)
                .args(["get", "--raw", "/readyz"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
    }

    fn up() -> Cluster {
        assert!(
            nix::unistd::geteuid().is_root(),
            "tests/it/cluster.rs runs a kubelet, which needs root (CI runs as root)"
        );
        assert!(
            on_path("kubectl").is_some(),
            "kubectl not found on PATH: install it (Debian: kubernetes-client)"
        );
        assert!(
            repo("tools/bin/rclone").is_file(),
            "tools/bin/rclone missing: run `make tools`"
        );
        let kubeconfig = state_dir().join("kubeconfig");
        let mut cluster = Cluster {
            kubeconfig: kubeconfig.clone(),
            bridge: String::new(),
            started_here: false,
        };
        if Self::healthy(&kubeconfig) {
            eprintln!(
                "cluster: reusing the cluster of `make cluster-up` ({})",
                kubeconfig.display()
            );
        } else {
            // From here on, drop cleans up whatever up.sh got to start.
            cluster.started_here = true;
            let started = Instant::now();
            let out = Command::new(repo("scripts/cluster/up.sh"))
                .stdin(Stdio::null())
                .output()
                .expect("run scripts/cluster/up.sh");
            assert!(
                out.status.success(),
                "scripts/cluster/up.sh failed (it needs `make kubernetes` and `make image`; logs in \
                 {}):\n{}",
                state_dir().join("logs").display(),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "cluster: started and operator Ready in {:.0?}\n{}",
                started.elapsed(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = fs::read_to_string(state_dir().join("env")).expect("target/cluster/env of up.sh");
        cluster.bridge = env
            .lines()
            .find_map(|l| l.strip_prefix("BRIDGE="))
            .expect("BRIDGE= in target/cluster/env")
            .to_string();
        cluster
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Self::kubectl_cmd(&self.kubeconfig)
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

    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all, None)).unwrap()
    }

    #[track_caller]
    fn apply(&self, object: &Value) {
        self.ok(&["apply", "-f", "-"], Some(&object.to_string()));
    }

    /// `kubectl create`: the stored object, or kubectl's error text.
    fn create(&self, object: &Value) -> Result<Value, String> {
        let out = self.kubectl(
            &["create", "-o", "json", "-f", "-"],
            Some(&object.to_string()),
        );
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

    fn pod(&self, namespace: &str, name: &str) -> Value {
        self.json(&["get", "pod", "-n", namespace, name])
    }

    /// Waits until `check` returns Some; on timeout panics with `what` and the namespace's state.
    #[track_caller]
    fn wait_for<T>(
        &self,
        what: &str,
        namespace: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            if Instant::now() > deadline {
                let pods = self.kubectl(&["get", "pods", "-n", namespace, "-o", "wide"], None);
                let events = self.kubectl(
                    &["get", "events", "-n", namespace, "--sort-by=.lastTimestamp"],
                    None,
                );
                panic!(
                    "timed out after {timeout:?} waiting for {what}\npods:\n{}\nevents:\n{}",
                    String::from_utf8_lossy(&pods.stdout),
                    String::from_utf8_lossy(&events.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn operator_pods(&self) -> Vec<Value> {
        self.json(&["get", "pods", "-n", OP_NS, "-l", OP_LABEL])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The addresses the webhook's Service routes to (what --enable-aggregator-routing calls).
    fn webhook_endpoints(&self) -> usize {
        let ep = self.json(&["get", "endpoints", "-n", OP_NS, "volume-syncing-operator"]);
        ep["subsets"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|s| s["addresses"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0)
    }

    fn scale_operator(&self, replicas: u32) {
        self.ok(
            &[
                "scale",
                "-n",
                OP_NS,
                "deployment/volume-syncing-operator",
                &format!("--replicas={replicas}"),
            ],
            None,
        );
    }

    fn fresh_namespace(&self, name: &str) {
        if self.exists("namespace", "default", name) {
            self.ok(
                &["delete", "namespace", name, "--wait=true", "--timeout=120s"],
                None,
            );
        }
        self.ok(&["create", "namespace", name], None);
        // The Pods' service account appears with the namespace (the controller manager makes it).
        self.wait_for(
            "the default service account",
            name,
            Duration::from_secs(60),
            || self.exists("serviceaccount", name, "default").then_some(()),
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.started_here {
            eprintln!(
                "cluster: left running (started by `make cluster-up`; `make cluster-down` stops it)"
            );
            return;
        }
        let status = Command::new(repo("scripts/cluster/down.sh"))
            .stdin(Stdio::null())
            .status();
        let ok = matches!(status, Ok(s) if s.success());
        if !ok && !std::thread::panicking() {
            panic!("scripts/cluster/down.sh failed: the machine may not be restored");
        }
    }
}

/// `rclone serve s3` on the Docker bridge address (the Pods reach it there), a random port.
struct S3 {
    child: Child,
    data: tempfile::TempDir,
    endpoint: String,
}

impl S3 {
    fn start(bridge: &str) -> S3 {
        let data = tempfile::tempdir().unwrap();
        fs::create_dir_all(data.path().join(BUCKET)).unwrap();
        let mut child = Command::new(repo("tools/bin/rclone"))
            .args(["serve", "s3", "--addr", &format!("{bridge}:0")])
            .args(["--auth-key", &format!("{ACCESS_KEY},{SECRET_KEY}")])
            .args(["--config", "/dev/null"])
            .arg(data.path())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tools/bin/rclone serve s3 (make tools)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let marker = format!("Starting s3 server on [http://{bridge}:");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if let Some(rest) = line.split(&marker).nth(1) {
                let port: u16 = rest.split('/').next().unwrap().parse().unwrap();
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return S3 {
                    child,
                    data,
                    endpoint: format!("http://{bridge}:{port}"),
                };
            }
            seen.push(line);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("rclone serve s3 did not start:\n{}", seen.join("\n"));
    }

    /// Where `bucket/<path>` is on disk.
    fn path(&self, remote_path: &str) -> PathBuf {
        self.data.path().join(remote_path)
    }

    /// The Secret with the REMOTE_* variables pointing at this server.
    fn secret(&self, namespace: &str, name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": {
                "REMOTE_TYPE": "s3",
                "REMOTE_PROVIDER": "Rclone",
                "REMOTE_ACCESS_KEY_ID": ACCESS_KEY,
                "REMOTE_SECRET_ACCESS_KEY": SECRET_KEY,
                "REMOTE_ENDPOINT": self.endpoint,
            }
        })
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// path -> (mode, content) of the regular files under `root`, and the directories (content None).
fn snapshot(root: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Option<Vec<u8>>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, (mode, None));
                walk(root, &path, out);
            } else {
                out.insert(rel, (mode, Some(fs::read(&path).unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.is_dir() {
        walk(root, root, &mut out);
    }
    out
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

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The state of container `name` (init or not) of a Pod, as the kubelet reports it.
fn container_state<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|s| s["name"] == name)
}

fn pod_security() -> Value {
    // The image's user for everything; fsGroup makes the volume writable by the app and the
    // injected containers (README: Kubernetes).
    json!({"runAsNonRoot": true, "runAsUser": 65312, "runAsGroup": 65312, "fsGroup": 65312})
}

/// A PodFilesystemSync for Pods labelled app=APP, syncing /data every 2 s.
fn sync_resource(namespace: &str, app: &str, remote_path: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "riotkit.org/v1alpha1", "kind": "PodFilesystemSync",
        "metadata": {"name": app, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "localPath": "/data",
            "remotePath": remote_path,
            "envFromSecret": [{"ref": secret}],
            "syncOptions": {"schedule": "@every 2s"},
            "shutdownTimeout": "30s",
        }
    })
}

/// A busybox Pod running `script` with an emptyDir at /data.
fn app_pod(namespace: &str, name: &str, labels: Value, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "securityContext": pod_security(),
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "app", "image": busybox_image(), "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }
    })
}

/// Case 1: the install of `kubectl apply -k` (done by up.sh): two replicas Ready on the node, one
/// TLS Secret, the caBundle written by the operator, and no privilege beyond deploy/operator's
/// RBAC.
fn case_install(c: &Cluster) {
    let deployment = c.json(&["get", "deployment", "-n", OP_NS, "volume-syncing-operator"]);
    assert_eq!(
        deployment["status"]["readyReplicas"], 2,
        "{:#}",
        deployment["status"]
    );
    let pods = c.operator_pods();
    let running: Vec<&Value> = pods.iter().filter(|p| ready(p)).collect();
    assert_eq!(running.len(), 2, "two Ready operator Pods");
    for p in &running {
        assert_eq!(p["spec"]["serviceAccountName"], "volume-syncing-operator");
        assert_eq!(p["spec"]["containers"][0]["image"], IMAGE);
        let ip = p["status"]["podIP"].as_str().unwrap();
        let prefix: String = c.bridge.rsplitn(3, '.').last().unwrap().to_string();
        assert!(
            ip.starts_with(&prefix),
            "Pod IP {ip} on the Docker bridge {}",
            c.bridge
        );
    }
    // Exactly one Secret of the operator's own (the rest are service-account tokens), made by
    // whichever replica won the race.
    let secrets = c.json(&["get", "secrets", "-n", OP_NS]);
    let own: Vec<&str> = secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] != "kubernetes.io/service-account-token")
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(own, ["volume-syncing-operator-tls"]);
    let tls = c.json(&["get", "secret", "-n", OP_NS, "volume-syncing-operator-tls"]);
    let config = c.json(&[
        "get",
        "mutatingwebhookconfiguration",
        "volume-syncing-operator",
    ]);
    let bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap_or("");
    assert!(!bundle.is_empty(), "no caBundle written");
    assert_eq!(bundle, tls["data"]["ca.crt"].as_str().unwrap());
    // Both replicas serve that one certificate: each logged that it uses the Secret.
    // No binding gives the operator's service account anything beyond deploy/operator's RBAC.
    let sa = format!("system:serviceaccount:{OP_NS}:volume-syncing-operator");
    let mut bound = Vec::new();
    for kind in ["clusterrolebindings", "rolebindings"] {
        let list = c.json(&["get", kind, "-A"]);
        for b in list["items"].as_array().unwrap() {
            let hit = b["subjects"].as_array().into_iter().flatten().any(|s| {
                (s["kind"] == "ServiceAccount"
                    && s["name"] == "volume-syncing-operator"
                    && s["namespace"] == OP_NS)
                    || (s["kind"] == "User" && s["name"] == sa.as_str())
                    || (s["kind"] == "Group"
                        && ["system:serviceaccounts", "system:authenticated"]
                            .contains(&s["name"].as_str().unwrap_or("")))
            });
            if hit {
                bound.push(format!(
                    "{kind}/{}{}",
                    b["metadata"]["namespace"]
                        .as_str()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default(),
                    b["metadata"]["name"].as_str().unwrap()
                ));
            }
        }
    }
    bound.sort();
    // The defaults of every 1.20 cluster: system:basic-user, system:discovery and
    // system:public-info-viewer bind system:authenticated, system:service-account-issuer-discovery
    // binds system:serviceaccounts; discovery and self-review only.
    assert_eq!(
        bound,
        [
            "clusterrolebindings/system:basic-user",
            "clusterrolebindings/system:discovery",
            "clusterrolebindings/system:public-info-viewer",
            "clusterrolebindings/system:service-account-issuer-discovery",
            "clusterrolebindings/volume-syncing-operator",
            "rolebindings/volume-syncing-operator/volume-syncing-operator-tls",
        ]
    );
    let can = |verb: &str, what: &str, ns: &str| {
        c.ok(
            &["auth", "can-i", verb, what, "-n", ns, &format!("--as={sa}")],
            None,
        );
    };
    can("create", "secrets", "default");
    let out = c.kubectl(
        &[
            "auth",
            "can-i",
            "delete",
            "pods",
            "-n",
            "default",
            &format!("--as={sa}"),
        ],
        None,
    );
    assert!(!out.status.success(), "the operator may not delete Pods");
    let out = c.kubectl(
        &[
            "auth",
            "can-i",
            "list",
            "secrets",
            "-n",
            "default",
            &format!("--as={sa}"),
        ],
        None,
    );
    assert!(!out.status.success(), "the operator may not list Secrets");
}

/// Case 5: fail-closed. With no operator replica a labelled Pod is refused and an unlabelled one
/// runs; with the operator back, the labelled Pod is admitted, injected, and its restore and
/// sidecar really run: the restore brings the remote's file before the app starts, the sidecar
/// uploads what the app writes.
fn case_fail_closed(c: &Cluster, s3: &S3) {
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

/// Case 2: a StatefulSet of 2 replicas, volumeClaimTemplates bound to hostPath PVs, the data
/// mounted with a subPath, `remotePath` per Pod (`{{ pod.name }}`), sidecar only on the final
/// sync (schedule 1 h): a file written just before `kubectl delete pod` is at the S3 server after
/// it; the volume is then emptied, and the recreated Pod's restore brings back the same bytes,
/// modes and empty directory before the app starts (the app sees its file at start).
fn case_statefulset(c: &Cluster, s3: &S3) {
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
    let deleted = Instant::now();
    c.ok(&["delete", "pod", "-n", ns, "sts-0", "--wait=false"], None);
    c.wait_for(
        "the final sync of sts-0",
        ns,
        Duration::from_secs(60),
        || (fs::read(remote0.join("late.txt")).ok()? == b"late\n").then_some(()),
    );
    eprintln!(
        "cluster: final sync at the S3 server {:.0?} after kubectl delete pod",
        deleted.elapsed()
    );
    // The final sync ends with the manifest (modes, empty directories), after the data: wait
    // for the sidecar to have exited. The old Pod object goes only 15-20 s later (1.20's status
    // manager), so its volume can then be emptied before the new Pod starts.
    let old_uid = c.pod(ns, "sts-0")["metadata"]["uid"].clone();
    c.wait_for(
        "the old sts-0's sidecar exited",
        ns,
        Duration::from_secs(90),
        || {
            let p = c.pod(ns, "sts-0");
            assert_eq!(
                p["metadata"]["uid"], old_uid,
                "sts-0 was recreated before its volume could be emptied"
            );
            let s = container_state(&p, "volume-syncing-sidecar")?;
            s["state"]["terminated"].is_object().then_some(())
        },
    );
    eprintln!(
        "cluster: old sts-0's sidecar exited {:.0?} after kubectl delete pod",
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
        "cluster: sts-0 restored and Running {:.0?} after kubectl delete pod",
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

#[test]
fn the_operator_in_a_real_cluster() {
    let cases: Option<Vec<String>> = std::env::var("CLUSTER_CASES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let wanted = |name: &str| cases.as_ref().is_none_or(|c| c.iter().any(|c| c == name));
    const CASES: [&str; 3] = ["install", "fail_closed", "statefulset"];
    if let Some(unknown) = cases
        .iter()
        .flatten()
        .find(|c| !CASES.contains(&c.as_str()))
    {
        panic!("CLUSTER_CASES names {unknown:?}: the cases are {CASES:?}");
    }
    let cluster = Cluster::up();
    let s3 = S3::start(&cluster.bridge);
    let mut timings = Vec::new();
    let mut run = |name: &str, case: &dyn Fn()| {
        if wanted(name) {
            let started = Instant::now();
            case();
            timings.push(format!("{name}: {:.1?}", started.elapsed()));
        }
    };
    run("install", &|| case_install(&cluster));
    run("fail_closed", &|| case_fail_closed(&cluster, &s3));
    run("statefulset", &|| case_statefulset(&cluster, &s3));
    eprintln!("cluster: cases passed: {}", timings.join(", "));
    assert!(
        !timings.is_empty(),
        "CLUSTER_CASES={cases:?} names no case (install, fail_closed)"
    );
}
