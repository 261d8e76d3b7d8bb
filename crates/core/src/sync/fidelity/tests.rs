//! Unit tests of the manifest: format limits, the walk, and applying it beneath the root.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use super::apply::*;
use super::format::*;
use super::walk::*;

#[test]
fn unsafe_paths_are_refused() {
    for p in ["..", "a/../b", "/etc", "a//b", "./a", "a/.", "a/"] {
        assert!(!safe_relative(p), "{p}");
    }
    for p in ["a", "a/b", "..a", "a..", ".hidden/x"] {
        assert!(safe_relative(p), "{p}");
    }
    let bad = format!(
        "{{\"t\":\"h\",\"format\":\"{FORMAT}\",\"generation\":\"x\",\"written\":\"y\"}}\n\
         {{\"t\":\"l\",\"p\":\"../out\",\"to\":\"/etc\",\"u\":0,\"g\":0,\"s\":0,\"n\":0}}\n\
         {{\"t\":\"e\",\"entries\":1}}\n"
    );
    assert!(parse(bad.as_bytes()).unwrap_err().contains("unsafe path"));
}

fn manifest_of(entries: &[String]) -> Vec<u8> {
    let mut text =
        format!("{{\"t\":\"h\",\"format\":\"{FORMAT}\",\"generation\":\"g\",\"written\":\"w\"}}\n");
    for e in entries {
        text.push_str(e);
        text.push('\n');
    }
    text.push_str(&format!("{{\"t\":\"e\",\"entries\":{}}}\n", entries.len()));
    text.into_bytes()
}

fn file_line(p: &str) -> String {
    serde_json::to_string(&Line::File {
        p: p.into(),
        m: 0o644,
        u: 0,
        g: 0,
        size: 1,
        hl: None,
    })
    .unwrap()
}

#[test]
fn entries_beyond_the_path_bounds_are_skipped_and_counted() {
    let name = "n".repeat(MAX_NAME_BYTES);
    let deep = vec!["d"; MAX_PATH_BYTES / 2 + 1].join("/");
    let bytes = manifest_of(&[
        file_line("ok"),
        file_line(&name),
        file_line(&format!("{name}x")),
        file_line(&deep),
        file_line(".volume-syncing-operator.restore-in-progress"),
        file_line(&format!("{}\u{1b}]0;title\u{7}", "x".repeat(300))),
    ]);
    let manifest = parse(&bytes).unwrap();
    assert_eq!(manifest.lines.len(), 2, "ok and the 255-byte name");
    assert_eq!(manifest.skipped.count, 4);
    assert_eq!(manifest.skipped.first.len(), 4);
    for shown in &manifest.skipped.first {
        assert!(shown.len() < 500, "{shown}");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }
    // The trailer counts skipped entries too: the manifest is complete.
    let applied = apply(
        tempfile::tempdir().unwrap().path(),
        &manifest,
        ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(applied.skipped.count, 4);
    assert!(applied.is_partial());
}

#[test]
fn the_size_and_entry_bounds_ignore_the_manifest_with_a_short_reason() {
    let bytes = manifest_of(&[file_line("a"), file_line("b"), file_line("c")]);
    assert!(parse_within(&bytes, bytes.len(), 3).is_ok());
    let why = parse_within(&bytes, bytes.len() - 1, 3).unwrap_err();
    assert!(why.contains("larger than"), "{why}");
    let why = parse_within(&bytes, bytes.len(), 2).unwrap_err();
    assert!(why.contains("more than 2 entries"), "{why}");
    // Errors quote the remote's text only escaped and truncated.
    let junk = format!("{{\"t\":\"h\",\"format\":\"{}\n", "\u{1b}".repeat(100_000));
    for bad in [
        junk.into_bytes(),
        manifest_of(&[format!("{{\"t\":\"{}\"}}", "z".repeat(1_000_000))]),
        manifest_of(&[file_line(&format!("a/../{}", "q".repeat(1_000_000)))]),
    ] {
        let why = parse(&bad).unwrap_err();
        assert!(why.len() < 1000, "{} bytes", why.len());
        assert!(!why.contains('\u{1b}'));
    }
}

#[test]
fn out_of_range_times_are_not_given_to_the_kernel() {
    assert!(timespec((0, 0)).is_some());
    assert!(
        timespec((-1, 999_999_999)).is_some(),
        "before 1970 is a time"
    );
    for bad in [
        (i64::MAX, 0),
        (i64::MIN, 0),
        (MAX_SECONDS + 1, 0),
        (0, -1),
        (0, 1_000_000_000),
        (0, i64::MAX),
    ] {
        assert!(timespec(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn a_link_with_entries_beneath_it_is_not_made() {
    let dst = tempfile::tempdir().unwrap();
    let link = |p: &str| {
        serde_json::to_string(&Line::Link {
            p: p.into(),
            to: "/".into(),
            u: 0,
            g: 0,
            s: 0,
            n: 0,
        })
        .unwrap()
    };
    // Not sorted, as a forged manifest need not be.
    let bytes = manifest_of(&[link("x/y/z"), link("x"), link("x2"), link("xy")]);
    let manifest = parse(&bytes).unwrap();
    let applied = apply(dst.path(), &manifest, ApplyOptions::default()).unwrap();
    assert!(fs::symlink_metadata(dst.path().join("x")).is_err());
    assert!(
        fs::symlink_metadata(dst.path().join("x2"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        fs::symlink_metadata(dst.path().join("xy"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        applied.mismatched, 2,
        "x, and x/y/z whose parent is missing"
    );
}

/// What a fuzzer would do, deterministically: mutations of a real manifest (bytes flipped,
/// cut, repeated, numbers made extreme) must parse or be refused, never panic; those that
/// parse are applied without panicking or failing.
#[test]
fn parse_and_apply_never_panic_on_mutated_manifests() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    fs::create_dir_all(s.join("d/e")).unwrap();
    fs::write(s.join("d/f"), "data").unwrap();
    fs::write(s.join("g"), "data").unwrap();
    fs::hard_link(s.join("g"), s.join("d/g2")).unwrap();
    symlink("../g", s.join("d/link")).unwrap();
    let good = record(s).unwrap().bytes();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let extremes: [&[u8]; 6] = [
        b"18446744073709551615",
        b"-9223372036854775808",
        b"9223372036854775807",
        b"1e999",
        b"\"\\u0000\"",
        b"null",
    ];
    let mut parsed = 0;
    for round in 0..4000 {
        let mut bytes = good.clone();
        for _ in 0..=(next() % 4) {
            let at = (next() as usize) % bytes.len().max(1);
            match next() % 5 {
                0 => bytes[at] = next() as u8,
                1 => bytes.truncate(at),
                2 => {
                    let chunk = bytes[at..].iter().take(40).copied().collect::<Vec<_>>();
                    bytes.splice(at..at, chunk);
                }
                3 => {
                    let e = extremes[(next() as usize) % extremes.len()];
                    bytes.splice(at..at, e.iter().copied());
                }
                _ => bytes.insert(at, b"\n\"{}[]:,0/".as_slice()[(next() % 10) as usize]),
            }
            if bytes.is_empty() {
                break;
            }
        }
        if let Ok(manifest) = parse(&bytes) {
            parsed += 1;
            if round % 4 == 0 {
                let dst = tempfile::tempdir().unwrap();
                fs::create_dir_all(dst.path().join("d")).unwrap();
                fs::write(dst.path().join("d/f"), "data").unwrap();
                fs::write(dst.path().join("g"), "data").unwrap();
                fs::write(dst.path().join("d/g2"), "data").unwrap();
                let options = ApplyOptions::default();
                apply(dst.path(), &manifest, options).unwrap();
                apply_root(dst.path(), &manifest, false).unwrap();
            }
        }
    }
    assert!(parsed > 10, "some mutations still parse ({parsed})");
    for bytes in [&b""[..], b"\n\n", b"\xff\xfe", &[0u8; 64], b"{}"] {
        assert!(parse(bytes).is_err());
    }
}

#[test]
fn a_truncated_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), "x").unwrap();
    fs::create_dir(dir.path().join("lost+found")).unwrap();
    fs::write(dir.path().join(".volume-syncing-operator.x"), "").unwrap();
    let bytes = record(dir.path()).unwrap().bytes();
    assert_eq!(parse(&bytes).unwrap().lines.len(), 2, "the root and f only");
    let cut = &bytes[..bytes.len() - 5];
    assert!(parse(cut).is_err());
    assert!(parse(b"").is_err());
}

/// A one-shot upload writes no manifest when the remote's is this record's: the same entries
/// and trailer under a header of the same format, whatever its generation and time. Anything
/// else, whatever the remote holds, is a difference.
#[test]
fn a_manifest_is_written_in_the_remote_only_when_its_entries_are_the_same() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), "x").unwrap();
    let record = record(dir.path()).unwrap();
    let written = record.bytes();
    assert!(record.is_written_in(&written));
    assert!(record.is_written_in(&record.bytes()), "another generation");
    let header_end = written.iter().position(|&b| b == b'\n').unwrap();
    let other_format = [
        br#"{"t":"h","format":"volume-syncing-operator manifest v2","generation":"0","written":"0"}"#
            .as_slice(),
        &written[header_end..],
    ]
    .concat();
    let mut extra = written.clone();
    extra.push(b'\n');
    fs::set_permissions(dir.path().join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    let chmodded = super::walk::record(dir.path()).unwrap().bytes();
    for (what, other) in [
        ("another format", other_format.as_slice()),
        ("a byte more", extra.as_slice()),
        ("cut", &written[..written.len() - 1]),
        ("no header", &written[header_end + 1..]),
        ("nothing", b"".as_slice()),
        ("a mode changed", chmodded.as_slice()),
    ] {
        assert!(!record.is_written_in(other), "{what}");
    }
}

#[test]
fn record_and_apply_round_trip() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    fs::create_dir_all(s.join("d/empty")).unwrap();
    fs::write(s.join("d/f"), "data").unwrap();
    fs::write(s.join("g"), "data").unwrap();
    fs::hard_link(s.join("g"), s.join("d/g2")).unwrap();
    symlink("../g", s.join("d/link")).unwrap();
    symlink("/nowhere", s.join("dangling")).unwrap();
    fs::set_permissions(s.join("d/f"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(s.join("d/empty"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::set_permissions(s.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    let manifest = parse(&record(s).unwrap().bytes()).unwrap();

    // What a data sync would bring back: the files, with default modes.
    let dst = tempfile::tempdir().unwrap();
    let d = dst.path();
    fs::create_dir_all(d.join("d")).unwrap();
    fs::write(d.join("d/f"), "data").unwrap();
    fs::write(d.join("g"), "data").unwrap();
    fs::write(d.join("d/g2"), "data").unwrap();
    let options = ApplyOptions {
        as_root: nix::unistd::geteuid().is_root(),
        restore_setid_bits: false,
    };
    let applied = apply(d, &manifest, options).unwrap();
    assert_eq!(applied.mismatched, 0, "{applied:?}");
    let mode = |p: &str| fs::symlink_metadata(d.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("d/f"), 0o640);
    assert_eq!(mode("d"), 0o700);
    assert_eq!(mode("d/empty"), 0o2750);
    assert_eq!(fs::read_link(d.join("d/link")).unwrap(), Path::new("../g"));
    assert_eq!(
        fs::read_link(d.join("dangling")).unwrap(),
        Path::new("/nowhere")
    );
    assert_eq!(
        fs::metadata(d.join("g")).unwrap().ino(),
        fs::metadata(d.join("d/g2")).unwrap().ino()
    );
    assert_eq!(applied.hard_links, 1);
}

#[test]
fn a_link_in_the_way_is_never_followed() {
    // The data has `sub` as a symlink to a directory outside the root; the manifest says
    // `sub` is a directory with a file: nothing may be changed through the link.
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("f"), "x").unwrap();
    fs::set_permissions(outside.path().join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    let dst = tempfile::tempdir().unwrap();
    symlink(outside.path(), dst.path().join("sub")).unwrap();
    let text = format!(
        "{{\"t\":\"h\",\"format\":\"{FORMAT}\",\"generation\":\"x\",\"written\":\"y\"}}\n\
         {{\"t\":\"d\",\"p\":\"sub\",\"m\":511,\"u\":0,\"g\":0,\"s\":0,\"n\":0}}\n\
         {{\"t\":\"f\",\"p\":\"sub/f\",\"m\":511,\"u\":0,\"g\":0,\"size\":1}}\n\
         {{\"t\":\"l\",\"p\":\"sub/l\",\"to\":\"x\",\"u\":0,\"g\":0,\"s\":0,\"n\":0}}\n\
         {{\"t\":\"e\",\"entries\":3}}\n"
    );
    let manifest = parse(text.as_bytes()).unwrap();
    let applied = apply(dst.path(), &manifest, ApplyOptions::default()).unwrap();
    assert_eq!(applied.mismatched, 3);
    let meta = fs::metadata(outside.path().join("f")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o644);
    assert!(!outside.path().join("l").exists());
}
