//! The restore side: applies a parsed manifest to the restored tree, only where it matches the
//! restored data, through file descriptors opened beneath the root (`openat2` with
//! `RESOLVE_BENEATH`), so no entry can reach outside the volume.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, fstatat, mkdirat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat};

use super::format::{Line, MAX_SECONDS, Manifest, Skipped, generation};
use crate::error::{Error, Result};
use crate::logging::untrusted;

/// setuid and setgid: restored on files only with `--restore-setid-bits`.
const SET_ID_BITS: u32 = 0o6000;

/// Mismatches logged one by one; the rest are only counted in the summary.
const MISMATCHES_LOGGED: u64 = 20;

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
pub(super) fn timespec((s, n): (i64, i64)) -> Option<TimeSpec> {
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
