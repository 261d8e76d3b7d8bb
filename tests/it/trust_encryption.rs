//! The remote is input, not instructions (issue 24): a path that holds encrypted data is never
//! synced without its key (with the plain marker, and for paths written before it existed),
//! text from the remote cannot forge a log line, and a panic still removes the private config.
//! Real `rclone serve s3`; both ends compared byte for byte after every refusal.

use crate::support::*;

const PASSPHRASE: &str = "correct horse battery staple 42";
const REMOTE: &str = "bucket/app";
const MARKER: &str = "bucket/app/.volume-syncing-operator.encrypted";

fn tree(sandbox: &Sandbox, name: &str) -> std::path::PathBuf {
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            (
                format!("dir{}/file-{i}.txt", i % 3),
                random_bytes(100 + i * 37, i as u64),
            )
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    sandbox.tree(name, &refs)
}

fn upload(sandbox: &Sandbox, server: &S3Server, dir: &std::path::Path, key: bool) -> Output {
    let mut vso = Vso::s3(sandbox, server);
    vso.args(["sync-to-remote", "-s"])
        .arg(dir)
        .args(["-d", REMOTE]);
    if key {
        vso.env("ENCRYPTION_PASSPHRASE", PASSPHRASE);
    }
    vso.run()
}

fn restore(sandbox: &Sandbox, server: &S3Server, dir: &std::path::Path, key: bool) -> Output {
    let mut vso = Vso::s3(sandbox, server);
    vso.args(["remote-to-local-sync", "-d"]).arg(dir).args([
        "-s",
        REMOTE,
        "--force-delete-local-dir",
    ]);
    if key {
        vso.env("ENCRYPTION_PASSPHRASE", PASSPHRASE);
    }
    vso.run()
}

/// An encrypted path, with or without the plain marker (without: as written before it existed).
fn encrypted_path(sandbox: &Sandbox, server: &S3Server, with_marker: bool) {
    let src = tree(sandbox, "first");
    upload(sandbox, server, &src, true).assert_code(0);
    assert!(
        server.path(MARKER).is_file(),
        "an encrypted upload writes the plain marker"
    );
    let marker = std::fs::read_to_string(server.path(MARKER)).unwrap();
    assert!(
        !marker.contains(PASSPHRASE) && marker.contains("encrypted"),
        "{marker}"
    );
    if !with_marker {
        server.rclone_s3(SECRET_KEY, &["deletefile", &format!("s3:{MARKER}")], None);
    }
}

fn refused_for_encryption(out: &Output) {
    out.assert_code(3)
        .assert_contains("encrypted-remote")
        .assert_contains("ENCRYPTION_PASSPHRASE");
}

#[test]
fn an_upload_without_the_key_never_deletes_an_encrypted_path() {
    for with_marker in [true, false] {
        let sandbox = Sandbox::new();
        let server = S3Server::start();
        encrypted_path(&sandbox, &server, with_marker);
        let before = snapshot_all(&server.path("bucket"));
        let other = sandbox.tree("other", &[("new.txt", b"plain data\n")]);
        let local_before = snapshot_all(&other);
        let out = upload(&sandbox, &server, &other, false);
        refused_for_encryption(&out);
        assert_eq!(
            snapshot_all(&server.path("bucket")),
            before,
            "remote changed (marker: {with_marker})"
        );
        assert_eq!(snapshot_all(&other), local_before);
        sandbox.assert_config_removed();
    }
}

#[test]
fn a_restore_without_the_key_never_replaces_local_files_with_ciphertext() {
    for with_marker in [true, false] {
        let sandbox = Sandbox::new();
        let server = S3Server::start();
        encrypted_path(&sandbox, &server, with_marker);
        let before = snapshot_all(&server.path("bucket"));
        let local = sandbox.tree("local", &[("precious.txt", b"local data\n")]);
        let local_before = snapshot_all(&local);
        refused_for_encryption(&restore(&sandbox, &server, &local, false));
        assert_eq!(snapshot_all(&local), local_before, "marker: {with_marker}");
        assert_eq!(snapshot_all(&server.path("bucket")), before);
        // Into a directory that does not exist yet: it is not created.
        let fresh = sandbox.path("fresh");
        refused_for_encryption(&restore(&sandbox, &server, &fresh, false));
        assert!(!fresh.exists());
    }
}

#[test]
fn the_key_still_restores_what_it_wrote_and_plain_paths_still_sync() {
    let sandbox = Sandbox::new();
    let server = S3Server::start();
    let src = tree(&sandbox, "src");
    upload(&sandbox, &server, &src, true).assert_code(0);
    // A second encrypted upload: the marker is there and is no data to the crypt layer.
    upload(&sandbox, &server, &src, true)
        .assert_code(0)
        .assert_contains("deleted_files=0");
    let back = sandbox.path("back");
    let out = restore(&sandbox, &server, &back, true);
    out.assert_code(0);
    assert!(!out.all().contains("undecryptable"), "{}", out.all());
    assert_eq!(files_only(&snapshot(&back)), files_only(&snapshot(&src)));
    // A plain path next to it is plain, with or without data.
    let mut vso = Vso::s3(&sandbox, &server);
    vso.args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/plain"])
        .run()
        .assert_code(0);
    assert!(
        !server
            .path("bucket/plain/.volume-syncing-operator.encrypted")
            .exists()
    );
    let plain_back = sandbox.path("plain-back");
    let mut vso = Vso::s3(&sandbox, &server);
    vso.args(["remote-to-local-sync", "-s", "bucket/plain", "-d"])
        .arg(&plain_back)
        .run()
        .assert_code(0);
    assert_eq!(
        files_only(&snapshot(&plain_back)),
        files_only(&snapshot(&src))
    );
}

#[test]
fn text_from_the_remote_cannot_forge_a_log_line() {
    let sandbox = Sandbox::new();
    let server = S3Server::start();
    let src = tree(&sandbox, "src");
    // A live lease whose host carries a line break, a forged summary and terminal escapes.
    let forged = "evil\n2026-01-01T00:00:00Z  INFO sync finished result=\"success\"\u{1b}[2J\r";
    let now = chrono_like_now();
    let lease = serde_json::json!({
        "holder": {"host": forged, "pid": 1, "id": "x"},
        "started": now.0, "renewed": now.0, "expires": now.1,
    });
    server.rclone_s3(
        SECRET_KEY,
        &["rcat", "s3:bucket/app/.volume-syncing-operator.lease"],
        Some(lease.to_string().as_bytes()),
    );
    for format in ["text", "json"] {
        let mut vso = Vso::s3(&sandbox, &server);
        let out = vso
            .args(["--log-format", format, "sync-to-remote", "-s"])
            .arg(&src)
            .args(["-d", REMOTE])
            .run();
        out.assert_code(3).assert_contains("remote-in-use");
        for line in out.stderr.lines() {
            assert!(
                !line.starts_with("2026-01-01T00:00:00Z"),
                "a forged line ({format}):\n{}",
                out.stderr
            );
            assert!(
                !line.contains('\u{1b}') && !line.contains('\r'),
                "a raw control character ({format}): {line:?}"
            );
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            }
        }
        assert!(out.stderr.contains("evil"), "{}", out.stderr);
    }
}

/// Now and in an hour, as RFC 3339 (the lease's format), from `date`.
fn chrono_like_now() -> (String, String) {
    let date = |offset: &str| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", offset, "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    (date("now"), date("+1 hour"))
}

#[test]
fn a_panic_still_removes_the_private_config() {
    let sandbox = Sandbox::new();
    let server = S3Server::start();
    let src = tree(&sandbox, "src");
    let mut vso = Vso::s3(&sandbox, &server);
    let out = vso
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", REMOTE])
        .env("VOLUME_SYNCING_OPERATOR_TEST_PANIC", "1")
        .env("ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .run();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(6),
        "the panic hook aborts (as the release build does): {}",
        out.all()
    );
    assert!(out.stderr.contains("deliberate panic"), "{}", out.stderr);
    assert!(
        !out.all().contains(PASSPHRASE) && !out.all().contains(SECRET_KEY),
        "a secret in the panic output"
    );
    sandbox.assert_config_removed();
    // Nothing was uploaded.
    assert!(files_only(&snapshot(&server.path("bucket"))).is_empty());
}
