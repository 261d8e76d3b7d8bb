//! `--termination-message-path`: the real binary against a real S3 server writes the summary of
//! its last sync when it ends — a one-shot upload, a refusal, a restore, and the final sync of
//! the long-running mode after SIGTERM — and the file is what the operator reads
//! (`vso_core::daemon::summary::Summary::parse` accepts it).

use std::fs;
use std::time::Duration;

use crate::support::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use vso_core::daemon::summary::Summary;

/// The summary at `path`, checked against the operator's reader and the size bound.
#[track_caller]
fn summary(path: &std::path::Path) -> Value {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no summary at {}: {e}", path.display()));
    assert!(text.len() <= 4096, "{} bytes: {text}", text.len());
    assert!(
        Summary::parse(&text).is_some(),
        "the operator cannot read {text}"
    );
    serde_json::from_str(&text).unwrap()
}

#[test]
fn one_shot_runs_leave_their_result_rule_and_cause() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let data = random_bytes(3000, 7);
    let src = sandbox.tree("src", &[("a.bin", &data), ("dir/b.txt", b"bee\n")]);
    let file = sandbox.path("termination-log");

    let out = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app", "--termination-message-path"])
        .arg(&file)
        .run();
    out.assert_code(0);
    let s = summary(&file);
    assert_eq!(s["result"], "success", "{s}");
    assert_eq!(s["direction"], "upload");
    assert_eq!(s["transferredBytes"], 3004, "{s}");
    assert_eq!(s["transferredFiles"], 2, "{s}");
    assert_eq!(s["lastSuccess"], s["finished"]);
    assert!(s.get("rule").is_none() && s.get("message").is_none(), "{s}");

    // An empty source is refused: the rule and the refusal's own words (with the override).
    let empty = sandbox.dir("empty");
    let out = Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&empty)
        .args(["-d", "bucket/app", "--termination-message-path"])
        .arg(&file)
        .run();
    out.assert_code(3);
    let s = summary(&file);
    assert_eq!(
        (s["result"].as_str(), s["rule"].as_str()),
        (Some("refused"), Some("empty-source")),
        "{s}"
    );
    let message = s["message"].as_str().unwrap();
    assert!(
        message.contains("--force-even-if-remote-would-be-cleared"),
        "{s}"
    );
    assert!(s.get("lastSuccess").is_none(), "{s}");
    server.assert_object("bucket/app/a.bin", &data);

    // A restore (the init container's command), by the environment variable this time.
    let dst = sandbox.dir("dst");
    let out = Vso::s3(&sandbox, &server)
        .args([
            "remote-to-local-sync",
            "--if-local-empty",
            "-s",
            "bucket/app",
            "-d",
        ])
        .arg(&dst)
        .env("VSO_TERMINATION_MESSAGE_PATH", &file)
        .run();
    out.assert_code(0);
    let s = summary(&file);
    assert_eq!(
        (s["direction"].as_str(), s["result"].as_str()),
        (Some("restore"), Some("success")),
        "{s}"
    );
    assert_eq!(fs::read(dst.join("a.bin")).unwrap(), data);

    // A failure: the endpoint is gone; the cause is the run's last log line's.
    let mut stopped = S3Server::start();
    let env = stopped.remote_env();
    stopped.stop();
    let out = Vso::new(&sandbox)
        .envs(env)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args([
            "-d",
            "bucket/app",
            "--retries",
            "0",
            "--termination-message-path",
        ])
        .arg(&file)
        .args(["--", "--contimeout", "2s", "--low-level-retries", "1"])
        .run();
    out.assert_code(1);
    let s = summary(&file);
    assert_eq!(s["result"], "failure", "{s}");
    assert!(s.get("rule").is_none(), "{s}");
    let cause = s["message"].as_str().unwrap();
    assert!(
        out.all()
            .lines()
            .last()
            .unwrap_or("")
            .contains(cause.lines().last().unwrap()),
        "the cause {cause:?} is not the log's last line:\n{}",
        out.all()
    );
}

#[test]
fn the_long_running_mode_leaves_its_final_sync() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("first.txt", b"one\n")]);
    let file = sandbox.path("termination-log");
    let mut vso = spawn_upload(
        &sandbox,
        &server,
        &src,
        &[
            "--schedule",
            "@every 1h",
            "--termination-message-path",
            file.to_str().unwrap(),
        ],
        &[],
    );
    vso.wait_for_output("sync finished", 1, Duration::from_secs(60));
    assert!(!file.exists(), "written before the end");
    add_file(&src, "last.txt", b"written before SIGTERM\n");
    vso.signal(Signal::SIGTERM);
    let out = vso.wait_output(Duration::from_secs(60));
    out.assert_code(0);
    server.assert_object("bucket/app/last.txt", b"written before SIGTERM\n");
    let s = summary(&file);
    assert_eq!(s["result"], "success", "{s}");
    // The final sync's own figures: only the file written before the signal.
    assert_eq!(s["transferredFiles"], 1, "{s}");
    assert_eq!(s["transferredBytes"], 23, "{s}");
    assert_eq!(s["lastSuccess"], s["finished"], "{s}");
}
