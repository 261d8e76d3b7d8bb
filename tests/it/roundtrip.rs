//! Upload and restore through a real S3 server: the tree comes back byte-identical.

use crate::support::*;

const BIG: usize = 1024 * 1024;

fn sample_tree(sandbox: &Sandbox, name: &str) -> std::path::PathBuf {
    let big = random_bytes(BIG, 7);
    sandbox.tree(
        name,
        &[
            ("top.txt", b"top level\n"),
            ("nested/deeper/leaf.txt", b"leaf\n"),
            ("empty-dir/", b""),
            ("zero-length", b""),
            ("binary.bin", &big),
            ("with space/file name.txt", b"spaces\n"),
            ("zażółć/gęślą jaźń.txt", "non-ascii ✓\n".as_bytes()),
        ],
    )
}

#[test]
fn round_trip_through_s3_is_byte_identical() {
    let server = S3Server::start();
    let sandbox = Sandbox::new();
    let src = sample_tree(&sandbox, "src");
    Vso::s3(&sandbox, &server)
        .args(["sync-to-remote", "-s"])
        .arg(&src)
        .args(["-d", "bucket/app"])
        .run()
        .assert_code(0);
    assert_eq!(
        files_only(&snapshot(&server.path("bucket/app"))),
        files_only(&snapshot(&src)),
        "the objects on the server are the files of the tree"
    );
    let restored = sandbox.path("restored");
    Vso::s3(&sandbox, &server)
        .args(["remote-to-local-sync", "-s", "bucket/app", "-d"])
        .arg(&restored)
        .run()
        .assert_code(0);
    // S3 has no directories, so an empty directory cannot survive a trip through it.
    assert_eq!(
        files_only(&snapshot(&restored)),
        files_only(&snapshot(&src))
    );
    sandbox.assert_config_removed();
}
