//! The safety valves, end to end: the real binary against a real S3 server.
//!
//! For every rule: the refusal (exit 3, the message names the rule and its override flag),
//! both ends unchanged by the refused run, and the override doing what it says.
//!
//! Tests that point the binary at a system directory ALWAYS pass `--dry-run` as well: the valve
//! runs before rclone even in dry-run mode, so a broken valve still deletes nothing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use nix::sys::signal::Signal;

const MARKER: &str = ".volume-syncing-operator.restore-in-progress";
const FORCE_UPLOAD_EMPTY: &str = "--force-even-if-remote-would-be-cleared";
const FORCE_UPLOAD_PARTIAL: &str = "--force-upload-partial-restore";
const FORCE_RESTORE: &str = "--force-delete-local-dir";

/// A uid that is neither root nor the runner.
const OTHER_UID: u32 = 65533;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The files the remote is seeded with in most tests.
fn remote_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("remote-a.txt", b"remote a\n".to_vec()),
        ("dir/remote-b.txt", b"remote b\n".to_vec()),
        ("dir/sub/remote-c.bin", random_bytes(64 * 1024, 11)),
    ]
}

/// The files a local directory holds in most tests.
fn local_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("local-1.txt", b"local one\n".to_vec()),
        ("keep/local-2.txt", b"local two\n".to_vec()),
        ("keep/empty/", Vec::new()),
    ]
}

fn as_refs<'a>(files: &'a [(&'a str, Vec<u8>)]) -> Vec<(&'a str, &'a [u8])> {
    files.iter().map(|(p, c)| (*p, c.as_slice())).collect()
}

/// Uploads `files` to `bucket/<remote_path>` through the binary and returns what the server
/// stores there.
fn seed_remote(
    sandbox: &Sandbox,
    server: &S3Server,
    remote_path: &str,
    files: &[(&str, Vec<u8>)],
) -> Snapshot {
    let name = format!("seed-{}", remote_path.replace('/', "-"));
    let src = sandbox.tree(&name, &as_refs(files));
    upload(
        sandbox,
        server,
        &src,
        &format!("{BUCKET}/{remote_path}"),
        &[],
    )
    .assert_code(0);
    let stored = files_only(&snapshot(&server.path(&format!("{BUCKET}/{remote_path}"))));
    assert_eq!(stored, files_only(&snapshot(&src)), "the remote was seeded");
    assert!(!stored.is_empty());
    stored
}

/// `sync-to-remote -s <src> -d <dst> <extra>`.
fn upload(sandbox: &Sandbox, server: &S3Server, src: &Path, dst: &str, extra: &[&str]) -> Output {
    Vso::s3(sandbox, server)
        .args(["sync-to-remote", "-s"])
        .arg(src)
        .args(["-d", dst])
        .args(extra)
        .run()
}

/// `remote-to-local-sync -s <src> -d <dst> <extra>`.
fn restore(sandbox: &Sandbox, server: &S3Server, src: &str, dst: &Path, extra: &[&str]) -> Output {
    restore_cmd(sandbox, server, src, dst, extra).run()
}

fn restore_cmd(sandbox: &Sandbox, server: &S3Server, src: &str, dst: &Path, extra: &[&str]) -> Vso {
    let mut vso = Vso::s3(sandbox, server);
    vso.args(["remote-to-local-sync", "-s", src, "-d"])
        .arg(dst)
        .args(extra);
    vso
}

/// Exit 3, the rule and its override flag named, no private config left behind.
#[track_caller]
fn assert_refused(out: &Output, sandbox: &Sandbox, rule: &str, flag: &str) {
    out.assert_code(3)
        .assert_contains(&format!("safety rule '{rule}'"))
        .assert_contains(flag)
        .assert_contains("nothing was changed");
    sandbox.assert_config_removed();
}

/// Success, and no refusal of any kind mentioned.
#[track_caller]
fn assert_ok(out: &Output) {
    out.assert_code(0);
    assert!(
        !out.all().contains("refused by safety rule"),
        "unexpected refusal:\n{}",
        out.all()
    );
}

/// Both ends of a sync, captured byte for byte, to prove that a refused run changed nothing.
struct Ends {
    local: PathBuf,
    remote: PathBuf,
    local_before: Snapshot,
    remote_before: Snapshot,
}

impl Ends {
    fn capture(local: &Path, remote: &Path) -> Ends {
        Ends {
            local: local.to_path_buf(),
            remote: remote.to_path_buf(),
            local_before: snapshot(local),
            remote_before: snapshot(remote),
        }
    }

    #[track_caller]
    fn assert_unchanged(&self) {
        assert_eq!(
            snapshot(&self.local),
            self.local_before,
            "the local end {} changed",
            self.local.display()
        );
        assert_eq!(
            snapshot(&self.remote),
            self.remote_before,
            "the remote end {} changed",
            self.remote.display()
        );
    }
}

/// What a directory looks like at its top level, by metadata only (for directories too large
/// to read byte for byte, like /usr/bin): name → (type, mode, uid, size, mtime, ctime).
type Listing = BTreeMap<String, (String, u32, u32, u64, i64, i64)>;

fn listing(dir: &Path) -> Listing {
    let mut out = Listing::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let entry = entry.unwrap();
        let m = fs::symlink_metadata(entry.path()).unwrap();
        // A directory's size and times change whenever something is created in it (/tmp), so
        // only its existence, mode and owner are compared.
        let (size, mtime, ctime) = if m.is_dir() {
            (0, 0, 0)
        } else {
            (m.size(), m.mtime(), m.ctime())
        };
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            (
                format!("{:?}", m.file_type()),
                m.mode(),
                m.uid(),
                size,
                mtime,
                ctime,
            ),
        );
    }
    out
}

fn chown_r(path: &Path, uid: u32) {
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown {uid} {}", path.display());
}

/// Sets every directory under `root` (itself included) to `dir_mode` and every file to
/// `file_mode`.
fn chmod_r(root: &Path, dir_mode: u32, file_mode: u32) {
    let m = fs::symlink_metadata(root).unwrap();
    if m.is_dir() {
        fs::set_permissions(root, fs::Permissions::from_mode(dir_mode)).unwrap();
        for entry in fs::read_dir(root).unwrap() {
            chmod_r(&entry.unwrap().path(), dir_mode, file_mode);
        }
    } else if m.is_file() {
        fs::set_permissions(root, fs::Permissions::from_mode(file_mode)).unwrap();
    }
}

fn owner(path: &Path) -> u32 {
    fs::metadata(path).unwrap().uid()
}

/// The first existing directory of `candidates` that is owned by root and (non-)empty as asked.
/// Used only when the tests do not run as root and so cannot create root-owned directories.
fn existing_root_owned_dir(candidates: &[&str], with_data: bool) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            fs::metadata(p).is_ok_and(|m| m.is_dir() && m.uid() == 0)
                && fs::read_dir(p).is_ok_and(|mut d| d.next().is_some() == with_data)
        })
        .unwrap_or_else(|| {
            panic!(
                "none of {candidates:?} is a root-owned directory {} data; this test needs one \
                 when it does not run as root",
                if with_data { "with" } else { "without" }
            )
        })
}

/// A directory created by the test process itself, so owned by root when the tests run as
/// root (unlike `Sandbox::dir`, which hands its directories to the runner).
fn root_owned_tree(sandbox: &Sandbox, name: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    assert!(is_root());
    let path = sandbox.path(name);
    fs::create_dir(&path).unwrap();
    write_tree(&path, &as_refs(files));
    // Readable (but not writable) by the runner.
    chmod_r(&path, 0o755, 0o644);
    assert_eq!(owner(&path), 0);
    path
}

// ---------------------------------------------------------------------------------------------
// sync-to-remote: restore-in-progress
// ---------------------------------------------------------------------------------------------

#[test]
fn upload_is_refused_while_the_source_holds_the_restore_marker() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    seed_remote(&sandbox, &server, "app", &remote_files());
    let mut files = local_files();
    files.push((
        MARKER,
        b"a restore into this directory has not completed yet\n".to_vec(),
    ));
    let src = sandbox.tree("src", &as_refs(&files));

    let ends = Ends::capture(&src, &server.path(BUCKET));
    let out = upload(&sandbox, &server, &src, "bucket/app", &[]);
    assert_refused(&out, &sandbox, "restore-in-progress", FORCE_UPLOAD_PARTIAL);
    ends.assert_unchanged();

    // -x does not help: a partial copy must not be uploaded at all without the override.
    let out = upload(&sandbox, &server, &src, "bucket/app", &["-x"]);
    assert_refused(&out, &sandbox, "restore-in-progress", FORCE_UPLOAD_PARTIAL);
    ends.assert_unchanged();

    // The override uploads the local tree as it is (the marker itself never leaves the host).
    let out = upload(
        &sandbox,
        &server,
        &src,
        "bucket/app",
        &[FORCE_UPLOAD_PARTIAL],
    );
    assert_ok(&out);
    // files_only leaves out this program's own files, the marker among them.
    let expected = files_only(&snapshot(&src));
    assert!(snapshot(&src).contains_key(MARKER) && !expected.contains_key(MARKER));
    assert_eq!(files_only(&snapshot(&server.path("bucket/app"))), expected);
    assert!(
        !server.path("bucket/app").join(MARKER).exists(),
        "the marker is not uploaded"
    );
    assert!(
        src.join(MARKER).exists(),
        "the upload leaves the marker alone"
    );
}

// ---------------------------------------------------------------------------------------------
// sync-to-remote: empty-source
// ---------------------------------------------------------------------------------------------

#[test]
fn upload_is_refused_from_an_empty_source_and_the_override_clears_the_remote() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    seed_remote(&sandbox, &server, "app", &remote_files());
    let src = sandbox.dir("src");

    let ends = Ends::capture(&src, &server.path(BUCKET));
    let out = upload(&sandbox, &server, &src, "bucket/app", &[]);
    assert_refused(&out, &sandbox, "empty-source", FORCE_UPLOAD_EMPTY);
    ends.assert_unchanged();

    let out = upload(&sandbox, &server, &src, "bucket/app", &[FORCE_UPLOAD_EMPTY]);
    assert_ok(&out);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/app"))),
        Snapshot::new(),
        "the override cleared the remote"
    );
    assert_eq!(snapshot(&src), Snapshot::new(), "the source is untouched");
}

#[test]
fn upload_is_refused_from_a_source_holding_only_lost_found() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    seed_remote(&sandbox, &server, "app", &remote_files());
    let src = sandbox.tree("src", &[("lost+found/", b"")]);

    let ends = Ends::capture(&src, &server.path(BUCKET));
    let out = upload(&sandbox, &server, &src, "bucket/app", &[]);
    assert_refused(&out, &sandbox, "empty-source", FORCE_UPLOAD_EMPTY);
    ends.assert_unchanged();

    let out = upload(&sandbox, &server, &src, "bucket/app", &[FORCE_UPLOAD_EMPTY]);
    assert_ok(&out);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/app"))),
        Snapshot::new(),
        "the override cleared the remote"
    );
    assert!(src.join("lost+found").is_dir());
}

#[test]
fn an_empty_source_is_not_refused_with_no_delete_and_the_remote_is_kept() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    seed_remote(&sandbox, &server, "app", &remote_files());
    let src = sandbox.dir("src");

    for flag in ["-x", "--no-delete"] {
        let ends = Ends::capture(&src, &server.path(BUCKET));
        let out = upload(&sandbox, &server, &src, "bucket/app", &[flag]);
        assert_ok(&out);
        ends.assert_unchanged();
    }
}

// ---------------------------------------------------------------------------------------------
// remote-to-local-sync: system-directory (always with --dry-run as well)
// ---------------------------------------------------------------------------------------------

/// A restore into `target` (which resolves to a system directory) is refused, in dry-run mode
/// too, and changes nothing at either end. `case` names the spelling in the messages.
#[track_caller]
fn assert_system_directory_refused(case: &str, target: &Path, resolved: &Path) {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    seed_remote(&sandbox, &server, "app", &remote_files());
    let remote_before = snapshot(&server.path(BUCKET));
    let local_before = listing(resolved);

    for extra in [&["--dry-run"][..], &["--dry-run", "--if-local-empty"][..]] {
        let out = restore(&sandbox, &server, "bucket/app", target, extra);
        assert_refused(&out, &sandbox, "system-directory", FORCE_RESTORE);
        out.assert_contains("resolves to the system directory");
        assert_eq!(
            listing(resolved),
            local_before,
            "{case} {extra:?}: {} changed",
            resolved.display()
        );
        assert!(
            !resolved.join(MARKER).exists(),
            "{case} {extra:?}: a restore marker in {}",
            resolved.display()
        );
        assert_eq!(
            snapshot(&server.path(BUCKET)),
            remote_before,
            "{case} {extra:?}: the remote changed"
        );
    }
}

/// The same refusal for every spelling of a system directory that only lexical
/// normalisation sees through (the cases below the table need more than a path).
#[test]
fn restore_into_a_system_directory_is_refused() {
    for_each_case(
        [
            ("the root directory", "/", "/"),
            ("usr/../bin", "/usr/../bin", "/bin"),
            ("usr/../bin with a trailing slash", "/usr/../bin/", "/bin"),
            ("double slash usr/bin", "//usr/bin", "/usr/bin"),
            ("etc written oddly", "/etc/./", "/etc"),
            ("var written oddly", "/var//", "/var"),
        ]
        .map(|(case, target, resolved)| (case, (target, resolved))),
        |case, (target, resolved)| {
            assert_system_directory_refused(case, Path::new(target), Path::new(resolved))
        },
    );
}

#[test]
fn restore_into_bin_through_a_missing_directory_is_refused() {
    // Cannot be resolved by the file system (the directory does not exist), so only the
    // lexical normalisation sees that this is /bin; create_dir_all would happily make it so.
    assert!(!Path::new("/bin/does-not-exist").exists());
    assert_system_directory_refused(
        "usr/../bin through a missing directory",
        Path::new("/usr/../bin/does-not-exist/.."),
        Path::new("/bin"),
    );
    assert!(!Path::new("/bin/does-not-exist").exists());
}

#[test]
fn restore_into_a_symlink_to_bin_is_refused() {
    let sandbox = Sandbox::new();
    let link = sandbox.path("looks-harmless");
    std::os::unix::fs::symlink("/bin", &link).unwrap();
    assert_system_directory_refused("a symlink to /bin", &link, Path::new("/bin"));
    // Also through a path that only reaches the link after `..`.
    let sub = sandbox.dir("sub");
    assert_system_directory_refused(
        "a symlink to /bin after ..",
        &sub.join("..").join("looks-harmless"),
        Path::new("/bin"),
    );
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn the_system_directory_override_reaches_rclone_in_dry_run_mode() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    seed_remote(&sandbox, &server, "app", &remote_files());
    let link = sandbox.path("link-to-bin");
    std::os::unix::fs::symlink("/bin", &link).unwrap();
    let remote_before = snapshot(&server.path(BUCKET));
    let bin_before = listing(Path::new("/bin"));

    // --dry-run is the defence in depth: the override lets the run reach rclone, which only
    // reports what it would do (and the runner could not write to /bin anyway).
    let out = restore(
        &sandbox,
        &server,
        "bucket/app",
        &link,
        &["--dry-run", FORCE_RESTORE],
    );
    assert_ok(&out);
    // rclone ran and reported the dry-run copy of a remote file.
    out.assert_contains("remote-a.txt")
        .assert_contains("dry-run");
    assert_eq!(listing(Path::new("/bin")), bin_before, "/bin changed");
    assert!(!Path::new("/bin").join(MARKER).exists());
    assert!(!Path::new("/bin").join("remote-a.txt").exists());
    assert_eq!(snapshot(&server.path(BUCKET)), remote_before);
}

// ---------------------------------------------------------------------------------------------
// remote-to-local-sync: foreign-owner
// ---------------------------------------------------------------------------------------------

#[test]
fn restore_into_a_root_owned_directory_with_data_is_refused() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let remote = seed_remote(&sandbox, &server, "app", &remote_files());

    if is_root() {
        let target = root_owned_tree(&sandbox, "root-owned", &local_files());
        let ends = Ends::capture(&target, &server.path(BUCKET));

        // As the (unprivileged) runner.
        let out = restore(&sandbox, &server, "bucket/app", &target, &[]);
        assert_refused(&out, &sandbox, "foreign-owner", FORCE_RESTORE);
        out.assert_contains("owned by root");
        ends.assert_unchanged();

        // Root is refused too: a root-owned directory is never restored over by default.
        let out = restore_cmd(&sandbox, &server, "bucket/app", &target, &[])
            .as_test_user()
            .run();
        assert_refused(&out, &sandbox, "foreign-owner", FORCE_RESTORE);
        ends.assert_unchanged();

        // The override: root, which can write there, replaces the tree with the remote's.
        let out = restore_cmd(&sandbox, &server, "bucket/app", &target, &[FORCE_RESTORE])
            .as_test_user()
            .run();
        assert_ok(&out);
        assert_eq!(files_only(&snapshot(&target)), remote);
        assert!(!target.join(MARKER).exists());
        // Root restores the recorded owner of the restore root too: the uploader's.
        assert_eq!(owner(&target), RUNNER_UID);
    } else {
        // Cannot create a root-owned directory: use an existing one, with --dry-run.
        let target = Path::new("/usr/share");
        assert_eq!(owner(target), 0);
        let before = listing(target);
        let remote_before = snapshot(&server.path(BUCKET));
        let out = restore(&sandbox, &server, "bucket/app", target, &["--dry-run"]);
        assert_refused(&out, &sandbox, "foreign-owner", FORCE_RESTORE);
        out.assert_contains("owned by root");
        assert_eq!(listing(target), before);
        assert_eq!(snapshot(&server.path(BUCKET)), remote_before);

        // The override passes the valve; --dry-run keeps it harmless.
        let small = existing_root_owned_dir(
            &["/etc/skel", "/usr/share/common-licenses", "/usr/share/doc"],
            true,
        );
        let before = listing(&small);
        let out = restore(
            &sandbox,
            &server,
            "bucket/app",
            &small,
            &["--dry-run", FORCE_RESTORE],
        );
        assert_ok(&out);
        out.assert_contains("dry-run");
        assert_eq!(listing(&small), before);
        assert_eq!(snapshot(&server.path(BUCKET)), remote_before);
    }
}

#[test]
fn restore_into_a_directory_owned_by_another_user_is_refused() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let remote = seed_remote(&sandbox, &server, "app", &remote_files());

    if is_root() {
        // Owned by another unprivileged uid and writable by everyone: only the valve stands
        // between the runner and the data.
        let target = sandbox.tree("other-users", &as_refs(&local_files()));
        chown_r(&target, OTHER_UID);
        chmod_r(&target, 0o777, 0o666);
        assert_eq!(owner(&target), OTHER_UID);
        let ends = Ends::capture(&target, &server.path(BUCKET));

        let out = restore(&sandbox, &server, "bucket/app", &target, &[]);
        assert_refused(&out, &sandbox, "foreign-owner", FORCE_RESTORE);
        out.assert_contains(&format!("owned by uid {OTHER_UID}"));
        ends.assert_unchanged();

        let out = restore(&sandbox, &server, "bucket/app", &target, &[FORCE_RESTORE]);
        assert_ok(&out);
        assert_eq!(files_only(&snapshot(&target)), remote);
        assert!(!target.join(MARKER).exists());
        assert_eq!(owner(&target), OTHER_UID);
    } else {
        // No other uid can be created without root: a root-owned directory is just as
        // foreign to this process.
        let target = existing_root_owned_dir(
            &["/usr/share/common-licenses", "/etc/skel", "/usr/share"],
            true,
        );
        let before = listing(&target);
        let remote_before = snapshot(&server.path(BUCKET));
        let out = restore(&sandbox, &server, "bucket/app", &target, &["--dry-run"]);
        assert_refused(&out, &sandbox, "foreign-owner", FORCE_RESTORE);
        assert_eq!(listing(&target), before);
        let out = restore(
            &sandbox,
            &server,
            "bucket/app",
            &target,
            &["--dry-run", FORCE_RESTORE],
        );
        assert_ok(&out);
        assert_eq!(listing(&target), before);
        assert_eq!(snapshot(&server.path(BUCKET)), remote_before);
    }
}

#[test]
fn an_empty_root_owned_mount_point_may_be_restored_into() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let remote = seed_remote(&sandbox, &server, "app", &remote_files());

    if is_root() {
        // Like a freshly mounted volume: root-owned, empty, writable by the pod's user.
        let target = sandbox.path("mount-point");
        fs::create_dir(&target).unwrap();
        fs::create_dir(target.join("lost+found")).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(owner(&target), 0);

        let out = restore(&sandbox, &server, "bucket/app", &target, &[]);
        assert_ok(&out);
        assert_eq!(files_only(&snapshot(&target)), remote);
        assert!(!target.join(MARKER).exists());
        assert_eq!(owner(&target), 0);
    } else {
        // Cannot create one: an existing empty root-owned directory, with --dry-run.
        let target = existing_root_owned_dir(
            &[
                "/srv",
                "/media",
                "/mnt",
                "/opt",
                "/var/opt",
                "/var/local",
                "/usr/local/src",
                "/usr/local/games",
                "/usr/src",
            ],
            false,
        );
        let out = restore(&sandbox, &server, "bucket/app", &target, &["--dry-run"]);
        assert_ok(&out);
        out.assert_contains("dry-run");
        assert_eq!(listing(&target), Listing::new());
    }
}

// ---------------------------------------------------------------------------------------------
// remote-to-local-sync: empty-remote
// ---------------------------------------------------------------------------------------------

#[test]
fn restore_from_a_missing_remote_path_into_data_is_refused() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    seed_remote(&sandbox, &server, "app", &remote_files());
    let target = sandbox.tree("data", &as_refs(&local_files()));

    let ends = Ends::capture(&target, &server.path(BUCKET));
    let out = restore(&sandbox, &server, "bucket/no-such-path", &target, &[]);
    assert_refused(&out, &sandbox, "empty-remote", FORCE_RESTORE);
    out.assert_contains("is empty or does not exist");
    ends.assert_unchanged();

    // The override does what the rule warned about: the local files are deleted.
    let out = restore(
        &sandbox,
        &server,
        "bucket/no-such-path",
        &target,
        &[FORCE_RESTORE],
    );
    assert_ok(&out);
    assert_eq!(files_only(&snapshot(&target)), Snapshot::new());
    assert!(target.is_dir());
    assert!(!target.join(MARKER).exists());
}

#[test]
fn restore_from_an_empty_bucket_into_data_is_refused() {
    let server = S3Server::start();
    // A second, empty bucket (created before the server has listed anything).
    fs::create_dir(server.path("empty-bucket")).unwrap();
    let sandbox = Sandbox::new();
    seed_remote(&sandbox, &server, "app", &remote_files());
    let target = sandbox.tree("data", &as_refs(&local_files()));

    let ends = Ends::capture(&target, &server.data);
    let out = restore(&sandbox, &server, "empty-bucket", &target, &[]);
    assert_refused(&out, &sandbox, "empty-remote", FORCE_RESTORE);
    ends.assert_unchanged();

    let out = restore(&sandbox, &server, "empty-bucket", &target, &[FORCE_RESTORE]);
    assert_ok(&out);
    assert_eq!(files_only(&snapshot(&target)), Snapshot::new());
    assert!(!target.join(MARKER).exists());
}

#[test]
fn restore_is_refused_when_the_remote_cannot_be_listed() {
    let mut server = S3Server::start_restartable();
    let sandbox = Sandbox::new();
    seed_remote(&sandbox, &server, "app", &remote_files());
    let target = sandbox.tree("data", &as_refs(&local_files()));
    // The remote holds data, but nobody answers on the port any more.
    server.stop();

    let ends = Ends::capture(&target, &server.path(BUCKET));
    // rclone's own retries (10 low-level retries, each with the S3 SDK's backoff) take minutes
    // to give up on a closed port; one attempt is enough to see the listing fail.
    let out = restore_cmd(&sandbox, &server, "bucket/app", &target, &[])
        .env("RCLONE_LOW_LEVEL_RETRIES", "1")
        .run();
    assert_refused(&out, &sandbox, "empty-remote", FORCE_RESTORE);
    out.assert_contains("cannot tell whether");
    ends.assert_unchanged();

    // Once the server is back, the same restore goes through (and the override is not needed).
    server.restart();
    let out = restore(&sandbox, &server, "bucket/app", &target, &[]);
    assert_ok(&out);
    assert_eq!(
        files_only(&snapshot(&target)),
        files_only(&snapshot(&server.path("bucket/app")))
    );
}

// ---------------------------------------------------------------------------------------------
// remote-to-local-sync: both ends empty, --if-local-empty
// ---------------------------------------------------------------------------------------------

#[test]
fn restore_with_both_ends_empty_succeeds_and_creates_the_directory() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let target = sandbox.path("new/volume");
    // The parent must be writable by the runner.
    sandbox.dir("new");

    let out = restore(&sandbox, &server, "bucket/never-uploaded", &target, &[]);
    assert_ok(&out);
    assert!(target.is_dir(), "the directory was created");
    assert_eq!(snapshot(&target), Snapshot::new());
    assert_eq!(snapshot(&server.path(BUCKET)), Snapshot::new());

    // And again, now that the directory exists (empty).
    let out = restore(&sandbox, &server, "bucket/never-uploaded", &target, &[]);
    assert_ok(&out);
    assert_eq!(snapshot(&target), Snapshot::new());
}

/// Without the listing before the restore (issue 18), rclone meets a missing bucket first
/// ("directory not found", exit code 3): a wrong remote path, not a first run. Exit 2 naming
/// the bucket, and the local side as it was: the directory this restore created and its
/// marker are gone again.
#[test]
fn restore_from_a_missing_bucket_exits_2_and_leaves_no_trace() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let target = sandbox.path("new/volume");
    sandbox.dir("new");

    let out = restore(&sandbox, &server, "no-such-bucket/app", &target, &[]);
    out.assert_code(2)
        .assert_contains("remote:no-such-bucket does not exist");
    assert!(!target.exists(), "the directory was not left behind");

    // An existing empty directory stays, without a marker.
    let existing = sandbox.dir("existing");
    let out = restore(&sandbox, &server, "no-such-bucket/app", &existing, &[]);
    out.assert_code(2);
    assert_eq!(
        snapshot_all(&existing),
        Snapshot::new(),
        "no marker is left"
    );

    // Into a directory with data, the missing bucket stays a refusal.
    let data = sandbox.tree("data", &as_refs(&local_files()));
    let ends = Ends::capture(&data, &server.path(BUCKET));
    let out = restore(&sandbox, &server, "no-such-bucket/app", &data, &[]);
    out.assert_code(3);
    ends.assert_unchanged();
}

#[test]
fn if_local_empty_local_empty_remote_empty_succeeds() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let target = sandbox.dir("data");

    let out = restore(
        &sandbox,
        &server,
        "bucket/app",
        &target,
        &["--if-local-empty"],
    );
    assert_ok(&out);
    assert_eq!(snapshot(&target), Snapshot::new());
    assert_eq!(snapshot(&server.path(BUCKET)), Snapshot::new());

    // A directory that does not exist yet is created.
    let missing = sandbox.path("data/missing");
    let out = restore(
        &sandbox,
        &server,
        "bucket/app",
        &missing,
        &["--if-local-empty"],
    );
    assert_ok(&out);
    assert!(missing.is_dir());
}

#[test]
fn if_local_empty_local_empty_remote_not_empty_restores() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let remote = seed_remote(&sandbox, &server, "app", &remote_files());
    // lost+found does not count as data.
    let target = sandbox.tree("data", &[("lost+found/", b"")]);

    let out = restore(
        &sandbox,
        &server,
        "bucket/app",
        &target,
        &["--if-local-empty"],
    );
    assert_ok(&out);
    assert_eq!(files_only(&snapshot(&target)), remote);
    assert!(!target.join(MARKER).exists());
}

/// A local directory with data is never restored into with --if-local-empty, whether the
/// remote is empty or not.
#[test]
fn if_local_empty_local_not_empty_skips() {
    for_each_case(
        [("remote empty", false), ("remote not empty", true)],
        |_, remote_has_files| {
            let server = S3Server::start();
            let sandbox = Sandbox::new();
            if remote_has_files {
                seed_remote(&sandbox, &server, "app", &remote_files());
            }
            let target = sandbox.tree("data", &as_refs(&local_files()));

            let ends = Ends::capture(&target, &server.path(BUCKET));
            let out = restore(
                &sandbox,
                &server,
                "bucket/app",
                &target,
                &["--if-local-empty"],
            );
            assert_ok(&out);
            out.assert_contains("skipped");
            ends.assert_unchanged();
        },
    );
}

#[test]
fn if_local_empty_restores_again_when_the_marker_is_present() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let remote = seed_remote(&sandbox, &server, "app", &remote_files());
    // What an interrupted restore leaves: some of the files, a stale one, and the marker.
    let target = sandbox.tree(
        "data",
        &[
            ("remote-a.txt", b"remote a\n"),
            ("dir/remote-b.txt", b"rem"),
            (
                MARKER,
                b"a restore into this directory has not completed yet\n",
            ),
        ],
    );

    let out = restore(
        &sandbox,
        &server,
        "bucket/app",
        &target,
        &["--if-local-empty"],
    );
    assert_ok(&out);
    assert!(!out.all().contains("sync skipped"), "{}", out.all());
    assert_eq!(files_only(&snapshot(&target)), remote);
    assert!(!target.join(MARKER).exists(), "the marker was removed");
}

// ---------------------------------------------------------------------------------------------
// A restore killed mid-transfer
// ---------------------------------------------------------------------------------------------

#[test]
fn a_killed_restore_blocks_uploads_until_a_restore_completes() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let big: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("big-{i}.bin"), random_bytes(1024 * 1024, 100 + i)))
        .collect();
    let mut files: Vec<(&str, Vec<u8>)> =
        big.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    files.push(("small/note.txt", b"note\n".to_vec()));
    let remote = seed_remote(&sandbox, &server, "app", &files);

    let target = sandbox.path("restore-target");
    let target_str = target.to_str().unwrap().to_string();
    let running = restore_cmd(
        &sandbox,
        &server,
        "bucket/app",
        &target,
        &["--", "--bwlimit", "200k"],
    )
    .spawn();

    let marker = target.join(MARKER);
    wait_until(
        "the restore wrote its marker",
        Duration::from_secs(60),
        || marker.exists(),
    );
    wait_until("rclone is transferring", Duration::from_secs(60), || {
        !rclone_pids_with(&target_str).is_empty()
            && fs::read_dir(&target).is_ok_and(|d| d.count() > 1)
    });

    // SIGKILL: no clean-up of any kind by us; rclone gets SIGKILL from the kernel with us
    // (the parent-death signal).
    assert!(
        !rclone_pids_with(&target_str).is_empty(),
        "rclone was running"
    );
    running.signal(Signal::SIGKILL);
    let status = running.wait_output(Duration::from_secs(30)).status;
    assert_eq!(status.signal(), Some(9), "the binary was killed");
    wait_until(
        "rclone died with its parent",
        Duration::from_secs(10),
        || rclone_pids_with(&target_str).is_empty(),
    );

    // SIGKILL is the one exit that leaves the private config behind; it is not this test's
    // subject, so it is cleared to let the refusal below be checked for leftovers of its own.
    let leftovers = sandbox.leftover_configs();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    fs::remove_dir_all(&leftovers[0]).unwrap();

    assert!(marker.exists(), "the killed restore left its marker");
    let partial = files_only(&snapshot(&target));
    assert_ne!(
        {
            let mut p = partial.clone();
            p.remove(MARKER);
            p
        },
        remote,
        "the restore was interrupted before it completed"
    );

    // An upload of the partial copy is refused and changes nothing.
    let ends = Ends::capture(&target, &server.path(BUCKET));
    let out = upload(&sandbox, &server, &target, "bucket/app", &[]);
    assert_refused(&out, &sandbox, "restore-in-progress", FORCE_UPLOAD_PARTIAL);
    ends.assert_unchanged();

    // Restoring again completes the job: marker gone, tree identical to the remote.
    let out = restore(&sandbox, &server, "bucket/app", &target, &[]);
    assert_ok(&out);
    assert!(!marker.exists(), "the marker was removed after success");
    assert_eq!(files_only(&snapshot(&target)), remote);
    assert_eq!(files_only(&snapshot(&server.path("bucket/app"))), remote);

    // Now the directory may be uploaded again.
    let out = upload(&sandbox, &server, &target, "bucket/app", &[]);
    assert_ok(&out);
    assert_eq!(files_only(&snapshot(&server.path("bucket/app"))), remote);
}

// ---------------------------------------------------------------------------------------------
// A signal while a valve is still asking the remote
// ---------------------------------------------------------------------------------------------

#[test]
fn a_signal_during_the_remote_emptiness_check_stops_the_restore_and_changes_nothing() {
    let mut server = S3Server::start_restartable();
    let sandbox = Sandbox::new();
    seed_remote(&sandbox, &server, "app", &remote_files());
    let target = sandbox.tree("data", &as_refs(&local_files()));
    // With rclone's default retries, listing a closed port takes minutes to fail: the check is
    // reliably still running when the signal arrives.
    server.stop();

    let ends = Ends::capture(&target, &server.path(BUCKET));
    let mut running = restore_cmd(&sandbox, &server, "bucket/app", &target, &["-vv"]).spawn();
    running.wait_for_output("emptiness check", 1, Duration::from_secs(60));
    running.signal(Signal::SIGTERM);
    // Far less than the minutes the listing itself would take to give up.
    let out = running.wait_output(Duration::from_secs(90));
    out.assert_code(1).assert_contains("interrupted by SIGTERM");
    assert!(
        !out.all().contains("refused by safety rule"),
        "an interrupted check is not a refusal:\n{}",
        out.all()
    );
    ends.assert_unchanged();
    assert!(!target.join(MARKER).exists());
    let tmp = sandbox.tmp();
    wait_until(
        "the emptiness check's rclone is gone",
        Duration::from_secs(30),
        || rclone_pids_with(tmp.to_str().unwrap()).is_empty(),
    );
    sandbox.assert_config_removed();
}
