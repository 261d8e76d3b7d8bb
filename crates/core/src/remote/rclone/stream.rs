//! rclone's output while a transfer runs: each JSON log line becomes one of our log events
//! (target `rclone`) at the matching level; the `stats` object of the last one is the run's
//! statistics, without what rclone did to this program's own objects (counted apart from its
//! per-object lines); and a dry run's lines are counted instead of logged
//! (`Rclone::changes_nothing`).

use std::sync::Arc;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};

use crate::remote::cause::Causes;
use crate::remote::scrub::Scrubber;
use crate::remote::stats::Stats;

/// These statistics without what rclone did to this program's own objects.
pub(super) fn without(mut stats: Stats, internal: &Internal) -> Stats {
    stats.transfers = stats.transfers.saturating_sub(internal.transfers);
    stats.bytes = stats.bytes.saturating_sub(internal.bytes);
    stats.deletes = stats.deletes.saturating_sub(internal.deletes);
    stats.internal_files = internal.transfers + internal.deletes;
    stats
}

/// What rclone reported copying or deleting among this program's own objects during one run.
#[derive(Debug, Default)]
pub(super) struct Internal {
    transfers: u64,
    bytes: u64,
    deletes: u64,
}

impl Internal {
    /// Counts `entry` when it is rclone's report of a copy or deletion (done, or skipped by
    /// `--dry-run`, which rclone's statistics count too) of one of our objects at the top of
    /// the path. Object names are relative to the path, so ours have no `/`.
    fn count(&mut self, entry: &LogLine) -> bool {
        let Some(object) = entry.object.as_deref() else {
            return false;
        };
        if object.contains('/') || !object.starts_with(crate::remote::path::INTERNAL_PREFIX) {
            return false;
        }
        let msg = entry.msg.trim();
        let skipped = entry.skipped.as_deref();
        let copied = (entry.level == "info"
            && (msg.starts_with("Copied") || msg.starts_with("Multi-thread Copied")))
            || skipped == Some("copy");
        let deleted = (entry.level == "info" && msg == "Deleted") || skipped == Some("delete");
        if copied {
            self.transfers += 1;
            self.bytes += entry.size.unwrap_or(0);
        } else if deleted {
            self.deletes += 1;
        }
        copied || deleted
    }
}

/// What a dry run says it skipped for a directory that a sync to a bucket-based remote would
/// not keep either (S3 has no directories: each dry run names every empty one again). The
/// manifest records empty directories and their times, and restores make them from it, so
/// these alone are not a change to upload. A removed directory is (`remove directory`).
pub(super) const DIRECTORY_ACTIONS: [&str; 2] =
    ["make directory", "set directory modification time"];

/// What one transfer command reported.
pub(super) struct Streamed {
    /// Its final statistics, without our own objects.
    pub(super) stats: Stats,
    /// rclone printed final statistics (not when its log went elsewhere).
    pub(super) reported: bool,
    /// What a dry run would have done (`Rclone::changes_nothing`).
    pub(super) preview: Option<Preview>,
}

/// The findings of a `--dry-run`, counted from its lines.
#[derive(Debug, Default)]
pub(super) struct Preview {
    /// Lines about an action the dry run skipped.
    pub(super) skipped: u64,
    /// rclone said "There was nothing to transfer".
    pub(super) nothing_to_transfer: bool,
}

#[derive(Deserialize)]
struct LogLine {
    level: String,
    msg: String,
    object: Option<String>,
    stats: Option<Stats>,
    /// The object's size, on rclone's lines about a copy.
    size: Option<u64>,
    /// The action `--dry-run` skipped (`copy`, `delete`, …).
    skipped: Option<String>,
}

/// Reads rclone's stderr (JSON log) and stdout line by line and turns them into log events.
pub(super) struct Streamer<E: AsyncRead + Unpin, O: AsyncRead + Unpin> {
    pub(super) stderr: Option<Lines<BufReader<E>>>,
    pub(super) stdout: Option<Lines<BufReader<O>>>,
    /// The last statistics rclone reported, as it counts (our own objects included).
    pub(super) stats: Option<Stats>,
    /// rclone's copies and deletions of our own objects so far.
    pub(super) internal: Internal,
    /// rclone's info lines (one per object copied or deleted) are logged at debug: rclone runs
    /// at `-v` for them, the user did not ask for them.
    pub(super) info_as_debug: bool,
    pub(super) causes: Causes,
    /// rclone could not parse this option of the config.
    pub(super) unparsable_option: Option<String>,
    pub(super) scrubber: Arc<Scrubber>,
    /// A dry run's findings, counted here; its lines are logged at debug only.
    pub(super) preview: Option<Preview>,
}

impl<E: AsyncRead + Unpin, O: AsyncRead + Unpin> Streamer<E, O> {
    pub(super) fn new(stderr: E, stdout: O, scrubber: Arc<Scrubber>) -> Self {
        Streamer {
            stderr: Some(BufReader::new(stderr).lines()),
            stdout: Some(BufReader::new(stdout).lines()),
            stats: None,
            internal: Internal::default(),
            info_as_debug: false,
            causes: Causes::default(),
            unparsable_option: None,
            scrubber,
            preview: None,
        }
    }

    pub(super) fn done(&self) -> bool {
        self.stderr.is_none() && self.stdout.is_none()
    }

    /// The next line from either stream; `None` when a stream just ended.
    pub(super) async fn next(&mut self) -> Option<String> {
        async fn read<R: AsyncRead + Unpin>(s: &mut Option<Lines<BufReader<R>>>) -> Option<String> {
            match s {
                Some(lines) => {
                    let line = lines.next_line().await.ok().flatten();
                    if line.is_none() {
                        *s = None;
                    }
                    line
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            line = read(&mut self.stderr) => line,
            line = read(&mut self.stdout) => line,
        }
    }

    pub(super) fn handle(&mut self, line: &str) {
        let line = &*self.scrubber.scrub(line);
        if let Some(key) = unparsable_option(line) {
            self.unparsable_option = Some(key);
        }
        let Ok(mut entry) = serde_json::from_str::<LogLine>(line) else {
            if !line.trim().is_empty() {
                tracing::info!(target: "rclone", "{line}");
            }
            return;
        };
        let msg = entry.msg.trim();
        let object = entry.object.as_deref().unwrap_or("");
        if let Some(preview) = &mut self.preview {
            let skipped = entry.skipped.as_deref();
            preview.skipped += u64::from(skipped.is_some_and(|a| !DIRECTORY_ACTIONS.contains(&a)));
            preview.nothing_to_transfer |= msg == "There was nothing to transfer";
            if let Some(stats) = entry.stats.take() {
                self.stats = Some(stats);
            }
            self.internal.count(&entry);
            tracing::debug!(target: "rclone", object, "dry run: {msg}");
            return;
        }
        if let Some(stats) = entry.stats.take() {
            let shown = without(stats.clone(), &self.internal);
            tracing::info!(
                target: "rclone",
                transferred_bytes = shown.bytes,
                transferred_files = shown.transfers,
                deleted_files = shown.deletes,
                errors = shown.errors,
                "progress: {msg}"
            );
            self.stats = Some(stats);
            return;
        }
        // The plain marker beside encrypted data (crate::sync::valves::crypt_marker) is not an encrypted
        // name; rclone crypt says so at every listing. That is expected, not news.
        if object.rsplit('/').next() == Some(crate::remote::path::Internal::EncryptionMarker.name())
            && msg.contains("undecryptable file name")
        {
            tracing::debug!(target: "rclone", object, "{msg}");
            return;
        }
        self.internal.count(&entry);
        match entry.level.as_str() {
            "debug" => tracing::debug!(target: "rclone", object, "{msg}"),
            "info" if self.info_as_debug => tracing::debug!(target: "rclone", object, "{msg}"),
            "info" | "notice" => tracing::info!(target: "rclone", object, "{msg}"),
            "warning" => tracing::warn!(target: "rclone", object, "{msg}"),
            _ => {
                self.causes.add(msg);
                tracing::error!(target: "rclone", object, "{msg}")
            }
        }
    }
}

/// The option named in rclone's "could not parse line: KEY = VALUE" (its config parser's
/// message), without the value.
pub(super) fn unparsable_option(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("could not parse line:")?;
    let key = rest.split(['=', ':']).next().unwrap_or("").trim();
    Some(key.chars().take(64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_read_from_json_log_lines() {
        let line = r#"{"time":"t","level":"notice","msg":"x\n","stats":{"bytes":6,"checks":2,"deletes":1,"elapsedTime":0.5,"errors":0,"transfers":2}}"#;
        let mut s = Streamer::new(tokio::io::empty(), tokio::io::empty(), Arc::default());
        s.handle(line);
        let stats = s.stats.unwrap();
        assert_eq!((stats.bytes, stats.transfers, stats.deletes), (6, 2, 1));
    }

    /// Lines as rclone 1.75 writes them at -v (and with --dry-run).
    #[test]
    fn our_own_objects_are_counted_apart() {
        let mut s = Streamer::new(tokio::io::empty(), tokio::io::empty(), Arc::default());
        for line in [
            r#"{"level":"info","msg":"Copied (server-side copy)","size":3,"object":".volume-syncing-operator.manifest"}"#,
            r#"{"level":"info","msg":"Copied (new)","size":2,"object":"a"}"#,
            r#"{"level":"info","msg":"Copied (new)","size":4,"object":"sub/.volume-syncing-operator.manifest"}"#,
            r#"{"level":"info","msg":"Deleted","object":".volume-syncing-operator.encrypted"}"#,
            r#"{"level":"notice","msg":"Skipped copy as --dry-run is set (size 5)","skipped":"copy","size":5,"object":".volume-syncing-operator.manifest"}"#,
            r#"{"level":"info","msg":"Updated modification time in destination","object":".volume-syncing-operator.manifest"}"#,
            r#"{"level":"notice","msg":"x","stats":{"bytes":14,"deletes":1,"transfers":4,"checks":9}}"#,
        ] {
            s.handle(line);
        }
        let stats = without(s.stats.take().unwrap(), &s.internal);
        assert_eq!((stats.transfers, stats.bytes, stats.deletes), (2, 6, 0));
        assert_eq!(stats.internal_files, 3);
    }

    /// A dry run's lines (rclone 1.75, S3): directory actions alone are no change; anything
    /// else it skipped is.
    #[test]
    fn a_dry_run_counts_what_it_skipped_but_directories() {
        let dry_run = |lines: &[&str]| {
            let mut s = Streamer::new(tokio::io::empty(), tokio::io::empty(), Arc::default());
            s.preview = Some(Preview::default());
            for line in lines {
                s.handle(line);
            }
            let preview = s.preview.unwrap();
            (
                preview.skipped,
                preview.nothing_to_transfer,
                s.stats.is_some(),
            )
        };
        let dirs = r#"{"level":"notice","msg":"Skipped make directory as --dry-run is set","skipped":"make directory","object":"e"}"#;
        let nothing = r#"{"level":"info","msg":"There was nothing to transfer"}"#;
        let stats = r#"{"level":"notice","msg":"0 B","stats":{"bytes":0,"transfers":0}}"#;
        assert_eq!(dry_run(&[dirs, nothing, stats]), (0, true, true));
        let copy = r#"{"level":"notice","msg":"Skipped copy as --dry-run is set (size 2)","skipped":"copy","size":2,"object":"f"}"#;
        assert_eq!(dry_run(&[copy, stats]), (1, false, true));
        let rmdir = r#"{"level":"notice","msg":"Skipped remove directory as --dry-run is set","skipped":"remove directory","object":"d"}"#;
        assert_eq!(dry_run(&[rmdir, nothing]), (1, true, false));
    }
}
