//! The counts a user reads — the summary line's `transferred_files`, `transferred_bytes` and
//! `deleted_files`, and the Prometheus counters — are the user's files only (issue 29). This
//! program keeps its own objects beside the data (the metadata manifest, the upload record,
//! the lease, the key check, the encryption marker); they are never counted as the user's.
//! Where rclone moves one of them as part of the data (replication carries the manifest), the
//! summary says so apart, as `internal_files`.
//!
//! One known tree of [`USER_FILES`] files, uploaded, restored and replicated against a real
//! `rclone serve s3`, each a first time and again with nothing changed; then a change upload
//! and replicated; a replication's metrics; sync on change.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::support::*;
use serde_json::Value as Json;

/// The files of the tree below (the empty directory is not a file; S3 keeps no directories).
const USER_FILES: u64 = 4;
/// One transfer at a time, so `transferred_bytes` is exact (see tests/observability.rs: the
/// test server sometimes answers concurrent PUTs with a 500, and rclone counts resent bytes).
const ONE_TRANSFER: [&str; 2] = ["--transfers", "1"];
const LONG: Duration = Duration::from_secs(60);

fn tree(sandbox: &Sandbox) -> (std::path::PathBuf, u64) {
    let big = random_bytes(20_000, 29);
    let files: [(&str, &[u8]); 5] = [
        ("a.txt", b"alpha\n"),
        ("dir/b.bin", &big),
        ("dir/sub/c.txt", b"c\n"),
        (".hidden", b"hidden\n"),
        ("empty/", b""),
    ];
    let bytes = files.iter().map(|(_, c)| c.len() as u64).sum();
    (sandbox.tree("src", &files), bytes)
}

/// The summary lines (JSON log) of a run: every line with a `direction` and counts.
fn summaries(stderr: &str) -> Vec<BTreeMap<String, Json>> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<BTreeMap<String, Json>>(l).ok())
        .filter(|l| l.contains_key("direction") && l.contains_key("transferred_files"))
        .collect()
}

/// The one summary line of a run whose message starts with `message`.
#[track_caller]
fn summary(out: &Output, message: &str) -> BTreeMap<String, Json> {
    let found: Vec<_> = summaries(&out.stderr)
        .into_iter()
        .filter(|l| l["message"].as_str().unwrap_or("").starts_with(message))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {message:?} line expected:\n{}",
        out.all()
    );
    found.into_iter().next().unwrap()
}

/// Asserts the counts of a summary line: (transferred files, transferred bytes, deleted).
#[track_caller]
fn assert_counts(line: &BTreeMap<String, Json>, files: u64, bytes: Option<u64>, deleted: u64) {
    let get = |k: &str| {
        line.get(k)
            .and_then(Json::as_u64)
            .unwrap_or_else(|| panic!("no numeric {k} in {line:?}"))
    };
    assert_eq!(
        get("transferred_files"),
        files,
        "transferred_files: {line:?}"
    );
    if let Some(bytes) = bytes {
        assert_eq!(
            get("transferred_bytes"),
            bytes,
            "transferred_bytes: {line:?}"
        );
    }
    assert_eq!(get("deleted_files"), deleted, "deleted_files: {line:?}");
}

#[track_caller]
fn internal(line: &BTreeMap<String, Json>) -> u64 {
    line.get("internal_files")
        .and_then(Json::as_u64)
        .unwrap_or_else(|| panic!("no internal_files in {line:?}"))
}

/// This program's own objects at the top of a remote path, as stored.
fn own_objects(server: &S3Server, path: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(server.path(path))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".volume-syncing-operator."))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn upload(sandbox: &Sandbox, server: &S3Server, src: &Path) -> Output {
    Vso::s3(sandbox, server)
        .args(["--log-format", "json", "sync-to-remote", "-s"])
        .arg(src)
        .args(["-d", "bucket/app", "--"])
        .args(ONE_TRANSFER)
        .run()
}

fn restore(sandbox: &Sandbox, server: &S3Server, dst: &Path) -> Output {
    Vso::s3(sandbox, server)
        .args([
            "--log-format",
            "json",
            "remote-to-local-sync",
            "-s",
            "bucket/app",
            "-d",
        ])
        .arg(dst)
        .arg("--")
        .args(ONE_TRANSFER)
        .run()
}

/// `remote-to-remote-sync` from `bucket/app` to `to`, both on `server` (SOURCE_* = REMOTE_*).
fn replicate(sandbox: &Sandbox, server: &S3Server, to: &str, extra: &[&str]) -> Vso {
    let source: Vec<(String, String)> = server
        .remote_env()
        .into_iter()
        .map(|(k, v)| (k.replacen("REMOTE_", "SOURCE_", 1), v))
        .collect();
    let mut vso = Vso::s3(sandbox, server);
    vso.envs(source)
        .args(["--log-format", "json", "remote-to-remote-sync"])
        .args(["-s", "bucket/app", "-d", to])
        .args(extra)
        .arg("--")
        .args(ONE_TRANSFER);
    vso
}

#[test]
fn upload_restore_and_replication_count_the_users_files_only() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let (src, bytes) = tree(&sandbox);

    // Upload: the first run sends the tree, the second nothing.
    let out = upload(&sandbox, &server, &src);
    out.assert_code(0);
    assert_counts(&summary(&out, "sync finished"), USER_FILES, Some(bytes), 0);
    let own = own_objects(&server, "bucket/app");
    assert!(
        own.contains(&".volume-syncing-operator.manifest".to_string())
            && own.contains(&".volume-syncing-operator.upload-record".to_string()),
        "the test needs our objects beside the data: {own:?}"
    );
    let out = upload(&sandbox, &server, &src);
    out.assert_code(0);
    assert_counts(&summary(&out, "sync finished"), 0, Some(0), 0);

    // Restore: into an empty directory, then again with nothing changed.
    let dst = sandbox.dir("restored");
    let out = restore(&sandbox, &server, &dst);
    out.assert_code(0);
    assert_counts(&summary(&out, "sync finished"), USER_FILES, Some(bytes), 0);
    let out = restore(&sandbox, &server, &dst);
    out.assert_code(0);
    assert_counts(&summary(&out, "sync finished"), 0, Some(0), 0);

    // Replication carries the manifest with the data: counted apart, in every summary line.
    let out = replicate(&sandbox, &server, "bucket/replica", &["--dry-run"]).run();
    out.assert_code(0);
    let line = summary(&out, "replication finished");
    assert_counts(&line, USER_FILES, Some(bytes), 0);
    assert_eq!(internal(&line), 1, "{line:?}");
    let out = replicate(&sandbox, &server, "bucket/replica", &[]).run();
    out.assert_code(0);
    for message in ["replication finished", "replication of every pair finished"] {
        let line = summary(&out, message);
        assert_counts(&line, USER_FILES, Some(bytes), 0);
        assert_eq!(internal(&line), 1, "{message}: {line:?}");
    }
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/replica"))),
        files_only(&snapshot(&server.path("bucket/app"))),
    );
    let out = replicate(&sandbox, &server, "bucket/replica", &[]).run();
    out.assert_code(0);
    for message in ["replication finished", "replication of every pair finished"] {
        let line = summary(&out, message);
        assert_counts(&line, 0, Some(0), 0);
        assert_eq!(internal(&line), 0, "{message}: {line:?}");
    }

    // A change: one file added, one deleted. The manifest changes with them.
    add_file(&src, "new.txt", b"new\n");
    std::fs::remove_file(src.join("dir/sub/c.txt")).unwrap();
    let out = upload(&sandbox, &server, &src);
    out.assert_code(0);
    assert_counts(&summary(&out, "sync finished"), 1, Some(4), 1);
    let out = restore(&sandbox, &server, &dst);
    out.assert_code(0);
    assert_counts(&summary(&out, "sync finished"), 1, Some(4), 1);
    let out = replicate(&sandbox, &server, "bucket/replica", &[]).run();
    out.assert_code(0);
    let line = summary(&out, "replication finished");
    assert_counts(&line, 1, Some(4), 1);
    assert_eq!(internal(&line), 1, "{line:?}");
}

/// A plain GET over HTTP/1.0; the body.
fn get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    body.to_string()
}

/// The value of an unlabelled sample of the exposition.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[test]
fn a_scheduled_replications_metrics_count_the_users_files_only() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let (src, bytes) = tree(&sandbox);
    upload(&sandbox, &server, &src).assert_code(0);
    let mut running = replicate(
        &sandbox,
        &server,
        "bucket/replica",
        &[
            "--schedule",
            "@every 1s",
            "--metrics-address",
            "127.0.0.1:0",
        ],
    )
    .spawn();
    let serving = "serving /metrics, /healthz, /livez and /readyz";
    running.wait_for_output(serving, 1, LONG);
    let address = running
        .output_so_far()
        .lines()
        .find(|l| l.contains(serving))
        .and_then(|l| serde_json::from_str::<Json>(l).ok())
        .and_then(|j| j["address"].as_str().map(str::to_string))
        .expect("the metrics address");
    // Two runs: the first replicates the tree (and the manifest), the second nothing.
    running.wait_for_output("replication of every pair finished", 2, LONG);
    let text = get(&address, "/metrics");
    let files = sample(&text, "volume_syncing_operator_transferred_files_total");
    let sent = sample(&text, "volume_syncing_operator_transferred_bytes_total");
    assert_eq!(files, USER_FILES as f64, "{text}");
    assert_eq!(sent, bytes as f64, "{text}");
    assert_eq!(
        sample(&text, "volume_syncing_operator_deleted_files_total"),
        0.0
    );
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let out = running.wait_output(LONG);
    out.assert_code(0);
}

#[test]
fn sync_on_change_counts_the_users_files_only() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let (src, bytes) = tree(&sandbox);
    let mut running = Vso::s3(&sandbox, &server)
        .args(["--log-format", "json", "sync-to-remote", "--watch"])
        .args(["--debounce", "300ms", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--"])
        .args(ONE_TRANSFER)
        .spawn();
    running.wait_for_output("\"sync finished\"", 1, LONG);
    add_file(&src, "new.txt", b"new\n");
    running.wait_for_output("\"sync finished\"", 2, LONG);
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let out = running.wait_output(LONG);
    out.assert_code(0);
    // The first sync sends the tree, the one on change the new file (a late inotify event may
    // add a sync with nothing to send), the final sync finds nothing changed ("sync skipped").
    let lines = summaries(&out.stderr);
    assert!(lines.len() >= 3, "first, on change, final:\n{}", out.all());
    assert_counts(&lines[0], USER_FILES, Some(bytes), 0);
    let later: u64 = lines[1..]
        .iter()
        .map(|l| l["transferred_files"].as_u64().unwrap())
        .sum();
    let later_bytes: u64 = lines[1..]
        .iter()
        .map(|l| l["transferred_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        (later, later_bytes),
        (1, 4),
        "only the new file:\n{}",
        out.all()
    );
    assert_counts(lines.last().unwrap(), 0, Some(0), 0);
    assert!(
        !own_objects(&server, "bucket/app").is_empty(),
        "our objects are beside the data"
    );
}
