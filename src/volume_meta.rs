//! Restore fidelity: what rclone cannot keep on an object store — directory modes, owners,
//! file modes, symlinks, empty directories, hard links — is recorded by the upload in one
//! manifest object beside the data, and applied by the restore after the data sync.
//!
//! # The manifest
//! `.volume-syncing-operator.manifest` at the root of the remote path, so the internal-files
//! rule ([`crate::safety::INTERNAL_FILES_FILTER`]) keeps it out of every sync, listing and
//! valve: it never makes an empty remote look non-empty. It is written through exactly the
//! remote the sync uses, so with encryption on its name and content (paths, modes, link
//! targets) are encrypted by rclone crypt like the data. Format: JSON lines, sorted by path —
//! a header (format, a generation id, the time), one line per directory (mode, uid, gid,
//! mtime), regular file (mode, uid, gid, size, hard-link group), symlink (exact target, uid,
//! gid, mtime) and skipped special file (FIFO, socket, device), then a trailer with the number
//! of entries. Without the trailer the manifest is incomplete and is ignored (with a warning).
//! Paths and link targets that are not UTF-8 are not recorded (a warning each).
//!
//! # Consistency
//! - The manifest is written only after the data sync succeeded, with one `rclone rcat`: an S3
//!   PUT replaces the object atomically. To keep the cost of a no-change sync near zero, the
//!   `rcat` process is started *before* the data sync (its start-up overlaps the sync) and is
//!   fed only once the sync succeeded; after a failed or interrupted sync it is killed before
//!   it saw the end of its input, so nothing is written. If it dies on its own with partial
//!   input (our process killed), the object lacks the trailer and is ignored.
//! - The old manifest can still describe older data: an upload that failed after changing
//!   some objects, or whose manifest write failed. So the restore never trusts it blindly: the
//!   manifest's per-path fingerprint (type and size of every regular file, type of every other
//!   entry) is matched against what the data sync actually produced, entry by entry, and an
//!   entry is applied only where it matches. A file whose size differs keeps rclone's default
//!   mode; a link is created only where nothing exists (or replaces an older link); a recorded
//!   directory is created only where nothing exists. The manifest never deletes anything but
//!   a symlink it replaces. Mismatches are counted and reported (`metadata=partial`). Sizes,
//!   not mtimes, are compared because a backend without mtimes restores every file with the
//!   time of its upload.
//! - In one process (schedule, watch) the upload remembers a digest of the manifest it wrote
//!   last and does not write it again when nothing changed.
//!
//! # Applying it safely
//! Nothing is ever followed: every parent directory is opened from the restore root with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and the last component is changed with
//! the `*at` calls and `AT_SYMLINK_NOFOLLOW`. Manifest paths with `..`, `.`, empty components
//! or a leading `/` are refused (the whole manifest is then ignored). So a symlink, whatever
//! its target, can never make the restore write outside LOCAL_DIR. Order: missing directories,
//! then files (chown before chmod, since chown clears setuid), hard links, symlinks, then
//! directories deepest first (chmod last, so a read-only directory is filled first; mtimes
//! last, since every change inside a directory bumps its mtime), and the restore root itself
//! after the restore marker is gone. Owners are set only when the restoring process is root;
//! setuid/setgid on files likewise. Hard links are restored as links when every member of a
//! group came back with identical content (compared byte by byte), else stay copies. A
//! non-root restore that may not chmod an entry (another user's, e.g. a root-owned mount
//! point as the restore root) says so and goes on: that is the normal Kubernetes volume.
//!
//! # What is recorded
//! The walk never follows links, leaves out this program's own files and `lost+found` at the
//! top, and tolerates a live volume (entries that vanish, unreadable subdirectories, which
//! rclone reports itself). With `--no-delete` the manifest describes the local tree only; an
//! empty tree then writes none, so the remote's manifest stays.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, fstatat, mkdirat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};

use crate::error::{Error, Result};
use crate::rclone::Rclone;

/// Name of the manifest object at the root of the remote path.
pub const MANIFEST: &str = ".volume-syncing-operator.manifest";
/// The `format` of the header line; a restore ignores a manifest of any other format.
const FORMAT: &str = "volume-syncing-operator manifest v1";
/// Upper bound for writing or reading the manifest once its rclone runs.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
/// Mode bits a non-root process may not set on files it restores.
const SET_ID_BITS: u32 = 0o6000;

/// One line of the manifest. Short keys: the manifest of a big volume is mostly paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t")]
enum Line {
    #[serde(rename = "h")]
    Header {
        format: String,
        generation: String,
        written: String,
    },
    #[serde(rename = "d")]
    Dir {
        p: String,
        m: u32,
        u: u32,
        g: u32,
        s: i64,
        n: i64,
    },
    #[serde(rename = "f")]
    File {
        p: String,
        m: u32,
        u: u32,
        g: u32,
        size: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hl: Option<u64>,
    },
    #[serde(rename = "l")]
    Link {
        p: String,
        to: String,
        u: u32,
        g: u32,
        s: i64,
        n: i64,
    },
    #[serde(rename = "x")]
    Special { p: String, kind: String },
    #[serde(rename = "e")]
    End { entries: u64 },
}

impl Line {
    fn path(&self) -> Option<&str> {
        match self {
            Line::Dir { p, .. }
            | Line::File { p, .. }
            | Line::Link { p, .. }
            | Line::Special { p, .. } => Some(p),
            Line::Header { .. } | Line::End { .. } => None,
        }
    }
}

/// What the upload recorded, ready to be written.
#[derive(Debug)]
pub struct Record {
    /// The entry lines (no header, no trailer).
    body: Vec<u8>,
    entries: u64,
    /// FIFOs, sockets and devices that were not transferred.
    pub skipped_special: u64,
}

impl Record {
    /// Whether the tree held nothing but its root.
    pub fn is_empty(&self) -> bool {
        self.entries <= 1
    }

    /// A digest of the entries, to skip writing an unchanged manifest again.
    pub fn digest(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.body.hash(&mut h);
        h.finish()
    }

    /// The whole manifest: header, entries, trailer.
    fn bytes(&self) -> Vec<u8> {
        let header = Line::Header {
            format: FORMAT.into(),
            generation: generation(),
            written: chrono::Utc::now().to_rfc3339(),
        };
        let mut out = serde_json::to_vec(&header).expect("serialisable");
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        let end = Line::End {
            entries: self.entries,
        };
        out.extend(serde_json::to_vec(&end).expect("serialisable"));
        out.push(b'\n');
        out
    }
}

/// A random-enough id of one upload, to tie a restore's log to the upload that wrote it.
fn generation() -> String {
    let mut bytes = [0u8; 8];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        bytes = (nanos ^ i64::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Walks the tree under `root` (never following links) and records every entry. Each FIFO,
/// socket or device is logged at WARN; this program's own files at the top are left out.
pub fn record(root: &Path) -> Result<Record> {
    let mut lines = Vec::new();
    let mut links: HashMap<(u64, u64), u64> = HashMap::new();
    let meta = fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    lines.push(dir_line(String::new(), &meta));
    walk(root, "", &mut lines, &mut links)
        .with_context(|| format!("cannot record the metadata of {}", root.display()))?;
    // Hard-link groups with a single member in the tree are not groups.
    let mut members: HashMap<u64, u32> = HashMap::new();
    for line in &lines {
        if let Line::File { hl: Some(g), .. } = line {
            *members.entry(*g).or_default() += 1;
        }
    }
    let mut body = Vec::new();
    let mut skipped_special = 0;
    for line in &mut lines {
        match line {
            Line::File { hl, .. } if hl.is_some_and(|g| members[&g] < 2) => *hl = None,
            Line::Special { p, kind } => {
                skipped_special += 1;
                tracing::warn!(path = %p, kind = %kind, "not transferred: a {kind} cannot be stored on a remote");
            }
            _ => {}
        }
        body.extend(serde_json::to_vec(line).expect("serialisable"));
        body.push(b'\n');
    }
    Ok(Record {
        body,
        entries: lines.len() as u64,
        skipped_special,
    })
}

fn mtime(meta: &fs::Metadata) -> (i64, i64) {
    (meta.mtime(), meta.mtime_nsec())
}

fn dir_line(p: String, meta: &fs::Metadata) -> Line {
    let (s, n) = mtime(meta);
    Line::Dir {
        p,
        m: meta.mode() & 0o7777,
        u: meta.uid(),
        g: meta.gid(),
        s,
        n,
    }
}

fn walk(
    root: &Path,
    rel: &str,
    lines: &mut Vec<Line>,
    links: &mut HashMap<(u64, u64), u64>,
) -> io::Result<()> {
    let dir = root.join(rel);
    let listing = fs::read_dir(&dir).and_then(|entries| {
        entries
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<OsString>>>()
    });
    let mut names = match listing {
        Ok(names) => names,
        // A live volume: the directory went away after it was listed.
        Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        // rclone reports an unreadable directory itself; its own entry is still recorded.
        Err(e) if !rel.is_empty() => {
            tracing::warn!(path = %dir.display(), "metadata of the contents not recorded: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    names.sort();
    for name in names {
        // This program's own files, and the file system's lost+found (fsck's, root's, and not
        // data to the valves either).
        if rel.is_empty() && (is_internal_name(&name) || name == "lost+found") {
            continue;
        }
        let Some(name_str) = name.to_str() else {
            tracing::warn!(
                path = %dir.join(&name).display(),
                "metadata not recorded: the name is not UTF-8"
            );
            continue;
        };
        let p = if rel.is_empty() {
            name_str.to_string()
        } else {
            format!("{rel}/{name_str}")
        };
        let meta = match fs::symlink_metadata(dir.join(&name)) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
            Err(e) => return Err(e),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            lines.push(dir_line(p.clone(), &meta));
            walk(root, &p, lines, links)?;
        } else if kind.is_file() {
            let hl = (meta.nlink() > 1).then(|| {
                let next = links.len() as u64;
                *links.entry((meta.dev(), meta.ino())).or_insert(next)
            });
            lines.push(Line::File {
                p,
                m: meta.mode() & 0o7777,
                u: meta.uid(),
                g: meta.gid(),
                size: meta.size(),
                hl,
            });
        } else if kind.is_symlink() {
            let target = match fs::read_link(dir.join(&name)) {
                Ok(target) => target,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let Some(to) = target.to_str() else {
                tracing::warn!(path = %p, "symlink not recorded: its target is not UTF-8");
                continue;
            };
            let (s, n) = mtime(&meta);
            lines.push(Line::Link {
                p,
                to: to.to_string(),
                u: meta.uid(),
                g: meta.gid(),
                s,
                n,
            });
        } else {
            let kind = if kind.is_fifo() {
                "FIFO"
            } else if kind.is_socket() {
                "socket"
            } else if kind.is_block_device() {
                "block device"
            } else {
                "character device"
            };
            lines.push(Line::Special {
                p,
                kind: kind.into(),
            });
        }
    }
    Ok(())
}

/// The manifest's object: `<remote>` ends with `/` or `:` (see [`crate::plan`]).
pub fn object(remote: &str) -> String {
    format!("{remote}{MANIFEST}")
}

/// An `rclone rcat` started before the data sync and fed only after it succeeded. Dropping
/// it unfed kills rclone before it reads the end of its input, so nothing is written.
pub struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Writer {
    pub fn start(rclone: &Rclone, remote: &str) -> Result<Writer> {
        // Fed only after the data sync succeeded: the bucket exists by then.
        let args = [
            "rcat".into(),
            object(remote).into(),
            crate::rclone::NO_BUCKET_CHECK.into(),
        ];
        let mut child = rclone.spawn_piped(&args, "rcat (metadata manifest)")?;
        let stdin = child.stdin.take();
        Ok(Writer { child, stdin })
    }

    /// Writes the manifest and waits for rclone to store it.
    pub async fn write(mut self, record: &Record) -> Result<()> {
        let bytes = record.bytes();
        let mut stdin = self.stdin.take().context("rclone rcat stdin")?;
        let mut stdout = self.child.stdout.take().context("rclone rcat stdout")?;
        let mut stderr = self.child.stderr.take().context("rclone rcat stderr")?;
        let work = async {
            let feed = async {
                stdin.write_all(&bytes).await?;
                stdin.shutdown().await?;
                drop(stdin);
                Ok::<_, io::Error>(())
            };
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (fed, _, _) = tokio::join!(
                feed,
                stdout.read_to_end(&mut out),
                stderr.read_to_end(&mut err)
            );
            let status = self.child.wait().await?;
            Ok::<_, io::Error>((fed, status, err))
        };
        let (fed, status, err) = tokio::time::timeout(TRANSFER_TIMEOUT, work)
            .await
            .map_err(|_| {
                Error::Other(anyhow::anyhow!(
                    "writing the metadata manifest did not finish within {TRANSFER_TIMEOUT:?}"
                ))
            })?
            .context("writing the metadata manifest")?;
        if !status.success() {
            return Err(rclone_error("rcat (metadata manifest)", status, &err));
        }
        fed.context("writing the metadata manifest to rclone")?;
        Ok(())
    }

    /// Stops rclone without writing anything.
    pub fn abandon(mut self) {
        let _ = self.child.start_kill();
        drop(self.stdin.take());
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            // Kill first: once rclone sees the end of its input it would write.
            let _ = self.child.start_kill();
            self.stdin = None;
        }
    }
}

fn rclone_error(operation: &str, status: std::process::ExitStatus, stderr: &[u8]) -> Error {
    let code = status.code().unwrap_or(-1);
    let tail = String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    let err = Error::Rclone {
        operation: operation.to_string(),
        code,
        meaning: crate::rclone::exit_meaning(code),
        cause: None,
        stats: Default::default(),
    };
    if tail.is_empty() {
        err
    } else {
        Error::Other(anyhow::Error::new(err).context(tail))
    }
}

/// Reads the manifest: `Ok(None)` when the remote has none (written by an older release).
pub async fn fetch(rclone: &Rclone, remote: &str) -> Result<Option<Vec<u8>>> {
    let args = ["cat".into(), object(remote).into()];
    let operation = "cat (metadata manifest)";
    let mut child = rclone.spawn_piped(&args, operation)?;
    drop(child.stdin.take());
    let mut stdout = child.stdout.take().context("rclone cat stdout")?;
    let mut stderr = child.stderr.take().context("rclone cat stderr")?;
    let work = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        a?;
        b?;
        let status = child.wait().await?;
        Ok::<_, io::Error>((status, out, err))
    };
    let (status, out, err) = tokio::time::timeout(TRANSFER_TIMEOUT, work)
        .await
        .map_err(|_| {
            Error::Other(anyhow::anyhow!(
                "reading the metadata manifest did not finish within {TRANSFER_TIMEOUT:?}"
            ))
        })?
        .context("reading the metadata manifest")?;
    // `rclone cat` of a missing object lists it as a directory: exit 3 (directory not found)
    // on most backends, an empty success on bucket-based ones.
    match status.code() {
        Some(0) if out.is_empty() => Ok(None),
        Some(0) => Ok(Some(out)),
        Some(3) | Some(4) => Ok(None),
        _ => Err(rclone_error(operation, status, &err)),
    }
}

/// A parsed, validated manifest.
#[derive(Debug)]
pub struct Manifest {
    pub generation: String,
    pub written: String,
    lines: Vec<Line>,
}

/// Parses a manifest; an error says why it cannot be trusted (incomplete, unknown format, a
/// path that would leave the restore root).
pub fn parse(bytes: &[u8]) -> std::result::Result<Manifest, String> {
    let mut lines = Vec::new();
    let mut header = None;
    let mut end = None;
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        if raw.is_empty() {
            continue;
        }
        if end.is_some() {
            return Err("data after the end line".into());
        }
        let line: Line = serde_json::from_slice(raw).map_err(|e| format!("line {}: {e}", i + 1))?;
        match line {
            Line::Header {
                format,
                generation,
                written,
            } => {
                if i != 0 || format != FORMAT {
                    return Err(format!("unknown format {format:?} (expected {FORMAT:?})"));
                }
                header = Some((generation, written));
            }
            Line::End { entries } => end = Some(entries),
            other => {
                if header.is_none() {
                    return Err("no header line".into());
                }
                let p = other.path().unwrap_or_default();
                let is_root_dir = p.is_empty() && matches!(other, Line::Dir { .. });
                if !is_root_dir && !safe_relative(p) {
                    return Err(format!("unsafe path {p:?}"));
                }
                lines.push(other);
            }
        }
    }
    let Some((generation, written)) = header else {
        return Err("no header line (empty or truncated)".into());
    };
    match end {
        Some(n) if n == lines.len() as u64 => Ok(Manifest {
            generation,
            written,
            lines,
        }),
        Some(n) => Err(format!("{} entries, the end line says {n}", lines.len())),
        None => Err("no end line: the manifest is incomplete (an interrupted write?)".into()),
    }
}

/// A relative path of plain names: no `..`, no `.`, no empty component, no leading `/`, no NUL.
fn safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// What applying a manifest did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub dirs_created: u64,
    pub links_created: u64,
    pub hard_links: u64,
    pub files: u64,
    /// Entries that did not match the restored data and were left alone.
    pub mismatched: u64,
    /// Special files recorded by the upload, not restored.
    pub skipped_special: u64,
    /// Owners were recorded but could not be set (not root).
    pub owners_not_set: bool,
    /// Files whose setuid/setgid bits were dropped (not root).
    pub set_id_dropped: u64,
}

/// Applies everything but the restore root's own mode, owner and mtime (see [`apply_root`]).
pub fn apply(root: &Path, manifest: &Manifest, as_root: bool) -> Result<Applied> {
    let root_fd = open_root(root)?;
    let mut ctx = Ctx {
        root: root_fd.as_fd(),
        cache: None,
        as_root,
        applied: Applied {
            owners_not_set: !as_root,
            ..Applied::default()
        },
    };
    let lines = &manifest.lines;
    // 1. Missing directories, parents first (the manifest is sorted by path).
    for line in lines {
        if let Line::Dir { p, .. } = line
            && !p.is_empty()
        {
            ctx.ensure_dir(p)?;
        }
    }
    // 2. Files, 3. hard links, 4. symlinks, 5. specials.
    let mut groups: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for line in lines {
        if let Line::File {
            p,
            m,
            u,
            g,
            size,
            hl,
        } = line
            && ctx.file(p, *m, *u, *g, *size)?
            && let Some(group) = hl
        {
            groups.entry(*group).or_default().push(p);
        }
    }
    for members in groups.values() {
        ctx.hard_link_group(root, members)?;
    }
    for line in lines {
        match line {
            Line::Link { p, to, u, g, s, n } => ctx.link(p, to, *u, *g, (*s, *n))?,
            Line::Special { p, kind } => {
                ctx.applied.skipped_special += 1;
                tracing::warn!(path = %p, kind = %kind, "not restored: the upload skipped this {kind}");
            }
            _ => {}
        }
    }
    // 6. Directories deepest first: owner, mode, mtime.
    for line in lines.iter().rev() {
        if let Line::Dir { p, m, u, g, s, n } = line
            && !p.is_empty()
        {
            ctx.dir_attributes(p, *m, *u, *g, (*s, *n))?;
        }
    }
    Ok(ctx.applied)
}

/// Applies the restore root's own owner, mode and mtime: last, after the restore marker is
/// gone (a read-only root would keep it from being removed). True if they could not be
/// applied (a root that belongs to another user).
pub fn apply_root(root: &Path, manifest: &Manifest, as_root: bool) -> Result<bool> {
    let Some(Line::Dir { m, u, g, s, n, .. }) = manifest.lines.first() else {
        return Ok(false);
    };
    let fd = open_root(root)?;
    let at = |what: &str, e: Errno| anyhow::anyhow!("cannot {what} {}: {e}", root.display());
    if as_root {
        nix::unistd::fchown(&fd, Some(Uid::from_raw(*u)), Some(Gid::from_raw(*g)))
            .map_err(|e| at("set the owner of", e))?;
    }
    let chmod = nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(*m));
    let times = nix::sys::stat::futimens(&fd, &TimeSpec::UTIME_OMIT, &timespec((*s, *n)));
    match chmod.and(times) {
        Ok(()) => Ok(false),
        // A mount point owned by root (or another user) that this process may write into but
        // not chmod: its own mode stays; everything below it is restored.
        Err(Errno::EPERM) if !as_root => {
            tracing::warn!(
                path = %root.display(),
                "the recorded mode {m:04o} and mtime of the restore root were not applied: it \
                 belongs to another user"
            );
            Ok(true)
        }
        Err(e) => Err(at("set the mode and mtime of", e).into()),
    }
}

fn open_root(root: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Other(anyhow::anyhow!("cannot open {}: {e}", root.display())))
}

fn timespec((s, n): (i64, i64)) -> TimeSpec {
    TimeSpec::new(s, n)
}

/// The state of one application: the root, a cache of the last parent directory opened.
struct Ctx<'a> {
    root: BorrowedFd<'a>,
    cache: Option<(String, OwnedFd)>,
    as_root: bool,
    applied: Applied,
}

/// What is at a path, looked at without following it.
enum Found {
    Nothing,
    Dir,
    File(u64),
    Link,
    Other,
}

impl Ctx<'_> {
    /// The parent directory of `p` (opened beneath the root, through no symlink) and the last
    /// component. `Ok(None)` when the parent is missing or not a plain directory: a mismatch.
    fn parent<'p>(&mut self, p: &'p str) -> Result<Option<(BorrowedFd<'_>, &'p str)>> {
        let (dir, name) = match p.rsplit_once('/') {
            Some((dir, name)) => (dir, name),
            None => return Ok(Some((self.root, p))),
        };
        if self.cache.as_ref().is_none_or(|(d, _)| d != dir) {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_BENEATH
                        | ResolveFlag::RESOLVE_NO_SYMLINKS
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS,
                );
            match openat2(self.root, dir, how) {
                Ok(fd) => self.cache = Some((dir.to_string(), fd)),
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV) => {
                    self.cache = None;
                    return Ok(None);
                }
                Err(e) => return Err(io_error(&format!("cannot open directory {dir}"), e)),
            }
        }
        let fd = self.cache.as_ref().expect("just set").1.as_fd();
        Ok(Some((fd, name)))
    }

    fn found(&mut self, p: &str) -> Result<Option<Found>> {
        let Some((dir, name)) = self.parent(p)? else {
            return Ok(None);
        };
        Ok(Some(
            match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Err(Errno::ENOENT) => Found::Nothing,
                Err(e) => return Err(io_error(&format!("cannot inspect {p}"), e)),
                Ok(st) => match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
                    SFlag::S_IFDIR => Found::Dir,
                    SFlag::S_IFREG => Found::File(st.st_size as u64),
                    SFlag::S_IFLNK => Found::Link,
                    _ => Found::Other,
                },
            },
        ))
    }

    fn mismatch(&mut self, p: &str, why: &str) {
        self.applied.mismatched += 1;
        tracing::warn!(path = %p, "recorded metadata not applied: {why}");
    }

    fn ensure_dir(&mut self, p: &str) -> Result<()> {
        match self.found(p)? {
            Some(Found::Dir) => {}
            Some(Found::Nothing) => {
                let (dir, name) = self.parent(p)?.expect("found above");
                mkdirat(dir, name, Mode::from_bits_truncate(0o700))
                    .map_err(|e| io_error(&format!("cannot create directory {p}"), e))?;
                self.applied.dirs_created += 1;
            }
            None => self.mismatch(p, "its parent directory is missing"),
            Some(_) => self.mismatch(p, "recorded as a directory, restored as something else"),
        }
        Ok(())
    }

    fn chown(&mut self, p: &str, u: u32, g: u32) -> Result<()> {
        if !self.as_root {
            return Ok(());
        }
        let (dir, name) = self.parent(p)?.expect("checked by the caller");
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(u)),
            Some(Gid::from_raw(g)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_error(&format!("cannot set the owner of {p}"), e))
    }

    /// Sets the mode; false (and a warning) when a non-root process is not permitted to: an
    /// entry of another user in a target that already held data.
    fn chmod(&mut self, p: &str, mode: u32) -> Result<bool> {
        let (dir, name) = self.parent(p)?.expect("checked by the caller");
        match fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::NoFollowSymlink,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EPERM) if !self.as_root => {
                self.mismatch(p, "it belongs to another user");
                Ok(false)
            }
            Err(e) => Err(io_error(&format!("cannot set the mode of {p}"), e)),
        }
    }

    /// Applies a file's owner and mode if the restored file matches; true if it did.
    fn file(&mut self, p: &str, m: u32, u: u32, g: u32, size: u64) -> Result<bool> {
        match self.found(p)? {
            Some(Found::File(got)) if got == size => {}
            Some(Found::File(got)) => {
                self.mismatch(
                    p,
                    &format!("recorded with {size} bytes, restored with {got} (another upload?)"),
                );
                return Ok(false);
            }
            Some(Found::Nothing) | None => {
                self.mismatch(p, "recorded as a file, not restored");
                return Ok(false);
            }
            Some(_) => {
                self.mismatch(p, "recorded as a file, restored as something else");
                return Ok(false);
            }
        }
        self.chown(p, u, g)?;
        let mut mode = m;
        if !self.as_root && mode & SET_ID_BITS != 0 {
            mode &= !SET_ID_BITS;
            self.applied.set_id_dropped += 1;
        }
        if !self.chmod(p, mode)? {
            return Ok(false);
        }
        self.applied.files += 1;
        Ok(true)
    }

    /// Turns the members of a hard-link group back into links of the first one, when all
    /// came back with the same content.
    fn hard_link_group(&mut self, root: &Path, members: &[&str]) -> Result<()> {
        let Some((first, rest)) = members.split_first() else {
            return Ok(());
        };
        let Some((mut a, am)) = open_beneath(self.root, first, root)? else {
            return Ok(());
        };
        for other in rest {
            let Some((mut b, bm)) = open_beneath(self.root, other, root)? else {
                continue;
            };
            if am.ino() == bm.ino() && am.dev() == bm.dev() {
                continue;
            }
            use std::io::Seek;
            a.rewind().map_err(|e| io_error_std(first, e))?;
            if !same_content(&mut a, &mut b).map_err(|e| io_error_std(other, e))? {
                self.mismatch(
                    other,
                    &format!("hard link of {first}, restored with other content"),
                );
                continue;
            }
            let (other_dir, other_name) = self.parent(other)?.expect("opened above");
            let other_dir = other_dir
                .try_clone_to_owned()
                .map_err(|e| io_error_std(other, e))?;
            let tmp = format!(".vso-link-{}", generation());
            let (first_dir, first_name) = self.parent(first)?.expect("opened above");
            nix::unistd::linkat(
                first_dir,
                first_name,
                &other_dir,
                tmp.as_str(),
                AtFlags::empty(),
            )
            .map_err(|e| io_error(&format!("cannot link {other} to {first}"), e))?;
            nix::fcntl::renameat(&other_dir, tmp.as_str(), &other_dir, other_name)
                .map_err(|e| io_error(&format!("cannot link {other} to {first}"), e))?;
            self.applied.hard_links += 1;
        }
        Ok(())
    }

    fn link(&mut self, p: &str, to: &str, u: u32, g: u32, time: (i64, i64)) -> Result<()> {
        match self.found(p)? {
            Some(Found::Nothing) => {
                let (dir, name) = self.parent(p)?.expect("found above");
                nix::unistd::symlinkat(to, dir, name)
                    .map_err(|e| io_error(&format!("cannot create symlink {p}"), e))?;
                self.applied.links_created += 1;
            }
            Some(Found::Link) => {
                let (dir, name) = self.parent(p)?.expect("found above");
                let current = nix::fcntl::readlinkat(dir, name)
                    .map_err(|e| io_error(&format!("cannot read symlink {p}"), e))?;
                if current.as_bytes() != to.as_bytes() {
                    // An older link at the same path: replace it atomically.
                    let tmp = format!(".vso-link-{}", generation());
                    nix::unistd::symlinkat(to, dir, tmp.as_str())
                        .map_err(|e| io_error(&format!("cannot create symlink {p}"), e))?;
                    nix::fcntl::renameat(dir, tmp.as_str(), dir, name)
                        .map_err(|e| io_error(&format!("cannot replace symlink {p}"), e))?;
                    self.applied.links_created += 1;
                }
            }
            None => {
                self.mismatch(p, "its parent directory is missing");
                return Ok(());
            }
            Some(_) => {
                self.mismatch(p, "recorded as a symlink, restored as a file or directory");
                return Ok(());
            }
        }
        self.chown(p, u, g)?;
        let (dir, name) = self.parent(p)?.expect("found above");
        nix::sys::stat::utimensat(
            dir,
            name,
            &TimeSpec::UTIME_OMIT,
            &timespec(time),
            UtimensatFlags::NoFollowSymlink,
        )
        .or_else(|e| match e {
            Errno::EPERM if !self.as_root => Ok(()), // a link of another user: keeps its time
            e => Err(io_error(&format!("cannot set the mtime of symlink {p}"), e)),
        })
    }

    fn dir_attributes(&mut self, p: &str, m: u32, u: u32, g: u32, time: (i64, i64)) -> Result<()> {
        if !matches!(self.found(p)?, Some(Found::Dir)) {
            return Ok(()); // counted as a mismatch when creating
        }
        self.chown(p, u, g)?;
        if !self.chmod(p, m)? {
            return Ok(());
        }
        let (dir, name) = self.parent(p)?.expect("found above");
        nix::sys::stat::utimensat(
            dir,
            name,
            &TimeSpec::UTIME_OMIT,
            &timespec(time),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_error(&format!("cannot set the mtime of {p}"), e))
    }
}

/// Opens a regular file beneath the root for reading, through no symlink; `None` if it is not
/// one any more.
fn open_beneath(
    root: BorrowedFd<'_>,
    p: &str,
    root_path: &Path,
) -> Result<Option<(fs::File, fs::Metadata)>> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    match openat2(root, p, how) {
        Ok(fd) => {
            let file = fs::File::from(fd);
            let meta = file
                .metadata()
                .map_err(|e| io_error_std(&root_path.join(p).display().to_string(), e))?;
            Ok(meta.is_file().then_some((file, meta)))
        }
        Err(Errno::ENOENT | Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR | Errno::EACCES) => {
            Ok(None)
        }
        Err(e) => Err(io_error(&format!("cannot open {p}"), e)),
    }
}

fn same_content(a: &mut fs::File, b: &mut fs::File) -> io::Result<bool> {
    let (mut x, mut y) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(a, &mut x)?;
        let m = read_full(b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn io_error(what: &str, e: Errno) -> Error {
    Error::Other(anyhow::anyhow!("{what}: {e}"))
}

fn io_error_std(what: &str, e: io::Error) -> Error {
    Error::Other(anyhow::anyhow!("{what}: {e}"))
}

/// Whether a name at the top of a tree is one of this program's own files.
fn is_internal_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b".volume-syncing-operator.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

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
        let applied = apply(d, &manifest, nix::unistd::geteuid().is_root()).unwrap();
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
        let applied = apply(dst.path(), &manifest, false).unwrap();
        assert_eq!(applied.mismatched, 3);
        let meta = fs::metadata(outside.path().join("f")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o644);
        assert!(!outside.path().join("l").exists());
    }
}
