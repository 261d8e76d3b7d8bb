//! What a remote path may be: something strictly below the remote's root.
//!
//! `-d ''` once made `rclone sync DIR remote:` delete every bucket of the account, and
//! `bucket/../other` reached another bucket (or, on S3, created an object literally named
//! `../other/…`). So a remote path is refused before anything runs (exit 2) unless it is a
//! sequence of non-empty segments: no empty or whitespace-only path, no `/` alone, no empty, `.`
//! or `..` segment (which also rules out `//` and a trailing `/`), no segment of only white
//! space, no control characters. On bucket-based backends (S3, GCS, Azure, …) the first
//! segment is the bucket, so a path names at least a bucket; on backends with a directory tree
//! (local, sftp, WebDAV, …) it names at least one directory below the backend's root. One
//! leading `/` is allowed: it makes the path absolute where the backend knows such a thing
//! (`local`: `/srv/backup` rather than relative to the working directory; sftp: from `/`
//! rather than from the login's home) and is still below the root.
//!
//! This is the one rule for every place that takes a remote path (the sync commands and the
//! operator's templates), so nothing in the project can sync with a remote's root.

use crate::error::{Error, Result};

/// Checks a remote path; `flag` names where it came from in the error (e.g. `-d/--dst`).
pub fn validate(path: &str, flag: &str) -> Result<()> {
    match problem(path) {
        None => Ok(()),
        Some(why) => Err(Error::config(format!(
            "{flag}: the remote path {why}; it must name something below the remote's root, \
             such as bucket/path (a sync with the root would replace every bucket or directory \
             of the remote)"
        ))),
    }
}

/// What is wrong with a remote path, if anything (a fragment that reads after "the remote
/// path"): the one rule, also used by the operator for rendered templates.
pub fn problem(path: &str) -> Option<&'static str> {
    if path.trim().is_empty() {
        return Some("is empty");
    }
    if path.chars().any(char::is_control) {
        return Some("contains a control character (such as a line break or tab)");
    }
    let relative = path.strip_prefix('/').unwrap_or(path);
    if relative.is_empty() {
        return Some("is the root '/'");
    }
    for segment in relative.split('/') {
        match segment {
            "" => return Some("has an empty segment ('//' or a trailing '/')"),
            "." | ".." => return Some("has a '.' or '..' segment"),
            s if s.trim().is_empty() => return Some("has a segment of only white space"),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_the_root_are_accepted() {
        for ok in [
            "bucket",
            "bucket/path",
            "my-bucket/app/pod-0",
            "b/a b/c",
            "b/.hidden",
            "b/..x",
            "b/x..",
            "bücket/ünïcode",
            "/srv/backup",
        ] {
            validate(ok, "-d").unwrap();
        }
    }

    #[test]
    fn the_root_and_escapes_are_refused_naming_the_flag() {
        for bad in [
            "",
            " ",
            "\t",
            ".",
            "/",
            "//",
            "///bucket",
            "bucket/",
            "bucket//x",
            "bucket/../other",
            "..",
            "bucket/.",
            "./bucket",
            "bucket/ /x",
            "bucket/x\ny",
            "bucket\r",
        ] {
            let err = validate(bad, "-d/--dst").unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            assert!(err.to_string().starts_with("-d/--dst: "), "{err}");
        }
    }
}
