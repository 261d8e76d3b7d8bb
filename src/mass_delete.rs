//! The `mass-delete` valve: an upload that would delete most of what the last upload sent.
//!
//! `empty-source` stops a source without files. Its neighbour in the same family is a source
//! that holds *a few* files where thousands were: an app that wrote a fresh skeleton (a new
//! database, a default config) into a volume whose restore did not run, a volume half
//! mounted, a wrong directory. `rclone sync` would delete the rest of the backup.
//!
//! How it knows what "the rest" is, at almost no cost in round trips: after every successful
//! upload that can delete (`sync`, not `-x`, not `--dry-run`) the number of regular files the
//! source held is recorded beside the data in `.volume-syncing-operator.upload-record` (under
//! the internal-files rule, so no sync, listing or valve sees it; through the crypt layer when
//! encryption is on). Before the next full upload the source's files are counted (a local walk)
//! and compared with that record: when more than `--max-delete-percent` (default 50) of the
//! recorded files are gone, and at least [`MIN_VANISHED`] of them, the upload is refused.
//!
//! Costs: a one-shot upload reads the record (one small GET) and writes it when the count
//! changed (one small PUT); a long-running process remembers what it wrote, so a sync that
//! changed nothing costs no request at all. Incremental (watch) uploads propagate deletions the
//! watcher saw happen; they rewrite the record only when they deleted something, so the
//! baseline never stays above the truth (a baseline that lags below it only makes the valve
//! less eager, never wrong).
//!
//! Limits, said in README: the first upload to a path has no record (nothing to compare); the
//! count is of files, not bytes; a rename of many files is not a deletion and is not refused.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rclone::Rclone;
use crate::safety::{self, INTERNAL_FILE_PREFIX};

/// The record's name inside the remote path.
pub const RECORD: &str = ".volume-syncing-operator.upload-record";
/// The flag that sets the threshold, and, at 100, switches the valve off.
pub const MAX_DELETE_PERCENT_FLAG: &str = "--max-delete-percent";
/// Fewer vanished files than this never fire the valve: deleting 3 of 5 files is ordinary.
pub const MIN_VANISHED: u64 = 10;

const _: () = assert!(RECORD.len() > INTERNAL_FILE_PREFIX.len());

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    files: u64,
    written: String,
}

/// The valve's state for one job: the threshold and the last known record.
#[derive(Debug)]
pub struct Guard {
    percent: u8,
    /// What the remote's record says, once read or written by this process.
    known: Mutex<Option<Option<u64>>>,
}

impl Guard {
    pub fn new(percent: u8) -> Self {
        Guard {
            percent,
            known: Mutex::new(None),
        }
    }

    /// `remote:bucket/path/` → `remote:bucket/path/RECORD`; `crypt:` → `crypt:RECORD`.
    fn record_path(remote: &str) -> String {
        if remote.ends_with(':') {
            format!("{remote}{RECORD}")
        } else {
            format!("{}/{RECORD}", remote.trim_end_matches('/'))
        }
    }

    async fn baseline(&self, rclone: &Rclone, remote: &str) -> Result<Option<u64>> {
        if let Some(known) = *self.known.lock().expect("guard lock") {
            return Ok(known);
        }
        let args = ["cat", Self::record_path(remote).as_str()].map(OsString::from);
        let text = match rclone.output(&args, None, "cat (upload record)").await {
            Ok(text) => text,
            // The path does not exist yet (rclone: directory or file not found).
            Err(e) if matches!(e.rclone_exit_code(), Some(3 | 4)) => String::new(),
            Err(e) => return Err(e),
        };
        // A missing record reads as nothing; one that does not parse is treated as missing
        // (it is rewritten after the next upload) rather than blocking every upload.
        let files = serde_json::from_str::<Record>(&text).ok().map(|r| r.files);
        *self.known.lock().expect("guard lock") = Some(files);
        Ok(files)
    }

    /// Refuses a full upload of `src` that would delete more than the threshold of the files
    /// recorded by the last upload. Returns the source's file count, for [`Guard::record`].
    pub async fn check(
        &self,
        rclone: &Rclone,
        src: &Path,
        remote: &str,
        shown: &str,
    ) -> Result<u64> {
        let files = safety::count_files_to_upload(src)
            .map_err(|e| Error::Other(anyhow::anyhow!("cannot read {}: {e}", src.display())))?;
        // A source without files is empty-source's to judge (and its override's to clear).
        if files == 0 || self.percent >= 100 {
            return Ok(files);
        }
        let Some(before) = self.baseline(rclone, remote).await? else {
            return Ok(files);
        };
        let vanished = before.saturating_sub(files);
        if vanished >= MIN_VANISHED && vanished * 100 > before * u64::from(self.percent) {
            return Err(Error::refused(
                "mass-delete",
                format!(
                    "{} holds {files} regular files where the last upload to {shown} recorded \
                     {before}: syncing would delete about {vanished} of them ({}%, more than \
                     {MAX_DELETE_PERCENT_FLAG} {}) (is the volume only partly mounted, or was it \
                     not restored?)",
                    src.display(),
                    vanished * 100 / before,
                    self.percent
                ),
                &format!("{MAX_DELETE_PERCENT_FLAG} 100"),
            ));
        }
        Ok(files)
    }

    /// Records `files` as the source's count after a successful upload (unless already known).
    pub async fn record(&self, rclone: &Rclone, remote: &str, files: u64) -> Result<()> {
        if *self.known.lock().expect("guard lock") == Some(Some(files)) {
            return Ok(());
        }
        let record = Record {
            files,
            written: chrono::Utc::now().to_rfc3339(),
        };
        let text = serde_json::to_string(&record).expect("a record serialises") + "\n";
        let args = [
            "rcat",
            Self::record_path(remote).as_str(),
            crate::rclone::NO_BUCKET_CHECK,
        ]
        .map(OsString::from);
        rclone
            .output(&args, Some(&text), "rcat (upload record)")
            .await?;
        *self.known.lock().expect("guard lock") = Some(Some(files));
        Ok(())
    }
}
