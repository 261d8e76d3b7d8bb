//! Restore fidelity: what rclone cannot keep on an object store — directory modes, owners,
//! file modes, symlinks, empty directories, hard links — is recorded by the upload in one
//! manifest object beside the data, and applied by the restore after the data sync.
//!
//! # The manifest
//! `.volume-syncing-operator.manifest` at the root of the remote path, so the internal-files
//! rule ([`crate::remote::path::INTERNAL_FILTER`]) keeps it out of every sync, listing and
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
//! - The manifest is written only after the data sync succeeded, with one PUT, which replaces
//!   the object atomically; a failed or interrupted sync writes none. A one-shot upload sends
//!   it through the `rclone rcd` that took the lease (`operations/uploadfile`: no process
//!   start). Otherwise an `rclone rcat` is started then, and only when the manifest differs
//!   from the one this process wrote last: a no-change run of a long-running uploader starts
//!   no rclone for it, and no second rclone runs beside the data sync (issue 28: until then an
//!   `rcat` was started with the sync to hide its start-up, and its memory counted in every
//!   run's peak). An `rcat` interrupted before the end of its input is killed, so nothing is
//!   written; if it dies on its own with partial input (our process killed), the object lacks
//!   the trailer and is ignored.
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
//!   last and does not write it again when nothing changed. A one-shot upload reads the
//!   remote's before taking the lease and writes none when it is this one, byte for byte but
//!   for the header ([`format::Record::is_written_in`]; `crate::sync::job`'s `unchanged.rs`).
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
//!
//! # Layout
//! [`format`](mod@format) (the lines and their parser), [`walk`] (recording a volume), [`transport`]
//! (writing and reading the manifest object) and [`apply`](mod@apply) (restoring from it).

pub mod apply;
pub mod format;
pub mod transport;
pub mod walk;

#[cfg(test)]
mod tests;

pub use apply::{Applied, ApplyOptions, apply, apply_root};
pub use format::{
    MAX_ENTRIES, MAX_MANIFEST_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES, Manifest, Record, Skipped,
    parse,
};
pub use transport::{Fetched, fetch, read_via, write};
pub use walk::record;
