//! From `REMOTE_*` / `ENCRYPTED_*` variables and `-p` / `-e` flags to a private rclone.conf.
//!
//! Decisions:
//! - `REMOTE_<KEY>=<value>` becomes `<key> = <value>` in section `[remote]` (key lower-cased);
//!   `-p key=value` does the same and wins. Keys must match `[a-z0-9_]+` and values must not
//!   contain a line break: anything else could inject a section or option into the file.
//! - The file is rendered deterministically: `type`, then `provider`, then the other keys in
//!   alphabetical order.
//! - rclone's config parser (goconfig) trims white space around a value and strips surrounding
//!   backticks or triple double quotes (failing on an unclosed opening one). A value it would
//!   read differently from what was given is written between backticks, which it reads back
//!   byte-identical (it takes everything up to the last backtick); `tests/it/config_parser.rs`
//!   checks random values against the real parser. So no value is ever silently changed.
//! - The rendered file lives in a fresh temp directory (0700) as `rclone.conf` (0600, created
//!   exclusively) and is removed when [`ConfigFile`] is dropped, which happens on every exit
//!   path of `run`, including signals (they are turned into ordinary returns).
//! - With `--no-template` the user's file is used in place (rclone may need to write refreshed
//!   OAuth tokens back into it); only when encryption is added is a private copy made.
//! - Secret-looking values are never logged; [`render_redacted`] is what `-vv` shows.
//! - A panic must not leave the secret behind either: the release build aborts on panic, which
//!   runs no destructor. Every private directory is therefore also registered with
//!   [`remove_secrets_on_panic`]'s hook, which deletes it before the process aborts (the hook
//!   aborts in every build, so tests see what production does).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, TryLockError};

use anyhow::Context;

use crate::error::{Error, Result};

/// Name of the section built from `REMOTE_*`; also the section an existing file must have.
pub const REMOTE_SECTION: &str = "remote";
/// Name of the crypt section that wraps `remote:<path>` when encryption is on.
pub const CRYPT_SECTION: &str = "crypt";
/// Name of the section built from `SOURCE_*` (remote-to-remote-sync's source).
pub const SOURCE_SECTION: &str = "source";
/// Name of the crypt section that wraps `source:<path>` when the source is encrypted.
pub const SOURCE_CRYPT_SECTION: &str = "source-crypt";

/// Ordered `key = value` options of one section.
pub type Options = BTreeMap<String, String>;

/// Collects the options for one section from environment variables starting with `prefix`
/// and from `key=value` flags (which win). `flag` names the flag in error messages.
pub fn collect_options<'a>(
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    prefix: &str,
    params: &[String],
    flag: &str,
) -> Result<Options> {
    let mut options = Options::new();
    for (name, value) in env {
        let Some(key) = name.strip_prefix(prefix) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        validate(&key, value, name)?;
        options.insert(key, value.to_string());
    }
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            // Only the part before any '=' could be shown, and there is none: show nothing of
            // the argument, it may be a secret typed without its key.
            return Err(Error::config(format!(
                "{flag} expects KEY=VALUE, got an argument without '=' (e.g. {flag} region=eu-west-1)"
            )));
        };
        let key = key.trim().to_ascii_lowercase();
        validate(&key, value, &format!("{flag} {key}"))?;
        options.insert(key, value.to_string());
    }
    Ok(options)
}

fn validate(key: &str, value: &str, source: &str) -> Result<()> {
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::config(format!(
            "invalid option name from {source}: keys may contain only letters, digits and '_'"
        )));
    }
    if value.contains(['\n', '\r']) {
        return Err(Error::config(format!(
            "the value of {source} contains a newline or carriage return, which could inject \
             options into the rclone config; remove the line break"
        )));
    }
    Ok(())
}

/// Renders one section. `type` and `provider` come first, then the rest alphabetically.
pub fn render_section(name: &str, options: &Options) -> String {
    render_with(name, options, |_, v| quote(v))
}

/// Writes a value so that rclone's parser reads it back unchanged (see the module doc).
fn quote(value: &str) -> String {
    let parser_would_change =
        value.trim() != value || value.starts_with('`') || value.starts_with("\"\"\"");
    if parser_would_change {
        format!("`{value}`")
    } else {
        value.to_string()
    }
}

/// Like [`render_section`], with the values of secret-looking keys replaced by `<redacted>`.
pub fn render_redacted(name: &str, options: &Options) -> String {
    render_with(name, options, |k, v| {
        if is_secret_key(k) && !v.is_empty() {
            "<redacted>".to_string()
        } else {
            quote(v)
        }
    })
}

fn render_with(name: &str, options: &Options, value: impl Fn(&str, &str) -> String) -> String {
    let first = ["type", "provider"];
    let ordered = first
        .iter()
        .filter_map(|k| options.get_key_value(*k))
        .chain(options.iter().filter(|(k, _)| !first.contains(&k.as_str())));
    let mut out = format!("[{name}]\n");
    for (k, v) in ordered {
        out.push_str(&format!("{k} = {}\n", value(k, v)));
    }
    out
}

/// Whether an option's value must never be shown: keys, secrets, passwords, tokens, ….
pub fn is_secret_key(key: &str) -> bool {
    const MARKERS: [&str; 9] = [
        "key",
        "secret",
        "pass",
        "token",
        "credential",
        "auth",
        "sas",
        "private",
        "salt",
    ];
    MARKERS.iter().any(|m| key.contains(m))
}

/// The values of the secret-looking options in a config file's text, as written and as
/// rclone's parser reads them (trimmed, surrounding backticks removed).
pub fn secret_values(text: &str) -> Vec<String> {
    let mut values = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(['=', ':']) else {
            continue;
        };
        if !is_secret_key(&key.trim().to_ascii_lowercase()) {
            continue;
        }
        let trimmed = value.trim();
        values.push(value.to_string());
        values.push(trimmed.to_string());
        if let Some(inner) = trimmed.strip_prefix('`').and_then(|v| v.strip_suffix('`')) {
            values.push(inner.to_string());
        }
    }
    values
}

/// The private directories of the rendered configs that exist now, for the panic hook.
static PRIVATE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn private_dirs<R>(f: impl FnOnce(&mut Vec<PathBuf>) -> R) -> Option<R> {
    match PRIVATE_DIRS.try_lock() {
        Ok(mut dirs) => Some(f(&mut dirs)),
        Err(TryLockError::Poisoned(p)) => Some(f(&mut p.into_inner())),
        // Held by a thread that panicked mid-update: nothing to do without deadlocking.
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Installs the panic hook that removes every private config directory, prints the panic as
/// before, and aborts (no unwinding: the same in every build). Called once, first, by `main`.
pub fn remove_secrets_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        private_dirs(|dirs| {
            for dir in dirs.drain(..) {
                let _ = fs::remove_dir_all(dir);
            }
        });
        previous(info);
        std::process::abort();
    }));
}

/// A fresh temporary directory of mode 0700, removed when dropped and, should the process
/// panic, by [`remove_secrets_on_panic`]'s hook (the rendered config's, the rc socket's).
#[derive(Debug)]
pub struct PrivateDir(tempfile::TempDir);

impl PrivateDir {
    /// A new directory in TMPDIR named `prefix…`; `what` names it in an error.
    pub fn new(prefix: &str, what: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .with_context(|| {
                format!("cannot create a private temp directory for {what} (is TMPDIR writable?)")
            })?;
        private_dirs(|dirs| dirs.push(dir.path().to_path_buf()));
        let dir = PrivateDir(dir);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make the directory for {what} private"))?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        private_dirs(|dirs| dirs.retain(|d| d != self.0.path()));
    }
}

/// The rclone.conf handed to rclone with `--config`. A rendered file is deleted with its
/// private directory when this value is dropped; a user's file is left alone.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    _dir: Option<PrivateDir>,
}

impl ConfigFile {
    /// Writes `text` into a new private temp directory.
    pub fn private(text: &str) -> Result<Self> {
        let dir = PrivateDir::new("volume-syncing-operator-", "the rclone config")?;
        let path = dir.path().join("rclone.conf");
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        // No fsync: the file lives only as long as this process, and it costs milliseconds.
        file.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(ConfigFile {
            path,
            _dir: Some(dir),
        })
    }

    /// Uses an existing file in place.
    pub fn existing(path: &Path) -> Self {
        ConfigFile {
            path: path.to_path_buf(),
            _dir: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Logs a redacted config at debug level, one event per line: a log line never holds a line
/// break (see [`crate::logging`]).
pub fn log_redacted(redacted: &str) {
    for line in redacted.lines() {
        tracing::debug!("rendered rclone config (secrets redacted): {line}");
    }
}

/// Reads a user's rclone.conf and checks that it defines the sections the command uses
/// (`[remote]`, and `[source]` for remote-to-remote-sync).
pub fn read_existing(path: &Path, sections: &[&str]) -> Result<String> {
    let text = fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read --config-path {}: {e}", path.display())))?;
    for section in sections {
        if !text.lines().any(|l| l.trim() == format!("[{section}]")) {
            return Err(Error::config(format!(
                "{} has no section [{section}]; the remote must be named '{section}'",
                path.display()
            )));
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        pairs.to_vec()
    }

    #[test]
    fn seed_example_renders_exactly() {
        let vars = env(&[
            ("REMOTE_TYPE", "s3"),
            ("REMOTE_PROVIDER", "Minio"),
            ("REMOTE_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("REMOTE_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
            ("REMOTE_ENDPOINT", "http://localhost:9000"),
            ("REMOTE_ACL", "private"),
            ("HOME", "/root"),
        ]);
        let opts = collect_options(vars, "REMOTE_", &[], "-p").unwrap();
        assert_eq!(
            render_section(REMOTE_SECTION, &opts),
            "[remote]\ntype = s3\nprovider = Minio\naccess_key_id = AKIAEXAMPLE\nacl = private\n\
             endpoint = http://localhost:9000\nsecret_access_key = wJalrXUtnFEMI\n"
        );
    }

    #[test]
    fn params_win_over_environment_and_are_lowercased() {
        let vars = env(&[("REMOTE_TYPE", "s3"), ("REMOTE_REGION", "eu-west-1")]);
        let params = vec!["region=us-east-1".to_string(), "ACL=private".to_string()];
        let opts = collect_options(vars, "REMOTE_", &params, "-p").unwrap();
        assert_eq!(opts["region"], "us-east-1");
        assert_eq!(opts["acl"], "private");
        assert_eq!(opts["type"], "s3");
    }

    #[test]
    fn values_may_contain_equals_signs() {
        let params = vec!["sas_url=https://x/?a=b".to_string()];
        let opts = collect_options(env(&[]), "REMOTE_", &params, "-p").unwrap();
        assert_eq!(opts["sas_url"], "https://x/?a=b");
    }

    #[test]
    fn injection_attempts_are_refused_without_echoing_the_value() {
        for (name, value) in [
            ("REMOTE_ENDPOINT", "http://x\n[evil]\ntype = local"),
            ("REMOTE_ENDPOINT", "http://x\rtype = local"),
        ] {
            let err = collect_options(vec![(name, value)], "REMOTE_", &[], "-p").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("REMOTE_ENDPOINT") && msg.contains("newline"),
                "{msg}"
            );
            assert!(!msg.contains("evil") && !msg.contains("local"), "{msg}");
            assert_eq!(err.exit_code(), 2);
        }
        for bad_key in ["REMOTE_A-B", "REMOTE_", "REMOTE_X Y", "REMOTE_]"] {
            let err = collect_options(vec![(bad_key, "v")], "REMOTE_", &[], "-p").unwrap_err();
            assert!(err.to_string().contains("invalid option name"), "{err}");
        }
        for bad in ["novalue", "=x", "a b=c", "[x]=y"] {
            let err = collect_options(env(&[]), "REMOTE_", &[bad.to_string()], "-p").unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
        let err =
            collect_options(env(&[]), "REMOTE_", &["topsecret".to_string()], "-p").unwrap_err();
        assert!(!err.to_string().contains("topsecret"));
    }

    #[test]
    fn redaction_hides_secret_looking_values_only() {
        let params = [
            "type=s3",
            "access_key_id=AK1",
            "secret_access_key=SK1",
            "session_token=T1",
            "endpoint=http://e",
        ]
        .map(String::from);
        let opts = collect_options(env(&[]), "REMOTE_", &params, "-p").unwrap();
        let text = render_redacted(REMOTE_SECTION, &opts);
        for secret in ["AK1", "SK1", "T1"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            text.contains("type = s3") && text.contains("endpoint = http://e"),
            "{text}"
        );
    }

    #[test]
    fn private_file_is_0600_in_a_0700_dir_and_removed_on_drop() {
        let file = ConfigFile::private("[remote]\ntype = local\n").unwrap();
        let path = file.path().to_path_buf();
        let dir = path.parent().unwrap().to_path_buf();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(file);
        assert!(!path.exists() && !dir.exists());
    }
}
