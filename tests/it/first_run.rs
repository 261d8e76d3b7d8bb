//! `remote-to-local-sync --skip-if-never-uploaded` (PodFilesystemSync
//! `restoreRemoteOnFirstRun: false`): whether the first start of a remote path restores is
//! decided per path, at run time, from what the path holds. A path no upload ever wrote (no
//! metadata manifest, no upload record) is not restored, saying so, also when files were put
//! there by other means; once an upload wrote it (this volume's or another cluster's), every
//! start restores. Without the flag, the first start restores whatever is there.

use std::path::Path;

use crate::support::*;

const PASSPHRASE: &str = "first-run-passphrase-0123456789";

/// The binary against the test server, with `env` (the encryption settings, when any).
fn vso(sandbox: &Sandbox, server: &S3Server, env: &[(&str, &str)]) -> Vso {
    let mut vso = Vso::s3(sandbox, server);
    vso.envs(
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    vso
}

fn restore(
    sandbox: &Sandbox,
    server: &S3Server,
    dst: &Path,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    vso(sandbox, server, env)
        .args([
            "remote-to-local-sync",
            "--if-local-empty",
            "-s",
            "bucket/app",
            "-d",
        ])
        .arg(dst)
        .args(extra)
        .run()
}

fn upload(sandbox: &Sandbox, server: &S3Server, src: &Path, env: &[(&str, &str)]) -> Output {
    vso(sandbox, server, env)
        .args(["sync-to-remote", "-s"])
        .arg(src)
        .args(["-d", "bucket/app"])
        .run()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_first_start_of_a_path_keeps_its_data_and_every_later_one_restores() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    const SKIP: &[&str] = &["--skip-if-never-uploaded"];

    // A path nothing was ever put in: skipped, exit 0, saying why.
    let first = sandbox.dir("first");
    restore(&sandbox, &server, &first, &[], SKIP)
        .assert_code(0)
        .assert_contains("was never uploaded to");
    assert!(entries(&first).is_empty());

    // Files put there by other means: not restored with the flag, and a warning says so...
    let seed = sandbox.tree("seed", &[("foreign.txt", b"foreign")]);
    server.rclone_s3(
        SECRET_KEY,
        &["copy", seed.to_str().unwrap(), "s3:bucket/app"],
        None,
    );
    restore(&sandbox, &server, &first, &[], SKIP)
        .assert_code(0)
        .assert_contains("holds files but was never uploaded to");
    assert!(entries(&first).is_empty());
    // ... and restored without it (restoreRemoteOnFirstRun: true).
    let plain = sandbox.dir("plain");
    restore(&sandbox, &server, &plain, &[], &[]).assert_code(0);
    assert_eq!(
        std::fs::read(plain.join("foreign.txt")).unwrap(),
        b"foreign"
    );

    // Once an upload wrote the path (this volume's own, or another cluster's), the flag
    // restores: byte for byte what was uploaded.
    let volume = sandbox.tree("volume", &[("mine.txt", b"mine"), ("d/deep.txt", b"deep")]);
    upload(&sandbox, &server, &volume, &[]).assert_code(0);
    let later = sandbox.dir("later");
    restore(&sandbox, &server, &later, &[], SKIP).assert_code(0);
    assert_eq!(entries(&later), ["d", "mine.txt"]);
    assert_eq!(std::fs::read(later.join("mine.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(later.join("d/deep.txt")).unwrap(), b"deep");
}

#[test]
fn an_encrypted_path_is_judged_through_its_key() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let key = [("ENCRYPTION_PASSPHRASE", PASSPHRASE)];
    const SKIP: &[&str] = &["--skip-if-never-uploaded"];

    let first = sandbox.dir("first");
    restore(&sandbox, &server, &first, &key, SKIP)
        .assert_code(0)
        .assert_contains("was never uploaded to");
    let volume = sandbox.tree("volume", &[("secret.txt", b"plaintext")]);
    upload(&sandbox, &server, &volume, &key).assert_code(0);
    // The manifest's name is encrypted in the bucket; through the key it is found.
    let later = sandbox.dir("later");
    restore(&sandbox, &server, &later, &key, SKIP).assert_code(0);
    assert_eq!(
        std::fs::read(later.join("secret.txt")).unwrap(),
        b"plaintext"
    );
    // A wrong key is refused by the key check, never taken for a path never uploaded to.
    let wrong = sandbox.dir("wrong");
    restore(
        &sandbox,
        &server,
        &wrong,
        &[("ENCRYPTION_PASSPHRASE", "a-wrong-passphrase-0123456789")],
        SKIP,
    )
    .assert_code(3)
    .assert_contains("encryption-key-mismatch");
    assert!(entries(&wrong).is_empty());
}
