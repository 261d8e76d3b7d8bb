//! One writer per remote path (issue 17): the lease, against the real binary, a real rclone and
//! a real S3 server. Two uploaders racing, a holder killed by SIGKILL, a restore waiting for the
//! final sync of a writer, the override, the lease hidden from every listing, and encryption.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::support::*;
use nix::sys::signal::Signal;

const LEASE: &str = "bucket/app/.volume-syncing-operator.lease";
const PASSPHRASE: &str = "correct horse battery staple 42";
/// Short-TTL flags for the tests of expiry and renewal.
const SHORT_TTL: [&str; 4] = ["--lease-ttl", "15s", "--lease-max-clock-skew", "1s"];
const LONG: Duration = Duration::from_secs(120);

/// A scheduled uploader of `src` to bucket/app that syncs once at start (then hourly).
fn scheduled(
    sandbox: &Sandbox,
    server: &S3Server,
    src: &Path,
    pid: &Path,
    extra: &[&str],
) -> Running {
    let pid = pid.to_str().unwrap();
    let mut args = vec!["--schedule", "@every 1h", "--pid-path", pid];
    args.extend_from_slice(extra);
    spawn_upload(sandbox, server, src, &args, &[])
}

fn upload(sandbox: &Sandbox, server: &S3Server, src: &Path, extra: &[&str]) -> Output {
    spawn_upload(sandbox, server, src, extra, &[]).wait_output(LONG)
}

fn restore(sandbox: &Sandbox, server: &S3Server, dst: &Path, extra: &[&str]) -> Running {
    Vso::s3(sandbox, server)
        .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(dst)
        .args(extra)
        .spawn()
}

fn interrupt(sandbox: &Sandbox, pid: &Path) -> Output {
    Vso::new(sandbox)
        .args(["interrupt", "--pid-path"])
        .arg(pid)
        .run()
}

/// The lease object as JSON, if it is there (plain remote only).
fn lease_json(server: &S3Server) -> Option<serde_json::Value> {
    let text = fs::read_to_string(server.path(LEASE)).ok()?;
    Some(serde_json::from_str(&text).expect("the lease object is JSON"))
}

fn remote_files(server: &S3Server) -> Snapshot {
    files_only(&snapshot(&server.path("bucket/app")))
}

fn tree_a(sandbox: &Sandbox, name: &str) -> PathBuf {
    sandbox.tree(
        name,
        &[
            ("a/one.txt", b"from A one"),
            ("a/two.txt", b"from A two"),
            ("only-a.txt", b"A"),
        ],
    )
}

fn tree_b(sandbox: &Sandbox, name: &str) -> PathBuf {
    sandbox.tree(name, &[("b/one.txt", b"from B one"), ("only-b.txt", b"B")])
}

#[test]
fn two_uploaders_started_together_exactly_one_proceeds() {
    for round in 0..3 {
        let server = S3Server::start();
        let sandbox = Sandbox::new();
        let src_a = tree_a(&sandbox, "a");
        let src_b = tree_b(&sandbox, "b");
        let a = spawn_upload(&sandbox, &server, &src_a, &[], &[]);
        let b = spawn_upload(&sandbox, &server, &src_b, &[], &[]);
        let (a, b) = (a.wait_output(LONG), b.wait_output(LONG));
        let (winner, loser, src) = match (a.code(), b.code()) {
            (0, 3) => (a, b, src_a),
            (3, 0) => (b, a, src_b),
            _ => panic!(
                "round {round}: expected exactly one uploader to proceed and the other to exit 3;\n\
                 A:\n{}\nB:\n{}",
                a.all(),
                b.all()
            ),
        };
        winner.assert_contains("acquired the lease");
        loser
            .assert_contains("refused by safety rule 'remote-in-use'")
            .assert_contains("volume-syncing-operator.lease");
        // The remote holds exactly the winner's tree, and the lease was released.
        assert_eq!(
            remote_files(&server),
            files_only(&snapshot(&src)),
            "round {round}"
        );
        assert!(
            lease_json(&server).is_none(),
            "the winner released the lease"
        );
    }
}

#[test]
fn a_live_lease_refuses_a_second_uploader_naming_holder_and_expiry() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src_a = tree_a(&sandbox, "a");
    let pid = sandbox.path("a.pid");
    let mut holder = scheduled(&sandbox, &server, &src_a, &pid, &[]);
    holder.wait_for_output("sync finished", 1, LONG);
    let lease = lease_json(&server).expect("the holder's lease is on the remote");
    let expires = lease["expires"].as_str().unwrap().to_string();
    let before = remote_files(&server);

    let src_b = tree_b(&sandbox, "b");
    upload(&sandbox, &server, &src_b, &[])
        .assert_code(3)
        .assert_contains("refused by safety rule 'remote-in-use'")
        .assert_contains(&format!("pid {}", holder.pid()))
        .assert_contains(&expires)
        .assert_contains("--force-take-over-lease");
    assert_eq!(
        remote_files(&server),
        before,
        "the refused upload changed nothing"
    );
    // The holder's own tree would change nothing, yet the holder is named: only a lease that
    // is absent lets a one-shot run that writes nothing end without taking it.
    upload(&sandbox, &server, &src_a, &[])
        .assert_code(3)
        .assert_contains("refused by safety rule 'remote-in-use'");

    interrupt(&sandbox, &pid).assert_code(0);
    holder.wait_output(LONG).assert_code(0);
    assert!(lease_json(&server).is_none(), "released at exit");
    // Now the path is free.
    upload(&sandbox, &server, &src_b, &[]).assert_code(0);
    assert_eq!(remote_files(&server), files_only(&snapshot(&src_b)));
}

#[test]
fn a_holder_killed_by_sigkill_is_taken_over_after_expiry() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src_a = tree_a(&sandbox, "a");
    let pid = sandbox.path("a.pid");
    let mut holder = scheduled(&sandbox, &server, &src_a, &pid, &SHORT_TTL);
    holder.wait_for_output("sync finished", 1, LONG);
    holder.signal(Signal::SIGKILL);
    let _ = holder.wait_output(LONG);
    let lease = lease_json(&server).expect("a killed holder leaves its lease");

    let src_b = tree_b(&sandbox, "b");
    let mut args = SHORT_TTL.to_vec();
    upload(&sandbox, &server, &src_b, &args)
        .assert_code(3)
        .assert_contains("remote-in-use");

    // After expiry (plus the 1s skew) the lease is taken over with a warning.
    let expires = chrono::DateTime::parse_from_rfc3339(lease["expires"].as_str().unwrap()).unwrap();
    let free_at = SystemTime::from(expires) + Duration::from_secs(2);
    if let Ok(wait) = free_at.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
    args.push("-v");
    upload(&sandbox, &server, &src_b, &args)
        .assert_code(0)
        .assert_contains("taking over the expired lease");
    assert_eq!(remote_files(&server), files_only(&snapshot(&src_b)));
    assert!(lease_json(&server).is_none());
}

#[test]
fn a_restore_waits_for_the_final_sync_of_the_writer_and_gets_its_last_write() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = tree_a(&sandbox, "old-pod");
    let pid = sandbox.path("old.pid");
    let mut old = scheduled(&sandbox, &server, &src, &pid, &[]);
    old.wait_for_output("sync finished", 1, LONG);
    // Written after the last scheduled sync: only the final sync uploads it.
    add_file(
        &src,
        "last-write.txt",
        b"written just before the rolling update",
    );

    let dst = sandbox.path("new-pod");
    let mut new = restore(&sandbox, &server, &dst, &["--wait-for-writer", "2m"]);
    new.wait_for_output("waiting for the writer", 1, LONG);
    assert!(
        !dst.join("last-write.txt").exists(),
        "the restore waits instead of restoring"
    );

    interrupt(&sandbox, &pid).assert_code(0);
    old.wait_output(LONG).assert_code(0);
    new.wait_output(LONG).assert_code(0);
    assert_eq!(
        fs::read(dst.join("last-write.txt")).unwrap(),
        b"written just before the rolling update"
    );
    assert_eq!(files_only(&snapshot(&dst)), files_only(&snapshot(&src)));
}

#[test]
fn a_restore_that_waits_too_long_fails_and_says_why() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = tree_a(&sandbox, "a");
    let pid = sandbox.path("a.pid");
    let mut holder = scheduled(&sandbox, &server, &src, &pid, &[]);
    holder.wait_for_output("sync finished", 1, LONG);

    // A restore that --if-local-empty skips does not wait (a recreated Pod keeping its volume).
    let kept = sandbox.tree("kept", &[("mine.txt", b"newer than the remote")]);
    restore(&sandbox, &server, &kept, &["--if-local-empty"])
        .wait_output(LONG)
        .assert_code(0)
        .assert_contains("already holds data");

    let dst = sandbox.path("restored");
    restore(&sandbox, &server, &dst, &["--wait-for-writer", "2s"])
        .wait_output(LONG)
        .assert_code(1)
        .assert_contains("still holds the lease")
        .assert_contains("--wait-for-writer 2s");
    assert!(!dst.join("only-a.txt").exists(), "nothing was restored");
    // 0 = do not wait.
    restore(&sandbox, &server, &dst, &["--wait-for-writer", "0"])
        .wait_output(LONG)
        .assert_code(0);
    assert!(dst.join("only-a.txt").exists());
    interrupt(&sandbox, &pid).assert_code(0);
    holder.wait_output(LONG).assert_code(0);
}

#[test]
fn force_take_over_lease_overrides_and_the_old_holder_stops_uploading() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src_a = tree_a(&sandbox, "a");
    let pid = sandbox.path("a.pid");
    let mut holder = scheduled(&sandbox, &server, &src_a, &pid, &SHORT_TTL);
    holder.wait_for_output("sync finished", 1, LONG);

    let src_b = tree_b(&sandbox, "b");
    upload(&sandbox, &server, &src_b, &[])
        .assert_code(3)
        .assert_contains("remote-in-use");
    upload(&sandbox, &server, &src_b, &["--force-take-over-lease"])
        .assert_code(0)
        .assert_contains("--force-take-over-lease: taking over the live lease");
    assert_eq!(remote_files(&server), files_only(&snapshot(&src_b)));

    // The old holder finds at its next renewal (every TTL/3) that the lease is no longer its
    // own, says so, and uploads nothing until it holds the lease again.
    holder.wait_for_output("lost the lease", 1, LONG);
    assert_eq!(
        remote_files(&server),
        files_only(&snapshot(&src_b)),
        "the old holder uploaded nothing more"
    );
    // B released the lease when it finished, so A's final sync may take it again.
    interrupt(&sandbox, &pid).assert_code(0);
    holder
        .wait_output(LONG)
        .assert_code(0)
        .assert_contains("acquired the lease");
    assert_eq!(remote_files(&server), files_only(&snapshot(&src_a)));
}

#[test]
fn the_lease_never_shows_up_in_restores_valves_or_counts() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    // A holder of an empty volume: the remote holds only the lease while it runs.
    let empty = sandbox.dir("empty");
    let pid = sandbox.path("h.pid");
    let mut holder = scheduled(&sandbox, &server, &empty, &pid, &[]);
    holder.wait_for_output("sync finished", 1, LONG);
    assert!(lease_json(&server).is_some());
    // The emptiness check of the upload did not count the lease (else: refused), and the
    // summary counts nothing.
    let out = holder.output_so_far();
    assert!(
        out.contains("transferred_files=0") && out.contains("deleted_files=0"),
        "{out}"
    );

    // Restore into an empty directory: the empty volume (its manifest lists nothing) comes
    // back empty, and no lease file locally.
    let dst = sandbox.path("restored");
    restore(&sandbox, &server, &dst, &["--wait-for-writer", "0"])
        .wait_output(LONG)
        .assert_code(0)
        .assert_contains("transferred_files=0");
    assert!(snapshot(&dst).is_empty(), "{:?}", snapshot(&dst).keys());
    // Restore into a directory with data: the remote counts as empty (valve 'empty-remote').
    let data = sandbox.tree("data", &[("keep.txt", b"keep")]);
    restore(&sandbox, &server, &data, &["--wait-for-writer", "0"])
        .wait_output(LONG)
        .assert_code(3)
        .assert_contains("empty-remote");
    interrupt(&sandbox, &pid).assert_code(0);
    holder.wait_output(LONG).assert_code(0);

    // A holder with data: a restore gets exactly the data, never the lease.
    let src = tree_a(&sandbox, "a");
    let mut holder = scheduled(&sandbox, &server, &src, &pid, &[]);
    holder.wait_for_output("sync finished", 1, LONG);
    let out = holder.output_so_far();
    assert!(out.contains("transferred_files=3 "), "{out}");
    assert!(lease_json(&server).is_some());
    let dst = sandbox.path("restored-2");
    restore(&sandbox, &server, &dst, &["--wait-for-writer", "0"])
        .wait_output(LONG)
        .assert_code(0)
        .assert_contains("transferred_files=3 ");
    assert_eq!(files_only(&snapshot(&dst)), files_only(&snapshot(&src)));
    interrupt(&sandbox, &pid).assert_code(0);
    holder.wait_output(LONG).assert_code(0);
}

#[test]
fn the_lease_works_through_encryption() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src_a = tree_a(&sandbox, "a");
    let pid = sandbox.path("a.pid");
    let pid_arg = pid.to_str().unwrap();
    let mut holder = Vso::s3(&sandbox, &server)
        .env("ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .args(["sync-to-remote", "-s"])
        .arg(&src_a)
        .args([
            "-d",
            "bucket/app",
            "--schedule",
            "@every 1h",
            "--pid-path",
            pid_arg,
        ])
        .spawn();
    holder.wait_for_output("sync finished", 1, LONG);
    // The lease is stored encrypted: no plaintext lease object, no plaintext holder.
    assert!(lease_json(&server).is_none());
    let stored = snapshot(&server.path("bucket/app"));
    assert!(
        stored.iter().all(|(name, content)| !name.contains("lease")
            && !content
                .as_ref()
                .is_some_and(|c| String::from_utf8_lossy(c).contains("holder"))),
        "{:?}",
        stored.keys()
    );

    let src_b = tree_b(&sandbox, "b");
    let upload_with = |src: &Path, passphrase: &str| {
        Vso::s3(&sandbox, &server)
            .env("ENCRYPTION_PASSPHRASE", passphrase)
            .args(["sync-to-remote", "-s"])
            .arg(src)
            .args(["-d", "bucket/app"])
            .run()
    };
    upload_with(&src_b, PASSPHRASE)
        .assert_code(3)
        .assert_contains("remote-in-use");

    let dst = sandbox.path("restored");
    let mut waiting = Vso::s3(&sandbox, &server)
        .env("ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(&dst)
        .spawn();
    waiting.wait_for_output("waiting for the writer", 1, LONG);
    interrupt(&sandbox, &pid).assert_code(0);
    holder.wait_output(LONG).assert_code(0);
    waiting.wait_output(LONG).assert_code(0);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/app"))).len(),
        files_only(&stored).len() - 1,
        "the encrypted lease was released"
    );
    assert_eq!(files_only(&snapshot(&dst)), files_only(&snapshot(&src_a)));

    // With nothing to change, a one-shot upload reads the key check and the marker and ends
    // without writing; with another key it is refused as ever.
    let stored = snapshot(&server.path("bucket/app"));
    upload_with(&src_a, PASSPHRASE)
        .assert_code(0)
        .assert_contains("nothing was written");
    upload_with(&src_a, "another passphrase, another key")
        .assert_code(3)
        .assert_contains("encryption-key-mismatch");
    assert_eq!(snapshot(&server.path("bucket/app")), stored);
}

#[test]
fn a_dry_run_never_writes_the_lease() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = tree_a(&sandbox, "a");
    upload(&sandbox, &server, &src, &["--dry-run"])
        .assert_code(0)
        .assert_contains("dry run: the lease");
    assert!(snapshot(&server.path("bucket")).is_empty());
}

#[test]
fn a_long_running_uploader_without_the_lease_is_unhealthy_and_keeps_trying() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src_a = tree_a(&sandbox, "a");
    let pid_a = sandbox.path("a.pid");
    let mut holder = scheduled(&sandbox, &server, &src_a, &pid_a, &[]);
    holder.wait_for_output("sync finished", 1, LONG);

    // The second one retries every 2s, stays 503 while refused, and takes over once the
    // first released the lease.
    let src_b = tree_b(&sandbox, "b");
    let pid_b = sandbox.path("b.pid");
    let address = free_address();
    let mut second = spawn_upload(
        &sandbox,
        &server,
        &src_b,
        &[
            "--schedule",
            "@every 2s",
            "--pid-path",
            pid_b.to_str().unwrap(),
            "--metrics-address",
            &address,
        ],
        &[],
    );
    second.wait_for_output("remote-in-use", 2, LONG);
    let health = http_get(&address, "/healthz").unwrap();
    assert_eq!(health.status, 503, "{health:?}");
    assert!(health.body.contains("lease"), "{health:?}");
    // A restart cannot free another writer's lease: the liveness probe stays 200.
    assert_eq!(http_get(&address, "/livez").unwrap().status, 200);

    interrupt(&sandbox, &pid_a).assert_code(0);
    holder.wait_output(LONG).assert_code(0);
    second.wait_for_output("acquired the lease", 1, LONG);
    second.wait_for_output("result=\"success\"", 1, LONG);
    wait_until("/healthz answers 200", LONG, || {
        http_get(&address, "/healthz").is_ok_and(|r| r.status == 200)
    });
    interrupt(&sandbox, &pid_b).assert_code(0);
    second.wait_output(LONG).assert_code(0);
    assert_eq!(remote_files(&server), files_only(&snapshot(&src_b)));
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The acquisition's `rclone rcd` (issue 28): it addresses the same object as every other
/// lease call, whatever the path's characters, and leaves nothing behind, neither a process
/// nor its socket directory, in a one-shot run or a long-running one.
#[test]
fn the_acquisitions_rclone_server_finds_the_same_lease_and_leaves_nothing_behind() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let path = "bucket/my app ä+%[x]";
    let src_a = tree_a(&sandbox, "a");
    let servers_left = |sandbox: &Sandbox| -> Vec<String> {
        let mut left: Vec<String> = fs::read_dir(sandbox.tmp())
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("volume-syncing-operator-rc-"))
                    .collect()
            })
            .unwrap_or_default();
        let tmp = sandbox.tmp().display().to_string();
        let processes = std::process::Command::new("pgrep")
            .args(["-af", &format!("rcd --rc-addr unix://{tmp}")])
            .output()
            .expect("pgrep (procps) runs");
        left.extend(
            String::from_utf8_lossy(&processes.stdout)
                .lines()
                .map(str::to_string),
        );
        left
    };

    // A long-running holder: its lease is written and read back through the server, and the
    // server is gone once the lease is taken.
    let pid = sandbox.path("a.pid");
    let mut holder = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src_a)
        .args(["-d", path, "--schedule", "@every 1h", "--pid-path"])
        .arg(&pid)
        .spawn();
    holder.wait_for_output("sync finished", 1, LONG);
    let lease = server.path(&format!("{path}/.volume-syncing-operator.lease"));
    assert!(lease.is_file(), "the lease is at {}", lease.display());
    assert_eq!(servers_left(&sandbox), Vec::<String>::new());

    // A second uploader reads that lease through its own server: refused, naming the holder.
    let src_b = tree_b(&sandbox, "b");
    Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src_b)
        .args(["-d", path])
        .run()
        .assert_code(3)
        .assert_contains("refused by safety rule 'remote-in-use'")
        .assert_contains(&format!("pid {}", holder.pid()));
    assert_eq!(servers_left(&sandbox), Vec::<String>::new());

    interrupt(&sandbox, &pid).assert_code(0);
    holder.wait_output(LONG).assert_code(0);
    assert!(!lease.exists(), "released at exit");
    Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src_b)
        .args(["-d", path])
        .run()
        .assert_code(0);
    assert_eq!(
        files_only(&snapshot(&server.path(path))),
        files_only(&snapshot(&src_b))
    );
    assert_eq!(servers_left(&sandbox), Vec::<String>::new());
}

/// The rclone processes a run started, by operation, from its debug log's "started rclone"
/// lines (`--log-format json`).
fn started_rclones(out: &Output) -> Vec<String> {
    out.all()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "started rclone")
        .map(|v| v["operation"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// What a one-shot upload leaves at the server besides the data: its manifest and upload
/// record, and no lease.
fn assert_small_objects_written(server: &S3Server, path: &str) {
    let manifest = server.path(&format!("{path}/.volume-syncing-operator.manifest"));
    let record = server.path(&format!("{path}/.volume-syncing-operator.upload-record"));
    let lease = server.path(&format!("{path}/.volume-syncing-operator.lease"));
    assert!(manifest.is_file(), "no manifest at {}", manifest.display());
    let record = fs::read_to_string(&record)
        .unwrap_or_else(|e| panic!("no upload record at {}: {e}", record.display()));
    assert!(record.contains("\"files\":3"), "upload record: {record}");
    assert!(!lease.exists(), "the lease was not released");
}

/// A one-shot upload of `src` to bucket/app with a debug log in JSON (for [`started_rclones`]),
/// through `rclone_binary` when given.
fn debug_upload(
    sandbox: &Sandbox,
    server: &S3Server,
    src: &Path,
    rclone_binary: Option<&Path>,
    extra: &[&str],
) -> Output {
    let mut vso = Vso::s3(sandbox, server);
    if let Some(binary) = rclone_binary {
        vso.env("RCLONE_BINARY", binary);
    }
    vso.env("RUST_LOG", "debug")
        .args(["--log-format", "json", "sync-to-remote", "-s"])
        .arg(src)
        .args(["-d", "bucket/app"])
        .args(extra)
        .run()
}

/// A one-shot upload keeps the acquisition's rclone server until its release: the manifest,
/// the upload record, the release (and the renewals of a long sync) are requests to it, so
/// besides the checks during the settle only the server and the sync itself start an rclone.
#[test]
fn a_one_shot_upload_writes_its_small_objects_through_the_acquisitions_server() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = tree_a(&sandbox, "a");
    let out = debug_upload(&sandbox, &server, &src, None, &[]);
    out.assert_code(0);
    let started = started_rclones(&out);
    assert!(
        started.iter().filter(|op| *op == "rcd").count() == 1
            && started.iter().filter(|op| *op == "sync").count() == 1,
        "one server and one sync: {started:?}\n{}",
        out.all()
    );
    let by_command: Vec<&String> = started
        .iter()
        .filter(|op| {
            ["lease", "manifest", "upload record"]
                .iter()
                .any(|w| op.contains(w))
        })
        .filter(|op| !op.starts_with("cat (upload record)")) // the check, during the settle
        .collect();
    assert!(
        by_command.is_empty(),
        "started as commands instead of requests to the server: {by_command:?}\n{}",
        out.all()
    );
    assert_small_objects_written(&server, "bucket/app");
    assert_eq!(remote_files(&server), files_only(&snapshot(&src)));
}

/// The server dying after the acquisition (here: killed by a wrapper as the sync starts)
/// costs nothing but time: the manifest, the upload record and the release are made again
/// as commands, and the run succeeds.
#[test]
fn a_one_shot_upload_whose_server_dies_falls_back_to_commands() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = tree_a(&sandbox, "a");
    let wrapper = rclone_wrapper(
        &sandbox,
        "rclone-killing-rcd",
        &format!(
            "for a in \"$@\"; do [ \"$a\" = sync ] && pkill -KILL -f 'rcd --rc-addr unix://{}'; done",
            sandbox.tmp().display()
        ),
    );
    let out = debug_upload(&sandbox, &server, &src, Some(&wrapper), &[]);
    out.assert_code(0);
    let started = started_rclones(&out);
    for op in [
        "rcat (metadata manifest)",
        "rcat (upload record)",
        "deletefile (lease)",
    ] {
        assert!(
            started.iter().any(|s| s == op),
            "{op} was not made as a command after the server died: {started:?}\n{}",
            out.all()
        );
    }
    assert_small_objects_written(&server, "bucket/app");
    assert_eq!(remote_files(&server), files_only(&snapshot(&src)));
}

/// A one-shot upload that outlasts a renewal (the sync slowed down by a wrapper, TTL 15 s:
/// renewals every 5 s) renews its lease through the kept server: no lease call is a command,
/// from the acquisition to the release.
#[test]
fn a_long_one_shot_upload_renews_its_lease_through_the_server() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = tree_a(&sandbox, "a");
    let wrapper = rclone_wrapper(
        &sandbox,
        "rclone-slow-sync",
        "for a in \"$@\"; do [ \"$a\" = sync ] && sleep 7; done",
    );
    let out = debug_upload(&sandbox, &server, &src, Some(&wrapper), &SHORT_TTL);
    out.assert_code(0);
    assert!(
        out.all().contains("renewed the lease"),
        "no renewal during the slow sync:\n{}",
        out.all()
    );
    let started = started_rclones(&out);
    let lease_commands: Vec<&String> = started.iter().filter(|op| op.contains("lease")).collect();
    assert!(
        lease_commands.is_empty(),
        "lease calls made as commands: {lease_commands:?}\n{}",
        out.all()
    );
    assert_small_objects_written(&server, "bucket/app");
}

/// A long-running uploader's runs with nothing new start only their sync: the manifest's
/// `rcat` starts after a sync and only when the manifest changed, so no second rclone runs
/// beside the sync (its memory would count in every run's peak).
#[test]
fn a_scheduled_run_with_nothing_new_starts_only_its_sync() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = tree_a(&sandbox, "a");
    let mut running = Vso::s3(&sandbox, &server)
        .env("RUST_LOG", "debug")
        .args(["--log-format", "json", "sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--schedule", "@every 1s", "--pid-path"])
        .arg(sandbox.path("a.pid"))
        .spawn();
    running.wait_for_output("\"sync finished\"", 4, LONG);
    running.signal(Signal::SIGTERM);
    let out = running.wait_output(LONG);
    out.assert_code(0);
    let started = started_rclones(&out);
    let count = |op: &str| started.iter().filter(|s| *s == op).count();
    assert!(count("sync") >= 4, "{started:?}");
    assert_eq!(
        count("rcat (metadata manifest)"),
        1,
        "the manifest is written by the first run only: {started:?}\n{}",
        out.all()
    );
    assert!(
        server
            .path("bucket/app/.volume-syncing-operator.manifest")
            .is_file()
    );
}

/// The syncs a run started: (the sync, its dry run during the settle).
fn syncs(out: &Output) -> (usize, usize) {
    let started = started_rclones(out);
    let count = |op: &str| started.iter().filter(|s| *s == op).count();
    (count("sync"), count("sync (dry run)"))
}

/// A one-shot upload first looks, read-only, at what it would write: when rclone's dry run
/// finds nothing to change and the remote's manifest and upload record are this volume's, it
/// ends without writing anything, the lease included. Otherwise it takes the lease as before:
/// a changed file, a file whose only change is its time and a deleted file make the sync run
/// (the look's dry run found the change, so the settle makes none); a new or removed empty
/// directory alone is not a data change for S3, which keeps no directories, but it changes the
/// manifest, so the lease is taken, the settle's dry run confirms that the data is unchanged,
/// and only the manifest is written. A missing upload record is written the same way.
#[test]
fn a_one_shot_upload_with_nothing_to_change_leaves_out_its_sync() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = tree_a(&sandbox, "a");
    fs::create_dir(src.join("gone")).unwrap();
    let out = debug_upload(&sandbox, &server, &src, None, &[]);
    out.assert_code(0);
    assert_eq!(syncs(&out), (1, 1), "{}", out.all());

    let manifest = server.path("bucket/app/.volume-syncing-operator.manifest");
    let record = server.path("bucket/app/.volume-syncing-operator.upload-record");
    let small_objects = || (fs::read(&manifest).unwrap(), fs::read(&record).unwrap());
    let before = small_objects();
    let unchanged = debug_upload(&sandbox, &server, &src, None, &[]);
    unchanged.assert_code(0);
    assert_eq!(syncs(&unchanged), (0, 1), "{}", unchanged.all());
    unchanged.assert_contains("nothing was written");
    assert!(
        !unchanged.all().contains("wrote the lease"),
        "a run that writes nothing takes no lease:\n{}",
        unchanged.all()
    );
    assert!(
        small_objects() == before,
        "the manifest or the record was rewritten"
    );
    assert_small_objects_written(&server, "bucket/app");
    assert_eq!(remote_files(&server), files_only(&snapshot(&src)));

    fs::create_dir(src.join("new-empty")).unwrap();
    fs::remove_dir(src.join("gone")).unwrap();
    let dirs_only = debug_upload(&sandbox, &server, &src, None, &[]);
    dirs_only.assert_code(0);
    assert_eq!(syncs(&dirs_only), (0, 2), "{}", dirs_only.all());
    dirs_only.assert_contains("acquired the lease");
    assert!(
        small_objects().0 != before.0,
        "the manifest was not rewritten"
    );
    let dst = sandbox.path("restored");
    restore(&sandbox, &server, &dst, &[])
        .wait_output(LONG)
        .assert_code(0);
    assert!(
        dst.join("new-empty").is_dir() && !dst.join("gone").exists(),
        "the empty directories are the manifest's: {:?}",
        snapshot_all(&dst)
    );

    let object = "s3:bucket/app/.volume-syncing-operator.upload-record";
    server.rclone_s3(SECRET_KEY, &["deletefile", object], None);
    let unrecorded = debug_upload(&sandbox, &server, &src, None, &[]);
    unrecorded
        .assert_code(0)
        .assert_contains("acquired the lease");
    assert_eq!(syncs(&unrecorded), (0, 2), "{}", unrecorded.all());
    assert_small_objects_written(&server, "bucket/app");

    type Change<'a> = (&'a str, &'a dyn Fn(&Path));
    let changes: [Change; 3] = [
        ("a changed file", &|src| {
            fs::write(src.join("a/one.txt"), "changed").unwrap()
        }),
        ("a file's time", &|src| {
            let file = fs::File::options()
                .write(true)
                .open(src.join("a/two.txt"))
                .unwrap();
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
                .unwrap();
        }),
        ("a deleted file", &|src| {
            fs::remove_file(src.join("only-a.txt")).unwrap()
        }),
    ];
    for (change, make) in changes {
        make(&src);
        let out = debug_upload(&sandbox, &server, &src, None, &[]);
        out.assert_code(0);
        assert_eq!(
            syncs(&out),
            (1, 1),
            "{change}: the sync did not run, or the settle dry-ran again\n{}",
            out.all()
        );
        assert_eq!(
            remote_files(&server),
            files_only(&snapshot(&src)),
            "{change}"
        );
    }
}

/// The dry run is believed only when rclone says positively that nothing is to be done: with
/// its log sent elsewhere by the user's `--log-file`, it says nothing, and the sync runs.
#[test]
fn an_upload_whose_dry_run_says_nothing_runs_its_sync() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = tree_a(&sandbox, "a");
    upload(&sandbox, &server, &src, &[]).assert_code(0);
    let log = sandbox.path("rclone.log");
    let flags = ["--", "--log-file", log.to_str().unwrap()];
    let out = debug_upload(&sandbox, &server, &src, None, &flags);
    out.assert_code(0);
    assert_eq!(syncs(&out), (1, 1), "{}", out.all());
    assert!(
        fs::read_to_string(&log)
            .unwrap()
            .contains("There was nothing to transfer"),
        "rclone logged to the user's file"
    );
}
