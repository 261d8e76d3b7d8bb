//! Scheduled mode and `interrupt`, end to end: the real binary on a schedule against a real S3
//! server, driven by real signals.
//!
//! Timings are generous on purpose: the tests assert behaviour (what ran, what reached the
//! remote, how the process exited), not speed. Slow syncs are made slow with rclone's
//! `--bwlimit`, so a sync is reliably still running when a tick or a signal arrives.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const MIB: usize = 1024 * 1024;
/// Long enough for any sync here, short enough that a hung test fails in reasonable time.
const LONG: Duration = Duration::from_secs(60);
/// How long a stopped process may take to exit (rclone gets 5s between SIGTERM and SIGKILL).
const PROMPT: Duration = Duration::from_secs(15);
/// rclone flags that make a sync against a stopped server fail within seconds.
const FAST_FAIL: [&str; 8] = [
    "--retries",
    "1",
    "--low-level-retries",
    "1",
    "--contimeout",
    "2s",
    "--timeout",
    "5s",
];
/// Makes a transfer slow: ~10 s per MiB.
const SLOW: [&str; 2] = ["--bwlimit", "100k"];

/// `sync-to-remote -s <src> -d bucket/app --schedule <expr> <extra> -- <rclone_flags>`.
fn scheduled(
    sandbox: &Sandbox,
    server: &S3Server,
    src: &Path,
    schedule: &str,
    extra: &[&str],
    rclone_flags: &[&str],
) -> Running {
    let args: Vec<&str> = ["--schedule", schedule]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    spawn_upload(sandbox, server, src, &args, rclone_flags)
}

/// Waits until `bucket/app/<name>` on the server holds exactly `content`.
#[track_caller]
fn wait_on_remote(server: &S3Server, name: &str, content: &[u8], timeout: Duration) {
    server.wait_for_object(&format!("bucket/app/{name}"), content, timeout);
}

#[track_caller]
fn assert_on_remote(server: &S3Server, name: &str, content: &[u8]) {
    server.assert_object(&format!("bucket/app/{name}"), content);
}

/// The default pid file of a binary started by `Vso` (its TMPDIR is the sandbox's tmp).
fn default_pid_file(sandbox: &Sandbox) -> PathBuf {
    sandbox.tmp().join("volume-syncing-operator.pid")
}

fn exit_file(pid_file: &Path) -> PathBuf {
    let mut name = pid_file.as_os_str().to_owned();
    name.push(".exit");
    PathBuf::from(name)
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
}

/// Waits until an rclone process working on `needle` runs; returns its pids.
#[track_caller]
fn wait_for_rclone(needle: &str, timeout: Duration) -> Vec<i32> {
    let mut pids = Vec::new();
    wait_until(&format!("rclone syncs {needle}"), timeout, || {
        pids = sync_pids_with(needle);
        !pids.is_empty()
    });
    pids
}

/// Asserts that no rclone process working on `needle` is left. Checked right after the exit,
/// with no grace: the binary stops and reaps rclone before it exits.
#[track_caller]
fn assert_no_rclone_left(needle: &str) {
    let left = rclone_pids_with(needle);
    assert!(
        left.is_empty(),
        "rclone processes left behind after the exit: {left:?}"
    );
}

/// Byte offset of `needle` in `haystack`, failing loudly when absent.
#[track_caller]
fn position(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("output does not contain {needle:?}:\n{haystack}"))
}

/// A process that is not volume-syncing-operator: `sleep 60`, as the runner uid (so a wrongful
/// signal from `interrupt` would really kill it) or as the test's own user (when that is root,
/// `interrupt` cannot read its executable and must compare command names instead).
fn unrelated_sleep(as_runner: bool) -> std::process::Child {
    let mut cmd = Command::new("sleep");
    cmd.arg("60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if as_runner && is_root() {
        cmd.uid(RUNNER_UID).gid(RUNNER_UID);
    }
    cmd.spawn().expect("cannot start sleep")
}

/// Runs `interrupt --pid-path <pid_file> <extra>`.
fn interrupt(sandbox: &Sandbox, pid_file: &Path, extra: &[&str]) -> Output {
    Vso::new(sandbox)
        .args(["interrupt", "--pid-path"])
        .arg(pid_file)
        .args(extra)
        .run()
}

// ---------------------------------------------------------------------------------------------
// The schedule itself
// ---------------------------------------------------------------------------------------------

#[test]
fn every_second_uploads_files_created_later() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("first.txt", b"first\n")]);
    let mut vso = scheduled(&sandbox, &server, &src, "@every 1s", &[], &[]);

    wait_on_remote(&server, "first.txt", b"first\n", Duration::from_secs(30));
    vso.wait_for_output("next scheduled sync at", 1, Duration::from_secs(30));

    // Files that appear after the start are picked up by later ticks, without any signal.
    add_file(&src, "later/second.txt", b"second\n");
    wait_on_remote(
        &server,
        "later/second.txt",
        b"second\n",
        Duration::from_secs(30),
    );
    add_file(&src, "third.txt", b"third\n");
    wait_on_remote(&server, "third.txt", b"third\n", Duration::from_secs(30));
    // A deletion is propagated too (sync, not copy).
    fs::remove_file(src.join("first.txt")).unwrap();
    wait_until(
        "the deleted file disappears from the remote",
        Duration::from_secs(30),
        || !server.path("bucket/app/first.txt").exists(),
    );

    let so_far = vso.output_so_far();
    assert!(
        so_far.matches("sync finished").count() >= 3,
        "several scheduled syncs ran:\n{so_far}"
    );
    assert!(
        so_far.matches("next scheduled sync at").count() >= 3,
        "the next run time is logged on every tick:\n{so_far}"
    );

    vso.signal(Signal::SIGTERM);
    let out = vso.wait_output(LONG);
    out.assert_code(0).assert_contains("running the final sync");
    sandbox.assert_config_removed();
}

#[test]
fn a_cron_schedule_with_seconds_runs_on_its_ticks() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("first.txt", b"first\n")]);
    let mut vso = scheduled(&sandbox, &server, &src, "*/2 * * * * *", &[], &[]);
    vso.wait_for_output("sync finished", 1, LONG);
    add_file(&src, "second.txt", b"second\n");
    wait_on_remote(&server, "second.txt", b"second\n", Duration::from_secs(30));
    vso.wait_for_output("sync finished", 3, Duration::from_secs(30));
    let so_far = vso.output_so_far();
    assert!(so_far.contains("schedule=*/2 * * * * *"), "{so_far}");
    // Cron ticks fall on even seconds.
    for line in so_far
        .lines()
        .filter(|l| l.contains("next scheduled sync at"))
    {
        let at = line
            .split("next_run=")
            .nth(1)
            .unwrap_or_else(|| panic!("no next_run in {line:?}"));
        let seconds: u32 = at[17..19].parse().unwrap();
        assert_eq!(seconds % 2, 0, "not a tick of */2 seconds: {line}");
    }
    vso.signal(Signal::SIGTERM);
    vso.wait_output(LONG).assert_code(0);
}

#[test]
fn a_tick_during_a_running_sync_is_skipped() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let big = random_bytes(3 * MIB, 11);
    let src = sandbox.tree("src", &[("big.bin", &big)]);
    let needle = src.to_string_lossy().into_owned();
    let mut vso = scheduled(&sandbox, &server, &src, "@every 1s", &[], &SLOW);

    wait_for_rclone(&needle, Duration::from_secs(30));
    vso.wait_for_output(
        "the previous sync is still running; skipping this scheduled run",
        2,
        Duration::from_secs(30),
    );
    // Never two syncs at once.
    let pids = rclone_pids_with(&needle);
    assert_eq!(
        pids.len(),
        1,
        "exactly one rclone runs while ticks are skipped: {pids:?}"
    );
    let so_far = vso.output_so_far();
    assert!(
        !so_far.contains("sync finished"),
        "the slow sync was still running when the ticks were skipped:\n{so_far}"
    );
    assert!(
        so_far.contains("next scheduled sync at"),
        "a skipped tick still plans the next one:\n{so_far}"
    );

    // Shut down: the first signal waits for the slow sync, the second stops it.
    vso.signal(Signal::SIGTERM);
    vso.wait_for_output(
        "waiting for the running sync to finish",
        1,
        Duration::from_secs(10),
    );
    vso.signal(Signal::SIGTERM);
    let stopped = Instant::now();
    let out = vso.wait_output(PROMPT + Duration::from_secs(5));
    assert!(
        stopped.elapsed() < PROMPT,
        "a second signal stops at once (took {:?})",
        stopped.elapsed()
    );
    assert_ne!(
        out.code(),
        0,
        "an interrupted shutdown fails:\n{}",
        out.all()
    );
    out.assert_contains("stopping rclone now");
    assert_no_rclone_left(&needle);
}

// ---------------------------------------------------------------------------------------------
// Shutdown on a signal
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_while_idle_runs_a_final_sync_and_exits_0() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let pid_file = default_pid_file(&sandbox);
    let mut vso = scheduled(&sandbox, &server, &src, "@every 1h", &[], &[]);

    vso.wait_for_output("sync finished", 1, LONG);
    assert_on_remote(&server, "a.txt", b"a\n");
    let written = fs::read_to_string(&pid_file).expect("the pid file exists while running");
    assert_eq!(
        written.trim(),
        vso.pid().to_string(),
        "the pid file holds our pid"
    );

    // Written just before the signal: only the final sync can upload it (the next tick is
    // an hour away).
    add_file(&src, "just-before.txt", b"written just before SIGTERM\n");
    vso.signal(Signal::SIGTERM);
    let out = vso.wait_output(LONG);
    out.assert_code(0)
        .assert_contains("received SIGTERM")
        .assert_contains("running the final sync");
    assert!(
        !out.all().contains("waiting for the running sync to finish"),
        "nothing was running:\n{}",
        out.all()
    );
    assert_eq!(
        out.all().matches("sync finished").count(),
        2,
        "{}",
        out.all()
    );
    assert_on_remote(&server, "just-before.txt", b"written just before SIGTERM\n");
    assert!(!pid_file.exists(), "the pid file is removed at exit");
    assert_eq!(
        fs::read_to_string(exit_file(&pid_file)).unwrap(),
        format!("{} 0\n", written.trim()),
        "the exit code is recorded next to the pid file"
    );
    sandbox.assert_config_removed();
}

#[test]
fn sigint_is_handled_like_sigterm() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let mut vso = scheduled(&sandbox, &server, &src, "@every 1h", &[], &[]);
    vso.wait_for_output("sync finished", 1, LONG);

    add_file(&src, "b.txt", b"b\n");
    vso.signal(Signal::SIGINT);
    let out = vso.wait_output(LONG);
    out.assert_code(0)
        .assert_contains("received SIGINT")
        .assert_contains("running the final sync");
    assert_on_remote(&server, "b.txt", b"b\n");
    assert!(!default_pid_file(&sandbox).exists());
}

#[test]
fn sigterm_during_a_sync_lets_it_finish_then_runs_the_final_sync() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    // ~10 s at 100 KiB/s: certainly still running when the signal arrives.
    let big = random_bytes(MIB, 21);
    let src = sandbox.tree("src", &[("big.bin", &big)]);
    let needle = src.to_string_lossy().into_owned();
    let mut vso = scheduled(&sandbox, &server, &src, "@every 1h", &[], &SLOW);

    let pids = wait_for_rclone(&needle, Duration::from_secs(30));
    vso.signal(Signal::SIGTERM);
    vso.wait_for_output(
        "waiting for the running sync to finish",
        1,
        Duration::from_secs(10),
    );
    // The running sync is not stopped by the first signal.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        pids.iter().any(|&p| alive(p)),
        "the running rclone was stopped by the first signal:\n{}",
        vso.output_so_far()
    );
    // Written while the first sync runs; the final sync must pick it up.
    add_file(&src, "late.txt", b"late\n");

    let out = vso.wait_output(Duration::from_secs(120));
    out.assert_code(0);
    let all = out.all();
    let waiting = position(&all, "waiting for the running sync to finish");
    let first_done = position(&all, "sync finished");
    let final_sync = position(&all, "running the final sync");
    assert!(
        waiting < first_done && first_done < final_sync,
        "the running sync finished before the final sync started:\n{all}"
    );
    assert_eq!(all.matches("sync finished").count(), 2, "{all}");
    assert!(!all.contains("sync failed"), "{all}");
    assert_on_remote(&server, "big.bin", &big);
    assert_on_remote(&server, "late.txt", b"late\n");
    assert_no_rclone_left(&needle);
    assert!(!default_pid_file(&sandbox).exists());
}

#[test]
fn a_second_signal_during_the_final_sync_stops_rclone_at_once() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let needle = src.to_string_lossy().into_owned();
    let mut vso = scheduled(&sandbox, &server, &src, "@every 1h", &[], &SLOW);
    vso.wait_for_output("sync finished", 1, LONG);

    // Only the final sync sees this file: ~30 s at the limit.
    let big = random_bytes(3 * MIB, 31);
    add_file(&src, "big.bin", &big);
    vso.signal(Signal::SIGTERM);
    vso.wait_for_output("running the final sync", 1, Duration::from_secs(10));
    wait_for_rclone(&needle, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));

    vso.signal(Signal::SIGTERM);
    let stopped = Instant::now();
    let out = vso.wait_output(PROMPT + Duration::from_secs(5));
    let took = stopped.elapsed();
    assert!(
        took < PROMPT,
        "the second signal stops at once (took {took:?})"
    );
    assert_ne!(
        out.code(),
        0,
        "an interrupted final sync fails:\n{}",
        out.all()
    );
    out.assert_contains("received SIGTERM again: stopping rclone now")
        .assert_contains("interrupted by SIGTERM");
    assert_no_rclone_left(&needle);
    let pid_file = default_pid_file(&sandbox);
    assert!(!pid_file.exists(), "the pid file is removed at exit");
    let recorded = fs::read_to_string(exit_file(&pid_file)).unwrap();
    assert!(
        recorded.trim().ends_with(&format!(" {}", out.code())),
        "the recorded exit code {recorded:?} is the real one ({})",
        out.code()
    );
    sandbox.assert_config_removed();
}

#[test]
fn the_shutdown_timeout_bounds_a_slow_final_sync() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let needle = src.to_string_lossy().into_owned();
    let mut vso = scheduled(
        &sandbox,
        &server,
        &src,
        "@every 1h",
        &["--shutdown-timeout", "2s"],
        &SLOW,
    );
    vso.wait_for_output("sync finished", 1, LONG);

    let big = random_bytes(3 * MIB, 41);
    add_file(&src, "big.bin", &big);
    vso.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let out = vso.wait_output(Duration::from_secs(30));
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "the shutdown took {took:?} despite --shutdown-timeout 2s"
    );
    assert!(
        took >= Duration::from_secs(2),
        "the final sync got its 2s (exited after {took:?}):\n{}",
        out.all()
    );
    assert_ne!(
        out.code(),
        0,
        "a timed-out final sync fails:\n{}",
        out.all()
    );
    out.assert_contains("running the final sync")
        .assert_contains("did not finish within --shutdown-timeout 2s");
    assert_no_rclone_left(&needle);
    assert!(!default_pid_file(&sandbox).exists());
}

// ---------------------------------------------------------------------------------------------
// Failures during the schedule
// ---------------------------------------------------------------------------------------------

#[test]
fn the_schedule_survives_the_remote_going_down_and_recovers() {
    let mut server = S3Server::start_restartable();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let mut vso = scheduled(
        &sandbox,
        &server,
        &src,
        "@every 1s",
        &["--retries", "1"],
        &FAST_FAIL,
    );
    vso.wait_for_output("sync finished", 1, LONG);
    assert_on_remote(&server, "a.txt", b"a\n");

    server.stop();
    add_file(
        &src,
        "while-down.txt",
        b"written while the remote was down\n",
    );
    // A refused connection fails the run at once (no retry within it: nothing listens), is
    // logged with its cause, and the schedule goes on.
    vso.wait_for_output("connection refused to http://127.0.0.1:", 1, LONG);
    vso.wait_for_output("the schedule goes on after a failed sync", 2, LONG);
    let so_far = vso.output_so_far();
    assert!(so_far.contains("sync failed"), "{so_far}");
    assert!(
        vso.child.try_wait().unwrap().is_none(),
        "the process keeps running while the remote is down:\n{so_far}"
    );

    server.restart();
    wait_on_remote(
        &server,
        "while-down.txt",
        b"written while the remote was down\n",
        LONG,
    );
    // And it goes on working after the recovery.
    add_file(&src, "after.txt", b"after the recovery\n");
    wait_on_remote(&server, "after.txt", b"after the recovery\n", LONG);

    vso.signal(Signal::SIGTERM);
    vso.wait_output(LONG).assert_code(0);
}

// ---------------------------------------------------------------------------------------------
// interrupt
// ---------------------------------------------------------------------------------------------

#[test]
fn interrupt_returns_after_the_final_sync_of_a_live_process() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let pid_file = sandbox.tmp().join("custom.pid");
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let mut vso = scheduled(
        &sandbox,
        &server,
        &src,
        "@every 1h",
        &["--pid-path", &pid_arg],
        &SLOW,
    );
    vso.wait_for_output("sync finished", 1, LONG);
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        vso.pid().to_string()
    );
    assert!(
        !default_pid_file(&sandbox).exists(),
        "--pid-path replaces the default location"
    );

    // A final sync of a few seconds, so that returning early would show.
    add_file(
        &src,
        "before-stop.txt",
        b"written before the preStop hook\n",
    );
    let bulk = random_bytes(300 * 1024, 61);
    add_file(&src, "bulk.bin", &bulk);
    let started = Instant::now();
    let out = interrupt(&sandbox, &pid_file, &[]);
    let took = started.elapsed();
    // interrupt returns only once the process has exited (it is a zombie until we reap it).
    let exited = vso.child.try_wait().unwrap();
    assert!(
        exited.is_some(),
        "interrupt returned while the process was still running; interrupt said:\n{}",
        out.all()
    );
    out.assert_code(0);
    assert_eq!(exited.unwrap().code(), Some(0));
    assert!(
        took >= Duration::from_secs(1),
        "interrupt returned after {took:?}, before a final sync of ~3 s could have finished"
    );
    assert_on_remote(
        &server,
        "before-stop.txt",
        b"written before the preStop hook\n",
    );
    assert_on_remote(&server, "bulk.bin", &bulk);
    assert!(!pid_file.exists(), "the pid file is removed at exit");
    let log = vso.wait_output(LONG);
    log.assert_code(0)
        .assert_contains("received an interrupt request (SIGUSR1)")
        .assert_contains("running the final sync");
}

#[test]
fn interrupt_fails_when_the_final_sync_fails() {
    let mut server = S3Server::start_restartable();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let pid_file = sandbox.tmp().join("vso.pid");
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let mut vso = scheduled(
        &sandbox,
        &server,
        &src,
        "@every 1h",
        &["--pid-path", &pid_arg, "--retries", "1"],
        &FAST_FAIL,
    );
    vso.wait_for_output("sync finished", 1, LONG);

    server.stop();
    add_file(&src, "lost.txt", b"cannot be uploaded\n");
    let out = interrupt(&sandbox, &pid_file, &[]);
    let exited = vso.child.try_wait().unwrap();
    assert!(
        exited.is_some(),
        "interrupt returned before the process exited:\n{}",
        out.all()
    );
    assert_ne!(
        out.code(),
        0,
        "interrupt reports the failed final sync:\n{}",
        out.all()
    );
    out.assert_contains("final sync did not succeed");
    assert_ne!(exited.unwrap().code(), Some(0));
    let log = vso.wait_output(LONG);
    log.assert_contains("running the final sync")
        .assert_contains("sync failed");
    assert!(!pid_file.exists());
}

#[test]
fn interrupt_with_a_short_timeout_gives_up_waiting() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let needle = src.to_string_lossy().into_owned();
    let pid_file = sandbox.tmp().join("vso.pid");
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let mut vso = scheduled(
        &sandbox,
        &server,
        &src,
        "@every 1h",
        &["--pid-path", &pid_arg],
        &SLOW,
    );
    vso.wait_for_output("sync finished", 1, LONG);

    // A final sync of ~30 s, but interrupt waits only 2 s.
    add_file(&src, "big.bin", &random_bytes(3 * MIB, 51));
    let out = interrupt(&sandbox, &pid_file, &["--timeout", "2s"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    out.assert_contains("has not exited within");
    assert!(
        vso.child.try_wait().unwrap().is_none(),
        "the process goes on with its final sync"
    );
    vso.wait_for_output("running the final sync", 1, Duration::from_secs(10));

    vso.signal(Signal::SIGTERM);
    let log = vso.wait_output(PROMPT + Duration::from_secs(5));
    assert_ne!(log.code(), 0);
    assert_no_rclone_left(&needle);
}

#[test]
fn interrupt_refuses_a_pid_that_is_not_volume_syncing_operator() {
    let sandbox = Sandbox::new();
    for as_runner in [true, false] {
        let mut sleep = unrelated_sleep(as_runner);
        let pid = sleep.id() as i32;
        let pid_file = sandbox.tmp().join("stale.pid");
        fs::write(&pid_file, format!("{pid}\n")).unwrap();

        let out = interrupt(&sandbox, &pid_file, &[]);
        std::thread::sleep(Duration::from_millis(500));
        let survived = alive(pid) && sleep.try_wait().unwrap().is_none();
        let _ = sleep.kill();
        let _ = sleep.wait();
        out.assert_code(2)
            .assert_contains("not volume-syncing-operator")
            .assert_contains("'sleep'")
            .assert_contains(&pid.to_string());
        assert!(
            survived,
            "interrupt signalled an unrelated process (as_runner: {as_runner})"
        );
        assert!(
            pid_file.exists(),
            "a pid file that is not ours is left alone"
        );
    }
}

#[test]
fn interrupt_without_a_pid_file_fails_clearly() {
    let sandbox = Sandbox::new();
    let missing = sandbox.tmp().join("nothing-here.pid");
    interrupt(&sandbox, &missing, &[])
        .assert_code(2)
        .assert_contains("no pid file");
    // The default location, too.
    Vso::new(&sandbox)
        .arg("interrupt")
        .run()
        .assert_code(2)
        .assert_contains("no pid file")
        .assert_contains("volume-syncing-operator.pid");
}

#[test]
fn interrupt_with_a_pid_of_no_process_fails_clearly() {
    let sandbox = Sandbox::new();
    // A pid that certainly existed and is now gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id() as i32;
    gone.wait().unwrap();
    assert!(!alive(pid));
    let pid_file = sandbox.tmp().join("stale.pid");
    fs::write(&pid_file, format!("{pid}\n")).unwrap();
    interrupt(&sandbox, &pid_file, &[])
        .assert_code(2)
        .assert_contains("no process with pid")
        .assert_contains(&pid.to_string());

    // And a pid file that does not hold a pid.
    fs::write(&pid_file, "not a pid\n").unwrap();
    interrupt(&sandbox, &pid_file, &[])
        .assert_code(2)
        .assert_contains("does not hold a pid");
}

#[test]
fn a_killed_instance_leaves_a_stale_pid_file_that_does_not_block_the_next() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let pid_file = default_pid_file(&sandbox);
    let mut killed = scheduled(&sandbox, &server, &src, "@every 1h", &[], &[]);
    killed.wait_for_output("sync finished", 1, LONG);
    let old_pid = killed.pid();
    killed.signal(Signal::SIGKILL);
    let out = killed.wait_output(LONG);
    assert_eq!(out.status.code(), None, "killed by SIGKILL");
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        old_pid.to_string(),
        "SIGKILL leaves the pid file behind"
    );

    // interrupt recognises the stale file…
    interrupt(&sandbox, &pid_file, &[])
        .assert_code(2)
        .assert_contains("no process with pid");
    // …and a new instance takes it over. (The killed instance's lease of the remote path is
    // still live; its expiry and takeover are tests/it/lease.rs's business.)
    let mut next = scheduled(
        &sandbox,
        &server,
        &src,
        "@every 1h",
        &["--force-take-over-lease"],
        &[],
    );
    next.wait_for_output("sync finished", 1, LONG);
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        next.pid().to_string()
    );
    add_file(&src, "b.txt", b"b\n");
    let out = interrupt(&sandbox, &pid_file, &[]);
    out.assert_code(0);
    next.wait_output(LONG).assert_code(0);
    assert_on_remote(&server, "b.txt", b"b\n");
}

#[test]
fn a_second_instance_with_the_same_pid_file_is_refused() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let mut first = scheduled(&sandbox, &server, &src, "@every 1h", &[], &[]);
    first.wait_for_output("sync finished", 1, LONG);

    let out = scheduled(&sandbox, &server, &src, "@every 1h", &[], &[]).wait_output(LONG);
    out.assert_code(2)
        .assert_contains("another volume-syncing-operator")
        .assert_contains("--pid-path");
    assert_eq!(
        fs::read_to_string(default_pid_file(&sandbox))
            .unwrap()
            .trim(),
        first.pid().to_string(),
        "the refused instance leaves the running one's pid file alone"
    );

    first.signal(Signal::SIGTERM);
    first.wait_output(LONG).assert_code(0);
}

// ---------------------------------------------------------------------------------------------
// Invalid input
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_schedules_exit_2_before_anything_runs() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    for expr in [
        "@every",
        "@every 0s",
        "@every soon",
        "@sometimes",
        "61 * * * *",
        "* * * *",
        "every 1m",
    ] {
        let out = scheduled(&sandbox, &server, &src, expr, &[], &[]).wait_output(LONG);
        out.assert_code(2)
            .assert_contains("invalid schedule")
            .assert_contains("accepted forms");
        assert!(
            !out.all().contains("sync finished") && !out.all().contains("scheduled mode"),
            "{expr:?}: nothing may run:\n{}",
            out.all()
        );
    }
    for (flag, value) in [("--shutdown-timeout", "soon"), ("--shutdown-timeout", "0s")] {
        let out =
            scheduled(&sandbox, &server, &src, "@every 1m", &[flag, value], &[]).wait_output(LONG);
        out.assert_code(2).assert_contains(flag);
    }
    // A pid file that cannot be written is a configuration error, found before any sync.
    let unwritable = sandbox.path("no-such-dir/vso.pid");
    let unwritable = unwritable.to_string_lossy();
    scheduled(
        &sandbox,
        &server,
        &src,
        "@every 1m",
        &["--pid-path", &unwritable],
        &[],
    )
    .wait_output(LONG)
    .assert_code(2)
    .assert_contains("cannot write pid file");
    assert!(
        files_only(&snapshot(&server.path("bucket"))).is_empty(),
        "nothing reached the remote"
    );
    assert!(
        !default_pid_file(&sandbox).exists(),
        "no pid file was written"
    );
    assert!(sandbox.leftover_configs().is_empty());
}
