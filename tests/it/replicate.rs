//! `remote-to-remote-sync` against two independent S3 servers (two `rclone serve s3` with
//! different credentials): buckets replicated, an emptied source refused, a missing source
//! bucket, encryption on the destination only, and a scheduled run with its final run.
//!
//! The source is changed through its S3 API (rclone), never in the server's directory:
//! `rclone serve s3` caches directory listings.

use std::time::Duration;

use crate::support::*;
use nix::sys::signal::Signal;

const SOURCE_SECRET: &str = "source-secret-key-0123456789-abcdef";

/// The SOURCE_* variables that point at `server`, which uses `secret`.
fn source_env(server: &S3Server, secret: &str) -> Vec<(String, String)> {
    server
        .remote_env()
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "REMOTE_SECRET_ACCESS_KEY" {
                secret.to_string()
            } else {
                v
            };
            (k.replacen("REMOTE_", "SOURCE_", 1), v)
        })
        .collect()
}

/// Writes `content` to `path` (bucket/key) on the source server.
fn put(server: &S3Server, path: &str, content: &[u8]) {
    server.rclone_s3(
        SOURCE_SECRET,
        &["rcat", &format!("s3:{path}")],
        Some(content),
    );
}

/// Two servers with different credentials; the source holds three buckets.
struct Lab {
    sandbox: Sandbox,
    source: S3Server,
    destination: S3Server,
}

impl Lab {
    fn new() -> Lab {
        let lab = Lab {
            sandbox: Sandbox::new(),
            source: S3Server::start_with_secret(SOURCE_SECRET),
            destination: S3Server::start(),
        };
        for bucket in ["alpha", "beta", "gamma"] {
            put(&lab.source, &format!("{bucket}/top.txt"), bucket.as_bytes());
            put(
                &lab.source,
                &format!("{bucket}/dir/deep.bin"),
                &random_bytes(70_000, bucket.len() as u64),
            );
        }
        lab
    }

    /// `remote-to-remote-sync` with both ends configured and `pairs` as `-s`/`-d`.
    fn vso(&self, pairs: &[(&str, &str)]) -> Vso {
        let mut vso = Vso::s3(&self.sandbox, &self.destination);
        vso.envs(source_env(&self.source, SOURCE_SECRET))
            .arg("remote-to-remote-sync");
        for (src, dst) in pairs {
            vso.args(["-s", src, "-d", dst]);
        }
        vso
    }

    /// The destination's data files under `path`, as stored.
    fn stored(&self, path: &str) -> Snapshot {
        files_only(&snapshot(&self.destination.path(path)))
    }
}

fn expected(bucket: &str) -> Snapshot {
    [
        ("top.txt".to_string(), Some(bucket.as_bytes().to_vec())),
        (
            "dir/deep.bin".to_string(),
            Some(random_bytes(70_000, bucket.len() as u64)),
        ),
    ]
    .into_iter()
    .collect()
}

const PAIRS: [(&str, &str); 3] = [
    ("alpha", "alpha"),
    ("beta", "beta-copy"),
    ("gamma", "archive/gamma"),
];

#[test]
fn three_buckets_are_replicated_and_an_emptied_source_is_refused() {
    let lab = Lab::new();
    let out = lab.vso(&PAIRS).run();
    out.assert_code(0)
        .assert_contains("pair=\"3/3\"")
        .assert_contains("replication of every pair finished");
    assert!(!out.all().contains(SOURCE_SECRET), "{}", out.all());
    assert!(!out.all().contains(SECRET_KEY), "{}", out.all());
    for (bucket, at) in [
        ("alpha", "alpha"),
        ("beta", "beta-copy"),
        ("gamma", "archive/gamma"),
    ] {
        assert_eq!(lab.stored(at), expected(bucket), "{at}");
        // The lease was released; nothing of ours but the data is left.
        assert!(
            !lab.destination
                .path(at)
                .join(".volume-syncing-operator.lease")
                .exists()
        );
    }

    // beta is emptied at the source (a wrong bucket, a failed job upstream), alpha grows.
    lab.source
        .rclone_s3(SOURCE_SECRET, &["delete", "s3:beta"], None);
    put(&lab.source, "alpha/new.txt", b"new");
    let out = lab.vso(&PAIRS).run();
    out.assert_code(3)
        .assert_contains("empty-source")
        .assert_contains("--force-even-if-destination-would-be-cleared")
        .assert_contains("1 of 3 replication pairs did not succeed");
    assert_eq!(
        lab.stored("beta-copy"),
        expected("beta"),
        "destination intact"
    );
    let mut alpha = expected("alpha");
    alpha.insert("new.txt".into(), Some(b"new".to_vec()));
    assert_eq!(lab.stored("alpha"), alpha, "the other pairs went on");

    // -x cannot delete: the empty pair is skipped, nothing refused.
    let mut vso = lab.vso(&[("beta", "beta-copy")]);
    vso.arg("-x")
        .run()
        .assert_code(0)
        .assert_contains("skipped");
    assert_eq!(lab.stored("beta-copy"), expected("beta"));

    // The override empties the copy, as asked.
    let mut vso = lab.vso(&[("beta", "beta-copy")]);
    vso.arg("--force-even-if-destination-would-be-cleared")
        .run()
        .assert_code(0);
    assert!(lab.stored("beta-copy").is_empty());
}

#[test]
fn a_missing_source_bucket_exits_2_and_changes_nothing() {
    let lab = Lab::new();
    let out = lab.vso(&[("no-such-bucket", "alpha")]).run();
    out.assert_code(2)
        .assert_contains("source:no-such-bucket does not exist");
    assert!(!lab.destination.path("alpha").exists());

    // With a good pair beside it, the good one is replicated and the code is still 2.
    let out = lab
        .vso(&[("no-such-bucket", "nope"), ("alpha", "alpha")])
        .run();
    out.assert_code(2);
    assert_eq!(lab.stored("alpha"), expected("alpha"));
}

#[test]
fn bad_pairs_and_missing_source_configuration_exit_2() {
    let lab = Lab::new();
    let mut vso = lab.vso(&[("alpha", "alpha")]);
    vso.args(["-s", "beta"])
        .run()
        .assert_code(2)
        .assert_contains("one -d/--dst per -s/--src");
    lab.vso(&[("alpha", "same"), ("beta", "same")])
        .run()
        .assert_code(2)
        .assert_contains("given twice");
    let mut vso = Vso::s3(&lab.sandbox, &lab.destination);
    vso.args(["remote-to-remote-sync", "-s", "alpha", "-d", "alpha"])
        .run()
        .assert_code(2)
        .assert_contains("SOURCE_TYPE");
    assert!(!lab.destination.path("alpha").exists());
}

#[test]
fn encryption_on_the_destination_only() {
    let lab = Lab::new();
    let mut vso = lab.vso(&[("alpha", "vault")]);
    vso.env("ENCRYPTION_PASSPHRASE", "destination passphrase")
        .run()
        .assert_code(0);
    // Ciphertext at rest: no plain name or content at the destination.
    let stored = snapshot(&lab.destination.path("vault"));
    assert!(!stored.is_empty());
    for (name, content) in &stored {
        assert!(
            !name.contains("top") && !name.contains("deep"),
            "plain name stored: {name}"
        );
        if let Some(content) = content {
            assert!(
                !content.windows(5).any(|w| w == b"alpha"),
                "plain content in {name}"
            );
        }
    }
    // The replica restores with the usual settings.
    let restored = lab.sandbox.dir("restored");
    let mut vso = Vso::s3(&lab.sandbox, &lab.destination);
    vso.env("ENCRYPTION_PASSPHRASE", "destination passphrase")
        .args(["remote-to-local-sync", "-s", "vault", "-d"])
        .arg(&restored)
        .run()
        .assert_code(0);
    assert_eq!(files_only(&snapshot(&restored)), expected("alpha"));
    // A wrong key at the destination is refused before anything is written.
    let before = snapshot(&lab.destination.path("vault"));
    let mut vso = lab.vso(&[("alpha", "vault")]);
    vso.env("ENCRYPTION_PASSPHRASE", "another passphrase")
        .run()
        .assert_code(3)
        .assert_contains("encryption-key-mismatch");
    assert_eq!(snapshot(&lab.destination.path("vault")), before);
}

#[test]
fn a_scheduled_replication_runs_once_more_on_sigterm() {
    let lab = Lab::new();
    let mut vso = lab.vso(&[("alpha", "alpha"), ("gamma", "gamma")]);
    vso.args(["--schedule", "@every 1h"])
        .arg("--pid-path")
        .arg(lab.sandbox.path("vso.pid"));
    let mut running = vso.spawn();
    running.wait_for_output(
        "replication of every pair finished",
        1,
        Duration::from_secs(120),
    );
    assert_eq!(lab.stored("gamma"), expected("gamma"));
    put(
        &lab.source,
        "gamma/late.txt",
        b"written before the shutdown",
    );
    running.signal(Signal::SIGTERM);
    let out = running.wait_output(Duration::from_secs(120));
    out.assert_code(0).assert_contains("running the final sync");
    assert_eq!(
        out.all()
            .matches("replication of every pair finished")
            .count(),
        2,
        "{}",
        out.all()
    );
    let mut gamma = expected("gamma");
    gamma.insert(
        "late.txt".into(),
        Some(b"written before the shutdown".to_vec()),
    );
    assert_eq!(lab.stored("gamma"), gamma);
}
