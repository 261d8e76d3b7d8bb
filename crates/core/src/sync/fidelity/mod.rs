//! Restore fidelity: what rclone cannot keep on an object store — directory modes, owners,
//! file modes, symlinks, empty directories, hard links — is recorded by the upload in one
//! manifest object beside the data, and applied by the restore after the data sync.
//!
//! # The manifest
//! `.volume-syncing-operator.manifest` at the root of the remote path, so the internal-files
//! rule ([`crate::sync::valves::safety::INTERNAL_FILES_FILTER`]) keeps it out of every sync, listing and
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
//! setuid/setgid bits of files only with `--restore-setid-bits` (whoever can write to the
//! bucket could otherwise plant a setuid program; dropped ones are counted in one warning).
//! A symlink entry at `p` while the manifest also has entries beneath `p/` is not made (a
//! mismatch): the bucket's writer would have the restore work beneath a link. Hard links are restored as links when every member of a
//! group came back with identical content (compared byte by byte), else stay copies. A
//! non-root restore that may not chmod an entry (another user's, e.g. a root-owned mount
//! point as the restore root) says so and goes on: that is the normal Kubernetes volume.
//!
//! # The remote is not trusted
//! Whoever can write to the bucket writes this manifest too, so it is read like an archive
//! from the internet: at most [`MAX_MANIFEST_BYTES`] are read and [`MAX_ENTRIES`] entries
//! parsed (beyond either, the manifest is ignored with one warning); an entry whose path is
//! longer than [`MAX_PATH_BYTES`], with a name longer than [`MAX_NAME_BYTES`], or that names
//! one of this program's own files is skipped and counted, as is any entry the kernel refuses
//! (`ENAMETOOLONG`, `EINVAL`, `ELOOP`, …): one warning names the first few, escaped and
//! truncated, and the restore succeeds with `metadata=partial`. An mtime out of range (beyond
//! year 9999 either way, nanoseconds outside 0..1e9) is not applied (counted), the root's
//! included. [`parse`] never panics, whatever the bytes; its errors are bounded too.
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
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};

use crate::error::{Error, Result};
use crate::logging::untrusted;
use crate::remote::rclone::Rclone;

/// Name of the manifest object at the root of the remote path.
pub const MANIFEST: &str = ".volume-syncing-operator.manifest";
/// The `format` of the header line; a restore ignores a manifest of any other format.
const FORMAT: &str = "volume-syncing-operator manifest v1";
/// Upper bound for writing or reading the manifest once its rclone runs.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
/// setuid and setgid: restored on files only with `--restore-setid-bits`.
const SET_ID_BITS: u32 = 0o6000;

/// The largest manifest a restore reads: beyond it the `rclone cat` is stopped and the
/// manifest ignored (one warning). About 2 million entries of typical paths.
pub const MAX_MANIFEST_BYTES: usize = 256 << 20;
/// The most entries a manifest may hold; more and it is ignored.
pub const MAX_ENTRIES: usize = 2_000_000;
/// The longest path (and link target) an entry may have, in bytes (`PATH_MAX`); a longer one
/// is skipped and counted.
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest name (one path segment) an entry may have, in bytes (`NAME_MAX`); a longer
/// one is skipped and counted.
pub const MAX_NAME_BYTES: usize = 255;
/// How many paths one warning names (the rest are counted).
const SHOWN_PATHS: usize = 5;
/// Mismatches logged one by one; the rest are only counted in the summary.
const MISMATCHES_LOGGED: u64 = 20;
/// Recorded mtimes beyond about year 9999 (either way) are not applied: the kernel or the
/// file system refuses or mangles them.
const MAX_SECONDS: i64 = 253_402_300_799;

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
            crate::remote::rclone::NO_BUCKET_CHECK.into(),
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
        meaning: crate::remote::rclone::exit_meaning(code),
        cause: None,
        stats: Default::default(),
    };
    if tail.is_empty() {
        err
    } else {
        Error::Other(anyhow::Error::new(err).context(tail))
    }
}

/// What the restore found of the manifest.
#[derive(Debug)]
pub enum Fetched {
    /// The remote has none (written by an older release, or never uploaded).
    Missing,
    Found(Vec<u8>),
    /// Larger than [`MAX_MANIFEST_BYTES`]: reading stopped there.
    TooLarge,
}

/// Reads the manifest, at most [`MAX_MANIFEST_BYTES`] of it: the remote is not trusted to
/// keep it small.
pub async fn fetch(rclone: &Rclone, remote: &str) -> Result<Fetched> {
    let args = ["cat".into(), object(remote).into()];
    let operation = "cat (metadata manifest)";
    let mut child = rclone.spawn_piped(&args, operation)?;
    drop(child.stdin.take());
    let mut stdout = child.stdout.take().context("rclone cat stdout")?;
    let mut stderr = child.stderr.take().context("rclone cat stderr")?;
    let work = async {
        let read_out = async move {
            let mut out = Vec::new();
            let read = (&mut stdout)
                .take(MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .await;
            // Closing the pipe stops an rclone that has more to say (SIGPIPE).
            drop(stdout);
            read.map(|_| out)
        };
        let mut err = Vec::new();
        let (out, b) = tokio::join!(read_out, stderr.read_to_end(&mut err));
        let out = out?;
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
    if out.len() > MAX_MANIFEST_BYTES {
        return Ok(Fetched::TooLarge);
    }
    // `rclone cat` of a missing object lists it as a directory: exit 3 (directory not found)
    // on most backends, an empty success on bucket-based ones.
    match status.code() {
        Some(0) if out.is_empty() => Ok(Fetched::Missing),
        Some(0) => Ok(Fetched::Found(out)),
        Some(3) | Some(4) => Ok(Fetched::Missing),
        _ => Err(rclone_error(operation, status, &err)),
    }
}

/// A parsed, validated manifest.
#[derive(Debug)]
pub struct Manifest {
    /// The upload's id, as shown in a log line (escaped, truncated).
    pub generation: String,
    /// When it was written, as shown in a log line (escaped, truncated).
    pub written: String,
    lines: Vec<Line>,
    /// Entries left out because they cannot be applied (a path or name too long, one of this
    /// program's own files): counted in [`Applied::skipped`].
    skipped: Skipped,
}

/// Entries that were not applied: their number and the first few paths with the reason,
/// escaped and truncated, for one warning of bounded size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub count: u64,
    pub first: Vec<String>,
}

impl Skipped {
    fn add(&mut self, p: &str, why: &str) {
        self.count += 1;
        if self.first.len() < SHOWN_PATHS {
            self.first
                .push(format!("{} ({})", untrusted(p), untrusted(why)));
        }
    }
}

/// Why an entry's path cannot be applied, if it cannot: too long for the kernel, or one of
/// this program's own files (never recorded by an upload).
fn unusable_path(p: &str) -> Option<&'static str> {
    if p.len() > MAX_PATH_BYTES {
        Some("path longer than 4096 bytes")
    } else if p.split('/').any(|c| c.len() > MAX_NAME_BYTES) {
        Some("a name longer than 255 bytes")
    } else if p
        .split('/')
        .next()
        .is_some_and(|top| top.starts_with(crate::sync::valves::safety::INTERNAL_FILE_PREFIX))
    {
        Some("one of this program's own files")
    } else {
        None
    }
}

/// Parses a manifest; an error says why it cannot be trusted (incomplete, unknown format, too
/// large, a path that would leave the restore root), in a message of bounded length. Entries
/// whose path cannot be applied are left out and counted. Never panics, whatever the bytes
/// (a fuzz target calls it).
pub fn parse(bytes: &[u8]) -> std::result::Result<Manifest, String> {
    parse_within(bytes, MAX_MANIFEST_BYTES, MAX_ENTRIES)
}

/// [`parse`] with its bounds as arguments (small ones in tests).
fn parse_within(
    bytes: &[u8],
    max_bytes: usize,
    max_entries: usize,
) -> std::result::Result<Manifest, String> {
    if bytes.len() > max_bytes {
        return Err(format!(
            "larger than {} MiB ({} bytes)",
            max_bytes >> 20,
            bytes.len()
        ));
    }
    let mut lines = Vec::new();
    let mut skipped = Skipped::default();
    let mut header = None;
    let mut end = None;
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        if raw.is_empty() {
            continue;
        }
        if end.is_some() {
            return Err("data after the end line".into());
        }
        let line: Line = serde_json::from_slice(raw)
            .map_err(|e| format!("line {}: {}", i + 1, untrusted(&e.to_string())))?;
        match line {
            Line::Header {
                format,
                generation,
                written,
            } => {
                if i != 0 || format != FORMAT {
                    return Err(format!(
                        "unknown format \"{}\" (expected \"{FORMAT}\")",
                        untrusted(&format)
                    ));
                }
                header = Some((untrusted(&generation), untrusted(&written)));
            }
            Line::End { entries } => end = Some(entries),
            other => {
                if header.is_none() {
                    return Err("no header line".into());
                }
                if lines.len() as u64 + skipped.count >= max_entries as u64 {
                    return Err(format!("more than {max_entries} entries"));
                }
                let p = other.path().unwrap_or_default();
                let is_root_dir = p.is_empty() && matches!(other, Line::Dir { .. });
                if !is_root_dir && !safe_relative(p) {
                    return Err(format!("unsafe path \"{}\"", untrusted(p)));
                }
                let why = unusable_path(p).or(match &other {
                    Line::Link { to, .. } if to.len() > MAX_PATH_BYTES => {
                        Some("link target longer than 4096 bytes")
                    }
                    Line::Link { to, .. } if to.is_empty() || to.contains('\0') => {
                        Some("an empty link target, or one with a NUL")
                    }
                    _ => None,
                });
                match why {
                    Some(why) if !is_root_dir => skipped.add(p, why),
                    _ => lines.push(other),
                }
            }
        }
    }
    let Some((generation, written)) = header else {
        return Err("no header line (empty or truncated)".into());
    };
    let found = lines.len() as u64 + skipped.count;
    match end {
        Some(n) if n == found => Ok(Manifest {
            generation,
            written,
            lines,
            skipped,
        }),
        Some(n) => Err(format!("{found} entries, the end line says {n}")),
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
    /// Files whose setuid/setgid bits were dropped (no `--restore-setid-bits`).
    pub set_id_dropped: u64,
    /// Entries that could not be applied (a path too long, an errno of the kernel): left as
    /// rclone restored them.
    pub skipped: Skipped,
    /// Recorded mtimes out of range (beyond year 9999 either way, or nanoseconds outside
    /// 0..1e9): not applied, the entry keeps the time of its restore.
    pub times_skipped: u64,
}

impl Applied {
    /// Whether anything recorded was not applied.
    pub fn is_partial(&self) -> bool {
        self.mismatched > 0 || self.skipped.count > 0 || self.times_skipped > 0
    }
}

/// How to apply a manifest.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// The restoring process is root: owners are set.
    pub as_root: bool,
    /// `--restore-setid-bits`: setuid/setgid bits of files are restored (else dropped and
    /// counted).
    pub restore_setid_bits: bool,
}

/// Applies everything but the restore root's own mode, owner and mtime (see [`apply_root`]).
/// Only opening the root can fail: an entry that cannot be applied is skipped and counted.
pub fn apply(root: &Path, manifest: &Manifest, options: ApplyOptions) -> Result<Applied> {
    let root_fd = open_root(root)?;
    let as_root = options.as_root;
    let mut ctx = Ctx {
        root: root_fd.as_fd(),
        cache: None,
        as_root,
        restore_setid_bits: options.restore_setid_bits,
        applied: Applied {
            owners_not_set: !as_root,
            skipped: manifest.skipped.clone(),
            ..Applied::default()
        },
    };
    let lines = &manifest.lines;
    // 1. Missing directories, parents first (the manifest is sorted by path).
    for line in lines {
        if let Line::Dir { p, .. } = line
            && !p.is_empty()
        {
            let done = ctx.ensure_dir(p);
            ctx.settle(p, done);
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
        {
            let done = ctx.file(p, *m, *u, *g, *size);
            if ctx.settle(p, done).unwrap_or(false)
                && let Some(group) = hl
            {
                groups.entry(*group).or_default().push(p);
            }
        }
    }
    for members in groups.values() {
        ctx.hard_link_group(members);
    }
    // A link at `p` and entries under `p/`: the bucket's writer asks to restore files beneath
    // a link. Those are never written through it; the link is not made either.
    let mut paths: Vec<&str> = lines.iter().filter_map(Line::path).collect();
    paths.sort_unstable();
    let has_entries_under = |p: &str| {
        let prefix = format!("{p}/");
        let at = paths.partition_point(|q| *q < prefix.as_str());
        paths.get(at).is_some_and(|q| q.starts_with(&prefix))
    };
    for line in lines {
        match line {
            Line::Link { p, .. } if has_entries_under(p) => {
                ctx.mismatch(p, "recorded as a symlink and as a directory with entries");
            }
            Line::Link { p, to, u, g, s, n } => {
                let done = ctx.link(p, to, *u, *g, (*s, *n));
                ctx.settle(p, done);
            }
            Line::Special { p, kind } => {
                ctx.applied.skipped_special += 1;
                if ctx.applied.skipped_special <= MISMATCHES_LOGGED {
                    tracing::warn!(
                        path = %untrusted(p),
                        kind = %untrusted(kind),
                        "not restored: the upload skipped this special file"
                    );
                }
            }
            _ => {}
        }
    }
    // 6. Directories deepest first: owner, mode, mtime.
    for line in lines.iter().rev() {
        if let Line::Dir { p, m, u, g, s, n } = line
            && !p.is_empty()
        {
            let done = ctx.dir_attributes(p, *m, *u, *g, (*s, *n));
            ctx.settle(p, done);
        }
    }
    Ok(ctx.applied)
}

/// Applies the restore root's own owner, mode and mtime: last, after the restore marker is
/// gone (a read-only root would keep it from being removed). True if they could not all be
/// applied (a root that belongs to another user, an mtime out of range, an errno): each is a
/// warning, never a failure of the restore.
pub fn apply_root(root: &Path, manifest: &Manifest, as_root: bool) -> Result<bool> {
    let Some(Line::Dir { m, u, g, s, n, .. }) = manifest
        .lines
        .iter()
        .find(|l| matches!(l, Line::Dir { p, .. } if p.is_empty()))
    else {
        return Ok(false);
    };
    let fd = open_root(root)?;
    let warn = |what: &str, e: Errno| {
        tracing::warn!(path = %root.display(), "the recorded {what} of the restore root was not applied: {e}");
    };
    let mut partial = false;
    if as_root
        && let Err(e) = nix::unistd::fchown(&fd, Some(Uid::from_raw(*u)), Some(Gid::from_raw(*g)))
    {
        warn("owner", e);
        partial = true;
    }
    let chmod = nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(*m));
    let times = match timespec((*s, *n)) {
        Some(time) => nix::sys::stat::futimens(&fd, &TimeSpec::UTIME_OMIT, &time),
        None => {
            tracing::warn!(
                path = %root.display(),
                "the recorded mtime of the restore root ({s} s, {n} ns) is out of range: not applied"
            );
            partial = true;
            Ok(())
        }
    };
    match chmod.and(times) {
        Ok(()) => {}
        // A mount point owned by root (or another user) that this process may write into but
        // not chmod: its own mode stays; everything below it is restored.
        Err(Errno::EPERM) if !as_root => {
            tracing::warn!(
                path = %root.display(),
                "the recorded mode {m:04o} and mtime of the restore root were not applied: it \
                 belongs to another user"
            );
            partial = true;
        }
        Err(e) => {
            warn("mode and mtime", e);
            partial = true;
        }
    }
    Ok(partial)
}

fn open_root(root: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Other(anyhow::anyhow!("cannot open {}: {e}", root.display())))
}

/// A recorded time the kernel can be given; `None` when it is out of range (a value only a
/// forged manifest holds, or `UTIME_NOW`/`UTIME_OMIT` in disguise).
fn timespec((s, n): (i64, i64)) -> Option<TimeSpec> {
    ((-MAX_SECONDS..=MAX_SECONDS).contains(&s) && (0..1_000_000_000).contains(&n))
        .then(|| TimeSpec::new(s, n))
}

/// The state of one application: the root, a cache of the last parent directory opened.
struct Ctx<'a> {
    root: BorrowedFd<'a>,
    cache: Option<(String, OwnedFd)>,
    as_root: bool,
    restore_setid_bits: bool,
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
    /// Turns the failure of one entry into a skipped entry: counted, the first few named.
    fn settle<T>(&mut self, p: &str, done: Result<T>) -> Option<T> {
        match done {
            Ok(value) => Some(value),
            Err(e) => {
                self.applied.skipped.add(p, &format!("{e:#}"));
                None
            }
        }
    }

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
                Err(e) => {
                    self.cache = None;
                    return Err(io_error("cannot open its directory", e));
                }
            }
        }
        match &self.cache {
            Some((_, fd)) => Ok(Some((fd.as_fd(), name))),
            None => Err(io_error("cannot open its directory", Errno::ENOENT)),
        }
    }

    /// The parent of an entry known to exist: gone meanwhile is an error of this entry.
    fn parent_of<'p>(&mut self, p: &'p str) -> Result<(BorrowedFd<'_>, &'p str)> {
        self.parent(p)?
            .ok_or_else(|| io_error("its directory went away", Errno::ENOENT))
    }

    fn found(&mut self, p: &str) -> Result<Option<Found>> {
        let Some((dir, name)) = self.parent(p)? else {
            return Ok(None);
        };
        Ok(Some(
            match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Err(Errno::ENOENT) => Found::Nothing,
                Err(e) => return Err(io_error("cannot inspect it", e)),
                Ok(st) => match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
                    SFlag::S_IFDIR => Found::Dir,
                    SFlag::S_IFREG => Found::File(st.st_size as u64),
                    SFlag::S_IFLNK => Found::Link,
                    _ => Found::Other,
                },
            },
        ))
    }

    /// Counts a mismatch; the first few are logged one by one, the rest only counted.
    fn mismatch(&mut self, p: &str, why: &str) {
        self.applied.mismatched += 1;
        if self.applied.mismatched <= MISMATCHES_LOGGED {
            tracing::warn!(path = %untrusted(p), "recorded metadata not applied: {why}");
        }
    }

    fn ensure_dir(&mut self, p: &str) -> Result<()> {
        match self.found(p)? {
            Some(Found::Dir) => {}
            Some(Found::Nothing) => {
                let (dir, name) = self.parent_of(p)?;
                mkdirat(dir, name, Mode::from_bits_truncate(0o700))
                    .map_err(|e| io_error("cannot create the directory", e))?;
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
        let (dir, name) = self.parent_of(p)?;
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(u)),
            Some(Gid::from_raw(g)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_error("cannot set the owner", e))
    }

    /// Sets the mode; false (and a warning) when a non-root process is not permitted to: an
    /// entry of another user in a target that already held data.
    fn chmod(&mut self, p: &str, mode: u32) -> Result<bool> {
        let as_root = self.as_root;
        let (dir, name) = self.parent_of(p)?;
        match fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::NoFollowSymlink,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EPERM) if !as_root => {
                self.mismatch(p, "it belongs to another user");
                Ok(false)
            }
            Err(e) => Err(io_error("cannot set the mode", e)),
        }
    }

    /// Sets the mtime of an entry (never following it); an out-of-range one is counted and
    /// left. A non-root process may not set it on another user's entry: it keeps its time.
    fn mtime(&mut self, p: &str, time: (i64, i64)) -> Result<()> {
        let Some(time) = timespec(time) else {
            self.applied.times_skipped += 1;
            return Ok(());
        };
        let as_root = self.as_root;
        let (dir, name) = self.parent_of(p)?;
        nix::sys::stat::utimensat(
            dir,
            name,
            &TimeSpec::UTIME_OMIT,
            &time,
            UtimensatFlags::NoFollowSymlink,
        )
        .or_else(|e| match e {
            Errno::EPERM if !as_root => Ok(()),
            e => Err(io_error("cannot set the mtime", e)),
        })
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
        if !self.restore_setid_bits && mode & SET_ID_BITS != 0 {
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
    /// came back with the same content. A member that cannot be linked is skipped.
    fn hard_link_group(&mut self, members: &[&str]) {
        let Some((first, rest)) = members.split_first() else {
            return;
        };
        let opened = open_beneath(self.root, first);
        let Some((mut a, am)) = self.settle(first, opened).flatten() else {
            return;
        };
        for other in rest {
            let done = self.hard_link(first, &mut a, &am, other);
            self.settle(other, done);
        }
    }

    fn hard_link(
        &mut self,
        first: &str,
        a: &mut fs::File,
        am: &fs::Metadata,
        other: &str,
    ) -> Result<()> {
        let Some((mut b, bm)) = open_beneath(self.root, other)? else {
            return Ok(());
        };
        if am.ino() == bm.ino() && am.dev() == bm.dev() {
            return Ok(());
        }
        use std::io::Seek;
        a.rewind().map_err(|e| io_error_std("cannot read it", e))?;
        if !same_content(a, &mut b).map_err(|e| io_error_std("cannot read it", e))? {
            self.mismatch(
                other,
                &format!(
                    "hard link of {}, restored with other content",
                    untrusted(first)
                ),
            );
            return Ok(());
        }
        let (other_dir, other_name) = self.parent_of(other)?;
        let other_dir = other_dir
            .try_clone_to_owned()
            .map_err(|e| io_error_std("cannot open its directory", e))?;
        let tmp = format!(".vso-link-{}", generation());
        let (first_dir, first_name) = self.parent_of(first)?;
        nix::unistd::linkat(
            first_dir,
            first_name,
            &other_dir,
            tmp.as_str(),
            AtFlags::empty(),
        )
        .map_err(|e| io_error("cannot link it to the first of its group", e))?;
        nix::fcntl::renameat(&other_dir, tmp.as_str(), &other_dir, other_name).map_err(|e| {
            let _ = nix::unistd::unlinkat(&other_dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            io_error("cannot link it to the first of its group", e)
        })?;
        self.applied.hard_links += 1;
        Ok(())
    }

    fn link(&mut self, p: &str, to: &str, u: u32, g: u32, time: (i64, i64)) -> Result<()> {
        match self.found(p)? {
            Some(Found::Nothing) => {
                let (dir, name) = self.parent_of(p)?;
                nix::unistd::symlinkat(to, dir, name)
                    .map_err(|e| io_error("cannot create the symlink", e))?;
                self.applied.links_created += 1;
            }
            Some(Found::Link) => {
                let (dir, name) = self.parent_of(p)?;
                let current = nix::fcntl::readlinkat(dir, name)
                    .map_err(|e| io_error("cannot read the symlink", e))?;
                if current.as_bytes() != to.as_bytes() {
                    // An older link at the same path: replace it atomically.
                    let tmp = format!(".vso-link-{}", generation());
                    nix::unistd::symlinkat(to, dir, tmp.as_str())
                        .map_err(|e| io_error("cannot create the symlink", e))?;
                    nix::fcntl::renameat(dir, tmp.as_str(), dir, name).map_err(|e| {
                        let _ =
                            nix::unistd::unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
                        io_error("cannot replace the symlink", e)
                    })?;
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
        self.mtime(p, time)
    }

    fn dir_attributes(&mut self, p: &str, m: u32, u: u32, g: u32, time: (i64, i64)) -> Result<()> {
        if !matches!(self.found(p)?, Some(Found::Dir)) {
            return Ok(()); // counted as a mismatch when creating
        }
        self.chown(p, u, g)?;
        if !self.chmod(p, m)? {
            return Ok(());
        }
        self.mtime(p, time)
    }
}

/// Opens a regular file beneath the root for reading, through no symlink; `None` if it is not
/// one any more.
fn open_beneath(root: BorrowedFd<'_>, p: &str) -> Result<Option<(fs::File, fs::Metadata)>> {
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
                .map_err(|e| io_error_std("cannot inspect it", e))?;
            Ok(meta.is_file().then_some((file, meta)))
        }
        Err(Errno::ENOENT | Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR | Errno::EACCES) => {
            Ok(None)
        }
        Err(e) => Err(io_error("cannot open it", e)),
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

    fn manifest_of(entries: &[String]) -> Vec<u8> {
        let mut text = format!(
            "{{\"t\":\"h\",\"format\":\"{FORMAT}\",\"generation\":\"g\",\"written\":\"w\"}}\n"
        );
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
}
