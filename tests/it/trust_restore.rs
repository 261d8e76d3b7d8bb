//! The remote is untrusted input: whoever can write to the bucket (objects, and the metadata
//! manifest beside them) must never make a restore write outside LOCAL_DIR, write through a
//! symlink, restore a setuid program unasked, panic, or fail every restore. Each test plants
//! what such a writer could, against a real S3 server (`rclone serve s3`), and compares both
//! ends (and the directory a link points to) byte for byte after a refusal.
//!
//! The cases about writing outside LOCAL_DIR run both as the test's own user (root in CI) and
//! as the unprivileged runner uid.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::support::*;

const MANIFEST: &str = ".volume-syncing-operator.manifest";
const MARKER: &str = ".volume-syncing-operator.restore-in-progress";
const FORMAT: &str = "volume-syncing-operator manifest v1";

/// Puts an object on the remote through the S3 API (the server caches its directory, so
/// writing behind its back would not be seen).
#[track_caller]
fn put(server: &S3Server, path: &str, content: &[u8]) {
    let target = format!("s3:bucket/app/{path}");
    server.rclone_s3(SECRET_KEY, &["rcat", &target], Some(content));
}

/// A JSON string literal.
fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn dir_entry(p: &str, mode: u32, s: i64, n: i64) -> String {
    format!(
        "{{\"t\":\"d\",\"p\":{},\"m\":{mode},\"u\":0,\"g\":0,\"s\":{s},\"n\":{n}}}",
        json(p)
    )
}

fn file_entry(p: &str, mode: u32, size: usize) -> String {
    format!(
        "{{\"t\":\"f\",\"p\":{},\"m\":{mode},\"u\":0,\"g\":0,\"size\":{size}}}",
        json(p)
    )
}

fn link_entry(p: &str, to: &str, s: i64, n: i64) -> String {
    format!(
        "{{\"t\":\"l\",\"p\":{},\"to\":{},\"u\":0,\"g\":0,\"s\":{s},\"n\":{n}}}",
        json(p),
        json(to)
    )
}

/// Writes a manifest of `entries` (with header and trailer) to the remote, as a writer of the
/// bucket could.
fn plant_manifest(server: &S3Server, entries: &[String]) {
    let mut text = format!(
        "{{\"t\":\"h\",\"format\":\"{FORMAT}\",\"generation\":\"planted\",\"written\":\"now\"}}\n"
    );
    for e in entries {
        text.push_str(e);
        text.push('\n');
    }
    text.push_str(&format!("{{\"t\":\"e\",\"entries\":{}}}\n", entries.len()));
    put(server, MANIFEST, text.as_bytes());
}

/// Who runs the binary.
#[derive(Clone, Copy, Debug)]
enum Runner {
    /// The test's own user: root in CI.
    TestUser,
    /// The unprivileged runner uid (the test's own user when not root).
    Unprivileged,
}

fn restore(
    sandbox: &Sandbox,
    server: &S3Server,
    dst: &Path,
    who: Runner,
    extra: &[&str],
) -> Output {
    let mut vso = Vso::s3(sandbox, server);
    if let Runner::TestUser = who {
        vso.as_test_user();
    }
    vso.args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(dst)
        .args(extra)
        .run()
}

/// The remote as stored, the restore target and the link's target directory.
fn all_ends(server: &S3Server, dst: &Path, outside: &Path) -> [Snapshot; 3] {
    [
        snapshot_all(&server.path("bucket/app")),
        snapshot_all(dst),
        snapshot_all(outside),
    ]
}

/// A link planted by the manifest, then objects beneath it on the remote: refused with
/// `link-conflict`, nothing changed at either end nor outside; with the override the objects
/// are skipped, the link stays and nothing is written through it.
fn never_through_a_link(who: Runner) {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    // Writable by the runner: only the link can keep rclone out of it.
    let outside = sandbox.tree("outside", &[("victim.txt", b"precious")]);
    put(&server, "a.txt", b"a");
    plant_manifest(
        &server,
        &[
            dir_entry("", 0o755, 1_700_000_000, 0),
            file_entry("a.txt", 0o644, 1),
            link_entry("x", outside.to_str().unwrap(), 1_700_000_000, 0),
        ],
    );
    let dst = sandbox.path("restored");
    restore(&sandbox, &server, &dst, who, &[]).assert_code(0);
    assert_eq!(
        fs::read_link(dst.join("x")).unwrap(),
        outside,
        "the first restore made the link"
    );

    // The bucket's writer now puts objects beneath the link.
    put(&server, "x/file", b"written through the link");
    put(&server, "x/sub/deep", b"deeper");
    // The target now holds data, owned by whoever restored it: root's is a `foreign-owner`.
    let force = "--force-delete-local-dir";
    let before = all_ends(&server, &dst, &outside);
    let out = restore(&sandbox, &server, &dst, who, &[force]);
    let after = all_ends(&server, &dst, &outside);
    assert_eq!(
        after[2],
        before[2],
        "nothing written or deleted outside the target; output:\n{}",
        out.all()
    );
    out.assert_code(3)
        .assert_contains("link-conflict")
        .assert_contains("--skip-objects-under-links")
        .assert_contains("x");
    assert_eq!(after, before, "a refusal changes nothing at either end");

    let out = restore(
        &sandbox,
        &server,
        &dst,
        who,
        &[force, "--skip-objects-under-links"],
    );
    out.assert_code(0)
        .assert_contains("--skip-objects-under-links");
    assert!(
        out.all()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("Links: x")),
        "a warning names the link:\n{}",
        out.all()
    );
    assert_eq!(
        snapshot_all(&outside),
        before[2],
        "nothing written or deleted outside"
    );
    assert_eq!(fs::read_link(dst.join("x")).unwrap(), outside);
    assert_eq!(fs::read(dst.join("a.txt")).unwrap(), b"a");
    assert!(!dst.join(MARKER).exists());
}

#[test]
fn a_restore_never_writes_through_a_symlink() {
    for_each_case(
        [
            ("as the test user", Runner::TestUser),
            ("as an unprivileged uid", Runner::Unprivileged),
        ],
        |_, who| never_through_a_link(who),
    );
}

/// Link names with rclone's glob characters are escaped: a link `[l]*` excludes only itself,
/// not the file `l` beside it, and a remote without objects beneath the links restores.
#[test]
fn links_with_glob_characters_exclude_only_themselves() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let outside = sandbox.tree("outside", &[("victim.txt", b"precious")]);
    let dst = sandbox.tree("restored", &[("old.txt", b"old")]);
    symlink(&outside, dst.join("[l]*")).unwrap();
    symlink(&outside, dst.join("{ab,c}")).unwrap();
    symlink(&outside, dst.join("back\\slash")).unwrap();
    put(&server, "l/inside.txt", b"beside the link");
    put(&server, "ab/inside.txt", b"beside the other link");
    for who in [Runner::TestUser, Runner::Unprivileged] {
        let out = restore(&sandbox, &server, &dst, who, &["--force-delete-local-dir"]);
        out.assert_code(0);
        assert_eq!(
            fs::read(dst.join("l/inside.txt")).unwrap(),
            b"beside the link"
        );
        assert_eq!(
            fs::read(dst.join("ab/inside.txt")).unwrap(),
            b"beside the other link"
        );
        assert!(!dst.join("old.txt").exists(), "the sync still deletes");
        assert!(fs::symlink_metadata(dst.join("[l]*")).unwrap().is_symlink());
        assert_eq!(
            snapshot_all(&outside),
            Snapshot::from([("victim.txt".to_string(), Some(b"precious".to_vec()))])
        );
    }
    // An object beneath the escaped link is found.
    put(&server, "[l]*/f", b"beneath");
    let before = all_ends(&server, &dst, &outside);
    restore(
        &sandbox,
        &server,
        &dst,
        Runner::Unprivileged,
        &["--force-delete-local-dir"],
    )
    .assert_code(3)
    .assert_contains("link-conflict");
    assert_eq!(all_ends(&server, &dst, &outside), before);
}

/// A wrapper around rclone that logs each command line, to count the calls of a restore.
fn counting_rclone(sandbox: &Sandbox) -> (PathBuf, PathBuf) {
    let log = sandbox.path("tmp/rclone-calls.log");
    let wrapper = sandbox.path("rclone-wrapper.sh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            rclone().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, log)
}

fn calls(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_link_check_costs_one_call_and_none_without_links() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    put(&server, "a.txt", b"a");
    let (wrapper, log) = counting_rclone(&sandbox);
    let run = |dst: &Path| {
        let _ = fs::remove_file(&log);
        Vso::s3(&sandbox, &server)
            .env("RCLONE_BINARY", &wrapper)
            .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
            .arg(dst)
            .arg("--force-delete-local-dir")
            .run()
            .assert_code(0);
        calls(&log)
    };
    let without = run(&sandbox.path("empty"));
    let with_links = sandbox.tree("with-links", &[("a.txt", b"a")]);
    symlink("/", with_links.join("l")).unwrap();
    let with = run(&with_links);
    eprintln!("rclone calls without links: {without:?}; with links: {with:?}");
    let listings = |c: &[String]| {
        c.iter()
            .filter(|l| l.contains(" lsf ") && l.contains("--filter-from"))
            .count()
    };
    assert_eq!(listings(&without), 0, "{without:?}");
    assert_eq!(listings(&with), 1, "{with:?}");
    assert_eq!(with.len(), without.len() + 1, "{without:?} / {with:?}");
}

/// setuid/setgid bits of files come back only with `--restore-setid-bits`, also as root.
#[test]
fn setid_bits_are_restored_only_when_asked() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("suid", b"setuid program"), ("plain", b"plain")]);
    fs::set_permissions(src.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(src.join("plain"), fs::Permissions::from_mode(0o640)).unwrap();
    Vso::s3(&sandbox, &server)
        .as_test_user()
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .run()
        .assert_code(0);
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;

    let dropped = sandbox.path("dropped");
    let out = restore(&sandbox, &server, &dropped, Runner::TestUser, &[]);
    out.assert_code(0)
        .assert_contains("metadata=\"applied\"")
        .assert_contains("1 files were recorded with setuid or setgid bits")
        .assert_contains("--restore-setid-bits");
    assert_eq!(mode(&dropped.join("suid")), 0o755);
    assert_eq!(mode(&dropped.join("plain")), 0o640);

    let kept = sandbox.path("kept");
    let out = restore(
        &sandbox,
        &server,
        &kept,
        Runner::TestUser,
        &["--restore-setid-bits"],
    );
    out.assert_code(0).assert_contains("metadata=\"applied\"");
    assert!(!out.all().contains("setuid or setgid"), "{}", out.all());
    assert_eq!(mode(&kept.join("suid")), 0o4755);
}

/// Entries no kernel accepts (a 300-byte name, a path past PATH_MAX, a 100 MB path with control
/// characters) are skipped and counted in one bounded warning; the data is restored and the
/// marker removed, on every restore.
#[test]
fn entries_that_cannot_be_applied_are_skipped_in_one_bounded_warning() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    put(&server, "a.txt", b"a");
    put(&server, "d/b.txt", b"b");
    let long_name = "n".repeat(300);
    let deep = vec!["abcdefghij"; 420].join("/"); // 4619 bytes, names of 10
    let huge = format!("{}\u{1b}[31mfake\nERROR line", "h".repeat(100 << 20));
    plant_manifest(
        &server,
        &[
            dir_entry("", 0o755, 1_700_000_000, 0),
            file_entry("a.txt", 0o600, 1),
            dir_entry("d", 0o750, 1_700_000_000, 0),
            file_entry("d/b.txt", 0o600, 1),
            dir_entry(&format!("d/{long_name}"), 0o700, 0, 0),
            link_entry(&deep, "t", 0, 0),
            link_entry("d/l", &"t".repeat(5000), 0, 0),
            file_entry(&huge, 0o600, 1),
        ],
    );
    let dst = sandbox.path("restored");
    for attempt in 0..2 {
        let out = restore(&sandbox, &server, &dst, Runner::Unprivileged, &[]);
        out.assert_code(0)
            .assert_contains("metadata=\"partial\"")
            .assert_contains("4 recorded entries could not be applied");
        assert!(
            out.all().len() < 64 * 1024,
            "attempt {attempt}: the log is bounded ({} bytes)",
            out.all().len()
        );
        assert!(
            !out.all().contains('\u{1b}'),
            "control characters are escaped"
        );
        assert!(!out.all().contains("\nERROR line"));
        assert_eq!(fs::read(dst.join("a.txt")).unwrap(), b"a");
        assert_eq!(fs::read(dst.join("d/b.txt")).unwrap(), b"b");
        assert_eq!(
            fs::metadata(dst.join("a.txt")).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::metadata(dst.join("d")).unwrap().mode() & 0o777, 0o750);
        assert!(!dst.join(MARKER).exists(), "the restore marker is removed");
    }
}

/// Absurd mtimes (i64::MAX seconds, negative or too many nanoseconds), the root's included, are
/// not applied (counted); the rest is, and the restore succeeds.
#[test]
fn absurd_times_are_skipped_and_the_restore_succeeds() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    put(&server, "a.txt", b"a");
    put(&server, "d/b.txt", b"b");
    put(&server, "e/c.txt", b"c");
    plant_manifest(
        &server,
        &[
            dir_entry("", 0o751, i64::MAX, 0),
            file_entry("a.txt", 0o600, 1),
            dir_entry("d", 0o750, 1_700_000_000, -1),
            file_entry("d/b.txt", 0o600, 1),
            dir_entry("e", 0o705, 1_600_000_000, 1_000_000_000),
            file_entry("e/c.txt", 0o600, 1),
            link_entry("l", "a.txt", i64::MIN, 0),
        ],
    );
    for who in [Runner::TestUser, Runner::Unprivileged] {
        let dst = sandbox.path(&format!("restored-{who:?}"));
        let out = restore(&sandbox, &server, &dst, who, &[]);
        out.assert_code(0)
            .assert_contains("metadata=\"partial\"")
            .assert_contains("3 recorded modification times are out of range")
            .assert_contains("mtime of the restore root");
        assert_eq!(fs::metadata(&dst).unwrap().mode() & 0o777, 0o751);
        assert_eq!(fs::metadata(dst.join("d")).unwrap().mode() & 0o777, 0o750);
        assert_eq!(fs::metadata(dst.join("e")).unwrap().mode() & 0o777, 0o705);
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("a.txt"));
        assert!(!dst.join(MARKER).exists());
    }
}

/// A manifest that would make a link at `x` and a directory with entries beneath `x/`: the
/// link is not made (a mismatch), whatever the data brought.
#[test]
fn a_link_with_entries_beneath_it_in_the_manifest_is_not_made() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let outside = sandbox.tree("outside", &[("victim.txt", b"precious")]);
    put(&server, "a.txt", b"a");
    plant_manifest(
        &server,
        &[
            dir_entry("", 0o755, 1_700_000_000, 0),
            file_entry("a.txt", 0o644, 1),
            link_entry("x", outside.to_str().unwrap(), 0, 0),
            dir_entry("x/sub", 0o777, 0, 0),
            link_entry("x/sub/l", "/etc", 0, 0),
        ],
    );
    let dst = sandbox.path("restored");
    let out = restore(&sandbox, &server, &dst, Runner::Unprivileged, &[]);
    out.assert_code(0)
        .assert_contains("metadata=\"partial\"")
        .assert_contains("recorded as a symlink and as a directory with entries");
    assert!(fs::symlink_metadata(dst.join("x")).is_err(), "no link x");
    assert_eq!(
        snapshot_all(&outside),
        Snapshot::from([("victim.txt".to_string(), Some(b"precious".to_vec()))])
    );
}
