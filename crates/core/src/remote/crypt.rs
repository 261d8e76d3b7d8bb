//! End-to-end encryption with rclone crypt, and the key check that keeps a wrong key from
//! destroying data.
//!
//! Encryption is on when any of `ENCRYPTED_<KEY>`, `-e key=value`, `ENCRYPTION_PASSPHRASE` or
//! `ENCRYPTION_SALT` is set. The options become section `[crypt]` (`type = crypt`,
//! `remote = remote:<path>`) and the sync targets `crypt:`. `ENCRYPTED_PASSWORD(2)` hold
//! rclone-obscured values as in an rclone.conf; `ENCRYPTION_PASSPHRASE` / `ENCRYPTION_SALT` hold
//! plain text and are obscured by `rclone obscure -` through stdin, never on argv.
//!
//! Why the key check: with a wrong key rclone cannot decrypt the remote's names, skips them,
//! and a restore sees an empty remote and deletes every local file; an upload with a wrong key
//! mixes two keys in one remote. So before every run [`KeyCheck::verify`] reads a small check
//! object through the crypt layer (O(1) in the remote's size). If it is missing but the remote
//! holds data (written before the check object existed), one listed name and its first bytes
//! are decrypted instead. A mismatch is refused (exit 3). The first upload writes the object.

use std::ffi::OsString;

use crate::error::{Error, Result};
use crate::remote::config::{self, CRYPT_SECTION, Options, REMOTE_SECTION};
use crate::remote::path::{Internal, RemoteEnd};
use crate::remote::rclone::Rclone;

/// Name of the check object, inside the encrypted remote (its own name is encrypted too).
/// What the check object decrypts to.
const KEY_CHECK_CONTENT: &str = "volume-syncing-operator key check v1\n";
/// Size of the header rclone crypt puts before the first data block (magic and nonce).
const CRYPT_HEADER_SIZE: u64 = 32;

/// Encryption settings as given, before the passphrase is obscured.
#[derive(Debug)]
pub struct CryptSettings {
    options: Options,
    passphrase: Option<String>,
    salt: Option<String>,
}

impl CryptSettings {
    /// Reads `ENCRYPTED_*`, `ENCRYPTION_PASSPHRASE`, `ENCRYPTION_SALT` and `-e`; `None` when
    /// encryption is off. Conflicting or incomplete settings are configuration errors.
    pub fn collect<'a>(
        env: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
        enc_params: &[String],
    ) -> Result<Option<Self>> {
        Self::collect_prefixed(env, "", enc_params, "-e")
    }

    /// Like [`CryptSettings::collect`], for the variables `<prefix>ENCRYPTED_*`,
    /// `<prefix>ENCRYPTION_PASSPHRASE`, `<prefix>ENCRYPTION_SALT` and the flag `flag` (the
    /// source of `remote-to-remote-sync` uses the prefix `SOURCE_`).
    pub fn collect_prefixed<'a>(
        env: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
        prefix: &str,
        enc_params: &[String],
        flag: &str,
    ) -> Result<Option<Self>> {
        let encrypted = format!("{prefix}ENCRYPTED_");
        let passphrase_name = format!("{prefix}ENCRYPTION_PASSPHRASE");
        let salt_name = format!("{prefix}ENCRYPTION_SALT");
        let options = config::collect_options(env.clone(), &encrypted, enc_params, flag)?;
        let lookup = |name: &str| {
            env.clone()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let passphrase = lookup(&passphrase_name);
        let salt = lookup(&salt_name);
        if options.is_empty() && passphrase.is_none() && salt.is_none() {
            return Ok(None);
        }
        for reserved in ["type", "remote"] {
            if options.contains_key(reserved) {
                return Err(Error::config(format!(
                    "the crypt option '{reserved}' is set by the program (the crypt remote wraps \
                     the remote path from the command line); remove {encrypted}{} / {flag} {reserved}",
                    reserved.to_ascii_uppercase()
                )));
            }
        }
        let secrets = [
            (&passphrase, &passphrase_name, "password"),
            (&salt, &salt_name, "password2"),
        ];
        for (plain, plain_name, key) in secrets {
            let obscured = format!("{encrypted}{}", key.to_ascii_uppercase());
            if plain.is_some() && options.contains_key(key) {
                return Err(Error::config(format!(
                    "both {plain_name} and {obscured} (or {flag} {key}) are set; set only one form \
                     of the same secret"
                )));
            }
            if plain.as_deref().is_some_and(|v| v.contains(['\n', '\r'])) {
                return Err(Error::config(format!(
                    "{plain_name} must not contain a line break"
                )));
            }
            if plain.as_deref().is_some_and(str::is_empty) {
                return Err(Error::config(format!("{plain_name} is set but empty")));
            }
            if options.get(key).is_some_and(|v| !looks_obscured(v)) {
                return Err(Error::config(format!(
                    "{obscured} (or {flag} {key}) is not an rclone-obscured value (make one with \
                     `rclone obscure`); for a plain passphrase use {plain_name}"
                )));
            }
        }
        if passphrase.is_none() && !options.contains_key("password") {
            return Err(Error::config(format!(
                "encryption settings are present but no key: set {passphrase_name} (plain) or \
                 {encrypted}PASSWORD (rclone-obscured)"
            )));
        }
        Ok(Some(CryptSettings {
            options,
            passphrase,
            salt,
        }))
    }

    /// The plain-text secrets (passphrase, salt), which never appear in the config file.
    pub fn plain_secrets(&self) -> Vec<String> {
        self.passphrase.iter().chain(&self.salt).cloned().collect()
    }

    /// The options of a crypt section, with plain secrets obscured by rclone (through stdin);
    /// [`wrap`] makes a section of them.
    pub async fn obscured(self, rclone: &Rclone) -> Result<Options> {
        let mut options = self.options;
        for (plain, key) in [(self.passphrase, "password"), (self.salt, "password2")] {
            if let Some(plain) = plain {
                let args = ["obscure", "-"].map(OsString::from);
                let obscured = rclone.output(&args, Some(&plain), "obscure").await?;
                options.insert(key.to_string(), obscured.trim().to_string());
            }
        }
        Ok(options)
    }

    /// The `[crypt]` section wrapping `remote:<path>`, with plain secrets obscured by rclone.
    pub async fn section(self, rclone: &Rclone, remote_path: &str) -> Result<Options> {
        let options = self.obscured(rclone).await?;
        Ok(wrap(&options, &format!("{REMOTE_SECTION}:{remote_path}")))
    }
}

/// A crypt section of `options` (from [`CryptSettings::obscured`]) wrapping the rclone path
/// `wrapped` (`remote:bucket/path`).
pub fn wrap(options: &Options, wrapped: &str) -> Options {
    let mut options = options.clone();
    options.insert("type".into(), "crypt".into());
    options.insert("remote".into(), wrapped.to_string());
    options
}

/// The rclone path of the crypt remote the sync uses.
pub fn crypt_root() -> String {
    format!("{CRYPT_SECTION}:")
}

/// Verifies that the configured key decrypts what is on the remote.
#[derive(Debug, Clone)]
pub struct KeyCheck {
    /// The encrypted end: its data is the crypt remote (`crypt:`, [`crypt_root`], unless
    /// several are configured) that wraps the underlying remote path (`remote:<path>`).
    pub end: RemoteEnd,
}

impl KeyCheck {
    /// Refuses (exit 3) when the key does not match the remote's data. On an upload that is
    /// not a dry run, writes the check object if it is missing.
    pub async fn verify(&self, rclone: &Rclone, upload: bool, dry_run: bool) -> Result<()> {
        if self.inspect(rclone).await? && upload && !dry_run {
            self.write(rclone).await?;
        }
        Ok(())
    }

    /// [`KeyCheck::verify`] without the write: refuses (exit 3) when the key does not match the
    /// remote's data; `true` when the check object is missing (and the data, if any, decrypts).
    /// It writes nothing, so an upload may run it before its lease is taken.
    pub async fn inspect(&self, rclone: &Rclone) -> Result<bool> {
        let object = self.end.object(Internal::KeyCheck);
        let cat = ["cat", object.as_str()].map(OsString::from);
        match rclone.output(&cat, None, "cat (key check)").await {
            Ok(content) if content == KEY_CHECK_CONTENT => return Ok(false),
            Ok(content) if !content.is_empty() => {
                return Err(self.mismatch("the check object has unexpected content"));
            }
            Ok(_) => {} // missing: rclone cat prints nothing for a missing object
            // The bucket does not exist yet (a first upload to a new bucket): nothing stored.
            Err(e) if e.rclone_exit_code() == Some(3) => {}
            Err(e) if is_auth_failure(&e) => {
                return Err(self.mismatch("the check object does not decrypt"));
            }
            Err(e) => return Err(e),
        }
        self.probe_existing_data(rclone).await?;
        Ok(true)
    }

    /// Writes the check object (an upload's, once [`KeyCheck::inspect`] found it missing).
    pub async fn write(&self, rclone: &Rclone) -> Result<()> {
        let object = self.end.object(Internal::KeyCheck);
        let rcat = ["rcat", object.as_str()].map(OsString::from);
        match rclone
            .output(&rcat, Some(KEY_CHECK_CONTENT), "rcat (key check)")
            .await
        {
            Err(e) if crate::remote::rclone::is_bucket_already_exists(&e) => {
                // Some providers (rclone's `Minio` and others against servers that answer
                // 409 BucketAlreadyExists to a bucket they own) fail the upload on the
                // bucket check before it. The answer proves the bucket exists, so the write
                // is repeated without that check.
                tracing::debug!(
                    "the provider answered BucketAlreadyExists; writing without the bucket check"
                );
                let rcat = ["rcat", object.as_str(), "--s3-no-check-bucket"].map(OsString::from);
                rclone
                    .output(&rcat, Some(KEY_CHECK_CONTENT), "rcat (key check)")
                    .await?;
            }
            other => {
                other?;
            }
        }
        tracing::info!(
            remote = self.end.shown(),
            "wrote the encryption key check object"
        );
        Ok(())
    }

    /// Without a check object: decrypt the name and the first bytes of one stored file.
    ///
    /// The file must hold at least one data block: an empty file is stored as a bare header
    /// (magic and nonce, [`CRYPT_HEADER_SIZE`] bytes), which "decrypts" with any key, and with
    /// `filename_encryption = off` or `obfuscate` its name proves nothing either (an obfuscated
    /// name "decodes" with any key, to a name that leads nowhere). Only when every stored file
    /// is empty is the name the sole evidence: it must encode back to the stored name.
    async fn probe_existing_data(&self, rclone: &Rclone) -> Result<()> {
        let min_size = format!("{}B", CRYPT_HEADER_SIZE + 1);
        // Our own lease (written with this key just before) is no evidence: skip it by its
        // stored name. A lease written with another key has another name and still counts.
        let encode = [
            "cryptdecode",
            "--reverse",
            self.end.data(),
            Internal::Lease.name(),
        ]
        .map(OsString::from);
        let lease_name = rclone
            .output(&encode, None, "cryptdecode --reverse (key check)")
            .await?;
        let lease_filter = format!(
            "/{}",
            lease_name
                .split('\t')
                .nth(1)
                .map(str::trim)
                .unwrap_or(Internal::Lease.name())
        );
        // The plain marker beside the data (crate::sync::valves::crypt_marker) is not encrypted either.
        let marker_filter = format!("/{}", Internal::EncryptionMarker.name());
        let with_data = [
            "lsf",
            "-R",
            "--files-only",
            "--exclude",
            lease_filter.as_str(),
            "--exclude",
            marker_filter.as_str(),
            "--min-size",
            min_size.as_str(),
            self.end.shown(),
        ]
        .map(OsString::from);
        let any = [
            "lsf",
            "-R",
            "--files-only",
            "--exclude",
            lease_filter.as_str(),
            "--exclude",
            marker_filter.as_str(),
            self.end.shown(),
        ]
        .map(OsString::from);
        let (raw, has_data) = match rclone.first_line(&with_data, "lsf (key check)").await? {
            Some(raw) => (raw, true),
            None => match rclone.first_line(&any, "lsf (key check)").await? {
                Some(raw) => (raw, false),
                None => return Ok(()), // nothing stored yet: any key is right
            },
        };
        let decode = ["cryptdecode", self.end.data(), raw.as_str()].map(OsString::from);
        let decoded = rclone
            .output(&decode, None, "cryptdecode (key check)")
            .await?;
        let name = decoded.split('\t').nth(1).map(str::trim).unwrap_or("");
        if name.is_empty() || name == "Failed to decrypt" {
            return Err(self.mismatch("stored file names do not decrypt"));
        }
        if !has_data {
            let encode = ["cryptdecode", "--reverse", self.end.data(), name].map(OsString::from);
            let encoded = rclone
                .output(&encode, None, "cryptdecode --reverse (key check)")
                .await?;
            let again = encoded.split('\t').nth(1).map(str::trim).unwrap_or("");
            return if again == raw.trim() {
                Ok(())
            } else {
                Err(self.mismatch("stored file names do not decrypt"))
            };
        }
        let object = format!("{}{name}", self.end.data());
        let head = ["cat", "--head", "1", object.as_str()].map(OsString::from);
        match rclone.output(&head, None, "cat (key check)").await {
            Err(e) if is_auth_failure(&e) => {
                Err(self.mismatch("stored file contents do not decrypt"))
            }
            // The file holds data, so its first byte must come back; nothing means the
            // decrypted name does not lead back to it.
            Ok(first) if first.is_empty() => Err(self.mismatch("stored file names do not decrypt")),
            other => other.map(|_| ()),
        }
    }

    fn mismatch(&self, why: &str) -> Error {
        Error::refused_with_hint(
            "encryption-key-mismatch",
            format!(
                "the encryption key does not match the data on {} ({why}); with this key a restore \
                 would delete local files and an upload would mix two keys in one remote",
                self.end.shown()
            ),
            "Use the key the data was written with, or choose an empty remote path for a new key.",
        )
    }
}

/// Whether a value can be an rclone-obscured secret: unpadded base64url of a 16-byte IV and at
/// least one byte of ciphertext.
fn looks_obscured(value: &str) -> bool {
    value.len() >= 23
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_auth_failure(e: &Error) -> bool {
    let text = format!("{e:#}");
    text.contains("failed to authenticate") || text.contains("bad password")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBSCURED: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4";

    #[test]
    fn a_plain_value_in_the_obscured_variable_is_a_configuration_error() {
        let err = collect(&[("ENCRYPTED_PASSWORD", "my plain passphrase")], &[]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("ENCRYPTION_PASSPHRASE"), "{err}");
        assert!(!err.to_string().contains("my plain"), "{err}");
    }

    fn collect(env: &[(&'static str, &'static str)], e: &[&str]) -> Result<Option<CryptSettings>> {
        let params: Vec<String> = e.iter().map(|s| s.to_string()).collect();
        CryptSettings::collect(env.to_vec(), &params)
    }

    #[test]
    fn off_without_settings() {
        assert!(collect(&[("REMOTE_TYPE", "s3")], &[]).unwrap().is_none());
    }

    #[test]
    fn both_forms_of_a_secret_are_a_configuration_error() {
        let err = collect(
            &[("ENCRYPTION_PASSPHRASE", "p"), ("ENCRYPTED_PASSWORD", "x")],
            &[],
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(!err.to_string().contains("=p"), "{err}");
        let err = collect(
            &[("ENCRYPTION_PASSPHRASE", "p"), ("ENCRYPTION_SALT", "s")],
            &["password2=x"],
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_key_is_required_and_reserved_options_are_refused() {
        assert_eq!(
            collect(&[("ENCRYPTED_FILENAME_ENCRYPTION", "off")], &[])
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(
            collect(&[("ENCRYPTION_SALT", "s")], &[])
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(
            collect(&[("ENCRYPTED_PASSWORD", OBSCURED)], &["remote=other:"])
                .unwrap_err()
                .exit_code(),
            2
        );
        assert!(
            collect(
                &[("ENCRYPTED_PASSWORD", OBSCURED)],
                &["filename_encryption=off"]
            )
            .unwrap()
            .is_some()
        );
    }
}
