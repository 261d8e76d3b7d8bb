//! Watch mode (`sync-to-remote --watch`), end to end: the real binary watching a real directory
//! tree (inotify) and uploading to a real S3 server, driven by real file changes and signals.
//!
//! Timings are generous on purpose: the tests assert behaviour (what ran, in which order, what
//! reached the remote, how the process exited), not speed. Where an order of events matters,
//! it is read from the binary's own log. A slow sync is made slow with rclone's `--bwlimit`.
//!
//! Files are written by the test's own user (root in CI) with mode 0644 in directories of mode
//! 0755: the binary (uid 65534 then) can read them, which is all an upload needs.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use nix::sys::signal::Signal;

const MIB: usize = 1024 * 1024;
/// Long enough for any sync here, short enough that a hung test fails in reasonable time.
const LONG: Duration = Duration::from_secs(60);
/// Makes a transfer slow: ~10 s per MiB.
const SLOW: [&str; 2] = ["--bwlimit", "100k"];
/// The log line of a sync started by file changes.
const BY_CHANGES: &str = "starting a sync trigger=\"file changes\"";
/// The log line of any sync started in the long-running loop (not the final one).
const STARTING: &str = "starting a sync";

/// `sync-to-remote -s <src> -d bucket/app --watch <extra> -- <rclone_flags>`.
fn watching(
    sandbox: &Sandbox,
    server: &S3Server,
    src: &Path,
    extra: &[&str],
    rclone_flags: &[&str],
) -> Running {
    let args: Vec<&str> = ["--watch"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    spawn_upload(sandbox, server, src, &args, rclone_flags)
}

/// Starts watching and waits until the first (full) sync is done.
fn watching_after_first_sync(
    sandbox: &Sandbox,
    server: &S3Server,
    src: &Path,
    extra: &[&str],
) -> Running {
    let mut vso = watching(sandbox, server, src, extra, &[]);
    vso.wait_for_output("sync finished", 1, LONG);
    vso
}

/// Writes (creates or replaces) `dir/name`, creating parent directories.
fn write(dir: &Path, name: &str, content: &[u8]) {
    write_tree(dir, &[(name, content)]);
}

fn remote(server: &S3Server, name: &str) -> std::path::PathBuf {
    server.path(&format!("bucket/app/{name}"))
}

/// Waits until `bucket/app/<name>` on the server holds exactly `content`.
#[track_caller]
fn wait_on_remote(server: &S3Server, name: &str, content: &[u8]) {
    server.wait_for_object(&format!("bucket/app/{name}"), content, LONG);
}

/// Waits until `bucket/app/<name>` is gone from the server.
#[track_caller]
fn wait_gone_from_remote(server: &S3Server, name: &str) {
    let path = remote(server, name);
    wait_until(&format!("{name} disappears from the remote"), LONG, || {
        !path.exists()
    });
}

#[track_caller]
fn assert_on_remote(server: &S3Server, name: &str, content: &[u8]) {
    server.assert_object(&format!("bucket/app/{name}"), content);
}

/// The files of the local tree and of the remote path, as comparable snapshots.
fn local_and_remote(server: &S3Server, src: &Path) -> (Snapshot, Snapshot) {
    let mut remote = files_only(&snapshot(&server.path("bucket/app")));
    // The program's own objects beside the data (the lease while the watcher runs).
    remote.retain(|name, _| !name.starts_with(".volume-syncing-operator."));
    (files_only(&snapshot(src)), remote)
}

/// Waits until the remote holds exactly the local tree's files.
#[track_caller]
fn wait_until_remote_equals_local(server: &S3Server, src: &Path, step: &str, vso: &mut Running) {
    let deadline = Instant::now() + LONG;
    loop {
        let (local, remote) = local_and_remote(server, src);
        if local == remote {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "after {step}: the remote does not match the local tree\nlocal:  {:?}\nremote: {:?}\n\
                 output:\n{}",
                local.keys().collect::<Vec<_>>(),
                remote.keys().collect::<Vec<_>>(),
                vso.output_so_far()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Puts `name` on the remote through the S3 API, as a writer that ignores the lease would
/// (plain `rclone rcat`; a second `sync-to-remote` is refused while the watcher holds the
/// lease): an object the watched tree does not have.
fn put_stray_object(_sandbox: &Sandbox, server: &S3Server, name: &str, content: &[u8]) {
    use std::io::Write;
    let mut child = std::process::Command::new(rclone())
        .args([
            "--config",
            "/dev/null",
            "rcat",
            &format!(":s3:bucket/app/{name}"),
        ])
        .env("RCLONE_S3_PROVIDER", "Rclone")
        .env("RCLONE_S3_ACCESS_KEY_ID", ACCESS_KEY)
        .env("RCLONE_S3_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("RCLONE_S3_ENDPOINT", server.endpoint())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("cannot start rclone");
    child.stdin.take().unwrap().write_all(content).unwrap();
    assert!(child.wait().unwrap().success(), "rclone rcat of {name}");
    assert_on_remote(server, name, content);
}

/// The log lines containing `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// The time stamp at the start of a text log line.
#[track_caller]
fn timestamp(line: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("no time stamp at the start of {line:?}: {e}"))
}

/// The `kind` of every sync summary ("sync finished") in the log, in order.
fn summary_kinds(log: &str) -> Vec<&str> {
    lines_with(log, "sync finished")
        .into_iter()
        .map(|l| {
            l.split("kind=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no kind in the summary {l:?}"))
        })
        .collect()
}

/// Byte offset of the `n`-th (0-based) occurrence of `needle`, failing loudly when absent.
#[track_caller]
fn nth_position(haystack: &str, needle: &str, n: usize) -> usize {
    haystack
        .match_indices(needle)
        .nth(n)
        .map(|(i, _)| i)
        .unwrap_or_else(|| {
            panic!(
                "output does not contain {needle:?} {} times:\n{haystack}",
                n + 1
            )
        })
}

/// Stops the process with SIGTERM and expects a clean exit.
#[track_caller]
fn stop(vso: Running) -> Output {
    vso.signal(Signal::SIGTERM);
    let out = vso.wait_output(LONG);
    out.assert_code(0);
    out
}

// ---------------------------------------------------------------------------------------------
// Changes reach the remote
// ---------------------------------------------------------------------------------------------

#[test]
fn a_file_written_in_the_watched_tree_reaches_the_remote() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("first.txt", b"first\n")]);
    // No schedule, and the periodic full sync only after an hour: only the watch can upload
    // what is written later.
    let mut vso = watching_after_first_sync(&sandbox, &server, &src, &["--debounce", "500ms"]);
    assert_on_remote(&server, "first.txt", b"first\n");
    let so_far = vso.output_so_far();
    assert!(so_far.contains("watching for changes"), "{so_far}");
    assert_eq!(
        summary_kinds(&so_far),
        ["full"],
        "the first sync is a full one"
    );

    write(&src, "second.txt", b"second\n");
    wait_on_remote(&server, "second.txt", b"second\n");
    vso.wait_for_output("sync finished", 2, LONG);
    let so_far = vso.output_so_far();
    assert_eq!(lines_with(&so_far, BY_CHANGES).len(), 1, "{so_far}");
    assert!(
        so_far.contains("incremental upload of the changed paths"),
        "{so_far}"
    );

    // A file changed in place is uploaded again.
    write(&src, "first.txt", b"first, changed\n");
    wait_on_remote(&server, "first.txt", b"first, changed\n");

    let out = stop(vso);
    assert!(!out.all().contains("sync failed"), "{}", out.all());
    sandbox.assert_config_removed();
}

#[test]
fn a_delete_propagates() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree(
        "src",
        &[
            ("keep.txt", b"keep\n"),
            ("gone.txt", b"gone\n"),
            ("tree/a.txt", b"a\n"),
            ("tree/deeper/b.txt", b"b\n"),
        ],
    );
    let vso = watching_after_first_sync(&sandbox, &server, &src, &["--debounce", "300ms"]);
    assert_on_remote(&server, "gone.txt", b"gone\n");
    assert_on_remote(&server, "tree/deeper/b.txt", b"b\n");

    fs::remove_file(src.join("gone.txt")).unwrap();
    wait_gone_from_remote(&server, "gone.txt");
    // A whole directory tree.
    fs::remove_dir_all(src.join("tree")).unwrap();
    wait_gone_from_remote(&server, "tree/a.txt");
    wait_gone_from_remote(&server, "tree/deeper/b.txt");

    assert_on_remote(&server, "keep.txt", b"keep\n");
    let all = stop(vso).all();
    let kinds = summary_kinds(&all);
    assert!(
        kinds[1..].contains(&"incremental"),
        "the deletions were incremental syncs: {kinds:?}\n{all}"
    );
}

#[test]
fn new_subdirectories_are_watched_and_uploaded() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("top.txt", b"top\n")]);
    let mut vso = watching_after_first_sync(&sandbox, &server, &src, &["--debounce", "300ms"]);

    // A new directory with a file created in it at once, before a watch on it can exist.
    fs::create_dir(src.join("new")).unwrap();
    fs::write(src.join("new/right-away.txt"), b"right away\n").unwrap();
    wait_on_remote(&server, "new/right-away.txt", b"right away\n");

    // A file written later in the new directory: seen through the watch added for it.
    std::thread::sleep(Duration::from_millis(500));
    fs::write(src.join("new/later.txt"), b"later\n").unwrap();
    wait_on_remote(&server, "new/later.txt", b"later\n");

    // A nested directory, later, and a file in it later still.
    fs::create_dir_all(src.join("new/nested/deep")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    fs::write(src.join("new/nested/deep/file.txt"), b"deep\n").unwrap();
    wait_on_remote(&server, "new/nested/deep/file.txt", b"deep\n");

    // And a change inside it once more, after its own sync.
    std::thread::sleep(Duration::from_millis(500));
    fs::write(src.join("new/nested/deep/file.txt"), b"deep, changed\n").unwrap();
    wait_on_remote(&server, "new/nested/deep/file.txt", b"deep, changed\n");

    wait_until_remote_equals_local(&server, &src, "the new directories", &mut vso);
    let out = stop(vso);
    assert!(
        summary_kinds(&out.all())[1..]
            .iter()
            .all(|&k| k == "incremental"),
        "{}",
        out.all()
    );
}

#[test]
fn a_directory_rename_propagates() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree(
        "src",
        &[
            ("old/a.txt", b"a\n"),
            ("old/sub/b.txt", b"b\n"),
            ("other.txt", b"other\n"),
        ],
    );
    let mut vso = watching_after_first_sync(&sandbox, &server, &src, &["--debounce", "300ms"]);
    assert_on_remote(&server, "old/sub/b.txt", b"b\n");

    fs::rename(src.join("old"), src.join("new")).unwrap();
    wait_on_remote(&server, "new/a.txt", b"a\n");
    wait_on_remote(&server, "new/sub/b.txt", b"b\n");
    wait_gone_from_remote(&server, "old/a.txt");
    wait_gone_from_remote(&server, "old/sub/b.txt");

    // The watches follow the rename: a file written later in the renamed tree goes to the new
    // prefix, and nothing comes back under the old one.
    std::thread::sleep(Duration::from_millis(500));
    fs::write(src.join("new/sub/c.txt"), b"c\n").unwrap();
    wait_on_remote(&server, "new/sub/c.txt", b"c\n");
    assert!(!remote(&server, "old/sub/c.txt").exists());

    // A directory moved into another one.
    fs::create_dir(src.join("box")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    fs::rename(src.join("new"), src.join("box/moved")).unwrap();
    wait_on_remote(&server, "box/moved/sub/c.txt", b"c\n");
    wait_gone_from_remote(&server, "new/sub/c.txt");

    wait_until_remote_equals_local(&server, &src, "the renames", &mut vso);
    stop(vso);
}

// ---------------------------------------------------------------------------------------------
// When syncs run
// ---------------------------------------------------------------------------------------------

#[test]
fn a_burst_of_writes_causes_few_syncs() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("seed.txt", b"seed\n")]);
    let mut vso = watching_after_first_sync(&sandbox, &server, &src, &["--debounce", "1s"]);

    for i in 0..100 {
        write(
            &src,
            &format!("burst/file-{i:03}.txt"),
            format!("burst {i}\n").as_bytes(),
        );
    }
    for i in 0..100 {
        wait_on_remote(
            &server,
            &format!("burst/file-{i:03}.txt"),
            format!("burst {i}\n").as_bytes(),
        );
    }
    // Anything still pending would start within the debounce; give it ample time.
    std::thread::sleep(Duration::from_secs(4));
    let so_far = vso.output_so_far();
    let started = lines_with(&so_far, STARTING).len();
    let finished = lines_with(&so_far, "sync finished").len();
    assert!(
        started <= 3 && finished <= 3,
        "100 quick writes caused {started} syncs (the first one included); expected at most 3:\n{so_far}"
    );
    assert!(!lines_with(&so_far, BY_CHANGES).is_empty(), "{so_far}");
    stop(vso);
}

#[test]
fn min_interval_spaces_the_syncs() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("seed.txt", b"seed\n")]);
    let mut vso = watching_after_first_sync(
        &sandbox,
        &server,
        &src,
        &["--debounce", "200ms", "--min-interval", "5s"],
    );

    write(&src, "one.txt", b"one\n");
    vso.wait_for_output(BY_CHANGES, 1, LONG);
    // One second after the first change: without --min-interval this would start a sync
    // ~200ms later.
    std::thread::sleep(Duration::from_secs(1));
    write(&src, "two.txt", b"two\n");
    vso.wait_for_output(BY_CHANGES, 2, LONG);
    wait_on_remote(&server, "one.txt", b"one\n");
    wait_on_remote(&server, "two.txt", b"two\n");

    let so_far = vso.output_so_far();
    let starts = lines_with(&so_far, BY_CHANGES);
    let gap = timestamp(starts[1]) - timestamp(starts[0]);
    assert!(
        gap >= chrono::Duration::milliseconds(4000),
        "the second sync started {gap} after the first, despite --min-interval 5s:\n{so_far}"
    );
    stop(vso);
}

#[test]
fn changes_during_a_running_sync_cause_exactly_one_follow_up() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    // ~20 s at 100 KiB/s: certainly still running while the files below are written.
    let big = random_bytes(2 * MIB, 7);
    let src = sandbox.tree("src", &[("big.bin", &big)]);
    let needle = src.to_string_lossy().into_owned();
    let mut vso = watching(&sandbox, &server, &src, &["--debounce", "300ms"], &SLOW);

    wait_until("the slow first sync runs", Duration::from_secs(30), || {
        !sync_pids_with(&needle).is_empty()
    });
    // Several changes, each more than the debounce apart: without a sync running, each would
    // start its own.
    for name in ["during-1.txt", "during-2.txt", "during-3.txt"] {
        std::thread::sleep(Duration::from_millis(800));
        write(&src, name, name.as_bytes());
    }
    let so_far = vso.output_so_far();
    assert!(
        !so_far.contains("sync finished"),
        "the slow sync was still running when the files were written:\n{so_far}"
    );
    assert_eq!(lines_with(&so_far, STARTING).len(), 1, "{so_far}");

    for name in ["during-1.txt", "during-2.txt", "during-3.txt"] {
        wait_on_remote(&server, name, name.as_bytes());
    }
    vso.wait_for_output("sync finished", 2, LONG);
    // Nothing else is pending: no third sync may start.
    std::thread::sleep(Duration::from_secs(3));
    let out = stop(vso);
    let all = out.all();
    assert_eq!(
        lines_with(&all, STARTING).len(),
        2,
        "exactly one follow-up sync:\n{all}"
    );
    assert_eq!(lines_with(&all, BY_CHANGES).len(), 1, "{all}");
    // Never two at once: the follow-up started after the slow sync had finished.
    assert!(
        nth_position(&all, "sync finished", 0) < nth_position(&all, BY_CHANGES, 0),
        "the follow-up started before the slow sync finished:\n{all}"
    );
    assert_eq!(summary_kinds(&all), ["full", "incremental"], "{all}");
    let follow_up = lines_with(&all, "sync finished")[1];
    let bytes: usize = follow_up
        .split("transferred_bytes=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no transferred_bytes in {follow_up:?}"));
    assert!(
        bytes < 1000,
        "the follow-up uploaded the small files, not the big one again: {follow_up}"
    );
    assert_on_remote(&server, "big.bin", &big);
}

#[test]
fn reading_files_does_not_postpone_a_sync() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("read-often.txt", b"read often\n")]);
    let vso = watching_after_first_sync(&sandbox, &server, &src, &["--debounce", "1s"]);

    // An application that reads its files more often than the debounce: reads are not
    // changes, so they must not keep restarting the quiet period.
    let stop_reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop_reading = std::sync::Arc::clone(&stop_reading);
        let path = src.join("read-often.txt");
        std::thread::spawn(move || {
            while !stop_reading.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = fs::read(&path);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    write(
        &src,
        "written.txt",
        b"written while the other file is read\n",
    );
    let written = Instant::now();
    let path = remote(&server, "written.txt");
    while !path.exists() && written.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_reading.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    assert!(
        path.exists(),
        "a file written while another is read every 100ms did not reach the remote within 30s"
    );
    stop(vso);
}

#[test]
fn watch_and_schedule_both_trigger_syncs() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("seed.txt", b"seed\n")]);
    let mut vso = watching_after_first_sync(
        &sandbox,
        &server,
        &src,
        &["--schedule", "@every 2s", "--debounce", "100ms"],
    );
    vso.wait_for_output("starting a sync trigger=\"schedule\"", 2, LONG);

    // A tick may take a change's sync over (it syncs everything), so write until one sync
    // was started by the change itself.
    let mut attempt = 0;
    while !vso.output_so_far().contains(BY_CHANGES) {
        attempt += 1;
        assert!(
            attempt <= 10,
            "no sync was started by file changes:\n{}",
            vso.output_so_far()
        );
        let name = format!("change-{attempt}.txt");
        write(&src, &name, name.as_bytes());
        wait_on_remote(&server, &name, name.as_bytes());
        std::thread::sleep(Duration::from_millis(300));
    }

    let out = stop(vso);
    let all = out.all();
    assert!(
        all.contains("schedule=@every 2s") && all.contains("watch=true"),
        "{all}"
    );
    // Scheduled syncs are full ones.
    assert!(
        summary_kinds(&all).iter().filter(|&&k| k == "full").count() >= 3,
        "{all}"
    );
    assert!(!all.contains("sync failed"), "{all}");
}

// ---------------------------------------------------------------------------------------------
// Incremental syncs
// ---------------------------------------------------------------------------------------------

#[test]
fn incremental_syncs_touch_only_the_changed_paths() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n"), ("dir/b.txt", b"b\n")]);
    let mut vso = watching_after_first_sync(&sandbox, &server, &src, &["--debounce", "300ms"]);

    // An object the local tree does not have: a full sync would delete it, an incremental one
    // does not look at it.
    put_stray_object(&sandbox, &server, "dir/stray.txt", b"stray\n");

    write(&src, "c.txt", b"c\n");
    wait_on_remote(&server, "c.txt", b"c\n");
    fs::remove_file(src.join("a.txt")).unwrap();
    wait_gone_from_remote(&server, "a.txt");
    write(&src, "dir/b.txt", b"b, changed\n");
    wait_on_remote(&server, "dir/b.txt", b"b, changed\n");
    vso.wait_for_output("sync finished", 4, LONG);

    assert_on_remote(&server, "dir/stray.txt", b"stray\n");
    let out = stop(vso);
    let all = out.all();
    let kinds = summary_kinds(&all);
    assert_eq!(kinds[0], "full", "{all}");
    assert!(
        kinds[1..].len() >= 3 && kinds[1..].iter().all(|&k| k == "incremental"),
        "every sync after the first is incremental: {kinds:?}\n{all}"
    );
    assert!(
        lines_with(&all, "incremental upload of the changed paths").len() >= 3,
        "{all}"
    );
}

#[test]
fn a_periodic_full_sync_catches_what_the_watch_cannot_see() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let mut vso = watching_after_first_sync(
        &sandbox,
        &server,
        &src,
        &["--debounce", "300ms", "--full-sync-every", "10s"],
    );
    put_stray_object(&sandbox, &server, "stray.txt", b"stray\n");
    wait_gone_from_remote(&server, "stray.txt");
    vso.wait_for_output("starting a sync trigger=\"periodic full sync\"", 1, LONG);
    assert_on_remote(&server, "a.txt", b"a\n");
    let out = stop(vso);
    assert!(
        summary_kinds(&out.all()).iter().all(|&k| k == "full"),
        "{}",
        out.all()
    );
}

/// A change made to the watched tree.
type Step = Box<dyn Fn(&Path)>;

#[test]
fn after_many_incremental_syncs_the_remote_equals_the_local_tree() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree(
        "src",
        &[
            ("a.txt", b"a\n"),
            ("docs/readme.md", b"readme\n"),
            ("docs/old/notes.txt", b"notes\n"),
            ("data/1.bin", &random_bytes(10_000, 1)),
            ("data/2.bin", &random_bytes(20_000, 2)),
            ("empty-later/x.txt", b"x\n"),
        ],
    );
    let mut vso = watching_after_first_sync(&sandbox, &server, &src, &["--debounce", "300ms"]);
    wait_until_remote_equals_local(&server, &src, "the first sync", &mut vso);

    let steps: Vec<(&str, Step)> = vec![
        (
            "new files in new and old directories",
            Box::new(|s| {
                write(s, "b.txt", b"b\n");
                write(s, "docs/new/deep/c.txt", b"c\n");
                write(s, "data/3.bin", &random_bytes(5_000, 3));
            }),
        ),
        (
            "a file appended to",
            Box::new(|s| {
                use std::io::Write;
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(s.join("a.txt"))
                    .unwrap();
                f.write_all(b"more\n").unwrap();
            }),
        ),
        (
            "a file rewritten",
            Box::new(|s| write(s, "data/1.bin", &random_bytes(12_345, 11))),
        ),
        (
            "an atomic save (write a temporary file, rename it over the old one)",
            Box::new(|s| {
                write(s, "docs/readme.md.tmp", b"readme, saved atomically\n");
                fs::rename(s.join("docs/readme.md.tmp"), s.join("docs/readme.md")).unwrap();
            }),
        ),
        (
            "a deleted file",
            Box::new(|s| fs::remove_file(s.join("data/2.bin")).unwrap()),
        ),
        (
            "a deleted directory tree",
            Box::new(|s| fs::remove_dir_all(s.join("docs/old")).unwrap()),
        ),
        (
            "a directory emptied, then removed",
            Box::new(|s| {
                fs::remove_file(s.join("empty-later/x.txt")).unwrap();
                fs::remove_dir(s.join("empty-later")).unwrap();
            }),
        ),
        (
            "a renamed file",
            Box::new(|s| fs::rename(s.join("b.txt"), s.join("docs/b-renamed.txt")).unwrap()),
        ),
        (
            "file names with glob characters",
            Box::new(|s| {
                write(s, "odd/[1] {a,b} *?.txt", b"odd\n");
                write(s, "odd/back\\slash.txt", b"backslash\n");
            }),
        ),
        (
            "a file created and deleted at once",
            Box::new(|s| {
                write(s, "fleeting.txt", b"fleeting\n");
                fs::remove_file(s.join("fleeting.txt")).unwrap();
            }),
        ),
        (
            "a directory renamed and a file changed in it",
            Box::new(|s| {
                fs::rename(s.join("docs/new"), s.join("docs/renamed")).unwrap();
                write(s, "docs/renamed/deep/c.txt", b"c, changed\n");
            }),
        ),
    ];
    for (what, step) in &steps {
        step(&src);
        wait_until_remote_equals_local(&server, &src, what, &mut vso);
    }

    // Once everything has settled, the remote is exactly the local tree.
    std::thread::sleep(Duration::from_secs(2));
    let (local, remote) = local_and_remote(&server, &src);
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        remote.keys().collect::<Vec<_>>()
    );
    assert!(local == remote, "the contents differ");
    assert!(local.contains_key("odd/[1] {a,b} *?.txt"), "{local:?}");

    let out = stop(vso);
    let all = out.all();
    let kinds = summary_kinds(&all);
    assert!(
        kinds.len() >= 6 && kinds[1..].iter().all(|&k| k == "incremental"),
        "several syncs, all incremental after the first: {kinds:?}\n{all}"
    );
    assert!(!all.contains("sync failed"), "{all}");
}

// ---------------------------------------------------------------------------------------------
// Shutdown and safety
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_in_watch_mode_runs_the_final_sync() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    // A debounce of a minute: only the final sync can upload what is written below.
    let vso = watching_after_first_sync(&sandbox, &server, &src, &["--debounce", "1m"]);

    write(&src, "just-before.txt", b"written just before SIGTERM\n");
    fs::remove_file(src.join("a.txt")).unwrap();
    vso.signal(Signal::SIGTERM);
    let out = vso.wait_output(LONG);
    out.assert_code(0)
        .assert_contains("received SIGTERM")
        .assert_contains("running the final sync");
    assert_on_remote(&server, "just-before.txt", b"written just before SIGTERM\n");
    assert!(
        !remote(&server, "a.txt").exists(),
        "the final sync also deletes"
    );
    let all = out.all();
    assert_eq!(summary_kinds(&all), ["full", "incremental"], "{all}");
    assert!(!default_pid_file(&sandbox).exists());
    assert!(sandbox.leftover_configs().is_empty());
}

#[test]
fn an_emptied_source_is_refused_in_watch_mode_too() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n"), ("dir/b.txt", b"b\n")]);
    let mut vso = watching_after_first_sync(&sandbox, &server, &src, &["--debounce", "200ms"]);
    assert_on_remote(&server, "dir/b.txt", b"b\n");

    // The volume "disappears": everything in the source is deleted.
    fs::remove_file(src.join("a.txt")).unwrap();
    fs::remove_dir_all(src.join("dir")).unwrap();
    vso.wait_for_output("empty-source", 1, LONG);
    assert!(
        vso.child.try_wait().unwrap().is_none(),
        "a refusal does not stop watch mode:\n{}",
        vso.output_so_far()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_on_remote(&server, "a.txt", b"a\n");
    assert_on_remote(&server, "dir/b.txt", b"b\n");

    // The final sync is refused as well, and the process says so with exit code 3.
    vso.signal(Signal::SIGTERM);
    let out = vso.wait_output(LONG);
    out.assert_code(3)
        .assert_contains("running the final sync")
        .assert_contains("--force-even-if-remote-would-be-cleared");
    assert!(
        lines_with(&out.all(), "empty-source").len() >= 2,
        "{}",
        out.all()
    );
    assert_on_remote(&server, "a.txt", b"a\n");
    assert_on_remote(&server, "dir/b.txt", b"b\n");
}

#[test]
fn watch_flags_are_usage_errors_where_they_do_not_apply() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    let dst = sandbox.dir("restored");
    // Watching a restore makes no sense: the remote has no inotify.
    let out = Vso::s3(&sandbox, &server)
        .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(&dst)
        .arg("--watch")
        .run();
    out.assert_code(2).assert_contains("--watch");
    // The timing flags need --watch.
    for flags in [
        ["--debounce", "1s"],
        ["--min-interval", "1s"],
        ["--full-sync-every", "1m"],
    ] {
        let out = Vso::s3(&sandbox, &server)
            .args(["sync-to-remote", "-s"])
            .arg(&src)
            .args(["-d", "bucket/app"])
            .args(flags)
            .run();
        out.assert_code(2).assert_contains(flags[0]);
    }
    // A bad duration.
    watching(&sandbox, &server, &src, &["--debounce", "soon"], &[])
        .wait_output(LONG)
        .assert_code(2)
        .assert_contains("--debounce");
    assert!(
        files_only(&snapshot(&server.path("bucket"))).is_empty(),
        "nothing ran"
    );
}

// ---------------------------------------------------------------------------------------------
// The inotify watch limit
// ---------------------------------------------------------------------------------------------

/// The binary, watching, in a user namespace of its own whose inotify watch limit is `limit`:
/// `/proc/sys/user/max_inotify_watches` is per user namespace (and `fs.inotify.max_user_watches`
/// is that of the initial one), so the limit is exhausted for this process only, without
/// touching the machine's. Needs `unshare` (util-linux) and user namespaces. Its output goes to
/// `log`; it runs as the test's user mapped to root, with a TMPDIR of that user's.
struct Limited {
    child: std::process::Child,
    log: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl Limited {
    fn spawn(limit: u32, sandbox: &Sandbox, server: &S3Server, src: &Path, extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let log = sandbox.path(&format!("limited-{limit}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = std::process::Command::new("unshare")
            .args(["-Ur", "sh", "-c"])
            .arg(format!(
                "echo {limit} > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\""
            ))
            .arg(binary())
            .args(["sync-to-remote", "-s"])
            .arg(src)
            .args(["-d", "bucket/app", "--watch"])
            .args(extra)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", tmp.path())
            .env("TMPDIR", tmp.path())
            .env("RCLONE_BINARY", rclone())
            .envs(server.remote_env())
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect(
                "cannot run `unshare` (util-linux): this test lowers the inotify watch limit in a \
                 user namespace of its own",
            );
        Limited {
            child,
            log,
            _tmp: tmp,
        }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    #[track_caller]
    fn wait_for_output(&mut self, needle: &str, count: usize) {
        let deadline = Instant::now() + LONG;
        while self.output().matches(needle).count() < count {
            if Instant::now() > deadline || self.child.try_wait().unwrap().is_some() {
                std::thread::sleep(Duration::from_millis(200));
                if self.output().matches(needle).count() >= count {
                    return;
                }
                panic!(
                    "no {count}x {needle:?} (exited: {:?}); output:\n{}",
                    self.child.try_wait().unwrap(),
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[track_caller]
    fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the binary did not exit; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_exhausted_inotify_limit_at_start_is_a_clear_error() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("dir-{i:02}/file.txt"), b"x\n".to_vec()))
        .collect();
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let src = sandbox.tree("src", &files);
    // 21 directories to watch, 8 watches allowed.
    let mut vso = Limited::spawn(8, &sandbox, &server, &src, &[]);
    let code = vso.wait();
    let out = vso.output();
    assert_eq!(
        code, 2,
        "a watch that cannot be set up is a configuration error:\n{out}"
    );
    assert!(
        out.contains("fs.inotify.max_user_watches") && out.contains("cannot watch"),
        "the error names the limit to raise:\n{out}"
    );
    assert!(!out.contains(STARTING), "no sync started:\n{out}");
    assert!(
        files_only(&snapshot(&server.path("bucket"))).is_empty(),
        "nothing reached the remote"
    );
}

#[test]
fn an_exhausted_inotify_limit_later_falls_back_to_a_full_sync() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree("src", &[("a.txt", b"a\n")]);
    // The root needs one watch; the new directories below soon exhaust the other three.
    let mut vso = Limited::spawn(4, &sandbox, &server, &src, &["--debounce", "300ms"]);
    vso.wait_for_output("sync finished", 1);

    for i in 0..10 {
        write(
            &src,
            &format!("new-{i:02}/file.txt"),
            format!("{i}\n").as_bytes(),
        );
    }
    vso.wait_for_output("max_user_watches", 1);
    for i in 0..10 {
        wait_on_remote(
            &server,
            &format!("new-{i:02}/file.txt"),
            format!("{i}\n").as_bytes(),
        );
    }
    vso.wait_for_output("sync finished", 2);
    let out = vso.output();
    let error_at = nth_position(&out, "max_user_watches", 0);
    let next_summary = out[error_at..]
        .lines()
        .find(|l| l.contains("sync finished"))
        .unwrap_or_else(|| panic!("no sync after the watcher's error:\n{out}"));
    assert!(
        next_summary.contains("kind=\"full\""),
        "after the watcher's error the next sync is a full one: {next_summary}\n{out}"
    );
    assert!(vso.child.try_wait().unwrap().is_none(), "{out}");

    // Parts of the tree may now be unwatched, so later syncs stay full ones.
    let finished = out.matches("sync finished").count();
    write(&src, "after-the-error.txt", b"later\n");
    wait_on_remote(&server, "after-the-error.txt", b"later\n");
    vso.wait_for_output("sync finished", finished + 1);
    let out = vso.output();
    let later = out
        .lines()
        .filter(|l| l.contains("sync finished"))
        .nth(finished)
        .unwrap_or_else(|| panic!("no later sync:\n{out}"));
    assert!(
        later.contains("kind=\"full\""),
        "a later sync after the watcher's error is a full one too: {later}\n{out}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vso.child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let code = vso.wait();
    assert_eq!(code, 0, "{}", vso.output());
}

/// The default pid file of a binary started by `Vso` (its TMPDIR is the sandbox's tmp).
fn default_pid_file(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.tmp().join("volume-syncing-operator.pid")
}
