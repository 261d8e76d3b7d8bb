//! The upload side: a walk of the volume (never following links) that records every entry the
//! manifest keeps; FIFOs, sockets and devices are counted and logged, our own files skipped.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::Context;

use super::format::{Line, Record};
use crate::error::Result;

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

/// Whether a name at the top of a tree is one of this program's own files.
pub(super) fn is_internal_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b".volume-syncing-operator.")
}
