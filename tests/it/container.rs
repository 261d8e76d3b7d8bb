//! The container image on a real Docker engine: real containers on a private network, an S3
//! server in another container, the image run the way the README and the Kubernetes manifests
//! run it (`--user 65312`, read-only root, a tmpfs at /tmp, configured only by `-e REMOTE_…`).
//!
//! Needs the image built by `make image` (`VSO_IMAGE`, default `volume-syncing-operator:dev`)
//! and a reachable Docker engine on this machine (bind mounts of temporary directories); a test
//! fails with instructions when either is missing. The S3 server is `rclone serve s3` from the
//! same image (its rclone, entrypoint overridden), so no other image is needed.
//!
//! Every container, network and volume is named `vso-test-<pid>-<n>-…` and removed by a guard
//! when the test ends, also when it fails.
//!
//! `pod_from_the_kubernetes_manifest` takes the containers' args and the preStop command from
//! deploy/kubernetes/deployment.yaml, substituting only the remote path (`my-bucket/app` →
//! `bucket/<unique>`) and the sidecar's schedule (→ `@every 3s`), so the manifest and the test
//! cannot drift apart. It also probes the sidecar's liveness path and `/metrics` on the port
//! the manifest names `metrics`, over the container network, as the kubelet and Prometheus do.

use crate::support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{
    ACCESS_KEY, BUCKET, SECRET_KEY, Snapshot, files_only, random_bytes, snapshot,
};
use serde::Deserialize;
use serde_yaml::Value;
use vso_core::duration::parse_duration;

/// The uid the image runs as (Dockerfile `USER`, manifests' `runAsUser`).
const IMAGE_UID: &str = "65312";
/// Bound for one docker command; generous, only a hung engine should reach it.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(300);
/// The remote path the manifests use, replaced by a unique one in the tests.
const MANIFEST_REMOTE_PATH: &str = "my-bucket/app";
const MANIFEST: &str = "deploy/kubernetes/deployment.yaml";

fn image() -> String {
    std::env::var("VSO_IMAGE").unwrap_or_else(|_| "volume-syncing-operator:dev".to_string())
}

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

// ---------------------------------------------------------------------------------------------
// docker

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `docker ARGS` (with `stdin` as its input) to completion; panics after DOCKER_TIMEOUT or
/// when docker cannot be started.
fn docker_run_raw(args: &[String], stdin: Option<&[u8]>) -> Out {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `docker`: {e}; the container tests need the Docker CLI and engine")
        });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).expect("writing docker's stdin");
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DOCKER_TIMEOUT) {
        Ok(Ok(out)) => Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("docker {args:?}: {e}"),
        Err(_) => panic!("docker {args:?} did not finish within {DOCKER_TIMEOUT:?}"),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn docker_try(args: &[&str]) -> Out {
    docker_run_raw(&strings(args), None)
}

/// Runs `docker ARGS` and panics with its output unless it exits 0.
#[track_caller]
fn docker(args: &[&str]) -> Out {
    let out = docker_try(args);
    assert_eq!(
        out.code,
        0,
        "`docker {}` failed:\n{}",
        args.join(" "),
        out.all()
    );
    out
}

/// The engine is reachable and the image exists; otherwise fail with what to do.
fn preflight() {
    let version = docker_try(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        version.code == 0,
        "the Docker engine is not reachable (`docker version` failed): the container tests need a \
         running Docker daemon on this machine:\n{}",
        version.all()
    );
    let inspect = docker_try(&["image", "inspect", "--format", "{{.Id}}", &image()]);
    assert!(
        inspect.code == 0,
        "image {} not found: run `make image` first (it builds the image offline from local files), \
         or set VSO_IMAGE to an image built from this repository's Dockerfile:\n{}",
        image(),
        inspect.all()
    );
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Docker objects of one test, removed when it ends (also on failure).
#[derive(Default)]
struct Guard {
    containers: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Best effort; errors (e.g. an object never created) are ignored.
        if !self.containers.is_empty() {
            let mut args = strings(&["rm", "-f", "-v"]);
            args.extend(self.containers.iter().cloned());
            let _ = docker_run_raw(&args, None);
        }
        if !self.volumes.is_empty() {
            let mut args = strings(&["volume", "rm", "-f"]);
            args.extend(self.volumes.iter().cloned());
            let _ = docker_run_raw(&args, None);
        }
        for network in &self.networks {
            let _ = docker_run_raw(&strings(&["network", "rm", network]), None);
        }
    }
}

/// One test's world: a private network with an S3 server container on it, and temp dirs.
struct Lab {
    /// First, so that it is dropped first: containers go before their bind-mounted directories.
    guard: Guard,
    prefix: String,
    network: String,
    server: String,
    /// The server's data directory on this machine (bind-mounted at /data in the server).
    s3_data: PathBuf,
    tmp: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        preflight();
        let prefix = format!(
            "vso-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let tmp = tempfile::tempdir().unwrap();
        let mut lab = Lab {
            network: format!("{prefix}-net"),
            server: format!("{prefix}-s3"),
            s3_data: tmp.path().join("s3"),
            prefix,
            tmp,
            guard: Guard::default(),
        };
        lab.guard.networks.push(lab.network.clone());
        docker(&["network", "create", &lab.network]);
        fs::create_dir_all(lab.s3_data.join(BUCKET)).unwrap();
        lab.start_server();
        lab
    }

    /// `rclone serve s3` in a container named `<prefix>-s3` on the network, as the test's own
    /// user so that this process can read and write its data directory.
    fn start_server(&mut self) {
        self.guard.containers.push(self.server.clone());
        let user = format!(
            "{}:{}",
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw()
        );
        let volume = format!("{}:/data", self.s3_data.display());
        let auth = format!("{ACCESS_KEY},{SECRET_KEY}");
        docker(&[
            "run",
            "-d",
            "--name",
            &self.server,
            "--network",
            &self.network,
            "--user",
            &user,
            "-v",
            &volume,
            "--entrypoint",
            "/usr/local/bin/rclone",
            &image(),
            "serve",
            "s3",
            "--addr",
            "0.0.0.0:8080",
            "--auth-key",
            &auth,
            "--config",
            "/dev/null",
            "/data",
        ]);
        self.wait_for_logs(&self.server.clone(), "Starting s3 server", 1);
    }

    /// A unique name for a container or volume of this test.
    fn name(&self, what: &str) -> String {
        format!(
            "{}-{what}-{}",
            self.prefix,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// A new, empty named volume, removed at the end.
    fn volume(&mut self, what: &str) -> String {
        let name = self.name(what);
        self.guard.volumes.push(name.clone());
        docker(&["volume", "create", &name]);
        name
    }

    /// A directory on this machine holding `files`, readable by the image's user.
    fn host_dir(&self, what: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let dir = self.tmp.path().join(what);
        fs::create_dir_all(&dir).unwrap();
        for (rel, content) in files {
            let path = dir.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
        }
        make_readable(&dir);
        dir
    }

    /// The `-e REMOTE_…` flags pointing at the server container.
    fn remote_env(&self) -> Vec<String> {
        [
            ("REMOTE_TYPE", "s3".to_string()),
            ("REMOTE_PROVIDER", "Rclone".to_string()),
            ("REMOTE_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("REMOTE_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("REMOTE_ENDPOINT", format!("http://{}:8080", self.server)),
        ]
        .into_iter()
        .flat_map(|(k, v)| ["-e".to_string(), format!("{k}={v}")])
        .collect()
    }

    /// `docker run` flags of the image as documented: unprivileged, read-only root, tmpfs /tmp,
    /// on the network, configured by REMOTE_* only.
    fn vso_flags(&self, user: &str) -> Vec<String> {
        let mut flags = strings(&[
            "--network",
            &self.network,
            "--user",
            user,
            "--read-only",
            "--tmpfs",
            "/tmp:rw,mode=1777",
        ]);
        flags.extend(self.remote_env());
        flags
    }

    /// `GET http://<container>:<port><path>` from another container on the network, as the
    /// kubelet or Prometheus would (with the image's rclone: `rclone copyurl URL -` prints the
    /// body and fails on a non-2xx status). Returns the body.
    #[track_caller]
    fn http_get(&mut self, container: &str, port: u64, path: &str) -> String {
        let name = self.name("probe");
        self.guard.containers.push(name.clone());
        let url = format!("http://{container}:{port}{path}");
        let out = docker_run_raw(
            &strings(&[
                "run",
                "--rm",
                "--name",
                &name,
                "--network",
                &self.network,
                "--user",
                IMAGE_UID,
                "--read-only",
                "--tmpfs",
                "/tmp:rw,mode=1777",
                "--entrypoint",
                "/usr/local/bin/rclone",
                &image(),
                "--config",
                "/dev/null",
                "--retries",
                "1",
                "copyurl",
                &url,
                "-",
            ]),
            None,
        );
        assert_eq!(out.code, 0, "GET {url} failed:\n{}", out.all());
        out.stdout
    }

    /// Runs the image to completion with `mounts` (`-v` values) and `args`; returns its output.
    fn run_vso(&mut self, what: &str, mounts: &[String], args: &[String]) -> Out {
        let name = self.name(what);
        self.guard.containers.push(name.clone());
        let mut cmd = strings(&["run", "--name", &name]);
        cmd.extend(self.vso_flags(IMAGE_UID));
        for mount in mounts {
            cmd.extend(["-v".to_string(), mount.clone()]);
        }
        cmd.push(image());
        cmd.extend(args.iter().cloned());
        let out = docker_run_raw(&cmd, None);
        let _ = docker_try(&["rm", "-f", &name]);
        out
    }

    /// Starts the image detached; returns the container name.
    fn start_vso(&mut self, what: &str, mounts: &[String], args: &[String]) -> String {
        let name = self.name(what);
        self.guard.containers.push(name.clone());
        let mut cmd = strings(&["run", "-d", "--name", &name]);
        cmd.extend(self.vso_flags(IMAGE_UID));
        for mount in mounts {
            cmd.extend(["-v".to_string(), mount.clone()]);
        }
        cmd.push(image());
        cmd.extend(args.iter().cloned());
        let out = docker_run_raw(&cmd, None);
        assert_eq!(out.code, 0, "cannot start {name}:\n{}", out.all());
        name
    }

    /// The "app" of a pod: writes `content` to `path` in `volume` as the image's user, with the
    /// image's rclone (`rclone rcat`; there is no shell in the image).
    fn app_write(&mut self, volume: &str, path: &str, content: &[u8]) {
        let name = self.name("app");
        self.guard.containers.push(name.clone());
        let mount = format!("{volume}:/data");
        let target = format!("/data/{path}");
        let cmd = strings(&[
            "run",
            "-i",
            "--rm",
            "--name",
            &name,
            "--user",
            IMAGE_UID,
            "--read-only",
            "--tmpfs",
            "/tmp:rw,mode=1777",
            "-v",
            &mount,
            "--entrypoint",
            "/usr/local/bin/rclone",
            &image(),
            "--config",
            "/dev/null",
            "rcat",
            &target,
        ]);
        let out = docker_run_raw(&cmd, Some(content));
        assert_eq!(
            out.code,
            0,
            "the app could not write {path}:\n{}",
            out.all()
        );
    }

    /// Copies the contents of `dir` into a named volume (through a created, never started
    /// container).
    fn fill_volume(&mut self, volume: &str, dir: &Path) {
        let name = self.name("fill");
        self.guard.containers.push(name.clone());
        let mount = format!("{volume}:/data");
        docker(&["create", "--name", &name, "-v", &mount, &image()]);
        let src = format!("{}/.", dir.display());
        docker(&["cp", &src, &format!("{name}:/data")]);
        docker(&["rm", "-f", &name]);
    }

    /// The contents of a named volume, copied out to this machine.
    fn volume_snapshot(&mut self, volume: &str) -> Snapshot {
        let name = self.name("copy-out");
        self.guard.containers.push(name.clone());
        let mount = format!("{volume}:/data");
        docker(&["create", "--name", &name, "-v", &mount, &image()]);
        let out_dir = self.tmp.path().join(format!("out-{volume}"));
        fs::create_dir_all(&out_dir).unwrap();
        docker(&[
            "cp",
            &format!("{name}:/data/."),
            &out_dir.display().to_string(),
        ]);
        docker(&["rm", "-f", &name]);
        snapshot(&out_dir)
    }

    /// What the server stores under `bucket/<path>`.
    fn remote_snapshot(&self, remote_path: &str) -> Snapshot {
        files_only(&snapshot(&self.s3_data.join(remote_path)))
    }

    fn logs(&self, container: &str) -> String {
        docker(&["logs", container]).all()
    }

    /// Waits until `needle` appears `count` times in the container's log.
    #[track_caller]
    fn wait_for_logs(&self, container: &str, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let logs = self.logs(container);
            if logs.matches(needle).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count}x {needle:?} in the log of {container}:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Running or not, and the exit code.
    fn state(&self, container: &str) -> (bool, i32) {
        let out = docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            container,
        ]);
        let mut parts = out.stdout.split_whitespace();
        let running = parts.next() == Some("true");
        let code = parts.next().unwrap().parse().unwrap();
        (running, code)
    }

    /// Waits (generously) until the container has exited; returns its exit code.
    #[track_caller]
    fn wait_exited(&self, container: &str) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (running, code) = self.state(container);
            if !running {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "{container} is still running:\n{}",
                self.logs(container)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// World-readable (bind mounts are read by uid 65312, not by this process's user).
fn make_readable(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            make_readable(&path);
        } else {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

fn sample_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("README.txt", b"hello from a container\n".to_vec()),
        ("empty.bin", Vec::new()),
        ("nested/deeper/random.bin", random_bytes(300_000, 7)),
        (
            "nested/with space & ümlaut.txt",
            b"names survive\n".to_vec(),
        ),
        ("db/0001.log", random_bytes(4096, 11)),
    ]
}

fn as_snapshot(files: &[(&str, Vec<u8>)]) -> Snapshot {
    files
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.clone())))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// tests

/// `docker run -e REMOTE_… image sync-to-remote` of a volume, then `remote-to-local-sync` into a
/// new volume: byte-identical, as the unprivileged user with a read-only root file system.
#[test]
fn upload_a_volume_and_restore_it_into_a_new_volume() {
    let mut lab = Lab::new();
    let files = sample_files();
    let source_dir = lab.host_dir("source", &files);
    let source = lab.volume("source");
    lab.fill_volume(&source, &source_dir);
    let remote = format!("{BUCKET}/{}", lab.prefix);

    let up = lab.run_vso(
        "upload",
        &[format!("{source}:/data:ro")],
        &strings(&["sync-to-remote", "-s", "/data", "-d", &remote]),
    );
    assert_eq!(up.code, 0, "sync-to-remote failed:\n{}", up.all());
    assert!(up.all().contains("result=\"success\""), "{}", up.all());
    assert_eq!(lab.remote_snapshot(&remote), as_snapshot(&files));

    // A new named volume at /data starts out owned by the image's user (the image's /data).
    let restored = lab.volume("restored");
    let down = lab.run_vso(
        "restore",
        &[format!("{restored}:/data")],
        &strings(&["remote-to-local-sync", "-s", &remote, "-d", "/data"]),
    );
    assert_eq!(down.code, 0, "remote-to-local-sync failed:\n{}", down.all());
    assert_eq!(
        files_only(&lab.volume_snapshot(&restored)),
        as_snapshot(&files)
    );
    assert_eq!(
        files_only(&lab.volume_snapshot(&source)),
        as_snapshot(&files),
        "the source volume changed"
    );
    for out in [&up, &down] {
        assert!(
            !out.all().contains(SECRET_KEY),
            "the secret leaked into the log"
        );
    }
}

/// As PID 1 with a long schedule: `docker stop` (SIGTERM) triggers the final sync, which uploads
/// a file written just before; the container exits 0.
#[test]
fn docker_stop_runs_the_final_sync_as_pid_1() {
    let mut lab = Lab::new();
    let dir = lab.host_dir("source", &[("first.txt", b"before start\n".to_vec())]);
    let remote = format!("{BUCKET}/{}", lab.prefix);
    let container = lab.start_vso(
        "sidecar",
        &[format!("{}:/data:ro", dir.display())],
        &strings(&[
            "sync-to-remote",
            "-s",
            "/data",
            "-d",
            &remote,
            "--schedule",
            "@every 1h",
        ]),
    );
    // The start sync.
    lab.wait_for_logs(&container, "result=\"success\"", 1);
    assert!(lab.remote_snapshot(&remote).contains_key("first.txt"));

    fs::write(dir.join("late.txt"), b"written just before docker stop\n").unwrap();
    make_readable(&dir);
    docker(&["stop", "-t", "30", &container]);

    let code = lab.wait_exited(&container);
    let logs = lab.logs(&container);
    assert_eq!(code, 0, "exit code after docker stop; log:\n{logs}");
    assert!(logs.contains("running the final sync"), "{logs}");
    assert_eq!(
        logs.matches("result=\"success\"").count(),
        2,
        "the start sync and the final sync only:\n{logs}"
    );
    let remote_files = lab.remote_snapshot(&remote);
    assert_eq!(
        remote_files.get("late.txt"),
        Some(&Some(b"written just before docker stop\n".to_vec())),
        "the final sync did not upload the last write; remote: {:?}",
        remote_files.keys().collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// the Kubernetes manifest

/// The parts of a container of the manifest that the test runs.
#[derive(Debug)]
struct ManifestContainer {
    args: Vec<String>,
    pre_stop: Option<Vec<String>>,
    restart_policy: Option<String>,
    mounts: BTreeMap<String, String>,
    read_only_root: bool,
    /// `containerPort` of the port named `metrics`.
    metrics_port: Option<u64>,
    /// The livenessProbe: (httpGet path, httpGet port).
    liveness: Option<(String, Value)>,
    has_readiness_probe: bool,
}

fn string_list(value: &Value, what: &str) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list"))
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => panic!("{what}: {other:?} is not a string"),
        })
        .collect()
}

/// The workload documents (Deployment/StatefulSet) of a manifest file.
fn workloads(rel: &str) -> Vec<Value> {
    let text = fs::read_to_string(repo_path(rel)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|doc| {
            matches!(
                doc["kind"].as_str(),
                Some("Deployment") | Some("StatefulSet")
            )
        })
        .collect()
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// The container `name` from initContainers or containers.
fn container(workload: &Value, name: &str) -> ManifestContainer {
    let spec = pod_spec(workload);
    let found = ["initContainers", "containers"]
        .iter()
        .filter_map(|list| spec[*list].as_sequence())
        .flatten()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name:?} in the manifest"));
    ManifestContainer {
        args: string_list(&found["args"], &format!("{name}.args")),
        pre_stop: found["lifecycle"]["preStop"]["exec"]
            .get("command")
            .map(|c| string_list(c, &format!("{name} preStop command"))),
        restart_policy: found["restartPolicy"].as_str().map(str::to_string),
        mounts: found["volumeMounts"]
            .as_sequence()
            .map(|mounts| {
                mounts
                    .iter()
                    .map(|m| {
                        (
                            m["mountPath"].as_str().unwrap().to_string(),
                            m["name"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        read_only_root: found["securityContext"]["readOnlyRootFilesystem"].as_bool() == Some(true),
        metrics_port: found["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str() == Some("metrics"))
            .and_then(|p| p["containerPort"].as_u64()),
        liveness: found["livenessProbe"]["httpGet"]["path"]
            .as_str()
            .map(|path| {
                (
                    path.to_string(),
                    found["livenessProbe"]["httpGet"]["port"].clone(),
                )
            }),
        has_readiness_probe: found.get("readinessProbe").is_some(),
    }
}

fn is_in_init_containers(workload: &Value, name: &str) -> bool {
    pod_spec(workload)["initContainers"]
        .as_sequence()
        .is_some_and(|list| list.iter().any(|c| c["name"].as_str() == Some(name)))
}

/// The value following `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// `args` with the remote path replaced (it must occur exactly once) and, when given, the value
/// of `--schedule` replaced.
fn substitute(args: &[String], remote: &str, schedule: Option<&str>) -> Vec<String> {
    assert_eq!(
        args.iter()
            .filter(|a| a.starts_with(MANIFEST_REMOTE_PATH))
            .count(),
        1,
        "expected the remote path {MANIFEST_REMOTE_PATH:?} once in {args:?}; update the test \
         together with the manifest"
    );
    let mut out: Vec<String> = args
        .iter()
        .map(|a| {
            if a == MANIFEST_REMOTE_PATH {
                remote.to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    if let Some(schedule) = schedule {
        let i = out
            .iter()
            .position(|a| a == "--schedule")
            .unwrap_or_else(|| panic!("no --schedule in {args:?}"));
        out[i + 1] = schedule.to_string();
    }
    out
}

/// The documented relations inside every manifest, no Docker needed: the sidecar's preStop
/// interrupts the PID file it writes, the grace period exceeds --shutdown-timeout, the PID file
/// lies on the writable /tmp volume, the pod runs as 65312.
#[test]
fn manifests_are_consistent() {
    let files = [
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/deployment-classic-sidecar.yaml",
        "deploy/kubernetes/statefulset.yaml",
    ];
    for rel in files {
        let docs = workloads(rel);
        assert_eq!(docs.len(), 1, "{rel}: one workload expected");
        let workload = &docs[0];
        let spec = pod_spec(workload);
        let security = &spec["securityContext"];
        for key in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert_eq!(
                security[key].as_u64(),
                Some(65312),
                "{rel}: securityContext.{key}"
            );
        }
        assert_eq!(security["runAsNonRoot"].as_bool(), Some(true), "{rel}");

        let init = container(workload, "init-volume-restore");
        assert!(is_in_init_containers(workload, "init-volume-restore"));
        assert_eq!(init.args[0], "remote-to-local-sync", "{rel}");
        assert!(init.args.contains(&"--if-local-empty".to_string()), "{rel}");

        let sidecar = container(workload, "volume-syncing-sidecar");
        assert_eq!(sidecar.args[0], "sync-to-remote", "{rel}");
        let pid_path = flag_value(&sidecar.args, "--pid-path")
            .unwrap_or_else(|| panic!("{rel}: the sidecar has no --pid-path"));
        let pre_stop = sidecar
            .pre_stop
            .as_ref()
            .unwrap_or_else(|| panic!("{rel}: the sidecar has no preStop exec hook"));
        assert_eq!(
            pre_stop[0], "/usr/local/bin/volume-syncing-operator",
            "{rel}"
        );
        assert_eq!(pre_stop[1], "interrupt", "{rel}");
        assert_eq!(flag_value(pre_stop, "--pid-path"), Some(pid_path), "{rel}");
        assert!(
            pid_path.starts_with("/tmp/") && sidecar.mounts.contains_key("/tmp"),
            "{rel}: the PID file must be on the /tmp volume"
        );
        for c in [&init, &sidecar] {
            assert!(c.read_only_root, "{rel}: readOnlyRootFilesystem");
            assert!(c.mounts.contains_key("/data") && c.mounts.contains_key("/tmp"));
        }

        let shutdown =
            parse_duration(flag_value(&sidecar.args, "--shutdown-timeout").unwrap_or("5m"))
                .unwrap();
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        assert!(
            grace > shutdown.as_secs(),
            "{rel}: terminationGracePeriodSeconds {grace} must exceed --shutdown-timeout {shutdown:?}"
        );

        // Observability: the sidecar serves on the port named `metrics`, which the liveness
        // probe and the Prometheus annotations point at; no readiness probe (a sidecar's
        // readiness is part of the pod's, so a broken remote would take the app out of its
        // Services; see the comment in the manifests).
        let address = flag_value(&sidecar.args, "--metrics-address")
            .unwrap_or_else(|| panic!("{rel}: the sidecar has no --metrics-address"));
        let port: u64 = address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("{rel}: --metrics-address {address} has no port"));
        assert!(
            address.starts_with("0.0.0.0:"),
            "{rel}: the kubelet and Prometheus connect to the pod IP, not localhost"
        );
        assert_eq!(sidecar.metrics_port, Some(port), "{rel}: port `metrics`");
        let (path, probe_port) = sidecar
            .liveness
            .as_ref()
            .unwrap_or_else(|| panic!("{rel}: the sidecar has no httpGet livenessProbe"));
        assert_eq!(path, "/livez", "{rel}");
        assert!(
            probe_port.as_str() == Some("metrics") || probe_port.as_u64() == Some(port),
            "{rel}: the livenessProbe does not probe the metrics port: {probe_port:?}"
        );
        assert!(!sidecar.has_readiness_probe, "{rel}: readinessProbe");
        let annotations = &workload["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/scrape"].as_str(),
            Some("true"),
            "{rel}"
        );
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(port.to_string().as_str()),
            "{rel}"
        );
        assert_eq!(
            annotations["prometheus.io/path"].as_str(),
            Some("/metrics"),
            "{rel}"
        );

        let native = is_in_init_containers(workload, "volume-syncing-sidecar");
        if rel.contains("classic") {
            assert!(
                !native,
                "{rel}: the classic variant has the sidecar in containers"
            );
        } else {
            assert!(native, "{rel}: a native sidecar is an initContainer");
            assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"), "{rel}");
        }
    }
}

/// A pod played with containers, from deploy/kubernetes/deployment.yaml: the initContainer
/// restores the shared volume, an "app" writes into it, the native sidecar syncs it on its
/// schedule, its preStop command (`docker exec`) returns only after the final sync, which
/// uploaded the app's last write; a new volume restored from the remote is identical.
#[test]
fn pod_from_the_kubernetes_manifest() {
    let mut lab = Lab::new();
    let docs = workloads(MANIFEST);
    let workload = &docs[0];
    let init = container(workload, "init-volume-restore");
    let sidecar = container(workload, "volume-syncing-sidecar");
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert!(init.read_only_root && sidecar.read_only_root);
    assert_eq!(
        pod_spec(workload)["securityContext"]["runAsUser"].as_u64(),
        Some(65312)
    );
    for c in [&init, &sidecar] {
        assert_eq!(c.mounts.get("/data").map(String::as_str), Some("data"));
        assert!(c.mounts.contains_key("/tmp"));
    }
    let remote = format!("{BUCKET}/{}", lab.prefix);
    let init_args = substitute(&init.args, &remote, None);
    let sidecar_args = substitute(&sidecar.args, &remote, Some("@every 3s"));
    let pre_stop = sidecar.pre_stop.clone().expect("the sidecar's preStop");

    // The remote holds the pod's data from an earlier life.
    let seed = sample_files();
    for (rel, content) in &seed {
        let path = lab.s3_data.join(&remote).join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    // initContainer: restore into the pod's new, empty volume.
    let data = lab.volume("data");
    let mount = [format!("{data}:/data")];
    let restore = lab.run_vso("init-volume-restore", &mount, &init_args);
    assert_eq!(restore.code, 0, "init container failed:\n{}", restore.all());
    assert_eq!(files_only(&lab.volume_snapshot(&data)), as_snapshot(&seed));

    // The native sidecar starts before the app and syncs on its schedule.
    let side = lab.start_vso("volume-syncing-sidecar", &mount, &sidecar_args);
    lab.wait_for_logs(&side, "result=\"success\"", 1);
    // What the kubelet's liveness probe and Prometheus see, on the manifest's port.
    let port = sidecar.metrics_port.expect("the sidecar's metrics port");
    let (liveness_path, _) = sidecar
        .liveness
        .clone()
        .expect("the sidecar's livenessProbe");
    assert_eq!(lab.http_get(&side, port, &liveness_path), "ok\n");
    let metrics = lab.http_get(&side, port, "/metrics");
    assert!(
        metrics.contains(
            "volume_syncing_operator_syncs_total{direction=\"upload\",result=\"success\"} "
        ) && metrics.ends_with("# EOF\n"),
        "{metrics}"
    );
    lab.app_write(&data, "app/first.txt", b"first write\n");
    support::wait_until(
        "a scheduled sync uploads the app's first write",
        Duration::from_secs(120),
        || lab.remote_snapshot(&remote).contains_key("app/first.txt"),
    );

    // The app's last write, then the pod stops: the kubelet runs the sidecar's preStop hook.
    let last = b"the app's last write\n";
    lab.app_write(&data, "app/last.txt", last);
    let mut exec = strings(&["exec", &side]);
    exec.extend(pre_stop.iter().cloned());
    let hook = docker_run_raw(&exec, None);
    // Right when the hook returns, the final sync is done.
    let remote_now = lab.remote_snapshot(&remote);
    // The sidecar is PID 1 of its container: it waits for `interrupt` to read its exit code
    // before exiting, so the hook is not killed with the container (which would be 137).
    assert!(
        hook.code == 0,
        "the preStop command failed ({}):\n{}\nsidecar log:\n{}",
        hook.code,
        hook.all(),
        lab.logs(&side)
    );
    assert_eq!(
        remote_now.get("app/last.txt"),
        Some(&Some(last.to_vec())),
        "the preStop hook returned before the app's last write was on the remote"
    );
    let code = lab.wait_exited(&side);
    let logs = lab.logs(&side);
    assert_eq!(code, 0, "the sidecar's exit code; log:\n{logs}");
    assert!(logs.contains("running the final sync"), "{logs}");
    assert!(
        logs.rsplit("running the final sync")
            .next()
            .unwrap()
            .contains("result=\"success\""),
        "the final sync did not succeed:\n{logs}"
    );

    // The next pod: a new volume restored by the same initContainer equals the old one.
    let mut expected = as_snapshot(&seed);
    expected.insert("app/first.txt".into(), Some(b"first write\n".to_vec()));
    expected.insert("app/last.txt".into(), Some(last.to_vec()));
    assert_eq!(files_only(&lab.volume_snapshot(&data)), expected);
    assert_eq!(lab.remote_snapshot(&remote), expected);
    let next = lab.volume("data-next");
    let restore = lab.run_vso(
        "init-volume-restore-next",
        &[format!("{next}:/data")],
        &init_args,
    );
    assert_eq!(restore.code, 0, "{}", restore.all());
    assert_eq!(files_only(&lab.volume_snapshot(&next)), expected);
}
