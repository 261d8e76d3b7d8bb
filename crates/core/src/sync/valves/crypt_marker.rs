//! A path that holds encrypted data is never synced without its key.
//!
//! Without encryption settings rclone sees an encrypted path as a set of opaque objects: an
//! upload then deletes every one of them (they are not in the local tree) and a restore
//! replaces the local files with ciphertext. The key check ([`crate::remote::crypt::KeyCheck`]) cannot
//! help, since it only runs with a key; the `mass-delete` record is encrypted too. So the
//! encrypted side leaves a **plain marker** that the plain side can read:
//!
//! - Every encrypted upload makes sure `<remote path>/.volume-syncing-operator.encrypted`
//!   exists *outside* the crypt layer. It holds a fixed sentence and no key material (not even a
//!   hash of the key). It is under the internal-files rule, so no plain sync, listing or valve
//!   sees it, and replication copies it with the (still encrypted) data. A long-running process
//!   checks it once.
//! - Every run without encryption settings ([`PlainGuard`]) first lists this program's own
//!   objects at the top of the path (one listing call): the marker → refused (exit 3, rule
//!   `encrypted-remote`) before anything changes at either end; a plainly named manifest or
//!   upload record → plain (under crypt their names are encrypted too).
//! - Paths written before the marker existed, and plain paths written before the manifest
//!   existed, show neither. Then the plain side looks at the data itself: one stored file of at
//!   least 33 bytes (this program's own files aside) and its first 8 bytes, which rclone crypt
//!   always starts with `RCLONE\0\0`. Two more small calls, only for such paths.
//!
//! Cost: a plain run makes one listing of the top of its path per process (one page on S3 for
//! a usual volume); an encrypted upload reads the marker once per process (and writes it the
//! first time).

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::remote::path::{INTERNAL_FILTER, Internal, RemoteEnd};
use crate::remote::rclone::Rclone;
use crate::remote::rclone::rc::{Object, RcServer};

/// The plain marker's name at the top of the raw (encrypted) remote path.
/// The plain marker's name.
const MARKER: &str = Internal::EncryptionMarker.name();
/// What the marker says: no key material, only what it means and what to do.
const MARKER_CONTENT: &str = "volume-syncing-operator: the objects under this path are encrypted \
     with rclone crypt; upload or restore them only with the same ENCRYPTION_PASSPHRASE (and \
     ENCRYPTION_SALT) or ENCRYPTED_* settings\n";
/// The first bytes of every file rclone crypt writes.
const CRYPT_MAGIC: &[u8] = b"RCLONE\x00\x00";
/// The smallest encrypted file that holds data: the header (magic and nonce) and one byte.
const MIN_ENCRYPTED_SIZE: &str = "33B";
/// The rule of a refusal.
pub const RULE: &str = "encrypted-remote";

/// The encrypted side: writes the plain marker if the remote path lacks it.
#[derive(Debug, Default)]
pub struct MarkerWriter {
    written: AtomicBool,
}

impl MarkerWriter {
    /// Whether the marker is there (read through `server`), so that [`MarkerWriter::ensure`]
    /// has nothing to do; then it is remembered. A failed read is `false`.
    pub async fn is_present(&self, server: &RcServer, end: &RemoteEnd) -> bool {
        let object = Object::split(&end.object(Internal::EncryptionMarker));
        let read = server.read(&object, MARKER_CONTENT.len() + 1, "cat (encryption marker)");
        let present = matches!(read.await, Ok(Some(bytes)) if bytes == MARKER_CONTENT.as_bytes());
        if present {
            self.written.store(true, Ordering::Relaxed);
        }
        present
    }

    /// After the key check of an upload that is not a dry run: that check has written its own
    /// object if it was missing, so the bucket exists and no bucket check is needed.
    pub async fn ensure(&self, rclone: &Rclone, end: &RemoteEnd) -> Result<()> {
        if self.written.load(Ordering::Relaxed) {
            return Ok(());
        }
        let marker = end.object(Internal::EncryptionMarker);
        let cat = ["cat".into(), OsString::from(&marker)];
        let present = match rclone.output(&cat, None, "cat (encryption marker)").await {
            Ok(text) => text == MARKER_CONTENT,
            Err(e) if matches!(e.rclone_exit_code(), Some(3 | 4)) => false,
            Err(e) => return Err(e),
        };
        if !present {
            let rcat = [
                "rcat".into(),
                OsString::from(&marker),
                crate::remote::rclone::NO_BUCKET_CHECK.into(),
            ];
            rclone
                .output(&rcat, Some(MARKER_CONTENT), "rcat (encryption marker)")
                .await?;
            tracing::info!(
                marker = %marker,
                "wrote the plain marker that keeps runs without the key away from this encrypted path"
            );
        }
        self.written.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// What a look at a remote path without a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The marker, or data that starts with rclone crypt's magic.
    Encrypted,
    /// Nothing encrypted (or nothing at all).
    Plain,
}

/// The plain side: refuses to sync a path that holds encrypted data.
#[derive(Debug)]
pub struct PlainGuard {
    /// The (plain) remote path it looks at.
    pub end: RemoteEnd,
    /// A run of this process found the path plain: it stays so while we hold the path.
    plain: AtomicBool,
}

impl PlainGuard {
    pub fn new(end: RemoteEnd) -> Self {
        PlainGuard {
            end,
            plain: AtomicBool::new(false),
        }
    }

    /// Looks at the remote path (see the module doc).
    pub async fn inspect(&self, rclone: &Rclone) -> Result<Found> {
        if self.plain.load(Ordering::Relaxed) {
            return Ok(Found::Plain);
        }
        let found = self.look(rclone).await?;
        if found == Found::Plain {
            self.plain.store(true, Ordering::Relaxed);
        }
        Ok(found)
    }

    async fn look(&self, rclone: &Rclone) -> Result<Found> {
        // One listing of this program's own objects at the top of the path: the marker says
        // "encrypted"; a plainly named manifest or upload record (under crypt their names are
        // encrypted too) says "plain", with no further call.
        let dir = format!("{}/", self.end.shown());
        let own = [
            "lsf",
            "--files-only",
            "--max-depth",
            "1",
            "--include",
            INTERNAL_FILTER,
            dir.as_str(),
        ]
        .map(OsString::from);
        let names = match rclone.output(&own, None, "lsf (encryption marker)").await {
            Ok(names) => names,
            // A missing bucket or path holds nothing encrypted; the other checks say the rest.
            Err(e) if matches!(e.rclone_exit_code(), Some(3 | 4)) => return Ok(Found::Plain),
            Err(e) => return Err(e),
        };
        let names: Vec<&str> = names.lines().map(str::trim).collect();
        if names.contains(&MARKER) {
            return Ok(Found::Encrypted);
        }
        if names.contains(&Internal::Manifest.name())
            || names.contains(&Internal::UploadRecord.name())
        {
            return Ok(Found::Plain);
        }
        let list = [
            "lsf",
            "-R",
            "--files-only",
            "--min-size",
            MIN_ENCRYPTED_SIZE,
            "--exclude",
            INTERNAL_FILTER,
            dir.as_str(),
        ]
        .map(OsString::from);
        let Some(name) = rclone.first_line(&list, "lsf (encryption sniff)").await? else {
            return Ok(Found::Plain);
        };
        let head = [
            "cat",
            "--head",
            "8",
            format!("{}/{name}", self.end.shown()).as_str(),
        ]
        .map(OsString::from);
        let bytes = rclone.output(&head, None, "cat (encryption sniff)").await?;
        Ok(if bytes.as_bytes() == CRYPT_MAGIC {
            Found::Encrypted
        } else {
            Found::Plain
        })
    }

    /// Refuses (exit 3) a run without encryption settings over an encrypted path.
    pub async fn verify(&self, rclone: &Rclone, what: &str) -> Result<()> {
        match self.inspect(rclone).await? {
            Found::Plain => Ok(()),
            Found::Encrypted => Err(self.refusal(what)),
        }
    }

    /// The refusal; `what` says what the run would have done ("an upload would delete every
    /// encrypted object").
    pub fn refusal(&self, what: &str) -> Error {
        Error::refused_with_hint(
            RULE,
            format!(
                "{} holds data encrypted with rclone crypt, and this run has no encryption \
                 settings: {what}",
                self.end.shown()
            ),
            "Set ENCRYPTION_PASSPHRASE (and ENCRYPTION_SALT), or ENCRYPTED_*, as for the upload \
             that wrote it; to replace the encrypted data with plain data on purpose, empty the \
             remote path first (rclone purge).",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_holds_no_key_material_and_sits_beside_the_data() {
        let end = RemoteEnd::new("remote", "bucket/path", "-d")
            .unwrap()
            .encrypted_by("crypt:".into());
        assert_eq!(
            end.object(Internal::EncryptionMarker),
            format!("remote:bucket/path/{MARKER}")
        );
        assert!(!MARKER_CONTENT.contains("PASSWORD="));
    }
}
