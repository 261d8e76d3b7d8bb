//! The bucket is untrusted input (issue "trust the writer less"): what another writer put there
//! (a lease, an upload record) may be hostile or garbled, and must never panic the program,
//! block it for ever, or turn a safety valve off. Each test runs the real binary against a real
//! S3 server; after every refusal both ends are compared byte for byte.
//!
//! Objects are planted through the server's S3 API (rclone), never in its directory:
//! `rclone serve s3` caches directory listings.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(120);
const LEASE: &str = "bucket/app/.volume-syncing-operator.lease";
const RECORD: &str = "bucket/app/.volume-syncing-operator.upload-record";

/// Writes `content` to `path` (bucket/key) through the S3 API.
fn put(server: &S3Server, path: &str, content: &[u8]) {
    server.rclone_s3(SECRET_KEY, &["rcat", &format!("s3:{path}")], Some(content));
}

/// Both ends of a command, captured to be compared byte for byte after a refusal.
struct Ends<'a> {
    local: Vec<&'a Path>,
    server: &'a S3Server,
    before: (Vec<Snapshot>, Snapshot),
}

impl<'a> Ends<'a> {
    fn capture(local: &[&'a Path], server: &'a S3Server) -> Self {
        Ends {
            local: local.to_vec(),
            server,
            before: (
                local.iter().map(|p| snapshot_all(p)).collect(),
                snapshot_all(&server.data),
            ),
        }
    }

    #[track_caller]
    fn assert_unchanged(&self, what: &str) {
        let local: Vec<_> = self.local.iter().map(|p| snapshot_all(p)).collect();
        assert!(local == self.before.0, "{what}: a local tree changed");
        let remote = snapshot_all(&self.server.data);
        assert!(
            remote == self.before.1,
            "{what}: the remote changed: {:?} -> {:?}",
            self.before.1.keys().collect::<Vec<_>>(),
            remote.keys().collect::<Vec<_>>()
        );
    }
}

fn upload(sandbox: &Sandbox, server: &S3Server, src: &Path, extra: &[&str]) -> Output {
    spawn_upload(sandbox, server, src, extra, &[]).wait_output(LONG)
}

fn many_files(sandbox: &Sandbox, name: &str, count: usize) -> std::path::PathBuf {
    let files: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| (format!("f-{i}.txt"), format!("file {i}\n").into_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    sandbox.tree(name, &refs)
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn lease(host: &str, renewed: &str, expires: &str) -> Vec<u8> {
    serde_json::json!({
        "holder": {"host": host, "pid": 4242, "id": "0123456789abcdef"},
        "started": renewed,
        "renewed": renewed,
        "expires": expires,
    })
    .to_string()
    .into_bytes()
}

#[test]
fn duration_flags_out_of_bounds_exit_2_naming_the_flag_and_the_bound() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a"), ("b.txt", b"b")]);
    upload(&sandbox, &server, &src, &[]).assert_code(0);
    let other = sandbox.tree("other", &[("c.txt", b"c")]);
    let ends = Ends::capture(&[&src, &other], &server);
    for (flag, value, bound) in [
        ("--lease-ttl", "100000000d", "between 15s and 1d"),
        ("--lease-ttl", "5000000d", "between 15s and 1d"),
        ("--lease-ttl", "14s", "between 15s and 1d"),
        ("--lease-max-clock-skew", "2h", "between 1ms and 1h"),
        ("--sync-timeout", "367d", "between 1s and 366d"),
        ("--retries", "101", "0..=100"),
    ] {
        let out = upload(&sandbox, &server, &other, &[flag, value]);
        out.assert_code(2)
            .assert_contains(flag)
            .assert_contains(bound);
        assert!(!out.all().contains("panicked"), "{}", out.all());
        ends.assert_unchanged(&format!("{flag} {value}"));
    }
    let out = upload(
        &sandbox,
        &server,
        &other,
        &["--schedule", "@every 100000000d"],
    );
    out.assert_code(2).assert_contains("between 1s and 366d");
    ends.assert_unchanged("@every 100000000d");
    // The largest TTL works, and its lease parses back (the next writer is refused, not stuck
    // on an unreadable lease).
    let pid = sandbox.path("a.pid");
    let mut holder = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args([
            "-d",
            "bucket/app",
            "--lease-ttl",
            "1d",
            "--schedule",
            "@every 1h",
        ])
        .arg("--pid-path")
        .arg(&pid)
        .spawn();
    holder.wait_for_output("sync finished", 1, LONG);
    let ends = Ends::capture(&[&src, &other], &server);
    upload(&sandbox, &server, &other, &[])
        .assert_code(3)
        .assert_contains("is in use: another writer");
    ends.assert_unchanged("refused by the 1d lease");
    holder.signal(Signal::SIGTERM);
    holder.wait_output(LONG).assert_code(0);
}

#[test]
fn absurd_leases_neither_panic_nor_block_for_ever_nor_are_ignored() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a"), ("b.txt", b"b")]);
    upload(&sandbox, &server, &src, &[]).assert_code(0);
    let other = sandbox.tree("other", &[("c.txt", b"c"), ("d.txt", b"d")]);
    let now = chrono::Utc::now();

    // Renewed now, expiring in year 15716 (what an unbounded --lease-ttl once wrote), from a
    // host whose name would forge log lines: held for at most a day, with a warning.
    let evil = "evil\u{1b}[2J\nERROR forged line";
    put(
        &server,
        LEASE,
        &lease(evil, &rfc3339(now), "+15716-01-01T00:00:00.000Z"),
    );
    let ends = Ends::capture(&[&src, &other], &server);
    let out = upload(&sandbox, &server, &other, &[]);
    out.assert_code(3)
        .assert_contains("refused by safety rule 'remote-in-use'")
        .assert_contains("is not plausible")
        .assert_contains("the longest --lease-ttl (1d)")
        .assert_contains("evil\\u{1b}[2J\\nERROR forged line");
    assert!(
        !out.all().contains('\u{1b}') && !out.all().contains("\nERROR forged"),
        "control characters from the remote reached the log:\n{}",
        out.all()
    );
    ends.assert_unchanged("a lease expiring in year 15716");
    // A restore waits for it only as long as it was told.
    let dst = sandbox.path("restored");
    Vso::s3(&sandbox, &server)
        .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(&dst)
        .args(["--wait-for-writer", "2s"])
        .run()
        .assert_code(1)
        .assert_contains("still holds the lease");

    // Renewed two days ago, "expiring" at the end of time: expired a day ago, taken over.
    let two_days_ago = now - chrono::Duration::days(2);
    put(
        &server,
        LEASE,
        &lease("old", &rfc3339(two_days_ago), "9999-12-31T23:59:59.999Z"),
    );
    upload(&sandbox, &server, &other, &[])
        .assert_code(0)
        .assert_contains("is not plausible")
        .assert_contains("taking over the expired lease");
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/app"))),
        files_only(&snapshot(&other))
    );

    // Times that do not parse: judged by when the object was written (by the server's clock),
    // so held for a day from now, never for ever.
    for (renewed, expires) in [("garbage", "garbage"), ("9999-01-01T00:00:00Z", "")] {
        put(&server, LEASE, &lease("h", renewed, expires));
        let ends = Ends::capture(&[&src, &other], &server);
        upload(&sandbox, &server, &src, &[])
            .assert_code(3)
            .assert_contains("is not plausible")
            .assert_contains("the object was written");
        ends.assert_unchanged(&format!("a lease renewed {renewed:?}"));
    }
    // Not a lease at all: held for a day after it was written, then replaced.
    put(&server, LEASE, b"garbage{{");
    let ends = Ends::capture(&[&src, &other], &server);
    upload(&sandbox, &server, &src, &[])
        .assert_code(3)
        .assert_contains("cannot be read as a lease")
        .assert_contains("counts as held until");
    ends.assert_unchanged("an unreadable lease");
    // The override still works.
    upload(&sandbox, &server, &src, &["--force-take-over-lease"]).assert_code(0);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/app"))),
        files_only(&snapshot(&src))
    );
}

#[test]
fn a_writer_that_retakes_the_lease_rewrites_its_manifest_and_record() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src_a = sandbox.tree(
        "a",
        &[
            ("a/one.txt", b"A one"),
            ("a/two.txt", b"A two"),
            ("only-a.txt", b"A"),
        ],
    );
    let src_b = sandbox.tree("b", &[("b/one.txt", b"B one"), ("only-b.txt", b"B")]);
    let ttl = ["--lease-ttl", "15s", "--lease-max-clock-skew", "1s"];
    // A syncs once now and once more when stopped: while B takes its lease over, A cannot
    // upload between B's sync and its own next renewal (which a forced take-over allows).
    let mut args = vec!["--schedule", "@every 1h"];
    args.extend(ttl);
    let mut a = spawn_upload(&sandbox, &server, &src_a, &args, &[]);
    a.wait_for_output("metadata=\"recorded\"", 1, LONG);

    let mut args = vec!["--force-take-over-lease"];
    args.extend(ttl);
    upload(&sandbox, &server, &src_b, &args).assert_code(0);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/app"))),
        files_only(&snapshot(&src_b))
    );
    let record = |server: &S3Server| -> u64 {
        let text = std::fs::read_to_string(server.path(RECORD)).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["files"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(record(&server), 2, "B recorded its 2 files");

    // A loses the lease at its next renewal; its final sync takes it again (B released it)
    // and re-uploads its data: its manifest and record are written again, not skipped as
    // "unchanged".
    a.wait_for_output("lost the lease", 1, LONG);
    a.signal(Signal::SIGTERM);
    a.wait_for_output("metadata=\"recorded\"", 2, LONG);
    let out = a.wait_output(LONG);
    out.assert_code(0);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/app"))),
        files_only(&snapshot(&src_a))
    );
    assert_eq!(record(&server), 3, "A recorded its 3 files again");

    let dst = sandbox.path("restored");
    let out = Vso::s3(&sandbox, &server)
        .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(&dst)
        .run();
    out.assert_code(0).assert_contains("metadata=\"applied\"");
    assert!(!out.all().contains("did not match"), "{}", out.all());
    assert_eq!(files_only(&snapshot(&dst)), files_only(&snapshot(&src_a)));
}

#[test]
fn an_upload_record_that_cannot_be_used_never_turns_the_valve_off() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let full = many_files(&sandbox, "full", 100);
    upload(&sandbox, &server, &full, &[]).assert_code(0);
    // 60 of the 100 files gone.
    let partial = many_files(&sandbox, "partial", 40);
    for garbled in [
        &b"garbage{{"[..],
        br#"{"files":-100}"#,
        br#"{"files":18446744073709551615,"written":"x"}"#,
        br#"{"files":"\u001b[2J"}"#,
    ] {
        put(&server, RECORD, garbled);
        let ends = Ends::capture(&[&full, &partial], &server);
        let out = upload(&sandbox, &server, &partial, &[]);
        out.assert_code(3)
            .assert_contains("refused by safety rule 'mass-delete'")
            .assert_contains("cannot be used")
            .assert_contains("holds 100 (its upload record cannot be used)")
            .assert_contains("--max-delete-percent 100");
        assert!(!out.all().contains('\u{1b}'), "{}", out.all());
        assert!(!out.all().contains("panicked"), "{}", out.all());
        ends.assert_unchanged(&format!("record {}", String::from_utf8_lossy(garbled)));
    }
    // The override goes through and writes a good record.
    upload(
        &sandbox,
        &server,
        &partial,
        &["--max-delete-percent", "100"],
    )
    .assert_code(0);
    let text = std::fs::read_to_string(server.path(RECORD)).unwrap();
    assert!(text.contains("\"files\":40"), "{text}");
}

/// `remote-to-remote-sync` with the server as both source and destination.
fn replicate(sandbox: &Sandbox, server: &S3Server, src: &str, dst: &str, extra: &[&str]) -> Output {
    let source_env: Vec<(String, String)> = server
        .remote_env()
        .into_iter()
        .map(|(k, v)| (k.replacen("REMOTE_", "SOURCE_", 1), v))
        .collect();
    Vso::s3(sandbox, server)
        .envs(source_env)
        .args(["remote-to-remote-sync", "-s", src, "-d", dst])
        .args(extra)
        .run()
}

#[test]
fn replication_refuses_overlapping_paths_on_the_same_remote() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let seed = sandbox.tree("seed", &[("x.txt", b"x"), ("b/y.txt", b"y")]);
    server.rclone_s3(
        SECRET_KEY,
        &["copy", seed.to_str().unwrap(), "s3:bucket/a"],
        None,
    );
    let ends = Ends::capture(&[&seed], &server);
    for (src, dst) in [
        ("bucket/a/b", "bucket/a"),
        ("bucket/a", "bucket/a/b"),
        ("bucket/a", "bucket/a"),
    ] {
        replicate(&sandbox, &server, src, dst, &[])
            .assert_code(2)
            .assert_contains("overlap on the same remote");
        ends.assert_unchanged(&format!("{src} -> {dst}"));
    }
    // Two pairs whose destinations overlap: the second would overwrite or delete the first's.
    for (other, says) in [
        ("bucket/r", "is given twice"),
        ("bucket/r/s", "overlap: one pair would delete or overwrite"),
    ] {
        replicate(
            &sandbox,
            &server,
            "bucket/a",
            "bucket/r",
            &["-s", "bucket/a/b", "-d", other],
        )
        .assert_code(2)
        .assert_contains(says);
        ends.assert_unchanged(&format!("two pairs into bucket/r and {other}"));
    }
    // A path that merely starts with the same letters does not overlap.
    replicate(&sandbox, &server, "bucket/a", "bucket/ab", &[]).assert_code(0);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/ab"))),
        files_only(&snapshot(&seed))
    );
}

#[test]
fn replication_has_the_mass_delete_valve() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let forty = many_files(&sandbox, "forty", 40);
    server.rclone_s3(
        SECRET_KEY,
        &["copy", forty.to_str().unwrap(), "s3:bucket/src"],
        None,
    );
    replicate(&sandbox, &server, "bucket/src", "bucket/replica", &[]).assert_code(0);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/replica"))).len(),
        40
    );
    // The source loses 39 of its 40 files.
    let one = sandbox.tree("one", &[("f-0.txt", b"file 0\n")]);
    server.rclone_s3(
        SECRET_KEY,
        &["sync", one.to_str().unwrap(), "s3:bucket/src"],
        None,
    );
    let ends = Ends::capture(&[&one], &server);
    replicate(&sandbox, &server, "bucket/src", "bucket/replica", &[])
        .assert_code(3)
        .assert_contains("refused by safety rule 'mass-delete'")
        .assert_contains("holds 1 files where the last upload to remote:bucket/replica recorded 40")
        .assert_contains("--max-delete-percent 100");
    ends.assert_unchanged("a 1-file source over a 40-file replica");
    replicate(
        &sandbox,
        &server,
        "bucket/src",
        "bucket/replica",
        &["--max-delete-percent", "100"],
    )
    .assert_code(0);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/replica"))),
        files_only(&snapshot(&one))
    );
    // The record followed: the next run compares with 1.
    replicate(&sandbox, &server, "bucket/src", "bucket/replica", &[]).assert_code(0);
}
