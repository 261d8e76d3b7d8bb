//! The safety valves: named rules, checked before rclone starts, that refuse any run which
//! would wipe data. Each refusal names its rule and its override flag and exits 3.
//!
//! | rule | direction | fires when | override |
//! |------|-----------|------------|----------|
//! | `restore-in-progress` | upload | the source holds the marker of an unfinished restore | `--force-upload-partial-restore` |
//! | `mass-delete` | upload | most files the last upload recorded are gone (see [`crate::sync::valves::mass_delete`]) | `--max-delete-percent 100` |
//! | `empty-source` | upload | the source holds no regular file to upload, the remote path holds files, and the sync deletes | `--force-even-if-remote-would-be-cleared` |
//! | `system-directory` | restore | the target resolves to `/`, `/etc`, `/usr`, … | `--force-delete-local-dir` |
//! | `foreign-owner` | restore | the target holds data and is owned by root or another uid | `--force-delete-local-dir` |
//! | `empty-remote` | restore | the remote is empty, missing or unlistable while the target holds data | `--force-delete-local-dir` |
//! | `link-conflict` | restore | the remote holds objects under a path that is a symlink in the target (or cannot be listed there) | `--skip-objects-under-links` |
//!
//! Decisions:
//! - The local checks are pure functions of the file system, cheap and testable.
//! - The remote check reads at most one entry ([`crate::remote::rclone::Rclone::first_line`] on
//!   `lsf -R --files-only`, a streamed listing), through exactly the remote the sync uses (so
//!   through the crypt layer when encryption is on). A listing error is a refusal, never "empty".
//! - A target holding the restore marker was left by an interrupted restore: it is partial,
//!   so it counts as safe to overwrite.
//! - A restore never writes or deletes through a symlink of the target: rclone's `local`
//!   backend follows a link to a directory, so objects `x/f` on the remote would be written
//!   into (and a sync would delete in) the link's target, anywhere on the host. Before the
//!   data sync the target is walked without following links; each link's subtree becomes an
//!   rclone exclude rule, and one listing (at most one line, only when there are links) asks
//!   whether the remote holds objects under them. If it does, the restore is refused (rule
//!   `link-conflict`): the remote and the local tree disagree about what the path is.
//! - With `--no-delete` nothing is deleted at the destination, so the emptiness rules, which
//!   exist to prevent deletion, do not fire.
//! - "Empty" for an upload means "no regular file that the upload would send": a failed mount
//!   over a pre-made skeleton of empty directories, a volume holding only a symlink, a FIFO,
//!   `lost+found` or this program's own files would all wipe the remote just as an empty
//!   directory would. The walk stops at the first regular file, so it costs nothing on a
//!   normal volume; only a source without files pays one listing of the remote (at most one
//!   entry), and an empty remote then lets the first upload of an empty volume through.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::remote::path::{INTERNAL_FILTER, INTERNAL_PREFIX, RemoteEnd};
use crate::remote::rclone::Rclone;

/// File written into a restore target while a restore runs, removed after it succeeded.
pub const RESTORE_MARKER: &str = ".volume-syncing-operator.restore-in-progress";

pub const FORCE_UPLOAD_EMPTY: &str = "--force-even-if-remote-would-be-cleared";
pub const FORCE_UPLOAD_PARTIAL: &str = "--force-upload-partial-restore";
pub const FORCE_RESTORE: &str = "--force-delete-local-dir";
pub const SKIP_OBJECTS_UNDER_LINKS: &str = "--skip-objects-under-links";
/// How many links a refusal or warning names; the rest are counted.
const LINKS_NAMED: usize = 5;

/// Directories that are never a restore target (compared after resolving the path).
const SYSTEM_DIRECTORIES: [&str; 20] = [
    "/",
    "/bin",
    "/sbin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/proc",
    "/root",
    "/sys",
    "/usr",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/lib64",
    "/var",
    "/lib32",
    "/usr/lib32",
];

/// What a local directory holds, as far as the valves care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalState {
    /// Anything other than `lost+found` and the restore marker.
    pub has_data: bool,
    /// The restore marker is present.
    pub has_marker: bool,
}

/// Inspects a directory; a missing directory is empty.
pub fn local_state(dir: &Path) -> io::Result<LocalState> {
    let mut state = LocalState {
        has_data: false,
        has_marker: false,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(state),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        if name == RESTORE_MARKER {
            state.has_marker = true;
        } else if name != "lost+found" {
            state.has_data = true;
        }
        if state.has_data && state.has_marker {
            break;
        }
    }
    Ok(state)
}

/// Whether the upload would send at least one regular file: a walk that does not follow
/// symlinks, skips `lost+found` and this program's own files at the top (as the sync does,
/// [`INTERNAL_FILTER`]), and stops at the first regular file.
pub fn has_file_to_upload(src: &Path) -> io::Result<bool> {
    Ok(files_to_upload(src, 1)? > 0)
}

/// How many regular files the upload would send (the same walk, to the end).
pub fn count_files_to_upload(src: &Path) -> io::Result<u64> {
    files_to_upload(src, u64::MAX)
}

/// Counts the regular files under `src` as the upload sees them, stopping at `limit`.
fn files_to_upload(src: &Path, limit: u64) -> io::Result<u64> {
    let mut count = 0;
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if dir == src {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name == "lost+found" || name.starts_with(INTERNAL_PREFIX) {
                    continue;
                }
            }
            let kind = entry.file_type()?;
            if kind.is_file() {
                count += 1;
                if count >= limit {
                    return Ok(count);
                }
            } else if kind.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok(count)
}

/// Valves for sync-to-remote that look only at the local source. `Ok(true)`: the source holds
/// no file to upload, so the sync would delete everything at the destination:
/// [`check_upload_remote`] must decide.
pub fn check_upload(
    src: &Path,
    deletes: bool,
    force_empty: bool,
    force_partial: bool,
) -> Result<bool> {
    let state = local_state(src)
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot read {}: {e}", src.display())))?;
    if state.has_marker && !force_partial {
        return Err(Error::refused(
            "restore-in-progress",
            format!(
                "{} holds {RESTORE_MARKER}, left by a restore that did not complete; uploading this \
                 partial copy would delete files on the remote. Run remote-to-local-sync again to \
                 complete the restore",
                src.display()
            ),
            FORCE_UPLOAD_PARTIAL,
        ));
    }
    if !deletes || force_empty {
        return Ok(false);
    }
    let has_file = has_file_to_upload(src)
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot read {}: {e}", src.display())))?;
    Ok(!has_file)
}

/// Refuses to sync a source without files over a remote path that holds files (rule
/// `empty-source`). A remote that cannot be listed is a refusal too.
/// `remote` is what rclone lists (through crypt when encryption is on), `shown` how the user
/// named it.
pub async fn check_upload_remote(rclone: &Rclone, src: &Path, end: &RemoteEnd) -> Result<()> {
    let (remote, shown) = (end.data(), end.shown());
    let why = format!(
        "{} holds no regular file to upload (only empty directories, links, special files, \
         lost+found or this program's own files)",
        src.display()
    );
    match remote_has_entries(rclone, remote).await {
        Ok(false) => {
            tracing::info!("{why}, and {shown} holds no file either: nothing to lose, syncing");
            Ok(())
        }
        Ok(true) => Err(Error::refused(
            "empty-source",
            format!(
                "{why}, so syncing it would delete every file at {shown} (is the volume mounted?)"
            ),
            FORCE_UPLOAD_EMPTY,
        )),
        Err(e) => Err(Error::refused(
            "empty-source",
            format!(
                "{why}, and whether {shown} holds files cannot be told, so the sync could delete \
                 them: {e:#}"
            ),
            FORCE_UPLOAD_EMPTY,
        )),
    }
}

/// What the restore should do after the local valves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreDecision {
    /// Go ahead; `check_remote` says whether the remote-emptiness rule still has to be checked.
    Proceed { check_remote: bool },
    /// `--if-local-empty` and the target already holds data: skip, successfully.
    SkipLocalNotEmpty,
}

/// Valves for remote-to-local-sync that look only at the local target.
pub fn check_restore_local(
    dst: &Path,
    deletes: bool,
    force: bool,
    if_local_empty: bool,
    euid: u32,
) -> Result<(RestoreDecision, LocalState)> {
    if !force && let Some(system) = system_directory(dst) {
        return Err(Error::refused(
            "system-directory",
            format!(
                "{} resolves to the system directory {system}",
                dst.display()
            ),
            FORCE_RESTORE,
        ));
    }
    let state = local_state(dst)
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot read {}: {e}", dst.display())))?;
    // Data next to the marker is a partial restore: nothing there to protect.
    let protected = state.has_data && !state.has_marker;
    if if_local_empty && protected {
        return Ok((RestoreDecision::SkipLocalNotEmpty, state));
    }
    if protected && !force {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(dst)?.uid();
        if owner == 0 || owner != euid {
            return Err(foreign_owner(dst, owner, euid));
        }
    }
    Ok((
        RestoreDecision::Proceed {
            check_remote: protected && deletes && !force,
        },
        state,
    ))
}

/// The `foreign-owner` refusal. Root-owned targets are refused even for a root process (they
/// are often system or shared directories), so the message must not claim the owners differ.
fn foreign_owner(dst: &Path, owner: u32, euid: u32) -> Error {
    let whose = match (owner, euid) {
        (0, 0) => "root (a root-owned directory is refused even when this process runs as root: \
                   it is often a system or shared directory)"
            .to_string(),
        (0, _) => format!("root, not by this process (uid {euid})"),
        _ => format!("uid {owner}, not by this process (uid {euid})"),
    };
    Error::refused_with_hint(
        "foreign-owner",
        format!(
            "{} holds data and is owned by {whose}; a restore may delete it",
            dst.display()
        ),
        format!(
            "To restore only into an empty directory and keep data already there (the usual way \
             for an init container), pass --if-local-empty; to restore over it anyway, pass \
             {FORCE_RESTORE}."
        ),
    )
}

/// Refuses a restore from an empty, missing or unreadable remote into a target holding data.
pub async fn check_remote_not_empty(rclone: &Rclone, remote: &str) -> Result<()> {
    match remote_has_entries(rclone, remote).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::refused(
            "empty-remote",
            format!(
                "{remote} is empty or does not exist, so restoring it would delete every local file \
                 (wrong bucket or path?)"
            ),
            FORCE_RESTORE,
        )),
        Err(e) => Err(Error::refused(
            "empty-remote",
            format!(
                "cannot tell whether {remote} is empty, so the restore could delete local files: {e:#}"
            ),
            FORCE_RESTORE,
        )),
    }
}

/// Whether the remote path holds at least one file (this program's own files aside). Reads one
/// line of a recursive listing and stops rclone: on bucket-based remotes (S3 & co.) that is one
/// page of a flat, streamed listing, whatever the remote's size. (A one-level listing,
/// `--max-depth 1`, is sorted first, so rclone would fetch every page before printing.)
pub async fn remote_has_entries(rclone: &Rclone, remote: &str) -> Result<bool> {
    let args: Vec<OsString> = [
        "lsf",
        "-R",
        "--files-only",
        "--exclude",
        INTERNAL_FILTER,
        remote,
    ]
    .map(OsString::from)
    .to_vec();
    Ok(rclone
        .first_line(&args, "lsf (emptiness check)")
        .await?
        .is_some())
}

/// The symlinks under `root`, relative to it, found by a walk that never follows links. This
/// program's own files and `lost+found` at the top are left out (rclone never writes there);
/// a directory that cannot be read is passed over (rclone, as the same user, cannot write into
/// it either, and reports it itself).
pub fn local_links(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut links = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let entries = match std::fs::read_dir(root.join(&rel)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) if !rel.as_os_str().is_empty() => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            if rel.as_os_str().is_empty() {
                let shown = name.to_string_lossy();
                if shown == "lost+found" || shown.starts_with(INTERNAL_PREFIX) {
                    continue;
                }
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() {
                links.push(rel.join(&name));
            } else if kind.is_dir() {
                dirs.push(rel.join(&name));
            }
        }
    }
    links.sort();
    Ok(links)
}

/// The rclone filter pattern of everything beneath the link at `rel`: `/rel/**`, with rclone's
/// glob characters escaped. A name that is not UTF-8 (rclone shows it encoded) or holds a line
/// break becomes `*`: that may cover more than the link, never less.
pub fn link_subtree_rule(rel: &Path) -> String {
    let mut rule = String::new();
    for component in rel.components() {
        rule.push('/');
        // A name that is not UTF-8, or that would break the rule's line, is matched by `*`.
        match component.as_os_str().to_str() {
            Some(name) if !name.contains(['\n', '\r']) => rule.push_str(&escape_glob(name)),
            _ => rule.push('*'),
        }
    }
    rule.push_str("/**");
    rule
}

/// Escapes rclone's glob metacharacters (`* ? [ ] { } \`) with a backslash.
pub fn escape_glob(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The first links, for a message: escaped, truncated, and how many more there are.
pub fn name_links(links: &[PathBuf]) -> String {
    let mut named: Vec<String> = links
        .iter()
        .take(LINKS_NAMED)
        .map(|l| crate::logging::untrusted(&l.to_string_lossy()))
        .collect();
    if links.len() > LINKS_NAMED {
        named.push(format!("and {} more", links.len() - LINKS_NAMED));
    }
    named.join(", ")
}

/// Refuses a restore whose remote holds objects beneath a path that is a symlink in the target
/// (rule `link-conflict`); with `skip` it warns instead, and the objects are not restored (the
/// sync excludes them). One listing that stops at its first line; `rules` is a file of
/// `+ /link/**` rules for each link, then `- **`. A listing that fails is a refusal too.
pub async fn check_links(
    rclone: &Rclone,
    remote: &str,
    links: &[PathBuf],
    rules: &Path,
    skip: bool,
) -> Result<()> {
    let mut args: Vec<OsString> = ["lsf", "-R", "--files-only", "--filter-from"]
        .map(OsString::from)
        .to_vec();
    args.push(rules.into());
    args.push(remote.into());
    let found = rclone.first_line(&args, "lsf (objects under links)").await;
    let named = name_links(links);
    let why = match found {
        Ok(None) => return Ok(()),
        Ok(Some(object)) => format!(
            "the remote holds objects beneath paths that are symlinks in the target (e.g. \"{}\"); \
             rclone would write and delete through them, outside the target. Links: {named}",
            crate::logging::untrusted(&object)
        ),
        Err(e) => format!(
            "cannot tell whether the remote holds objects beneath the symlinks of the target \
             ({named}): {}",
            crate::logging::untrusted(&format!("{e:#}"))
        ),
    };
    if skip {
        tracing::warn!(
            "{why}; {SKIP_OBJECTS_UNDER_LINKS}: those objects are not restored, the links stay"
        );
        Ok(())
    } else {
        Err(Error::refused(
            "link-conflict",
            why,
            SKIP_OBJECTS_UNDER_LINKS,
        ))
    }
}

/// The root a remote path hangs from: `remote:bucket` for `remote:bucket/a/b`, `remote:/srv`
/// for `remote:/srv/a`, `remote:` for `remote:`.
fn remote_root(remote: &str) -> String {
    let (name, path) = remote.split_once(':').unwrap_or((remote, ""));
    let slash = if path.starts_with('/') { "/" } else { "" };
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    format!("{name}:{slash}{first}")
}

/// Refuses (exit 2) a restore from an empty remote path whose bucket (or backend root) does
/// not exist: a typo in the bucket name must not look like the first run. Asked only when the
/// listing found nothing, so it costs nothing on the normal path. `remote` is the raw remote
/// (`remote:bucket/path`, not the crypt layer). Any answer other than "not found" (e.g. no
/// permission to read the bucket itself) leaves the first-run case as it was.
pub async fn check_remote_root_exists(rclone: &Rclone, remote: &str) -> Result<()> {
    let root = remote_root(remote);
    let args: Vec<OsString> = ["lsjson", "--stat", root.as_str()]
        .map(OsString::from)
        .to_vec();
    match rclone
        .output(&args, None, "lsjson --stat (bucket check)")
        .await
    {
        Err(e) if e.rclone_exit_code() == Some(3) => Err(Error::config(format!(
            "{root} does not exist (the bucket, or the backend's root, of {remote}); check the \
             bucket name in the remote path, or create the bucket first; nothing was changed"
        ))),
        _ => Ok(()),
    }
}

/// The system directory `dir` resolves to, if any: compared both lexically (`.`, `..`,
/// repeated and trailing slashes) and after resolving symlinks.
pub fn system_directory(dir: &Path) -> Option<&'static str> {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(dir)
    };
    let lexical = normalize(&absolute);
    let resolved = resolve_existing(&lexical);
    SYSTEM_DIRECTORIES
        .iter()
        .find(|s| Path::new(s) == lexical || Path::new(s) == resolved)
        .copied()
}

/// Resolves `.` and `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Canonicalises the longest existing prefix of `path` and appends the rest.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |acc: PathBuf, c| acc.join(c));
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn link_rules_escape_globs_and_cover_odd_names() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(escape_glob(r"a*b?[c]{d}\e"), r"a\*b\?\[c\]\{d\}\\e");
        assert_eq!(link_subtree_rule(Path::new("d/[x]")), r"/d/\[x\]/**");
        let odd = Path::new(OsStr::from_bytes(b"d/\xff/l\nx"));
        assert_eq!(link_subtree_rule(odd), "/d/*/*/**");
        let many: Vec<PathBuf> = (0..8).map(|i| PathBuf::from(format!("l{i}"))).collect();
        assert_eq!(
            name_links(&many),
            "l0, l1, l2, l3, l4, and 3 more",
            "a few named, the rest counted"
        );
    }

    #[test]
    fn the_link_walk_never_follows_links() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(outside.path().join("deeper")).unwrap();
        symlink("/", outside.path().join("deeper/root")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("a/b")).unwrap();
        fs::create_dir(d.join("lost+found")).unwrap();
        symlink(outside.path(), d.join("a/b/out")).unwrap();
        symlink("nowhere", d.join("dangling")).unwrap();
        symlink("/", d.join("lost+found/x")).unwrap();
        symlink("/", d.join(".volume-syncing-operator.x")).unwrap();
        fs::write(d.join("a/file"), "").unwrap();
        assert_eq!(
            local_links(d).unwrap(),
            [PathBuf::from("a/b/out"), PathBuf::from("dangling")]
        );
        assert!(local_links(&d.join("missing")).unwrap().is_empty());
    }

    #[test]
    fn system_directories_are_recognised_however_written() {
        for p in [
            "/",
            "/usr/../bin/",
            "//usr/bin",
            "/usr/./bin",
            "/etc/",
            "/var//",
            "/home",
            "/lib64",
            "/usr/lib/x/..",
        ] {
            assert!(system_directory(Path::new(p)).is_some(), "{p}");
        }
        for p in ["/data", "/var/lib/app", "/home/user", "/tmp/x"] {
            assert_eq!(system_directory(Path::new(p)), None, "{p}");
        }
    }

    #[test]
    fn a_symlink_to_a_system_directory_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/bin", &link).unwrap();
        assert!(system_directory(&link).is_some());
        assert!(system_directory(&link.join("..").join("link")).is_some());
    }

    #[test]
    fn lost_found_and_marker_are_not_data() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!local_state(&dir.path().join("missing")).unwrap().has_data);
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        assert_eq!(
            local_state(dir.path()).unwrap(),
            LocalState {
                has_data: false,
                has_marker: false
            }
        );
        fs::write(dir.path().join(RESTORE_MARKER), "").unwrap();
        assert_eq!(
            local_state(dir.path()).unwrap(),
            LocalState {
                has_data: false,
                has_marker: true
            }
        );
        fs::write(dir.path().join("x"), "").unwrap();
        assert_eq!(
            local_state(dir.path()).unwrap(),
            LocalState {
                has_data: true,
                has_marker: true
            }
        );
    }

    #[test]
    fn only_a_regular_file_outside_lost_found_and_internal_files_is_something_to_upload() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        assert!(!has_file_to_upload(src).unwrap());
        fs::create_dir_all(src.join("data/app")).unwrap();
        fs::create_dir_all(src.join("logs")).unwrap();
        fs::create_dir_all(src.join("lost+found")).unwrap();
        fs::write(src.join("lost+found/#123"), "x").unwrap();
        fs::write(src.join(".volume-syncing-operator.key-check"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", src.join("link")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(!has_file_to_upload(src).unwrap());
        fs::write(src.join("data/app/.volume-syncing-operator.x"), "x").unwrap();
        assert!(
            has_file_to_upload(src).unwrap(),
            "only the top level is internal"
        );
    }

    #[test]
    fn upload_valves() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_upload(dir.path(), true, false, false).unwrap());
        assert!(!check_upload(dir.path(), true, true, false).unwrap());
        assert!(!check_upload(dir.path(), false, false, false).unwrap());
        fs::write(dir.path().join("f"), "x").unwrap();
        fs::write(dir.path().join(RESTORE_MARKER), "").unwrap();
        let err = check_upload(dir.path(), true, true, false).unwrap_err();
        assert!(
            err.to_string().contains("restore-in-progress")
                && err.to_string().contains(FORCE_UPLOAD_PARTIAL)
        );
        assert!(!check_upload(dir.path(), true, false, true).unwrap());
    }

    #[test]
    fn the_foreign_owner_message_fits_root_and_names_if_local_empty() {
        let root = foreign_owner(Path::new("/data"), 0, 0).to_string();
        assert!(!root.contains("not by this process"), "{root}");
        assert!(
            root.contains("even when this process runs as root"),
            "{root}"
        );
        for msg in [root, foreign_owner(Path::new("/d"), 7, 8).to_string()] {
            assert!(
                msg.contains("--if-local-empty") && msg.contains(FORCE_RESTORE),
                "{msg}"
            );
            assert!(msg.contains("'foreign-owner'"), "{msg}");
        }
        assert!(
            foreign_owner(Path::new("/d"), 7, 8)
                .to_string()
                .contains("uid 7, not by this process (uid 8)")
        );
    }

    #[test]
    fn the_root_of_a_remote_path() {
        assert_eq!(remote_root("remote:bucket/a/b/"), "remote:bucket");
        assert_eq!(remote_root("remote:bucket"), "remote:bucket");
        assert_eq!(remote_root("remote:/srv/a"), "remote:/srv");
        assert_eq!(remote_root("remote:"), "remote:");
    }
}
