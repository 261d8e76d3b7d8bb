//! Watch mode: inotify events on the source tree become a set of changed paths, and the set
//! becomes either an incremental upload (only what changed) or, at any doubt, a full sync.
//!
//! Decisions:
//! - The `notify` crate watches the tree recursively (inotify on Linux) and adds watches for
//!   directories created later. Its events arrive on an unbounded channel from its own thread.
//! - A changed path that exists is uploaded (a directory with everything under it); one that no
//!   longer exists is deleted at the destination, as a file and as a directory prefix, because
//!   after the fact we cannot tell which it was. Both are expressed as rclone filter rules
//!   (`+ /path`, `+ /path/**`, then `- **`), so rclone descends only into the affected
//!   directories and never lists the whole remote.
//! - Metadata changes (a chmod, a chown, a new symlink or empty directory) are changes: the
//!   path is passed to the incremental `rclone copy` (which transfers nothing for it) and the
//!   manifest of the volume's metadata ([`crate::sync::fidelity`]) is refreshed after the sync.
//!   Only reads (access events, rclone's own included) are ignored.
//! - Any doubt falls back to a full `rclone sync`: the first run, a queue overflow, a watcher
//!   error, the root itself changing, more than [`MAX_INCREMENTAL_PATHS`] paths. The caller
//!   also runs a periodic full sync to catch anything missed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{EventKind, MetadataKind, ModifyKind};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::sync::task::SyncPlan;

/// Above this many changed paths one full sync is cheaper and simpler than a long filter list.
pub const MAX_INCREMENTAL_PATHS: usize = 10_000;

const WATCH_LIMIT_HINT: &str = "the inotify watch limit is reached: raise it with \
`sysctl fs.inotify.max_user_watches=524288` (on the node, for containers)";

/// A recursive watch on the source tree.
pub struct TreeWatcher {
    _watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<Event>>,
    root: PathBuf,
    /// Set after the watcher reported an error (e.g. the inotify limit): some directories may
    /// be unwatched, so every later sync is a full one.
    degraded: bool,
}

impl TreeWatcher {
    /// Starts watching `root` and every directory below it.
    pub fn start(root: &Path) -> Result<Self> {
        let root = root
            .canonicalize()
            .map_err(|e| Error::config(format!("cannot watch {}: {e}", root.display())))?;
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(|e| Error::config(format!("cannot start the file watcher: {}", describe(&e))))?;
        watcher
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|e| {
                Error::config(format!("cannot watch {}: {}", root.display(), describe(&e)))
            })?;
        tracing::info!(root = %root.display(), "watching for changes");
        Ok(TreeWatcher {
            _watcher: watcher,
            events,
            root,
            degraded: false,
        })
    }

    /// Waits for the next event and records it in `changes`; true if it was a change (not a
    /// read, which is ignored and must not restart the quiet period).
    pub async fn next(&mut self, changes: &mut Changes) -> bool {
        match self.events.recv().await {
            Some(event) => self.record(changes, event),
            None => {
                changes.need_full("the file watcher stopped");
                std::future::pending::<bool>().await
            }
        }
    }
}

impl TreeWatcher {
    /// Records the events that have already arrived, without waiting.
    pub fn drain(&mut self, changes: &mut Changes) {
        while let Ok(event) = self.events.try_recv() {
            self.record(changes, event);
        }
    }

    fn record(&mut self, changes: &mut Changes, event: notify::Result<Event>) -> bool {
        self.degraded |= event.is_err();
        let changed = changes.record(&self.root, event);
        if self.degraded && changed {
            changes.need_full(
                "the file watcher failed earlier, so parts of the tree may be unwatched",
            );
        }
        changed
    }
}

fn describe(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => WATCH_LIMIT_HINT.to_string(),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28) => WATCH_LIMIT_HINT.to_string(),
        _ => e.to_string(),
    }
}

/// What changed since the last successful sync.
#[derive(Debug, Default)]
pub struct Changes {
    paths: BTreeSet<PathBuf>,
    full: Option<String>,
}

/// --watch and its timing.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub debounce: Duration,
    pub min_interval: Duration,
    pub full_sync_every: Duration,
}

impl Changes {
    /// Whether anything was recorded.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.full.is_none()
    }

    /// Forces the next sync to be a full one.
    pub fn need_full(&mut self, reason: impl Into<String>) {
        self.full.get_or_insert_with(|| reason.into());
    }

    /// Adds what `other` recorded (used to put back the changes of a failed sync).
    pub fn merge(&mut self, other: Changes) {
        self.paths.extend(other.paths);
        if let Some(reason) = other.full {
            self.need_full(reason);
        }
    }

    /// Records one event; true if it was a change to sync (reads and this program's own files
    /// are not; a metadata change is).
    fn record(&mut self, root: &Path, event: notify::Result<Event>) -> bool {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                let text = describe(&e);
                tracing::error!("file watcher: {text}");
                self.need_full(format!("the file watcher reported an error: {text}"));
                return true;
            }
        };
        if event.need_rescan() {
            self.need_full("the file watcher's event queue overflowed");
            return true;
        }
        if matches!(
            event.kind,
            EventKind::Access(_)
                | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
        ) {
            return false;
        }
        let mut changed = false;
        for path in &event.paths {
            match path.strip_prefix(root) {
                Ok(rel) if rel.as_os_str().is_empty() => {
                    self.need_full("the watched directory itself changed");
                    changed = true;
                }
                Ok(rel) if is_internal(rel) => {}
                Ok(rel) => {
                    self.paths.insert(rel.to_path_buf());
                    changed = true;
                }
                Err(_) => {
                    self.need_full(format!(
                        "an event outside the watched tree: {}",
                        path.display()
                    ));
                    changed = true;
                }
            }
        }
        if self.paths.len() > MAX_INCREMENTAL_PATHS {
            self.need_full(format!("more than {MAX_INCREMENTAL_PATHS} paths changed"));
        }
        changed
    }

    /// Turns the recorded changes into a plan, looking at what exists now under `root`.
    pub fn plan(&self, root: &Path) -> SyncPlan {
        if let Some(reason) = &self.full {
            return SyncPlan::Full(reason.clone());
        }
        let (mut upload, mut delete) = (Vec::new(), Vec::new());
        for rel in &self.paths {
            let Some(rule) = rel.to_str().map(glob_escape) else {
                return SyncPlan::Full(format!("a path that is not UTF-8: {}", rel.display()));
            };
            match root.join(rel).symlink_metadata() {
                Ok(meta) if meta.is_dir() => upload.push(format!("+ /{rule}/**")),
                Ok(_) => upload.push(format!("+ /{rule}")),
                Err(_) => {
                    delete.push(format!("+ /{rule}"));
                    delete.push(format!("+ /{rule}/**"));
                }
            }
        }
        SyncPlan::Incremental { upload, delete }
    }
}

/// This program's own files in the tree's top level are never synced.
fn is_internal(rel: &Path) -> bool {
    rel.components().count() == 1
        && rel
            .to_str()
            .is_some_and(|s| s.starts_with(".volume-syncing-operator."))
}

/// Escapes rclone glob metacharacters so a path matches only itself.
fn glob_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '\\' | '*' | '?' | '[' | ']' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, RemoveKind};

    fn event(kind: EventKind, path: &Path) -> notify::Result<Event> {
        Ok(Event::new(kind).add_path(path.to_path_buf()))
    }

    #[test]
    fn existing_paths_are_uploaded_and_missing_ones_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("kept [1].txt"), "x").unwrap();
        std::fs::create_dir(root.join("new dir")).unwrap();
        let mut changes = Changes::default();
        changes.record(
            root,
            event(
                EventKind::Create(CreateKind::File),
                &root.join("kept [1].txt"),
            ),
        );
        changes.record(
            root,
            event(EventKind::Create(CreateKind::Folder), &root.join("new dir")),
        );
        changes.record(
            root,
            event(EventKind::Remove(RemoveKind::Any), &root.join("gone.txt")),
        );
        changes.record(
            root,
            event(
                EventKind::Access(notify::event::AccessKind::Any),
                &root.join("read"),
            ),
        );
        changes.record(
            root,
            event(
                EventKind::Create(CreateKind::File),
                &root.join(".volume-syncing-operator.restore-in-progress"),
            ),
        );
        assert_eq!(
            changes.plan(root),
            SyncPlan::Incremental {
                upload: vec!["+ /kept \\[1\\].txt".into(), "+ /new dir/**".into()],
                delete: vec!["+ /gone.txt".into(), "+ /gone.txt/**".into()],
            }
        );
    }

    #[test]
    fn reads_are_not_changes_but_metadata_changes_are() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut changes = Changes::default();
        let file = root.join("f");
        let open = EventKind::Access(notify::event::AccessKind::Open(
            notify::event::AccessMode::Any,
        ));
        let chmod = EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any));
        assert!(!changes.record(root, event(open, &file)));
        assert!(!changes.record(root, event(open, root)));
        assert!(!changes.record(
            root,
            event(
                EventKind::Create(CreateKind::File),
                &root.join(".volume-syncing-operator.keycheck"),
            )
        ));
        assert!(changes.is_empty());
        assert!(changes.record(root, event(chmod, &file)));
        assert!(!changes.is_empty());
        let mut changes = Changes::default();
        assert!(changes.record(root, event(EventKind::Create(CreateKind::File), &file)));
        assert!(!changes.is_empty());
    }

    #[test]
    fn doubt_means_a_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut overflow = Changes::default();
        overflow.record(
            root,
            Ok(Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)),
        );
        assert!(matches!(overflow.plan(root), SyncPlan::Full(r) if r.contains("overflowed")));

        let mut error = Changes::default();
        error.record(
            root,
            Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)),
        );
        assert!(matches!(error.plan(root), SyncPlan::Full(r) if r.contains("max_user_watches")));

        let mut many = Changes::default();
        for i in 0..=MAX_INCREMENTAL_PATHS {
            many.record(root, event(EventKind::Any, &root.join(format!("f{i}"))));
        }
        assert!(matches!(many.plan(root), SyncPlan::Full(_)));

        let mut outside = Changes::default();
        outside.record(root, event(EventKind::Any, Path::new("/elsewhere/x")));
        assert!(matches!(outside.plan(root), SyncPlan::Full(_)));
    }
}
