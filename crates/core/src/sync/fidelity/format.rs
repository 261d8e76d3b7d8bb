//! The manifest's format: one JSON object per line (a header, the entries, a trailer), and
//! its parser. The parser takes remote input: every limit below holds before anything is
//! applied, and a bad entry is skipped and counted rather than failing the restore.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::logging::untrusted;
use crate::remote::path::INTERNAL_PREFIX;

/// The `format` of the header line; a restore ignores a manifest of any other format.
pub(super) const FORMAT: &str = "volume-syncing-operator manifest v1";

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

/// Recorded mtimes beyond about year 9999 (either way) are not applied: the kernel or the
/// file system refuses or mangles them.
/// How many paths one warning names (the rest are counted).
const SHOWN_PATHS: usize = 5;
pub(super) const MAX_SECONDS: i64 = 253_402_300_799;

/// One line of the manifest. Short keys: the manifest of a big volume is mostly paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub(super) enum Line {
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
    pub(super) fn path(&self) -> Option<&str> {
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
    pub(super) body: Vec<u8>,
    pub(super) entries: u64,
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

    /// Whether `manifest` (the remote's, untrusted) is this record as [`Record::bytes`] would
    /// write it, but for its header's generation and time: then writing it again would change
    /// nothing a restore reads. A header of another format, or any other byte, is a difference.
    pub fn is_written_in(&self, manifest: &[u8]) -> bool {
        let Some(at) = manifest.iter().position(|&b| b == b'\n') else {
            return false;
        };
        let (header, rest) = (&manifest[..at], &manifest[at + 1..]);
        let current = matches!(
            serde_json::from_slice::<Line>(header),
            Ok(Line::Header { format, .. }) if format == FORMAT
        );
        let Some(trailer) = rest.strip_prefix(self.body.as_slice()) else {
            return false;
        };
        let mut end = serde_json::to_vec(&Line::End {
            entries: self.entries,
        })
        .expect("serialisable");
        end.push(b'\n');
        current && trailer == end.as_slice()
    }

    /// The whole manifest: header, entries, trailer.
    pub(super) fn bytes(&self) -> Vec<u8> {
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
pub(super) fn generation() -> String {
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

/// A parsed, validated manifest.
#[derive(Debug)]
pub struct Manifest {
    /// The upload's id, as shown in a log line (escaped, truncated).
    pub generation: String,
    /// When it was written, as shown in a log line (escaped, truncated).
    pub written: String,
    pub(super) lines: Vec<Line>,
    /// Entries left out because they cannot be applied (a path or name too long, one of this
    /// program's own files): counted in [`super::Applied::skipped`].
    pub(super) skipped: Skipped,
}

/// Entries that were not applied: their number and the first few paths with the reason,
/// escaped and truncated, for one warning of bounded size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub count: u64,
    pub first: Vec<String>,
}

impl Skipped {
    pub(super) fn add(&mut self, p: &str, why: &str) {
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
        .is_some_and(|top| top.starts_with(INTERNAL_PREFIX))
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
pub(super) fn parse_within(
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
pub(super) fn safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}
