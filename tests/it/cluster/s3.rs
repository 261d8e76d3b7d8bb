//! The S3 server the injected containers talk to (`rclone serve s3` on the bridge), and a
//! snapshot of a directory to compare byte for byte.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{ACCESS_KEY, BUCKET, SECRET_KEY, repo};

/// `rclone serve s3` on the Docker bridge address (the Pods reach it there), a random port.
pub struct S3 {
    child: Child,
    data: tempfile::TempDir,
    pub endpoint: String,
}

impl S3 {
    /// A server with the one bucket `bucket`.
    pub fn start(bridge: &str) -> S3 {
        Self::serve(bridge, |dir| {
            fs::create_dir_all(dir.join(BUCKET)).unwrap();
        })
    }

    /// A server of a directory that `fill` prepares first: the server caches its listing of
    /// the top (the buckets), so a bucket made on disk later is not seen.
    pub fn serve(bridge: &str, fill: impl FnOnce(&Path)) -> S3 {
        let data = tempfile::tempdir().unwrap();
        fill(data.path());
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
    pub fn path(&self, remote_path: &str) -> PathBuf {
        self.data.path().join(remote_path)
    }

    /// The Secret with the REMOTE_* variables pointing at this server.
    pub fn secret(&self, namespace: &str, name: &str) -> Value {
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
pub fn snapshot(root: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
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
