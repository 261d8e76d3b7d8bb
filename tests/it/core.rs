//! The core promises, checked with the real binary against a real S3 server (`rclone serve s3`)
//! or rclone's `local` backend: deletions and `-x`, `--dry-run`, `-p` over the environment,
//! an existing config with `--no-template`, bad input (exit 2, nothing touched), rclone
//! failures (exit 1 with rclone's reason), the private config's life cycle (also across
//! SIGTERM/SIGINT), secrets kept out of the output, pass-through of rclone flags and
//! `RCLONE_*` variables, and empty directories through the `local` backend.

use crate::support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use nix::sys::signal::Signal;

/// Generous bound for things that normally take well under a second.
const WAIT: Duration = Duration::from_secs(60);

/// rclone flags that make a failing run fail quickly instead of retrying for a minute.
const FAIL_FAST: [&str; 5] = ["--", "--retries", "1", "--low-level-retries", "1"];

fn upload(sandbox: &Sandbox, server: &S3Server, src: &Path, dst: &str) -> Output {
    Vso::s3(sandbox, server)
        .args(["sync-to-remote", "-s"])
        .arg(src)
        .args(["-d", dst])
        .run()
}

/// Puts objects straight into the server's data directory (what another writer left there).
fn seed_remote(server: &S3Server, path: &str, files: &[(&str, &[u8])]) {
    let dir = server.path(path);
    fs::create_dir_all(&dir).unwrap();
    write_tree(&dir, files);
}

fn names(snap: &Snapshot) -> Vec<&str> {
    snap.keys().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Deletions propagate with sync, not with -x / --no-delete.
// ---------------------------------------------------------------------------------------------

#[test]
fn upload_deletes_remote_files_removed_locally_but_not_with_no_delete() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree(
        "src",
        &[
            ("keep.txt", b"keep\n"),
            ("removed-then-synced.txt", b"one\n"),
            ("sub/removed-then-copied.txt", b"two\n"),
        ],
    );
    upload(&sandbox, &server, &src, "bucket/app").assert_code(0);
    let remote = server.path("bucket/app");
    assert_eq!(files_only(&snapshot(&remote)), files_only(&snapshot(&src)));

    // A plain sync deletes at the destination.
    fs::remove_file(src.join("removed-then-synced.txt")).unwrap();
    upload(&sandbox, &server, &src, "bucket/app").assert_code(0);
    assert!(
        !remote.join("removed-then-synced.txt").exists(),
        "sync-to-remote deletes a file removed locally"
    );
    assert_eq!(files_only(&snapshot(&remote)), files_only(&snapshot(&src)));

    // -x copies new files and deletes nothing.
    fs::remove_file(src.join("sub/removed-then-copied.txt")).unwrap();
    fs::write(src.join("new.txt"), b"new\n").unwrap();
    give_to_runner(&src);
    Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-x", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .run()
        .assert_code(0);
    assert_eq!(
        fs::read(remote.join("sub/removed-then-copied.txt")).unwrap(),
        b"two\n",
        "-x must not delete at the destination"
    );
    assert_eq!(fs::read(remote.join("new.txt")).unwrap(), b"new\n");

    // The long form does the same.
    fs::remove_file(src.join("new.txt")).unwrap();
    Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "--no-delete", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .run()
        .assert_code(0);
    assert!(remote.join("new.txt").exists(), "--no-delete kept new.txt");
    assert_eq!(
        names(&files_only(&snapshot(&remote))),
        ["keep.txt", "new.txt", "sub/removed-then-copied.txt"]
    );
    assert!(sandbox.leftover_configs().is_empty());
}

#[test]
fn restore_deletes_local_files_missing_on_the_remote_but_not_with_no_delete() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    seed_remote(
        &server,
        "bucket/app",
        &[("a.txt", b"remote a\n"), ("dir/b.txt", b"remote b\n")],
    );
    let local = sandbox.tree(
        "local",
        &[("a.txt", b"stale a\n"), ("local-only.txt", b"mine\n")],
    );

    // -x: remote files arrive, the local-only file stays.
    Vso::s3(&sandbox, &server)
        .args(["remote-to-local-sync", "-x", "-s", "bucket/app", "-d"])
        .arg(&local)
        .run()
        .assert_code(0);
    assert_eq!(fs::read(local.join("a.txt")).unwrap(), b"remote a\n");
    assert_eq!(fs::read(local.join("dir/b.txt")).unwrap(), b"remote b\n");
    assert_eq!(
        fs::read(local.join("local-only.txt")).unwrap(),
        b"mine\n",
        "-x must not delete local files"
    );

    // The long form keeps it too.
    Vso::s3(&sandbox, &server)
        .args([
            "remote-to-local-sync",
            "--no-delete",
            "-s",
            "bucket/app",
            "-d",
        ])
        .arg(&local)
        .run()
        .assert_code(0);
    assert!(local.join("local-only.txt").exists());

    // A plain restore makes the directory equal to the remote.
    Vso::s3(&sandbox, &server)
        .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(&local)
        .run()
        .assert_code(0);
    assert!(
        !local.join("local-only.txt").exists(),
        "remote-to-local-sync deletes a local file that is not on the remote"
    );
    assert_eq!(
        files_only(&snapshot(&local)),
        files_only(&snapshot(&server.path("bucket/app"))),
        "the restored directory equals the remote (and no restore marker is left)"
    );
    assert!(sandbox.leftover_configs().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. --dry-run changes nothing at either end.
// ---------------------------------------------------------------------------------------------

#[test]
fn dry_run_changes_nothing_in_either_direction() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    seed_remote(
        &server,
        "bucket/app",
        &[
            ("shared.txt", b"remote version\n"),
            ("remote-only.txt", b"r\n"),
        ],
    );
    let local = sandbox.tree(
        "local",
        &[
            ("shared.txt", b"local version, longer\n"),
            ("local-only.txt", b"l\n"),
            ("empty/", b""),
        ],
    );
    let remote = server.path("bucket/app");
    let (local_before, remote_before) = (snapshot(&local), snapshot(&server.data));

    // Upload: would overwrite shared.txt, add local-only.txt and delete remote-only.txt.
    let out = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "--dry-run", "-s"])
        .arg(&local)
        .args(["-d", "bucket/app"])
        .run();
    out.assert_code(0).assert_contains("dry-run");
    assert_eq!(snapshot(&server.data), remote_before, "upload --dry-run");
    assert_eq!(snapshot(&local), local_before, "upload --dry-run");

    // Restore: would overwrite shared.txt, add remote-only.txt and delete local-only.txt.
    let out = Vso::s3(&sandbox, &server)
        .args([
            "remote-to-local-sync",
            "--dry-run",
            "-s",
            "bucket/app",
            "-d",
        ])
        .arg(&local)
        .run();
    out.assert_code(0).assert_contains("dry-run");
    assert_eq!(snapshot(&local), local_before, "restore --dry-run");
    assert_eq!(snapshot(&server.data), remote_before, "restore --dry-run");

    // Restore into a directory that does not exist yet: it is not even created.
    let fresh = sandbox.path("fresh");
    Vso::s3(&sandbox, &server)
        .args([
            "remote-to-local-sync",
            "--dry-run",
            "-s",
            "bucket/app",
            "-d",
        ])
        .arg(&fresh)
        .run()
        .assert_code(0);
    assert!(
        !fresh.exists(),
        "restore --dry-run created {}",
        fresh.display()
    );

    // The same runs without --dry-run do change things: the comparisons above were meaningful.
    upload(&sandbox, &server, &local, "bucket/app").assert_code(0);
    assert!(!remote.join("remote-only.txt").exists());
    assert_ne!(snapshot(&server.data), remote_before);
    assert!(sandbox.leftover_configs().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 3. -p key=value wins over REMOTE_<KEY>.
// ---------------------------------------------------------------------------------------------

#[test]
fn param_overrides_a_wrong_secret_in_the_environment() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("f.txt", b"via -p\n")]);
    Vso::s3(&sandbox, &server)
        .env("REMOTE_SECRET_ACCESS_KEY", "wrong-secret-from-env")
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "-p"])
        .arg(format!("secret_access_key={SECRET_KEY}"))
        .run()
        .assert_code(0);
    assert_eq!(
        fs::read(server.path("bucket/app/f.txt")).unwrap(),
        b"via -p\n"
    );
}

#[test]
fn a_wrong_param_overrides_the_right_secret_in_the_environment() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("f.txt", b"never uploaded\n")]);
    let before = snapshot(&server.data);
    let out = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "--retries", "0", "-s"])
        .arg(&src)
        .args([
            "-d",
            "bucket/app",
            "-p",
            "secret_access_key=wrong-secret-from-p",
        ])
        .args(FAIL_FAST)
        .run();
    out.assert_code(1);
    assert_eq!(snapshot(&server.data), before, "nothing was uploaded");
    // Keys are case-insensitive in -p as in the environment: -p ENDPOINT=... wins as well.
    let out = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "--retries", "0", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "-p", "ENDPOINT=http://127.0.0.1:1"])
        .args(FAIL_FAST)
        .run();
    out.assert_code(1).assert_contains("127.0.0.1:1");
    assert_eq!(snapshot(&server.data), before, "nothing was uploaded");
}

// ---------------------------------------------------------------------------------------------
// 4. An existing rclone.conf with -c FILE --no-template.
// ---------------------------------------------------------------------------------------------

fn write_user_config(sandbox: &Sandbox, server: &S3Server) -> PathBuf {
    let path = sandbox.path("user-rclone.conf");
    fs::write(
        &path,
        format!(
            "[other]\ntype = local\n\n[remote]\ntype = s3\nprovider = Rclone\naccess_key_id = {ACCESS_KEY}\n\
             secret_access_key = {SECRET_KEY}\nendpoint = {}\n",
            server.endpoint()
        ),
    )
    .unwrap();
    give_to_runner(&path);
    path
}

#[test]
fn existing_config_file_with_no_template_works_in_both_directions() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let config = write_user_config(&sandbox, &server);
    let config_before = fs::read(&config).unwrap();
    let src = sandbox.tree(
        "src",
        &[("a.txt", b"from a config file\n"), ("d/b.txt", b"b\n")],
    );
    // No REMOTE_* at all.
    Vso::new(&sandbox)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "-c"])
        .arg(&config)
        .arg("--no-template")
        .run()
        .assert_code(0);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/app"))),
        files_only(&snapshot(&src))
    );
    let restored = sandbox.path("restored");
    Vso::new(&sandbox)
        .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(&restored)
        .args(["--config-path"])
        .arg(&config)
        .arg("--no-template")
        .run()
        .assert_code(0);
    assert_eq!(
        files_only(&snapshot(&restored)),
        files_only(&snapshot(&src))
    );
    assert_eq!(
        fs::read(&config).unwrap(),
        config_before,
        "the user's file is left as it was"
    );
    sandbox.assert_config_removed();
}

#[test]
fn remote_variables_are_ignored_with_no_template() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let config = write_user_config(&sandbox, &server);
    let src = sandbox.tree("src", &[("a.txt", b"file wins\n")]);
    // Every REMOTE_* variable points somewhere wrong; the file must be what is used.
    let out = Vso::new(&sandbox)
        .env("REMOTE_TYPE", "local")
        .env("REMOTE_ENDPOINT", "http://127.0.0.1:1")
        .env("REMOTE_SECRET_ACCESS_KEY", "wrong")
        .env("REMOTE_ACCESS_KEY_ID", "wrong")
        .args(["sync-to-remote", "--retries", "0", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "-c"])
        .arg(&config)
        .arg("--no-template")
        .args(FAIL_FAST)
        .run();
    out.assert_code(0);
    assert_eq!(
        fs::read(server.path("bucket/app/a.txt")).unwrap(),
        b"file wins\n"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Bad input: exit 2, a clear message, nothing touched.
// ---------------------------------------------------------------------------------------------

/// A server whose `bucket/app` holds data that any real run from `src` would change.
struct BadInputFixture {
    server: S3Server,
    sandbox: Sandbox,
    src: PathBuf,
}

impl BadInputFixture {
    fn new() -> Self {
        let server = S3Server::start();
        let sandbox = Sandbox::new();
        seed_remote(&server, "bucket/app", &[("old.txt", b"precious\n")]);
        let src = sandbox.tree("src", &[("new.txt", b"new\n")]);
        BadInputFixture {
            server,
            sandbox,
            src,
        }
    }

    /// An upload of `src` to bucket/app with `configure` applied; must exit 2 mentioning
    /// every needle, and change nothing on either side.
    #[track_caller]
    fn assert_rejected(&self, what: &str, needles: &[&str], configure: impl FnOnce(&mut Vso)) {
        let remote_before = snapshot(&self.server.data);
        let local_before = snapshot(self.sandbox.root());
        let mut vso = Vso::s3(&self.sandbox, &self.server);
        configure(&mut vso);
        let out = vso.run();
        assert_eq!(
            out.code(),
            2,
            "{what}: expected exit code 2; output:\n{}",
            out.all()
        );
        for needle in needles {
            assert!(
                out.stderr.contains(needle),
                "{what}: stderr does not contain {needle:?}:\n{}",
                out.all()
            );
        }
        assert_eq!(
            snapshot(&self.server.data),
            remote_before,
            "{what}: remote changed"
        );
        assert_eq!(
            snapshot(self.sandbox.root()),
            local_before,
            "{what}: local side changed"
        );
        assert!(
            !out.all().contains(SECRET_KEY),
            "{what}: the secret was printed"
        );
    }

    fn upload_args<'a>(&self, vso: &'a mut Vso) -> &'a mut Vso {
        vso.args(["sync-to-remote", "-s"])
            .arg(&self.src)
            .args(["-d", "bucket/app"])
    }
}

#[test]
fn bad_input_is_rejected_with_exit_2_and_touches_nothing() {
    let f = BadInputFixture::new();

    f.assert_rejected(
        "no REMOTE_TYPE",
        &["no remote configured", "REMOTE_TYPE"],
        |v| {
            v.env_remove("REMOTE_TYPE");
            f.upload_args(v);
        },
    );
    f.assert_rejected(
        "no REMOTE_* at all",
        &["no remote configured", "--no-template"],
        |v| {
            for (k, _) in f.server.remote_env() {
                v.env_remove(&k);
            }
            f.upload_args(v);
        },
    );
    f.assert_rejected(
        "newline in an environment value",
        &["REMOTE_ENDPOINT", "newline"],
        |v| {
            v.env(
                "REMOTE_ENDPOINT",
                format!("{}\n[evil]\ntype = local", f.server.endpoint()),
            );
            f.upload_args(v);
        },
    );
    f.assert_rejected(
        "carriage return in an environment value",
        &["REMOTE_PROVIDER", "carriage return"],
        |v| {
            v.env("REMOTE_PROVIDER", "Rclone\rtype = local");
            f.upload_args(v);
        },
    );
    f.assert_rejected("newline in a -p value", &["-p endpoint", "newline"], |v| {
        f.upload_args(v)
            .arg("-p")
            .arg(format!("endpoint={}\nregion=x", f.server.endpoint()));
    });
    f.assert_rejected(
        "newline in the remote path",
        &["remote path", "line break"],
        |v| {
            v.args(["sync-to-remote", "-s"])
                .arg(&f.src)
                .args(["-d", "bucket/app\n[evil]"]);
        },
    );
    f.assert_rejected(
        "invalid key in the environment",
        &["invalid option name", "REMOTE_FOO-BAR"],
        |v| {
            v.env("REMOTE_FOO-BAR", "x");
            f.upload_args(v);
        },
    );
    f.assert_rejected(
        "invalid key in -p",
        &["invalid option name", "-p bad key"],
        |v| {
            f.upload_args(v).args(["-p", "bad key=x"]);
        },
    );
    f.assert_rejected(
        "section injection through a -p key",
        &["invalid option name"],
        |v| {
            f.upload_args(v).args(["-p", "[evil]=x"]);
        },
    );
    f.assert_rejected("-p without '='", &["-p expects KEY=VALUE"], |v| {
        f.upload_args(v).args(["-p", "just-a-value"]);
    });
    let missing = f.sandbox.path("does-not-exist");
    f.assert_rejected(
        "missing local source",
        &["source directory", "does-not-exist", "cannot be read"],
        |v| {
            v.args(["sync-to-remote", "-s"])
                .arg(&missing)
                .args(["-d", "bucket/app"]);
        },
    );
    let file = f.src.join("new.txt");
    f.assert_rejected(
        "local source is a file",
        &["new.txt", "is not a directory"],
        |v| {
            v.args(["sync-to-remote", "-s"])
                .arg(&file)
                .args(["-d", "bucket/app"]);
        },
    );
    f.assert_rejected(
        "restore target is a file",
        &["new.txt", "exists and is not a directory"],
        |v| {
            v.args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
                .arg(&file);
        },
    );
    f.assert_rejected("-c without --no-template", &["--no-template"], |v| {
        f.upload_args(v).args(["-c", "/dev/null"]);
    });
    f.assert_rejected("--no-template without -c", &["--config-path"], |v| {
        f.upload_args(v).arg("--no-template");
    });
    let no_section = f.sandbox.path("no-remote-section.conf");
    fs::write(&no_section, "[elsewhere]\ntype = local\n").unwrap();
    f.assert_rejected(
        "config file without [remote]",
        &["no section [remote]"],
        |v| {
            f.upload_args(v)
                .arg("-c")
                .arg(&no_section)
                .arg("--no-template");
        },
    );
    f.assert_rejected(
        "--rclone-binary that does not exist",
        &["/nonexistent", "--rclone-binary", "RCLONE_BINARY"],
        |v| {
            f.upload_args(v).args(["--rclone-binary", "/nonexistent"]);
        },
    );
    f.assert_rejected(
        "RCLONE_BINARY that does not exist",
        &["/nonexistent/rclone", "--rclone-binary", "RCLONE_BINARY"],
        |v| {
            v.env("RCLONE_BINARY", "/nonexistent/rclone");
            f.upload_args(v);
        },
    );
    f.assert_rejected(
        "--rclone-binary that is not executable",
        &["not executable", "--rclone-binary", "RCLONE_BINARY"],
        |v| {
            f.upload_args(v).arg("--rclone-binary").arg(&file);
        },
    );
    f.assert_rejected(
        "no rclone in PATH and no RCLONE_BINARY",
        &["not found in PATH", "--rclone-binary", "RCLONE_BINARY"],
        |v| {
            v.env_remove("RCLONE_BINARY").env("PATH", "/usr/bin:/bin");
            f.upload_args(v);
        },
    );
    for expr in [
        "every minute",
        "@every",
        "@every 0s",
        "61 * * * *",
        "@fortnightly",
    ] {
        f.assert_rejected(
            &format!("invalid schedule {expr:?}"),
            &["invalid schedule", "accepted forms"],
            |v| {
                f.upload_args(v).args(["--schedule", expr]);
            },
        );
    }
    assert!(f.sandbox.leftover_configs().is_empty());

    // The fixture was not broken to begin with: without the bad input the upload does change
    // the remote, so "remote unchanged" above means the bad input stopped the run.
    upload(&f.sandbox, &f.server, &f.src, "bucket/app").assert_code(0);
    assert_eq!(
        names(&files_only(&snapshot(&f.server.path("bucket/app")))),
        ["new.txt"]
    );
}

// ---------------------------------------------------------------------------------------------
// 6. rclone failures: exit 1, rclone's reason and the meaning of its exit code.
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_credentials_fail_with_rclones_reason() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("f.txt", b"x\n")]);
    let before = snapshot(&server.data);
    // rclone serve s3 answers a wrong secret with SignatureDoesNotMatch, an unknown key with
    // InvalidAccessKeyId; both are HTTP 403.
    for (what, key, value, reason) in [
        (
            "wrong secret",
            "REMOTE_SECRET_ACCESS_KEY",
            "not-the-secret",
            "SignatureDoesNotMatch",
        ),
        (
            "unknown access key",
            "REMOTE_ACCESS_KEY_ID",
            "AKIDUNKNOWN",
            "InvalidAccessKeyId",
        ),
    ] {
        let out = Vso::s3(&sandbox, &server)
            .env(key, value)
            .args(["sync-to-remote", "--retries", "0", "-s"])
            .arg(&src)
            .args(["-d", "bucket/app"])
            .args(FAIL_FAST)
            .run();
        out.assert_code(1);
        let all = out.all();
        assert!(
            all.contains(reason),
            "{what}: rclone's reason ({reason}) is not in the output:\n{all}"
        );
        let last = out.stderr.lines().last().unwrap_or_default();
        // An upload's first request is the read of its lease (issue 17).
        assert!(
            last.starts_with("error: ")
                && last.contains("failed with exit code ")
                && last.contains('(')
                && !last.contains("unknown exit code"),
            "{what}: the last line names the rclone operation, exit code and its meaning: {last:?}"
        );
        assert_eq!(snapshot(&server.data), before, "{what}: nothing uploaded");
    }
    assert!(sandbox.leftover_configs().is_empty());
}

#[test]
fn wrong_credentials_on_restore_fail_with_rclones_reason() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    seed_remote(&server, "bucket/app", &[("r.txt", b"remote\n")]);
    let remote_before = snapshot(&server.data);

    // Into a new directory: rclone itself fails.
    let fresh = sandbox.path("fresh");
    let out = Vso::s3(&sandbox, &server)
        .env("REMOTE_SECRET_ACCESS_KEY", "not-the-secret")
        .args([
            "remote-to-local-sync",
            "--retries",
            "0",
            "-s",
            "bucket/app",
            "-d",
        ])
        .arg(&fresh)
        .args(FAIL_FAST)
        .run();
    out.assert_code(1)
        .assert_contains("SignatureDoesNotMatch")
        .assert_contains("failed with exit code");
    assert!(!fresh.join("r.txt").exists());

    // Into a directory holding data: the emptiness check cannot list the remote, refuses, and
    // says why.
    let local = sandbox.tree("local", &[("mine.txt", b"mine\n")]);
    let local_before = snapshot(&local);
    let out = Vso::s3(&sandbox, &server)
        .env("REMOTE_SECRET_ACCESS_KEY", "not-the-secret")
        .args([
            "remote-to-local-sync",
            "--retries",
            "0",
            "-s",
            "bucket/app",
            "-d",
        ])
        .arg(&local)
        .args(FAIL_FAST)
        .run();
    out.assert_code(3).assert_contains("SignatureDoesNotMatch");
    assert_eq!(snapshot(&local), local_before);
    assert_eq!(snapshot(&server.data), remote_before);
    assert!(sandbox.leftover_configs().is_empty());
}

#[test]
fn an_unreachable_endpoint_fails_with_exit_1_and_the_connection_error() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("f.txt", b"x\n")]);
    let out = Vso::s3(&sandbox, &server)
        .env("REMOTE_ENDPOINT", "http://127.0.0.1:1")
        .args(["sync-to-remote", "--retries", "0", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .args(FAIL_FAST)
        .run();
    // The first request fails: the read of the upload record (mass-delete valve), before sync.
    out.assert_code(1)
        .assert_contains("connection refused")
        .assert_contains("failed with exit code");
    assert!(sandbox.leftover_configs().is_empty());
}

#[test]
fn rclone_exit_codes_are_translated() {
    // --max-transfer makes rclone exit 8: the message says what that means.
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let big = random_bytes(256 * 1024, 3);
    let src = sandbox.tree("src", &[("a.bin", &big), ("b.bin", &big)]);
    let out = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "--retries", "0", "-s"])
        .arg(&src)
        .args([
            "-d",
            "bucket/app",
            "--",
            "--max-transfer",
            "1",
            "--transfers",
            "1",
        ])
        .run();
    out.assert_code(1)
        .assert_contains("rclone sync failed with exit code 8")
        .assert_contains("--max-transfer");
}

// ---------------------------------------------------------------------------------------------
// 7. The private config: 0600 in a 0700 directory while rclone runs, gone afterwards.
// ---------------------------------------------------------------------------------------------

/// The rendered configs currently in the sandbox's TMPDIR.
fn rendered_configs(sandbox: &Sandbox) -> Vec<PathBuf> {
    sandbox
        .leftover_configs()
        .into_iter()
        .map(|dir| dir.join("rclone.conf"))
        .filter(|p| p.exists())
        .collect()
}

/// Starts a slow upload, checks the private config while rclone runs, sends `sig` and checks
/// that the run is reported as interrupted and leaves nothing behind.
fn interrupt_a_slow_upload(sig: Signal, sig_name: &str) {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let big = random_bytes(4 * 1024 * 1024, 11);
    let src = sandbox.tree("slow-upload-src", &[("big.bin", &big)]);
    let needle = src.to_str().unwrap().to_string();
    let running = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--", "--bwlimit", "100k"])
        .spawn();

    let mut rclone_pids = Vec::new();
    wait_until("rclone runs", WAIT, || {
        rclone_pids = sync_pids_with(&needle);
        !rclone_pids.is_empty()
    });
    let configs = rendered_configs(&sandbox);
    assert_eq!(
        configs.len(),
        1,
        "one private config while rclone runs: {configs:?}"
    );
    let config = &configs[0];
    let dir = config.parent().unwrap();
    let file_meta = fs::metadata(config).unwrap();
    let dir_meta = fs::metadata(dir).unwrap();
    assert_eq!(
        file_meta.permissions().mode() & 0o777,
        0o600,
        "{}",
        config.display()
    );
    assert_eq!(
        dir_meta.permissions().mode() & 0o777,
        0o700,
        "{}",
        dir.display()
    );
    assert_eq!(file_meta.uid(), runner_uid());
    assert_eq!(dir_meta.uid(), runner_uid());
    let text = fs::read_to_string(config).unwrap();
    assert!(
        text.starts_with("[remote]\ntype = s3\n") && text.contains(SECRET_KEY),
        "the private file is the rendered config:\n{text}"
    );
    for pid in &rclone_pids {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        assert!(
            cmdline.contains(config.to_str().unwrap()) && !cmdline.contains(SECRET_KEY),
            "rclone reads the private config and gets no secret on its command line: {cmdline}"
        );
        // The secret reaches rclone only through the file, not through its environment.
        let environ = fs::read(format!("/proc/{pid}/environ"))
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        assert!(
            !environ.contains(SECRET_KEY) && !environ.contains("REMOTE_"),
            "rclone's environment holds no REMOTE_* variable"
        );
    }

    running.signal(sig);
    let out = running.wait_output(WAIT);
    out.assert_code(1)
        .assert_contains("interrupted")
        .assert_contains(sig_name);
    assert!(
        sandbox.leftover_configs().is_empty(),
        "the private config is removed after {sig_name}: {:?}",
        sandbox.leftover_configs()
    );
    assert_eq!(
        rclone_pids_with(&needle),
        Vec::<i32>::new(),
        "no rclone process is left once the binary has exited"
    );
    assert!(
        !server.path("bucket/app/big.bin").exists(),
        "the interrupted upload did not complete"
    );
}

#[test]
fn private_config_is_removed_after_a_signal_mid_run() {
    for_each_case(
        [("SIGTERM", Signal::SIGTERM), ("SIGINT", Signal::SIGINT)],
        |sig_name, sig| interrupt_a_slow_upload(sig, sig_name),
    );
}

#[test]
fn private_config_is_removed_after_success_and_after_failure() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("f.txt", b"x\n")]);
    upload(&sandbox, &server, &src, "bucket/app").assert_code(0);
    sandbox.assert_config_removed();
    Vso::s3(&sandbox, &server)
        .env("REMOTE_SECRET_ACCESS_KEY", "wrong")
        .args(["sync-to-remote", "--retries", "0", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .args(FAIL_FAST)
        .run()
        .assert_code(1);
    sandbox.assert_config_removed();
    Vso::s3(&sandbox, &server)
        .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(sandbox.path("restored"))
        .run()
        .assert_code(0);
    sandbox.assert_config_removed();
    // A refusal by a safety valve (exit 3) happens after the config was rendered.
    let empty = sandbox.dir("empty");
    Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&empty)
        .args(["-d", "bucket/app"])
        .run()
        .assert_code(3);
    sandbox.assert_config_removed();
    assert_eq!(
        names(&files_only(&snapshot(&server.path("bucket/app")))),
        ["f.txt"]
    );
}

// ---------------------------------------------------------------------------------------------
// 8. The secret never appears in the output, even at -vv.
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_no_secret(what: &str, out: &Output, secret: &str) {
    assert!(
        !out.all().contains(secret),
        "{what}: the secret appears in the output:\n{}",
        out.all()
    );
}

#[test]
fn secret_is_never_printed_even_at_vv() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("f.txt", b"x\n"), ("g/h.txt", b"y\n")]);

    let ok = Vso::s3(&sandbox, &server)
        .args(["-vv", "sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .run();
    ok.assert_code(0)
        .assert_contains("<redacted>")
        .assert_contains("type = s3")
        .assert_contains("secret_access_key = <redacted>")
        .assert_contains(&format!("endpoint = {}", server.endpoint()));
    assert_no_secret("successful upload at -vv", &ok, SECRET_KEY);
    assert!(server.path("bucket/app/g/h.txt").exists());

    let restore = Vso::s3(&sandbox, &server)
        .args(["-vv", "--log-format", "json", "remote-to-local-sync"])
        .args(["-s", "bucket/app", "-d"])
        .arg(sandbox.path("restored"))
        .run();
    restore.assert_code(0).assert_contains("<redacted>");
    assert_no_secret("restore at -vv, JSON log", &restore, SECRET_KEY);

    let unreachable = Vso::s3(&sandbox, &server)
        .env("REMOTE_ENDPOINT", "http://127.0.0.1:1")
        .args(["-vv", "sync-to-remote", "--retries", "0", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .args(FAIL_FAST)
        .run();
    unreachable
        .assert_code(1)
        .assert_contains("<redacted>")
        .assert_contains("type = s3");
    assert_no_secret(
        "failing upload (wrong endpoint) at -vv",
        &unreachable,
        SECRET_KEY,
    );

    // A wrong secret is just as secret.
    let wrong = "wrong-but-still-secret-4711";
    let denied = Vso::s3(&sandbox, &server)
        .env("REMOTE_SECRET_ACCESS_KEY", wrong)
        .args(["-vv", "sync-to-remote", "--retries", "0", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .args(FAIL_FAST)
        .run();
    denied.assert_code(1);
    assert_no_secret("failing upload (wrong secret) at -vv", &denied, wrong);

    // A secret passed with -p is redacted as well.
    let via_param = Vso::s3(&sandbox, &server)
        .env_remove("REMOTE_SECRET_ACCESS_KEY")
        .args(["-vv", "sync-to-remote", "--dry-run", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "-p"])
        .arg(format!("secret_access_key={SECRET_KEY}"))
        .run();
    via_param
        .assert_code(0)
        .assert_contains("secret_access_key = <redacted>");
    assert_no_secret("secret from -p at -vv", &via_param, SECRET_KEY);
}

// ---------------------------------------------------------------------------------------------
// 9. The seed example from the issue.
// ---------------------------------------------------------------------------------------------

#[test]
fn seed_example_renders_the_six_options_in_section_remote() {
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("f.txt", b"x\n")]);
    // A pass-through wrapper keeps a copy of the config rclone is given, then runs the real
    // rclone: this checks the file itself, not only the log.
    let captured = sandbox.path("captured.conf");
    let wrapper = rclone_wrapper(
        &sandbox,
        "rclone-wrapper.sh",
        &format!(
            "[ \"$1\" = --config ] && cat \"$2\" > '{}'",
            captured.display()
        ),
    );
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let access = "AKIAIOSFODNN7EXAMPLE";
    let out = Vso::new(&sandbox)
        .env("REMOTE_TYPE", "s3")
        .env("REMOTE_PROVIDER", "Minio")
        .env("REMOTE_ACCESS_KEY_ID", access)
        .env("REMOTE_SECRET_ACCESS_KEY", secret)
        .env("REMOTE_ENDPOINT", "http://localhost:9000")
        .env("REMOTE_ACL", "private")
        .args(["-vv", "sync-to-remote", "--dry-run", "--retries", "0", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--rclone-binary"])
        .arg(&wrapper)
        .args(FAIL_FAST)
        .run();
    // Nothing listens on localhost:9000, so the run fails; the config is what matters here.
    assert_ne!(out.code(), 0, "{}", out.all());
    assert_ne!(out.code(), 2, "the configuration is valid: {}", out.all());
    // One log line per config line, in order.
    let rendered: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.split_once("rendered rclone config (secrets redacted): "))
        .map(|(_, line)| line)
        .collect();
    assert_eq!(
        rendered,
        [
            "[remote]",
            "type = s3",
            "provider = Minio",
            "access_key_id = <redacted>",
            "acl = private",
            "endpoint = http://localhost:9000",
            "secret_access_key = <redacted>",
        ],
        "{}",
        out.all()
    );
    assert_no_secret("seed example at -vv", &out, secret);
    assert_no_secret("seed example at -vv", &out, access);
    assert_eq!(
        fs::read_to_string(&captured).expect("the wrapper captured the config"),
        format!(
            "[remote]\ntype = s3\nprovider = Minio\naccess_key_id = {access}\nacl = private\n\
             endpoint = http://localhost:9000\nsecret_access_key = {secret}\n"
        ),
        "exactly the six options, in section [remote]"
    );
    assert!(sandbox.leftover_configs().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 10. rclone flags after `--` reach rclone.
// ---------------------------------------------------------------------------------------------

#[test]
fn flags_after_double_dash_reach_rclone() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree(
        "src",
        &[
            ("app.log", b"log\n"),
            ("sub/deep.log", b"log\n"),
            ("data.txt", b"data\n"),
        ],
    );
    Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--", "--exclude", "*.log"])
        .run()
        .assert_code(0);
    assert_eq!(
        names(&files_only(&snapshot(&server.path("bucket/app")))),
        ["data.txt"],
        "--exclude '*.log' was applied"
    );
    // A flag rclone does not know is rclone's usage error, reported as such.
    let out = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "--retries", "0", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--", "--no-such-rclone-flag"])
        .run();
    out.assert_code(1)
        .assert_contains("no-such-rclone-flag")
        .assert_contains("exit code 2");
}

/// Our concurrency defaults (issue 18) reach rclone on the sync's command line, before the
/// user's flags after `--`, which therefore win: rclone takes the last value of a flag. rclone
/// itself reports what it was started with (its debug line `starting with parameters`, shown at
/// -vv), for the upload and the restore.
#[test]
fn default_transfer_flags_reach_rclone_and_user_flags_win() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n"), ("sub/b.txt", b"b\n")]);
    let parameters = |out: &Output, operation: &str| -> String {
        out.all()
            .lines()
            .find(|l| l.contains("starting with parameters") && l.contains(operation))
            .unwrap_or_else(|| {
                panic!(
                    "no `starting with parameters` line for {operation}:\n{}",
                    out.all()
                )
            })
            .replace("\\\"", "\"")
    };
    let ours = vso_core::remote::rclone::DEFAULT_TRANSFER_FLAGS
        .map(|flag| format!("{flag:?}"))
        .join(" ");

    let upload = Vso::s3(&sandbox, &server)
        .args(["-vv", "sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .run();
    upload.assert_code(0);
    let line = parameters(&upload, "\"sync\"");
    assert!(line.contains(&ours), "our defaults reach rclone: {line}");

    let user = Vso::s3(&sandbox, &server)
        .args(["-vv", "sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--", "--transfers", "2"])
        .run();
    user.assert_code(0);
    let line = parameters(&user, "\"sync\"");
    let (defaults, users) = (line.find(&ours), line.find("\"--transfers\" \"2\""));
    assert!(
        defaults.is_some() && users.is_some() && defaults < users,
        "the user's --transfers 2 comes after ours, so it wins: {line}"
    );

    let target = sandbox.path("restored");
    let restore = Vso::s3(&sandbox, &server)
        .args(["-vv", "remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(&target)
        .run();
    restore.assert_code(0);
    assert!(
        parameters(&restore, "\"sync\"").contains(&ours),
        "{}",
        restore.all()
    );
    assert_eq!(
        names(&files_only(&snapshot(&target))),
        ["a.txt", "sub/b.txt"]
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Empty directories survive a round trip through the local backend.
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_directories_round_trip_through_the_local_backend() {
    let sandbox = Sandbox::new();
    let src = sandbox.tree(
        "src",
        &[
            ("top.txt", b"top\n"),
            ("empty/", b""),
            ("nested/empty-too/", b""),
            ("nested/file.txt", b"f\n"),
            ("zero-length", b""),
        ],
    );
    let remote_dir = sandbox.path("remote-dir");
    let remote_arg = remote_dir.to_str().unwrap().to_string();
    Vso::new(&sandbox)
        .env("REMOTE_TYPE", "local")
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", &remote_arg])
        .run()
        .assert_code(0);
    assert!(
        support::snapshot_all(&remote_dir).contains_key(".volume-syncing-operator.manifest"),
        "the metadata manifest is stored beside the data"
    );
    let remote = snapshot(&remote_dir);
    assert_eq!(
        remote,
        snapshot(&src),
        "the remote holds the empty directories"
    );
    let restored = sandbox.path("restored");
    Vso::new(&sandbox)
        .env("REMOTE_TYPE", "local")
        .args(["remote-to-local-sync", "-s", &remote_arg, "-d"])
        .arg(&restored)
        .run()
        .assert_code(0);
    assert_eq!(
        snapshot(&restored),
        snapshot(&src),
        "files and empty directories came back"
    );
    assert!(sandbox.leftover_configs().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 12. rclone's own RCLONE_* variables keep working.
// ---------------------------------------------------------------------------------------------

#[test]
fn rclone_environment_flags_keep_working() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree(
        "src",
        &[
            ("keep.txt", b"k\n"),
            ("scratch.tmp", b"t\n"),
            ("d/x.tmp", b"t\n"),
        ],
    );
    Vso::s3(&sandbox, &server)
        .env("RCLONE_EXCLUDE", "*.tmp")
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .run()
        .assert_code(0);
    assert_eq!(
        names(&files_only(&snapshot(&server.path("bucket/app")))),
        ["keep.txt"],
        "RCLONE_EXCLUDE reached rclone"
    );
}
