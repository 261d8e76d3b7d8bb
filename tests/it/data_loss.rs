//! Regression tests for the ways to lose data that once exited 0 (issue "close the ways to lose
//! data"): one test (or a small family) per finding, each through the real binary against a
//! real S3 server holding several buckets. A refused command must leave every bucket and the
//! local tree byte-for-byte unchanged.

use crate::support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::support::{
    Output, S3Server, Sandbox, Vso, add_file, random_bytes, rclone_pids_with, spawn_upload,
    wait_until,
};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);
const FORCE_UPLOAD_EMPTY: &str = "--force-even-if-remote-would-be-cleared";

/// Every entry under `root` without following links or opening special files: path → kind and
/// content (file bytes, link target, mode of a FIFO).
fn lsnapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = meta.file_type();
            let what = if kind.is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if kind.is_dir() {
                walk(root, &path, out);
                "dir".to_string()
            } else if kind.is_file() {
                format!("file {:?}", fs::read(&path).unwrap())
            } else if kind.is_fifo() {
                format!("fifo {:o}", meta.permissions().mode())
            } else {
                "special".to_string()
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

/// A server with three buckets of data: `bucket/app` (5 files) and two other buckets.
fn server_with_buckets(sandbox: &Sandbox) -> S3Server {
    let server = S3Server::start();
    let seed = sandbox.tree(
        "seed",
        &[
            ("a.txt", b"a\n"),
            ("b.txt", b"b\n"),
            ("dir/c.txt", b"c\n"),
            ("dir/d.txt", b"d\n"),
            ("e.bin", &random_bytes(4096, 5)),
        ],
    );
    for path in ["bucket/app", "other-one/data", "other-two/x/y"] {
        let out = Vso::s3(sandbox, &server)
            .args(["sync-to-remote", "-s"])
            .arg(&seed)
            .args(["-d", path])
            .run();
        out.assert_code(0);
    }
    server
}

/// Both ends, captured to be compared after a refused command.
struct Ends<'a> {
    local: &'a Path,
    remote: &'a Path,
    before: (BTreeMap<String, String>, BTreeMap<String, String>),
}

impl<'a> Ends<'a> {
    fn capture(local: &'a Path, server: &'a S3Server) -> Self {
        let remote = server.data.as_path();
        Ends {
            local,
            remote,
            before: (lsnapshot(local), lsnapshot(remote)),
        }
    }

    #[track_caller]
    fn assert_unchanged(&self, what: &str) {
        assert_eq!(
            lsnapshot(self.local),
            self.before.0,
            "{what}: the local tree changed"
        );
        assert_eq!(
            lsnapshot(self.remote),
            self.before.1,
            "{what}: the remote (all buckets) changed"
        );
    }
}

fn upload(sandbox: &Sandbox, server: &S3Server, src: &Path, dst: &str, extra: &[&str]) -> Output {
    Vso::s3(sandbox, server)
        .args(["sync-to-remote", "-s"])
        .arg(src)
        .args(["-d", dst])
        .args(extra)
        .run()
}

fn restore(sandbox: &Sandbox, server: &S3Server, src: &str, dst: &Path, extra: &[&str]) -> Output {
    Vso::s3(sandbox, server)
        .args(["remote-to-local-sync", "-s", src, "-d"])
        .arg(dst)
        .args(extra)
        .run()
}

// ---------------------------------------------------------------------------------------------
// 1. An empty remote path (or one that escapes) is the remote's root: refused, exit 2.
// ---------------------------------------------------------------------------------------------

#[test]
fn remote_paths_at_or_above_the_root_are_refused_in_both_directions() {
    let sandbox = Sandbox::new();
    let server = server_with_buckets(&sandbox);
    let src = sandbox.tree("src", &[("bucket/hi.txt", b"hi\n")]);
    let dst = sandbox.tree("dst", &[("precious.txt", b"keep me\n")]);
    let ends_up = Ends::capture(&src, &server);
    for path in [
        "",
        " ",
        ".",
        "/",
        "//",
        "bucket/../other-one",
        "bucket//app",
        "bucket/app/",
    ] {
        for dry_run in [false, true] {
            let extra: &[&str] = if dry_run { &["--dry-run"] } else { &[] };
            let out = upload(&sandbox, &server, &src, path, extra);
            out.assert_code(2)
                .assert_contains("-d/--dst: the remote path");
            ends_up.assert_unchanged(&format!("sync-to-remote -d {path:?} {extra:?}"));
        }
    }
    let ends_down = Ends::capture(&dst, &server);
    for path in ["", "/", "bucket/..", "../bucket"] {
        let out = restore(&sandbox, &server, path, &dst, &[]);
        out.assert_code(2)
            .assert_contains("-s/--src: the remote path");
        ends_down.assert_unchanged(&format!("remote-to-local-sync -s {path:?}"));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A source without a regular file to upload never wipes a remote path that holds files.
// ---------------------------------------------------------------------------------------------

#[test]
fn sources_without_a_regular_file_are_refused_over_a_remote_with_files() {
    let sandbox = Sandbox::new();
    let server = server_with_buckets(&sandbox);
    type Make = fn(&Path);
    let cases: [(&str, Make); 6] = [
        (
            "only empty directories (a skeleton under a failed mount)",
            |s| {
                fs::create_dir_all(s.join("data/app")).unwrap();
                fs::create_dir_all(s.join("logs")).unwrap();
            },
        ),
        ("only a symlink", |s| {
            std::os::unix::fs::symlink("/etc/hostname", s.join("link")).unwrap();
        }),
        ("only a FIFO", |s| {
            nix::unistd::mkfifo(&s.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        }),
        ("lost+found plus one empty directory", |s| {
            fs::create_dir_all(s.join("lost+found")).unwrap();
            fs::create_dir_all(s.join("empty")).unwrap();
        }),
        ("only a file named like the internal key-check file", |s| {
            fs::write(s.join(".volume-syncing-operator.key-check"), "x").unwrap();
        }),
        ("only a file in lost+found", |s| {
            fs::create_dir_all(s.join("lost+found")).unwrap();
            fs::write(s.join("lost+found/#1234"), "recovered").unwrap();
        }),
    ];
    for (i, (what, make)) in cases.iter().enumerate() {
        let src = sandbox.dir(&format!("src-{i}"));
        make(&src);
        support::give_to_runner(&src);
        let ends = Ends::capture(&src, &server);
        let out = upload(&sandbox, &server, &src, "bucket/app", &[]);
        out.assert_code(3)
            .assert_contains("refused by safety rule 'empty-source'")
            .assert_contains("holds no regular file to upload")
            .assert_contains(FORCE_UPLOAD_EMPTY);
        ends.assert_unchanged(what);
        // The same in long-running mode's incremental path is covered by the watch tests; the
        // dry run is refused too (it would report the deletions as if they were fine).
        let out = upload(&sandbox, &server, &src, "bucket/app", &["--dry-run"]);
        out.assert_code(3);
        ends.assert_unchanged(what);
    }
}

#[test]
fn a_source_without_files_over_an_empty_remote_path_is_uploaded() {
    let sandbox = Sandbox::new();
    let server = server_with_buckets(&sandbox);
    let src = sandbox.dir("src");
    fs::create_dir_all(src.join("skeleton/empty")).unwrap();
    support::give_to_runner(&src);
    let out = upload(&sandbox, &server, &src, "bucket/new-app", &[]);
    out.assert_code(0)
        .assert_contains("holds no file either: nothing to lose");
}

#[test]
fn the_override_lets_a_source_without_files_clear_the_remote_path() {
    let sandbox = Sandbox::new();
    let server = server_with_buckets(&sandbox);
    let src = sandbox.dir("src");
    fs::create_dir_all(src.join("empty")).unwrap();
    support::give_to_runner(&src);
    upload(&sandbox, &server, &src, "bucket/app", &[FORCE_UPLOAD_EMPTY]).assert_code(0);
    assert!(
        lsnapshot(&server.path("bucket/app"))
            .iter()
            .all(|(k, v)| v == "dir" || k.starts_with(".volume-syncing-operator.")),
        "the override cleared the files of bucket/app"
    );
    assert_eq!(
        lsnapshot(&server.path("other-one/data"))
            .keys()
            .filter(|k| !k.starts_with(".volume-syncing-operator."))
            .count(),
        6, // 5 files and a directory
        "other buckets are untouched"
    );
}

// ---------------------------------------------------------------------------------------------
// 3./4. Secrets: never in any output, never silently changed by rclone's config parser.
// ---------------------------------------------------------------------------------------------

/// Secrets rclone's parser once changed or rejected: each now reaches the server byte-identical
/// (the server has exactly this secret, so the upload succeeds only if it does).
#[test]
fn secrets_that_rclone_would_trim_or_unquote_reach_the_server_unchanged() {
    for secret in [
        "`MySuperSecret123",
        "`quoted`",
        "\"\"\"tripled\"\"\"",
        " leading-space",
        "trailing-space ",
        "trailing-tab\t",
        "#hash;semi=equals\\back",
    ] {
        let sandbox = Sandbox::new();
        let server = S3Server::start_with_secret(secret);
        let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
        let out = Vso::s3(&sandbox, &server)
            .env("REMOTE_SECRET_ACCESS_KEY", secret)
            .args(["sync-to-remote", "-vv", "-s"])
            .arg(&src)
            .args(["-d", "bucket/app"])
            .run();
        out.assert_code(0);
        assert!(
            !out.all().contains(secret.trim()),
            "the secret {secret:?} appears in the output:\n{}",
            out.all()
        );
        server.assert_object("bucket/app/a.txt", b"a\n");
    }
}

/// A secret rclone rejects (wrong key) is never echoed, in text or JSON logs.
#[test]
fn a_wrong_secret_is_never_echoed_in_text_or_json_logs() {
    let sandbox = Sandbox::new();
    let server = server_with_buckets(&sandbox);
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let secret = "`MySuperSecret123";
    for format in ["text", "json"] {
        let ends = Ends::capture(&src, &server);
        let out = Vso::s3(&sandbox, &server)
            .env("REMOTE_SECRET_ACCESS_KEY", secret)
            .env("LOG_FORMAT", format)
            .args(["sync-to-remote", "-vv", "-s"])
            .arg(&src)
            .args(["-d", "bucket/app"])
            .run();
        assert_eq!(out.code(), 1, "{}", out.all());
        for form in [secret, "MySuperSecret123"] {
            assert!(
                !out.all().contains(form),
                "{format}: {form:?} appears in the output:\n{}",
                out.all()
            );
        }
        ends.assert_unchanged("a wrong secret");
    }
}

/// A user's config file that rclone cannot parse: exit 2, naming the option, not its value.
#[test]
fn an_unparsable_config_file_is_a_configuration_error_naming_the_key_only() {
    let sandbox = Sandbox::new();
    let server = server_with_buckets(&sandbox);
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let conf = sandbox.path("user-rclone.conf");
    fs::write(
        &conf,
        format!(
            "[remote]\ntype = s3\nprovider = Rclone\nendpoint = {}\naccess_key_id = {}\n\
             secret_access_key = `TopSecretValue99\n",
            server.endpoint(),
            support::ACCESS_KEY
        ),
    )
    .unwrap();
    support::give_to_runner(&conf);
    let ends = Ends::capture(&src, &server);
    let out = Vso::new(&sandbox)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--config-path"])
        .arg(&conf)
        .arg("--no-template")
        .run();
    out.assert_code(2)
        .assert_contains("option 'secret_access_key'");
    assert!(!out.all().contains("TopSecretValue99"), "{}", out.all());
    ends.assert_unchanged("an unparsable config");
}

#[test]
fn an_empty_remote_type_is_a_configuration_error() {
    let sandbox = Sandbox::new();
    let server = server_with_buckets(&sandbox);
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let ends = Ends::capture(&src, &server);
    let out = Vso::s3(&sandbox, &server)
        .env("REMOTE_TYPE", "")
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .run();
    out.assert_code(2).assert_contains("REMOTE_TYPE");
    ends.assert_unchanged("REMOTE_TYPE=");
}

// ---------------------------------------------------------------------------------------------
// 5. Concurrent `interrupt`s request one graceful shutdown and all wait for it.
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_interrupts_all_wait_for_the_one_final_sync() {
    let sandbox = Sandbox::new();
    let server = S3Server::start();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let pid_file = sandbox.tmp().join("sidecar.pid");
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let mut vso = spawn_upload(
        &sandbox,
        &server,
        &src,
        &["--schedule", "@every 1h", "--pid-path", &pid_arg],
        // A final sync of a few seconds, so that both interrupts are waiting while it runs.
        &["--bwlimit", "100k", "--transfers", "1"],
    );
    vso.wait_for_output("sync finished", 1, LONG);
    let last = random_bytes(250 * 1024, 7);
    add_file(&src, "last-write.bin", &last);

    let spawn_interrupt = || {
        Vso::new(&sandbox)
            .args(["interrupt", "--pid-path"])
            .arg(&pid_file)
            .spawn()
    };
    // Two at once, and a third once the final sync runs (signals that arrive together may
    // be delivered as one; the third surely arrives during the shutdown).
    let first = spawn_interrupt();
    let second = spawn_interrupt();
    vso.wait_for_output("running the final sync", 1, LONG);
    let third = spawn_interrupt();
    let (first, second, third) = (
        first.wait_output(LONG),
        second.wait_output(LONG),
        third.wait_output(LONG),
    );
    third.assert_code(0);
    first.assert_code(0);
    second.assert_code(0);
    server.assert_object("bucket/app/last-write.bin", &last);
    let log = vso.wait_output(LONG);
    log.assert_code(0)
        .assert_contains("running the final sync")
        .assert_contains("the graceful shutdown is under way");
    assert!(
        !log.all().contains("stopping rclone now"),
        "a second interrupt escalated:\n{}",
        log.all()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. rclone dies with its parent, even when the parent is killed with SIGKILL.
// ---------------------------------------------------------------------------------------------

#[test]
fn sigkill_of_a_restore_leaves_no_rclone_and_nothing_more_is_written() {
    let sandbox = Sandbox::new();
    let server = S3Server::start();
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("f{i}.bin"), random_bytes(200 * 1024, i)))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let seed = sandbox.tree("seed", &refs);
    upload(&sandbox, &server, &seed, "bucket/slow", &[]).assert_code(0);

    let dst = sandbox.path("restored");
    let mut vso = Vso::s3(&sandbox, &server);
    let running = vso
        .args(["remote-to-local-sync", "-s", "bucket/slow", "-d"])
        .arg(&dst)
        .args(["--", "--bwlimit", "100k", "--transfers", "1"])
        .spawn();
    let needle = "bucket/slow";
    wait_until("rclone is copying", LONG, || {
        !rclone_pids_with(needle).is_empty() && dst.exists()
    });
    running.signal(Signal::SIGKILL);
    let _ = running.wait_output(LONG);
    wait_until("no rclone is left", Duration::from_secs(10), || {
        rclone_pids_with(needle).is_empty()
    });
    let after_kill = lsnapshot(&dst);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lsnapshot(&dst),
        after_kill,
        "something was written after the parent was killed"
    );
    assert!(
        dst.join(".volume-syncing-operator.restore-in-progress")
            .exists(),
        "the interrupted restore keeps its marker"
    );
    // A sanity check on the test itself: the restore really was cut short.
    let complete = files
        .iter()
        .filter(|(n, c)| fs::read(dst.join(n)).is_ok_and(|got| &got == c))
        .count();
    assert!(
        complete < files.len(),
        "the restore finished before the kill"
    );
}

// ---------------------------------------------------------------------------------------------
// The next hole of the same family: a source with a few files where many were.
// ---------------------------------------------------------------------------------------------

/// `count` small files named `prefix-<i>.txt`.
fn many_files(prefix: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            (
                format!("{prefix}-{i}.txt"),
                format!("{prefix} {i}\n").into_bytes(),
            )
        })
        .collect()
}

fn tree_of(sandbox: &Sandbox, name: &str, files: &[(String, Vec<u8>)]) -> std::path::PathBuf {
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    sandbox.tree(name, &refs)
}

#[test]
fn an_upload_that_would_delete_most_recorded_files_is_refused() {
    let sandbox = Sandbox::new();
    let server = server_with_buckets(&sandbox);
    let full = tree_of(&sandbox, "full", &many_files("data", 40));
    upload(&sandbox, &server, &full, "bucket/db", &[]).assert_code(0);

    // A fresh skeleton in place of the volume: 3 files where 40 were.
    let skeleton = tree_of(&sandbox, "skeleton", &many_files("fresh", 3));
    let ends = Ends::capture(&skeleton, &server);
    for extra in [
        &[][..],
        &["--dry-run"][..],
        &["--max-delete-percent", "90"][..],
    ] {
        let out = upload(&sandbox, &server, &skeleton, "bucket/db", extra);
        out.assert_code(3)
            .assert_contains("refused by safety rule 'mass-delete'")
            .assert_contains("holds 3 regular files where the last upload")
            .assert_contains("recorded 40")
            .assert_contains("--max-delete-percent 100");
        ends.assert_unchanged(&format!("mass-delete {extra:?}"));
    }
    // -x deletes nothing, so it is not refused.
    upload(&sandbox, &server, &skeleton, "bucket/db", &["-x"]).assert_code(0);

    // Ordinary churn: deleting 10 of 40 (25 %) goes through; so does the override.
    let churned: Vec<_> = many_files("data", 30);
    let churned_dir = tree_of(&sandbox, "churned", &churned);
    upload(&sandbox, &server, &churned_dir, "bucket/db", &[]).assert_code(0);
    upload(
        &sandbox,
        &server,
        &skeleton,
        "bucket/db",
        &["--max-delete-percent", "100"],
    )
    .assert_code(0);
    let remote_files: Vec<_> = lsnapshot(&server.path("bucket/db"))
        .into_keys()
        .filter(|k| !k.starts_with(".volume-syncing-operator."))
        .collect();
    assert_eq!(remote_files.len(), 3, "{remote_files:?}");
}

#[test]
fn a_scheduled_uploader_refuses_when_the_volume_loses_most_files_between_runs() {
    let sandbox = Sandbox::new();
    let server = S3Server::start();
    let src = tree_of(&sandbox, "src", &many_files("f", 30));
    // Every 5s (the first sync takes the lease, about 5s), and the files deleted right after a
    // sync finished: all 25 go between two runs, none while one runs (its valve would have
    // counted the tree before the deletions).
    let mut vso = spawn_upload(&sandbox, &server, &src, &["--schedule", "@every 5s"], &[]);
    vso.wait_for_output("sync finished", 1, LONG);
    for i in 0..25 {
        fs::remove_file(src.join(format!("f-{i}.txt"))).unwrap();
    }
    vso.wait_for_output("refused by safety rule 'mass-delete'", 1, LONG);
    assert_eq!(
        lsnapshot(&server.path("bucket/app"))
            .keys()
            .filter(|k| k.starts_with("f-"))
            .count(),
        30,
        "nothing was deleted on the remote"
    );
    vso.signal(Signal::SIGTERM);
    let out = vso.wait_output(LONG);
    out.assert_code(3);
}
