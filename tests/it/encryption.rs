//! End-to-end encryption (rclone crypt) through a real S3 server: nothing readable is stored,
//! the right key restores byte-identical trees in either of its forms, a wrong key is refused
//! before anything changes (with and without the check object), and the passphrase never
//! shows up in logs, error messages, or any rclone process's command line or environment.

use crate::support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const PASSPHRASE: &str = "correct horse battery staple 42";
const SALT: &str = "pinch of himalayan salt 1987";
const WRONG_PASSPHRASE: &str = "incorrect donkey battery clip 17";
const REMOTE: &str = "bucket/app";
/// The check object's name inside the encrypted remote.
const CHECK_OBJECT: &str = ".volume-syncing-operator.keycheck";
/// The metadata manifest every successful upload writes (see tests/it/fidelity.rs).
const MANIFEST: &str = ".volume-syncing-operator.manifest";
/// The plain marker of an encrypted path (tests/it/trust_encryption.rs): one plain name, no key.
const ENCRYPTED_MARKER: &str = ".volume-syncing-operator.encrypted";

/// Distinctive pieces of the sample tree's file and directory names.
const NAME_MARKERS: [&str; 5] = [
    "quarterly-report",
    "payroll-archive",
    "confidential-notes",
    "zażółć",
    "blobfile",
];
/// Distinctive pieces of the sample tree's contents.
const CONTENT_MARKERS: [&str; 4] = [
    "CONTENT-MARKER-the-eagle-lands-at-midnight",
    "CONTENT-MARKER-launch-codes-0451",
    "CONTENT-MARKER-ćma-żółta-gęś",
    "CONTENT-MARKER-inside-the-blob",
];
const BLOB_SEED: u64 = 4242;

fn blob() -> Vec<u8> {
    let mut blob = random_bytes(256 * 1024, BLOB_SEED);
    let marker = CONTENT_MARKERS[3].as_bytes();
    blob[100_000..100_000 + marker.len()].copy_from_slice(marker);
    blob
}

/// A tree whose names and contents carry the markers above.
fn sample_tree(sandbox: &Sandbox, name: &str) -> PathBuf {
    let blob = blob();
    let notes = format!("# notes\n{}\nmore text\n", CONTENT_MARKERS[1]);
    let polish = format!("{}\n", CONTENT_MARKERS[2]);
    sandbox.tree(
        name,
        &[
            (
                "quarterly-report.txt",
                format!("{}\n", CONTENT_MARKERS[0]).as_bytes(),
            ),
            (
                "payroll-archive/2024/confidential-notes.md",
                notes.as_bytes(),
            ),
            ("zażółć/plik.txt", polish.as_bytes()),
            ("payroll-archive/blobfile.bin", &blob),
            ("zero-length", b""),
            ("empty-dir/", b""),
        ],
    )
}

/// A different tree, for "local data that must survive" and second uploads.
fn other_tree(sandbox: &Sandbox, name: &str) -> PathBuf {
    sandbox.tree(
        name,
        &[
            ("keep-me.txt", b"local data that must survive\n"),
            ("sub/keep-me-too.bin", &random_bytes(4096, 99)),
        ],
    )
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file the S3 server stores (relative to its data directory) with its raw bytes.
fn stored_files(server: &S3Server) -> BTreeMap<String, Vec<u8>> {
    support::snapshot_all(&server.data)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}

/// Every object stored under `bucket/<path>`, relative to it, the program's own included (they
/// are at rest too).
fn stored_under(server: &S3Server, path: &str) -> BTreeMap<String, Vec<u8>> {
    support::snapshot_all(&server.path(path))
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}

fn file_count(root: &Path) -> usize {
    files_only(&snapshot(root)).len()
}

/// Fails when any stored name or byte carries a plaintext marker.
#[track_caller]
fn assert_no_plaintext(server: &S3Server, check_names: bool) {
    let stored = stored_files(server);
    assert!(!stored.is_empty(), "the server stores nothing at all");
    let blob = blob();
    let blob_pieces = [&blob[..64], &blob[5000..5064], &blob[200_000..200_064]];
    for (name, bytes) in &stored {
        if check_names {
            for marker in NAME_MARKERS {
                assert!(
                    !name.contains(marker),
                    "stored name {name:?} contains the plaintext name {marker:?}"
                );
                assert!(
                    !contains_bytes(bytes, marker.as_bytes()),
                    "stored file {name:?} contains the plaintext name {marker:?}"
                );
            }
        }
        for marker in CONTENT_MARKERS {
            assert!(
                !contains_bytes(bytes, marker.as_bytes()),
                "stored file {name:?} contains the plaintext content {marker:?}"
            );
        }
        for piece in blob_pieces {
            assert!(
                !contains_bytes(bytes, piece),
                "stored file {name:?} contains plaintext bytes of the blob"
            );
        }
    }
}

/// Obscures a secret with the real rclone, through stdin (as the program does).
fn obscure(plain: &str) -> String {
    let mut child = Command::new(rclone())
        .args(["obscure", "-"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start rclone obscure");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plain.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "rclone obscure failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let obscured = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!obscured.is_empty() && obscured != plain);
    obscured
}

fn with_env(vso: &mut Vso, env: &[(&str, &str)]) {
    for (k, v) in env {
        vso.env(k, v);
    }
}

/// `sync-to-remote -s <src> -d bucket/app` with `env` and further arguments.
fn upload(
    sandbox: &Sandbox,
    server: &S3Server,
    src: &Path,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    upload_to(sandbox, server, src, REMOTE, env, extra)
}

fn upload_to(
    sandbox: &Sandbox,
    server: &S3Server,
    src: &Path,
    remote: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    let mut vso = Vso::s3(sandbox, server);
    vso.args(["sync-to-remote", "-s"])
        .arg(src)
        .args(["-d", remote]);
    with_env(&mut vso, env);
    vso.args(extra).run()
}

/// `remote-to-local-sync -s bucket/app -d <dst>` with `env` and further arguments.
fn restore(
    sandbox: &Sandbox,
    server: &S3Server,
    dst: &Path,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    restore_from(sandbox, server, REMOTE, dst, env, extra)
}

fn restore_from(
    sandbox: &Sandbox,
    server: &S3Server,
    remote: &str,
    dst: &Path,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    let mut vso = Vso::s3(sandbox, server);
    vso.args(["remote-to-local-sync", "-s", remote, "-d"])
        .arg(dst);
    with_env(&mut vso, env);
    vso.args(extra).run()
}

#[track_caller]
fn assert_same_files(restored: &Path, original: &Path) {
    let restored = files_only(&snapshot(restored));
    let original = files_only(&snapshot(original));
    assert!(!original.is_empty());
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        original.keys().collect::<Vec<_>>(),
        "restored names differ"
    );
    assert!(restored == original, "restored contents differ");
}

#[track_caller]
fn assert_key_mismatch(out: &Output) {
    out.assert_code(3)
        .assert_contains("encryption-key-mismatch")
        .assert_contains("does not match");
}

/// An rclone.conf of the test's own, with `[remote]` pointing at `server` and `[crypt]`
/// wrapping `remote:bucket/app` with `crypt_options`, for driving plain rclone.
fn own_rclone_conf(
    sandbox: &Sandbox,
    server: &S3Server,
    crypt_options: &[(&str, &str)],
) -> PathBuf {
    let mut text = String::from("[remote]\n");
    for (k, v) in server.remote_env() {
        let key = k.strip_prefix("REMOTE_").unwrap().to_ascii_lowercase();
        text.push_str(&format!("{key} = {v}\n"));
    }
    text.push_str(&format!(
        "\n[crypt]\ntype = crypt\nremote = remote:{REMOTE}\n"
    ));
    for (k, v) in crypt_options {
        text.push_str(&format!("{k} = {v}\n"));
    }
    let path = sandbox.path("test-rclone.conf");
    fs::write(&path, text).unwrap();
    path
}

/// Runs plain rclone with `conf`; fails loudly unless it succeeds. Returns stdout.
#[track_caller]
fn plain_rclone(conf: &Path, args: &[&str]) -> String {
    let out = Command::new(rclone())
        .arg("--config")
        .arg(conf)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("cannot start rclone");
    assert!(
        out.status.success(),
        "rclone {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The stored (encrypted) name of the check object under `conf`'s key.
fn stored_check_object_name(conf: &Path) -> String {
    let out = plain_rclone(conf, &["cryptdecode", "--reverse", "crypt:", CHECK_OBJECT]);
    let name = out.split('\t').nth(1).unwrap().trim().to_string();
    assert!(!name.is_empty() && name != CHECK_OBJECT, "{out}");
    name
}

#[test]
fn upload_stores_neither_plaintext_names_nor_plaintext_contents() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    upload(
        &sandbox,
        &server,
        &src,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &[],
    )
    .assert_code(0);

    let stored = stored_under(&server, REMOTE);
    assert_eq!(
        stored.len(),
        file_count(&src) + 4,
        "one object per file plus the check object, the upload record, the manifest and the \
         plain marker: {:?}",
        stored.keys()
    );
    assert_no_plaintext(&server, true);
    // The check object is there, under its encrypted name.
    let conf = own_rclone_conf(&sandbox, &server, &[("password", &obscure(PASSPHRASE))]);
    let check = stored_check_object_name(&conf);
    assert!(
        stored.contains_key(&check),
        "the check object {check} was written: {:?}",
        stored.keys()
    );
    assert_eq!(
        plain_rclone(&conf, &["cat", &format!("crypt:{CHECK_OBJECT}")]),
        "volume-syncing-operator key check v1\n"
    );
}

#[test]
fn restore_with_the_right_key_is_byte_identical_and_a_wrong_salt_is_refused() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    let key = [
        ("ENCRYPTION_PASSPHRASE", PASSPHRASE),
        ("ENCRYPTION_SALT", SALT),
    ];
    upload(&sandbox, &server, &src, &key, &[]).assert_code(0);
    assert_no_plaintext(&server, true);

    let restored = sandbox.path("restored");
    restore(&sandbox, &server, &restored, &key, &[]).assert_code(0);
    assert_same_files(&restored, &src);

    // The same passphrase without the salt is a different key.
    let local = other_tree(&sandbox, "local");
    let before = snapshot(&local);
    let out = restore(
        &sandbox,
        &server,
        &local,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &[],
    );
    assert_key_mismatch(&out);
    assert_eq!(snapshot(&local), before, "local files untouched");
    assert!(sandbox.leftover_configs().is_empty());
}

#[test]
fn plain_and_obscured_forms_of_the_same_secrets_read_each_others_data() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let obscured_pass = obscure(PASSPHRASE);
    let obscured_salt = obscure(SALT);
    let plain = [
        ("ENCRYPTION_PASSPHRASE", PASSPHRASE),
        ("ENCRYPTION_SALT", SALT),
    ];
    let obscured = [
        ("ENCRYPTED_PASSWORD", obscured_pass.as_str()),
        ("ENCRYPTED_PASSWORD2", obscured_salt.as_str()),
    ];

    // Plain upload, obscured restore.
    let src = sample_tree(&sandbox, "src");
    upload(&sandbox, &server, &src, &plain, &[]).assert_code(0);
    let restored = sandbox.path("restored-1");
    restore(&sandbox, &server, &restored, &obscured, &[]).assert_code(0);
    assert_same_files(&restored, &src);

    // Obscured upload of a changed tree onto the same remote passes the key check …
    fs::write(src.join("quarterly-report.txt"), b"second version\n").unwrap();
    fs::remove_file(src.join("zero-length")).unwrap();
    write_tree(&src, &[("added/new-file.txt", b"added later\n")]);
    give_to_runner(&src);
    upload(&sandbox, &server, &src, &obscured, &[]).assert_code(0);
    // … and a plain restore reads it.
    let restored = sandbox.path("restored-2");
    restore(&sandbox, &server, &restored, &plain, &[]).assert_code(0);
    assert_same_files(&restored, &src);

    // -e password=<obscured> is the same as ENCRYPTED_PASSWORD, and a fresh remote written
    // with the obscured form reads back with the plain one.
    let other = other_tree(&sandbox, "other");
    upload_to(
        &sandbox,
        &server,
        &other,
        "bucket/other",
        &[],
        &[
            "-e",
            &format!("password={obscured_pass}"),
            "-e",
            &format!("password2={obscured_salt}"),
        ],
    )
    .assert_code(0);
    let restored = sandbox.path("restored-3");
    restore_from(&sandbox, &server, "bucket/other", &restored, &plain, &[]).assert_code(0);
    assert_same_files(&restored, &other);
    assert_no_plaintext(&server, true);
}

#[test]
fn restore_with_a_wrong_key_is_refused_and_local_files_are_untouched() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    upload(
        &sandbox,
        &server,
        &src,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &[],
    )
    .assert_code(0);
    let remote_before = snapshot(&server.data);

    let local = other_tree(&sandbox, "local");
    let local_before = snapshot(&local);
    let wrong = [("ENCRYPTION_PASSPHRASE", WRONG_PASSPHRASE)];
    assert_key_mismatch(&restore(&sandbox, &server, &local, &wrong, &[]));
    assert_eq!(snapshot(&local), local_before, "local files untouched");
    // Overriding the other safety valves does not override the key check.
    let out = restore(
        &sandbox,
        &server,
        &local,
        &wrong,
        &["--force-delete-local-dir"],
    );
    assert_key_mismatch(&out);
    assert_eq!(snapshot(&local), local_before, "local files untouched");
    // The obscured form of a wrong key is refused the same way.
    let obscured_wrong = obscure(WRONG_PASSPHRASE);
    let out = restore(
        &sandbox,
        &server,
        &local,
        &[("ENCRYPTED_PASSWORD", obscured_wrong.as_str())],
        &[],
    );
    assert_key_mismatch(&out);
    assert_eq!(snapshot(&local), local_before, "local files untouched");
    assert_eq!(snapshot(&server.data), remote_before, "remote untouched");

    // The right key still restores.
    restore(
        &sandbox,
        &server,
        &local,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &[],
    )
    .assert_code(0);
    assert_same_files(&local, &src);
}

#[test]
fn a_wrong_key_is_refused_on_a_remote_written_without_a_check_object() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    // Data written by plain rclone through a crypt remote: no check object.
    let conf = own_rclone_conf(&sandbox, &server, &[("password", &obscure(PASSPHRASE))]);
    plain_rclone(&conf, &["copy", src.to_str().unwrap(), "crypt:"]);
    let check = stored_check_object_name(&conf);
    let stored = stored_under(&server, REMOTE);
    assert_eq!(stored.len(), file_count(&src), "{:?}", stored.keys());
    assert!(!stored.contains_key(&check));
    assert_no_plaintext(&server, true);
    let remote_before = snapshot(&server.data);

    let wrong = [("ENCRYPTION_PASSPHRASE", WRONG_PASSPHRASE)];
    let local = other_tree(&sandbox, "local");
    let local_before = snapshot(&local);
    assert_key_mismatch(&restore(&sandbox, &server, &local, &wrong, &[]));
    assert_eq!(snapshot(&local), local_before, "local files untouched");
    assert_key_mismatch(&upload(&sandbox, &server, &local, &wrong, &[]));
    assert_eq!(
        snapshot(&server.data),
        remote_before,
        "a refused upload neither syncs nor writes a check object"
    );

    // The right key restores, without writing a check object (a restore never writes).
    let right = [("ENCRYPTION_PASSPHRASE", PASSPHRASE)];
    let restored = sandbox.path("restored");
    restore(&sandbox, &server, &restored, &right, &[]).assert_code(0);
    assert_same_files(&restored, &src);
    assert_eq!(
        snapshot(&server.data),
        remote_before,
        "a restore writes nothing"
    );

    // The first upload with the right key adds the check object; a wrong key stays refused.
    upload(&sandbox, &server, &src, &right, &[]).assert_code(0);
    let stored = stored_under(&server, REMOTE);
    assert!(stored.contains_key(&check), "{:?}", stored.keys());
    assert_eq!(
        stored.len(),
        file_count(&src) + 4,
        "files, check object, upload record, manifest, plain marker"
    );
    assert_key_mismatch(&restore(&sandbox, &server, &local, &wrong, &[]));
    assert_eq!(snapshot(&local), local_before, "local files untouched");
}

#[test]
fn upload_with_a_wrong_key_is_refused_and_leaves_the_remote_unchanged() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    upload(
        &sandbox,
        &server,
        &src,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &[],
    )
    .assert_code(0);
    let remote_before = snapshot(&server.data);

    let changed = other_tree(&sandbox, "changed");
    for wrong in [
        vec![("ENCRYPTION_PASSPHRASE", WRONG_PASSPHRASE)],
        vec![
            ("ENCRYPTION_PASSPHRASE", PASSPHRASE),
            ("ENCRYPTION_SALT", SALT),
        ],
    ] {
        assert_key_mismatch(&upload(&sandbox, &server, &changed, &wrong, &[]));
        assert_eq!(snapshot(&server.data), remote_before, "remote unchanged");
        // --no-delete (rclone copy) would only add files, but still mix two keys.
        assert_key_mismatch(&upload(&sandbox, &server, &changed, &wrong, &["-x"]));
        assert_eq!(snapshot(&server.data), remote_before, "remote unchanged");
    }

    let restored = sandbox.path("restored");
    restore(
        &sandbox,
        &server,
        &restored,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &[],
    )
    .assert_code(0);
    assert_same_files(&restored, &src);
}

#[test]
fn filename_encryption_off_round_trips_with_bin_names_and_encrypted_contents() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    upload(
        &sandbox,
        &server,
        &src,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &["-e", "filename_encryption=off"],
    )
    .assert_code(0);

    let stored: Vec<String> = stored_under(&server, REMOTE).into_keys().collect();
    let mut expected: Vec<String> = files_only(&snapshot(&src))
        .into_keys()
        .map(|name| format!("{name}.bin"))
        .collect();
    expected.push(format!("{CHECK_OBJECT}.bin"));
    expected.push(".volume-syncing-operator.upload-record.bin".to_string());
    expected.push(format!("{MANIFEST}.bin"));
    expected.push(ENCRYPTED_MARKER.to_string());
    expected.sort();
    assert_eq!(stored, expected, "names are kept, with .bin appended");
    assert_no_plaintext(&server, false);

    // The environment form of the option reads it back.
    let restored = sandbox.path("restored");
    restore(
        &sandbox,
        &server,
        &restored,
        &[
            ("ENCRYPTION_PASSPHRASE", PASSPHRASE),
            ("ENCRYPTED_FILENAME_ENCRYPTION", "off"),
        ],
        &[],
    )
    .assert_code(0);
    assert_same_files(&restored, &src);
}

#[test]
fn filename_encryption_off_with_a_wrong_key_is_refused_with_and_without_a_check_object() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    let off = ["-e", "filename_encryption=off"];
    upload(
        &sandbox,
        &server,
        &src,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &off,
    )
    .assert_code(0);

    let wrong = [("ENCRYPTION_PASSPHRASE", WRONG_PASSPHRASE)];
    let local = other_tree(&sandbox, "local");
    let local_before = snapshot(&local);
    let remote_before = snapshot(&server.data);
    assert_key_mismatch(&restore(&sandbox, &server, &local, &wrong, &off));
    assert_eq!(snapshot(&local), local_before, "local files untouched");
    assert_key_mismatch(&upload(&sandbox, &server, &local, &wrong, &off));
    assert_eq!(snapshot(&server.data), remote_before, "remote unchanged");

    // Without the check object (deleted through the S3 API), the stored data itself is probed.
    let conf = own_rclone_conf(&sandbox, &server, &[]);
    let check = format!("remote:{REMOTE}/{CHECK_OBJECT}.bin");
    plain_rclone(&conf, &["deletefile", &check]);
    let remote_before = snapshot(&server.data);
    assert!(
        !remote_before.contains_key(&format!("{REMOTE}/{CHECK_OBJECT}.bin")),
        "the check object was deleted"
    );
    assert_key_mismatch(&restore(&sandbox, &server, &local, &wrong, &off));
    assert_eq!(snapshot(&local), local_before, "local files untouched");
    assert_key_mismatch(&upload(&sandbox, &server, &local, &wrong, &off));
    assert_eq!(
        snapshot(&server.data),
        remote_before,
        "remote unchanged, no check object written with the wrong key"
    );

    // The right key still restores.
    restore(
        &sandbox,
        &server,
        &local,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &off,
    )
    .assert_code(0);
    assert_same_files(&local, &src);
}

#[test]
fn obfuscated_names_round_trip_without_plaintext_contents() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    let obfuscate = ["-e", "filename_encryption=obfuscate"];
    let right = [("ENCRYPTION_PASSPHRASE", PASSPHRASE)];
    upload(&sandbox, &server, &src, &right, &obfuscate).assert_code(0);

    let stored: Vec<String> = stored_under(&server, REMOTE).into_keys().collect();
    let plain: Vec<String> = files_only(&snapshot(&src)).into_keys().collect();
    assert_eq!(
        stored.len(),
        plain.len() + 4,
        "files, check object, upload record, manifest, plain marker: {stored:?}"
    );
    for name in &plain {
        assert!(
            !stored.contains(name),
            "{name} is stored under its plaintext name: {stored:?}"
        );
    }
    assert_no_plaintext(&server, false);

    let restored = sandbox.path("restored");
    restore(
        &sandbox,
        &server,
        &restored,
        &[
            ("ENCRYPTION_PASSPHRASE", PASSPHRASE),
            ("ENCRYPTED_FILENAME_ENCRYPTION", "obfuscate"),
        ],
        &[],
    )
    .assert_code(0);
    assert_same_files(&restored, &src);

    let local = other_tree(&sandbox, "local");
    let before = snapshot(&local);
    let wrong = [("ENCRYPTION_PASSPHRASE", WRONG_PASSPHRASE)];
    assert_key_mismatch(&restore(&sandbox, &server, &local, &wrong, &obfuscate));
    assert_eq!(snapshot(&local), before, "local files untouched");
}

#[test]
fn both_forms_of_the_same_secret_are_a_configuration_error_and_nothing_runs() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    let local = other_tree(&sandbox, "local");
    let local_before = snapshot(&local);
    let obscured_pass = obscure(PASSPHRASE);
    let obscured_salt = obscure(SALT);
    let e_password = format!("password={obscured_pass}");
    let e_password2 = format!("password2={obscured_salt}");
    // (environment, arguments, the variable the message must name)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("ENCRYPTION_PASSPHRASE", PASSPHRASE),
                ("ENCRYPTED_PASSWORD", &obscured_pass),
            ],
            vec![],
            "ENCRYPTED_PASSWORD",
        ),
        (
            vec![("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
            vec!["-e", &e_password],
            "ENCRYPTED_PASSWORD",
        ),
        (
            vec![
                ("ENCRYPTION_PASSPHRASE", PASSPHRASE),
                ("ENCRYPTION_SALT", SALT),
                ("ENCRYPTED_PASSWORD2", &obscured_salt),
            ],
            vec![],
            "ENCRYPTED_PASSWORD2",
        ),
        (
            vec![
                ("ENCRYPTED_PASSWORD", &obscured_pass),
                ("ENCRYPTION_SALT", SALT),
            ],
            vec!["-e", &e_password2],
            "ENCRYPTED_PASSWORD2",
        ),
    ];
    for (env, extra, named) in &cases {
        for out in [
            upload(&sandbox, &server, &src, env, extra),
            restore(&sandbox, &server, &local, env, extra),
        ] {
            out.assert_code(2).assert_contains(named);
            for secret in [PASSPHRASE, SALT, &obscured_pass, &obscured_salt] {
                assert!(
                    !out.all().contains(secret),
                    "the error shows a secret:\n{}",
                    out.all()
                );
            }
        }
    }
    assert_eq!(
        snapshot(&server.data),
        BTreeMap::from([("bucket/".to_string(), None)]),
        "nothing reached the remote"
    );
    assert_eq!(snapshot(&local), local_before, "local files untouched");
    assert!(sandbox.leftover_configs().is_empty());
}

/// Every secret-bearing string that must never be printed.
#[track_caller]
fn assert_no_secrets(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "the output shows the secret {secret:?}:\n{text}"
        );
    }
}

/// Every `password = …` / `password2 = …` in `text` (a rendered config, also inside JSON log
/// lines) shows `<redacted>` instead of the value.
#[track_caller]
fn assert_crypt_secrets_redacted(text: &str) {
    let mut seen = 0;
    for key in ["password = ", "password2 = "] {
        for (at, _) in text.match_indices(key) {
            let value = &text[at + key.len()..];
            assert!(
                value.starts_with("<redacted>"),
                "a crypt secret is shown: {}",
                &text[at..(at + 60).min(text.len())]
            );
            seen += 1;
        }
    }
    assert!(
        seen > 0,
        "the rendered config is not in the output:\n{text}"
    );
}

#[test]
fn the_passphrase_never_appears_in_logs() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    let obscured_pass = obscure(PASSPHRASE);
    let secrets = [PASSPHRASE, SALT, obscured_pass.as_str()];

    // Plain forms, most verbose, both log formats.
    let plain = [
        ("ENCRYPTION_PASSPHRASE", PASSPHRASE),
        ("ENCRYPTION_SALT", SALT),
    ];
    for format in ["text", "json"] {
        let out = upload(
            &sandbox,
            &server,
            &src,
            &plain,
            &["-vv", "--log-format", format],
        );
        out.assert_code(0)
            // -vv really is verbose: the rendered config is shown, redacted.
            .assert_contains("<redacted>")
            .assert_contains("type = crypt");
        assert_no_secrets(&out.all(), &secrets);
        assert_crypt_secrets_redacted(&out.all());
    }
    let restored = sandbox.path("restored");
    let out = restore(&sandbox, &server, &restored, &plain, &["-vv"]);
    out.assert_code(0);
    assert_no_secrets(&out.all(), &secrets);
    assert_crypt_secrets_redacted(&out.all());
    assert_same_files(&restored, &src);

    // Obscured form.
    let salt = obscure(SALT);
    let obscured = [
        ("ENCRYPTED_PASSWORD", obscured_pass.as_str()),
        ("ENCRYPTED_PASSWORD2", salt.as_str()),
    ];
    let out = restore(&sandbox, &server, &restored, &obscured, &["-vv"]);
    out.assert_code(0);
    assert_no_secrets(&out.all(), &[PASSPHRASE, SALT, &obscured_pass, &salt]);
    assert_crypt_secrets_redacted(&out.all());
}

#[test]
fn the_passphrase_never_appears_in_error_messages() {
    // Stopped below: on a port no other test's server can be given meanwhile.
    let mut server = S3Server::start_restartable();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    let obscured_pass = obscure(PASSPHRASE);
    let obscured_wrong = obscure(WRONG_PASSPHRASE);
    let secrets = [
        PASSPHRASE,
        WRONG_PASSPHRASE,
        obscured_pass.as_str(),
        obscured_wrong.as_str(),
    ];
    upload(
        &sandbox,
        &server,
        &src,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &[],
    )
    .assert_code(0);
    let local = other_tree(&sandbox, "local");

    // Refused: a wrong key, plain and obscured.
    for wrong in [
        ("ENCRYPTION_PASSPHRASE", WRONG_PASSPHRASE),
        ("ENCRYPTED_PASSWORD", obscured_wrong.as_str()),
    ] {
        let out = restore(&sandbox, &server, &local, &[wrong], &["-vv"]);
        assert_key_mismatch(&out);
        assert_no_secrets(&out.all(), &secrets);
        let out = upload(&sandbox, &server, &local, &[wrong], &["-vv"]);
        assert_key_mismatch(&out);
        assert_no_secrets(&out.all(), &secrets);
    }

    // Failed: a plain passphrase given where an obscured one is expected; rclone cannot
    // reveal it.
    let typo = "plain text typed into password 77";
    let out = restore(
        &sandbox,
        &server,
        &local,
        &[("ENCRYPTED_PASSWORD", typo)],
        &["-vv"],
    );
    assert_ne!(out.code(), 0, "{}", out.all());
    assert_no_secrets(&out.all(), &[typo]);

    // Failed: the server is gone. rclone's own retries are turned down (through the
    // environment, which reaches every rclone the program starts): by default rclone keeps
    // retrying a refused connection for minutes.
    server.stop();
    let fail_fast = |key: (&'static str, &'static str)| {
        [
            key,
            ("RCLONE_LOW_LEVEL_RETRIES", "1"),
            ("RCLONE_RETRIES", "1"),
        ]
    };
    for out in [
        upload(
            &sandbox,
            &server,
            &src,
            &fail_fast(("ENCRYPTION_PASSPHRASE", PASSPHRASE)),
            &["-vv", "--retries", "0"],
        ),
        restore(
            &sandbox,
            &server,
            &local,
            &fail_fast(("ENCRYPTION_PASSPHRASE", PASSPHRASE)),
            &["-vv", "--retries", "0"],
        ),
    ] {
        out.assert_code(1);
        assert_no_secrets(&out.all(), &secrets);
    }
    assert!(sandbox.leftover_configs().is_empty());
}

/// The `password` / `password2` values of section [crypt] of the binary's private config,
/// once it has been written.
fn crypt_secrets_in_private_config(sandbox: &Sandbox) -> Option<Vec<String>> {
    for dir in sandbox.leftover_configs() {
        let Ok(text) = fs::read_to_string(dir.join("rclone.conf")) else {
            continue;
        };
        let crypt = text.split("[crypt]").nth(1)?;
        let values: Vec<String> = crypt
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .filter(|(k, _)| k.trim() == "password" || k.trim() == "password2")
            .map(|(_, v)| v.trim().to_string())
            .collect();
        if values.len() == 2 {
            return Some(values);
        }
    }
    None
}

#[test]
fn the_passphrase_is_never_on_an_rclone_command_line_or_in_its_environment() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree(
        "src",
        &[
            ("big.bin", &random_bytes(3 * 1024 * 1024, 5)),
            ("small.txt", b"small\n"),
        ],
    );
    let mut running = Vso::s3(&sandbox, &server)
        .args(["-vv", "sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", REMOTE])
        .env("ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .env("ENCRYPTION_SALT", SALT)
        .args(["--", "--bwlimit", "200k"])
        .spawn();

    let ours = sandbox.tmp().to_string_lossy().into_owned();
    let mut forbidden: Vec<String> = vec![PASSPHRASE.into(), SALT.into()];
    let mut obscured_seen = false;
    let mut sync_seen = false;
    let mut inspected = 0;
    let deadline = Instant::now() + Duration::from_secs(150);
    while running.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the slow sync did not finish; output:\n{}",
            running.output_so_far()
        );
        if !obscured_seen && let Some(values) = crypt_secrets_in_private_config(&sandbox) {
            for value in values {
                assert!(
                    !value.is_empty() && value != PASSPHRASE && value != SALT,
                    "the config holds the secrets obscured"
                );
                forbidden.push(value);
            }
            obscured_seen = true;
        }
        for pid in rclone_pids_with("") {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                continue; // exited meanwhile
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            for secret in &forbidden {
                assert!(
                    !cmdline.contains(secret.as_str()),
                    "rclone process {pid} has a secret on its command line: {cmdline}"
                );
            }
            if !cmdline.contains(&ours) {
                continue; // someone else's rclone (e.g. the S3 server)
            }
            let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
                continue; // exited meanwhile
            };
            let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
            for secret in &forbidden {
                assert!(
                    !environ.contains(secret.as_str()),
                    "rclone process {pid} has a secret in its environment"
                );
            }
            for var in ["ENCRYPTION_", "ENCRYPTED_", "REMOTE_"] {
                assert!(
                    !environ.lines().any(|l| l.starts_with(var)),
                    "rclone process {pid} inherited {var}* variables"
                );
            }
            inspected += 1;
            if obscured_seen && cmdline.split(' ').any(|a| a == "sync") {
                sync_seen = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = running.wait_output(Duration::from_secs(30));
    out.assert_code(0);
    assert!(obscured_seen, "the private config was never seen");
    assert!(
        sync_seen,
        "the rclone sync was never inspected while the obscured secrets were known \
         ({inspected} inspections)"
    );
    let forbidden: Vec<&str> = forbidden.iter().map(String::as_str).collect();
    assert_no_secrets(&out.all(), &forbidden);
    assert!(sandbox.leftover_configs().is_empty());

    let restored = sandbox.path("restored");
    restore(
        &sandbox,
        &server,
        &restored,
        &[
            ("ENCRYPTION_PASSPHRASE", PASSPHRASE),
            ("ENCRYPTION_SALT", SALT),
        ],
        &[],
    )
    .assert_code(0);
    assert_same_files(&restored, &src);
}

#[test]
fn an_empty_file_does_not_fool_the_key_check_without_a_check_object() {
    // An empty file encrypts to a bare header, which "decrypts" with any key; with
    // filename_encryption=off its name says nothing about the key either. The key check must
    // not take it as proof that the key is right.
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree(
        "src",
        &[
            ("a-empty-first", b""),
            ("b-data.txt", CONTENT_MARKERS[0].as_bytes()),
            ("c-more/data.bin", &random_bytes(10_000, 3)),
        ],
    );
    let conf = own_rclone_conf(
        &sandbox,
        &server,
        &[
            ("password", &obscure(PASSPHRASE)),
            ("filename_encryption", "off"),
        ],
    );
    plain_rclone(&conf, &["copy", src.to_str().unwrap(), "crypt:"]);
    let listed = plain_rclone(
        &conf,
        &["lsf", "-R", "--files-only", &format!("remote:{REMOTE}")],
    );
    assert_eq!(
        listed.lines().next(),
        Some("a-empty-first.bin"),
        "the empty file is listed first: {listed}"
    );
    let remote_before = snapshot(&server.data);

    let off = ["-e", "filename_encryption=off"];
    let wrong = [("ENCRYPTION_PASSPHRASE", WRONG_PASSPHRASE)];
    let local = other_tree(&sandbox, "local");
    let local_before = snapshot(&local);
    assert_key_mismatch(&restore(&sandbox, &server, &local, &wrong, &off));
    assert_eq!(snapshot(&local), local_before, "local files untouched");
    assert_key_mismatch(&upload(&sandbox, &server, &local, &wrong, &off));
    assert_eq!(snapshot(&server.data), remote_before, "remote unchanged");

    let restored = sandbox.path("restored");
    restore(
        &sandbox,
        &server,
        &restored,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &off,
    )
    .assert_code(0);
    assert_same_files(&restored, &src);
}

#[test]
fn obfuscated_names_are_checked_when_every_stored_file_is_empty() {
    // Only empty files and no check object: no content can be decrypted, so the names are the
    // only evidence. An obfuscated name "decodes" with any key, but only the right key encodes
    // the result back to the stored name.
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sandbox.tree(
        "src",
        &[("empty-one", b""), ("dir/empty-two", b""), ("zzz", b"")],
    );
    let conf = own_rclone_conf(
        &sandbox,
        &server,
        &[
            ("password", &obscure(PASSPHRASE)),
            ("filename_encryption", "obfuscate"),
        ],
    );
    plain_rclone(&conf, &["copy", src.to_str().unwrap(), "crypt:"]);
    let stored = stored_under(&server, REMOTE);
    assert_eq!(stored.len(), 3, "{:?}", stored.keys());
    assert!(
        stored.values().all(|bytes| bytes.len() == 32),
        "bare headers"
    );
    let remote_before = snapshot(&server.data);

    let obfuscate = ["-e", "filename_encryption=obfuscate"];
    let wrong = [("ENCRYPTION_PASSPHRASE", WRONG_PASSPHRASE)];
    let local = other_tree(&sandbox, "local");
    let local_before = snapshot(&local);
    assert_key_mismatch(&restore(&sandbox, &server, &local, &wrong, &obfuscate));
    assert_eq!(snapshot(&local), local_before, "local files untouched");
    assert_key_mismatch(&upload(&sandbox, &server, &local, &wrong, &obfuscate));
    assert_eq!(snapshot(&server.data), remote_before, "remote unchanged");

    let restored = sandbox.path("restored");
    restore(
        &sandbox,
        &server,
        &restored,
        &[("ENCRYPTION_PASSPHRASE", PASSPHRASE)],
        &obfuscate,
    )
    .assert_code(0);
    assert_same_files(&restored, &src);
}
