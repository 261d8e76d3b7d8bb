//! The cluster under test: starting (or reusing) it, kubectl, waiting, and its clean-up.

use std::fs;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const OP_NS: &str = "volume-syncing-operator";
pub const OP_LABEL: &str = "app.kubernetes.io/name=volume-syncing-operator";
pub const INJECT_LABEL: &str = "riotkit.org/volume-syncing-operator";
pub const IMAGE: &str = "volume-syncing-operator:dev";
pub const ACCESS_KEY: &str = "cluster-access";
pub const SECRET_KEY: &str = "cluster-secret-key";
pub const BUCKET: &str = "bucket";

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn state_dir() -> PathBuf {
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
pub fn busybox_image() -> String {
    std::env::var("BUSYBOX_IMAGE").unwrap_or_else(|_| "volume-syncing-operator/busybox:test".into())
}

/// The cluster, started by this test (and then stopped and cleaned on drop, also when a case
/// panics) or reused from `make cluster-up` (then left running).
pub struct Cluster {
    kubeconfig: PathBuf,
    pub bridge: String,
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

    pub fn up() -> Cluster {
        assert!(
            nix::unistd::geteuid().is_root(),
            "tests/it/cluster/ runs a kubelet, which needs root (CI runs as root)"
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

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
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
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all, None)).unwrap()
    }

    #[track_caller]
    pub fn apply(&self, object: &Value) {
        self.ok(&["apply", "-f", "-"], Some(&object.to_string()));
    }

    /// `kubectl create`: the stored object, or kubectl's error text.
    pub fn create(&self, object: &Value) -> Result<Value, String> {
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

    pub fn exists(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let out = self.kubectl(&["get", kind, "-n", namespace, name, "-o", "name"], None);
        if out.status.success() {
            return true;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("NotFound"), "kubectl get {kind} {name}: {err}");
        false
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Value {
        self.json(&["get", "pod", "-n", namespace, name])
    }

    /// Waits until `check` returns Some; on timeout panics with `what` and the namespace's state.
    #[track_caller]
    pub fn wait_for<T>(
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

    pub fn operator_pods(&self) -> Vec<Value> {
        self.json(&["get", "pods", "-n", OP_NS, "-l", OP_LABEL])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The addresses the webhook's Service routes to (what --enable-aggregator-routing calls).
    pub fn webhook_endpoints(&self) -> usize {
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

    pub fn scale_operator(&self, replicas: u32) {
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

    /// `kubectl get … --watch -o json` (`what` is what to get): every version of the objects,
    /// as the API server sends them (deletions included), from now until [`Watch::stop`].
    pub fn watch(&self, what: &[&str]) -> Watch {
        let mut child = Self::kubectl_cmd(&self.kubeconfig)
            // No time limit for a watch (the last --request-timeout wins).
            .arg("--request-timeout=0")
            .arg("get")
            .args(what)
            .args(["--watch", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run kubectl");
        let stream = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for object in serde_json::Deserializer::from_reader(stream)
                .into_iter::<Value>()
                .map_while(Result::ok)
            {
                if tx.send(object).is_err() {
                    break;
                }
            }
        });
        Watch { child, rx }
    }

    /// The Pods of `namespace` that `selector` (a label selector) picks.
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<Value> {
        self.json(&["get", "pods", "-n", namespace, "-l", selector])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The log of one container of a Pod.
    #[track_caller]
    pub fn logs(&self, namespace: &str, pod: &str, container: &str) -> String {
        self.ok(&["logs", "-n", namespace, pod, "-c", container], None)
    }

    /// Deletes a case's namespace without waiting (its Pods' final syncs run in the background).
    pub fn drop_namespace(&self, name: &str) {
        self.ok(&["delete", "namespace", name, "--wait=false"], None);
    }

    pub fn fresh_namespace(&self, name: &str) {
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

/// A running `kubectl get --watch` (see [`Cluster::watch`]); killed when dropped.
pub struct Watch {
    child: Child,
    rx: mpsc::Receiver<Value>,
}

impl Watch {
    /// Everything not taken yet, up to now.
    pub fn stop(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.rx.iter().collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
