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
//!
//! A checked path becomes a [`RemoteEnd`]: the one place that knows how rclone names the data
//! (`remote:bucket/path/`, or a crypt root `crypt:` when encrypted), how the user named it
//! (`remote:bucket/path`), and where our internal objects ([`Internal`]) live beside the data.

use crate::error::{Error, Result};

/// The name prefix of this program's own objects at the top of a remote path (and of its own
/// files at the top of a local directory): every listing, valve and restore ignores them.
pub const INTERNAL_PREFIX: &str = ".volume-syncing-operator.";
/// The rclone filter that keeps all of this program's own objects out of every sync and listing.
pub const INTERNAL_FILTER: &str = "/.volume-syncing-operator.*";

/// The objects this program keeps beside the data, at the top of a remote path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    /// One writer per path ([`crate::sync::lease`]).
    Lease,
    /// Modes, owners, links, empty directories ([`crate::sync::fidelity`]).
    Manifest,
    /// The file count of the last upload ([`crate::sync::valves::mass_delete`]).
    UploadRecord,
    /// Proves the key of an encrypted path ([`crate::remote::crypt`]).
    KeyCheck,
    /// Plain text beside encrypted data: keeps runs without the key away
    /// ([`crate::sync::valves::crypt_marker`]).
    EncryptionMarker,
}

impl Internal {
    /// The object's name.
    pub const fn name(self) -> &'static str {
        match self {
            Internal::Lease => ".volume-syncing-operator.lease",
            Internal::Manifest => ".volume-syncing-operator.manifest",
            Internal::UploadRecord => ".volume-syncing-operator.upload-record",
            Internal::KeyCheck => ".volume-syncing-operator.keycheck",
            Internal::EncryptionMarker => ".volume-syncing-operator.encrypted",
        }
    }

    /// Whether it is stored as plain text even where the data is encrypted: only the marker,
    /// which must be readable without the key.
    pub const fn is_plain(self) -> bool {
        matches!(self, Internal::EncryptionMarker)
    }
}

/// A checked remote path as one end of a sync uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEnd {
    /// How the user named it, and the underlying (plain) storage: `remote:bucket/path`.
    shown: String,
    /// What rclone reads or writes: `remote:bucket/path/`, or a crypt root (`crypt:`) that
    /// wraps `shown`. Always a directory: the trailing '/' stops rclone from first probing
    /// whether the path is a single object, a probe whose failure (wrong credentials, endpoint
    /// down) rclone reports as "is a file not a directory", hiding the real cause.
    data: String,
}

impl RemoteEnd {
    /// The path `path` of the remote `section`, checked ([`validate`]; `flag` names where it
    /// came from in the error).
    pub fn new(section: &str, path: &str, flag: &str) -> Result<RemoteEnd> {
        validate(path, flag)?;
        let shown = format!("{section}:{path}");
        Ok(RemoteEnd {
            data: format!("{shown}/"),
            shown,
        })
    }

    /// The same path, read and written through the crypt remote `crypt_root` (`crypt:`) that
    /// wraps it.
    pub fn encrypted_by(self, crypt_root: String) -> RemoteEnd {
        RemoteEnd {
            data: crypt_root,
            ..self
        }
    }

    /// What rclone syncs with: `remote:bucket/path/`, or the crypt root.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// How the user named the path: `remote:bucket/path` (also where plain objects live).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether the data is read and written through a crypt remote.
    pub fn is_encrypted(&self) -> bool {
        self.data.ends_with(':')
    }

    /// The rclone path of one of our objects: through the crypt remote when the data is
    /// encrypted, except for the plain marker.
    pub fn object(&self, object: Internal) -> String {
        if object.is_plain() {
            format!("{}/{}", self.shown, object.name())
        } else {
            format!("{}{}", self.data, object.name())
        }
    }

    /// How one of our objects is shown to the user: `remote:bucket/path/<name>`.
    pub fn shown_object(&self, object: Internal) -> String {
        format!("{}/{}", self.shown, object.name())
    }
}

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
    fn internal_objects_live_beside_the_data_under_one_prefix() {
        let plain = RemoteEnd::new("remote", "bucket/app", "-d").unwrap();
        assert_eq!(plain.data(), "remote:bucket/app/");
        assert_eq!(plain.shown(), "remote:bucket/app");
        assert!(!plain.is_encrypted());
        assert_eq!(
            plain.object(Internal::Lease),
            "remote:bucket/app/.volume-syncing-operator.lease"
        );
        let encrypted = plain.clone().encrypted_by("crypt:".into());
        assert!(encrypted.is_encrypted());
        assert_eq!(
            encrypted.object(Internal::Manifest),
            "crypt:.volume-syncing-operator.manifest"
        );
        assert_eq!(
            encrypted.object(Internal::EncryptionMarker),
            "remote:bucket/app/.volume-syncing-operator.encrypted",
            "the marker is plain, beside the encrypted data"
        );
        assert_eq!(
            encrypted.shown_object(Internal::UploadRecord),
            "remote:bucket/app/.volume-syncing-operator.upload-record"
        );
        for object in [
            Internal::Lease,
            Internal::Manifest,
            Internal::UploadRecord,
            Internal::KeyCheck,
            Internal::EncryptionMarker,
        ] {
            assert!(object.name().starts_with(INTERNAL_PREFIX), "{object:?}");
            assert!(object.name().len() > INTERNAL_PREFIX.len(), "{object:?}");
        }
        assert_eq!(INTERNAL_FILTER, format!("/{INTERNAL_PREFIX}*"));
        assert!(RemoteEnd::new("remote", "", "-d").is_err());
    }

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
