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
//!
//! The record is untrusted input (any writer of the bucket can put anything there), so a record
//! that exists but cannot be used never switches the valve off: it does not parse, is longer
//! than a record can be, or claims more than [`MAX_PLAUSIBLE_FILES`] files. Then a warning says
//! so and the remote's own files are counted instead (one `rclone size --json` listing of the
//! remote path without this program's internal files), and the valve is applied to that count;
//! the next successful upload writes a good record. The percentages are computed in `u128`.
//!
//! `remote-to-remote-sync` has the same valve ([`crate::sync::replicate`]): the record lives at the
//! destination, the count compared with it is the source's (a listing, see there).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::logging::untrusted;
use crate::remote::path::{INTERNAL_FILTER, Internal, RemoteEnd};
use crate::remote::rclone::Rclone;
use crate::remote::rclone::rc::{self, Object, RcServer};
use crate::sync::valves::safety;

/// The flag that sets the threshold, and, at 100, switches the valve off.
pub const MAX_DELETE_PERCENT_FLAG: &str = "--max-delete-percent";
/// Fewer vanished files than this never fire the valve: deleting 3 of 5 files is ordinary.
pub const MIN_VANISHED: u64 = 10;

/// More files than any volume holds (a trillion): a record claiming more is not believed.
pub const MAX_PLAUSIBLE_FILES: u64 = 1_000_000_000_000;
/// The longest record that is read (`rclone cat --count`): ours are ~60 bytes.
const MAX_RECORD_BYTES: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    files: u64,
    written: String,
}

/// Parses the bytes of an upload record into its file count; never panics (fuzzed). `Err` says
/// why the record cannot be used, escaped for the log.
pub fn parse_record(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "longer than {MAX_RECORD_BYTES} bytes; a record is a few dozen"
        ));
    }
    #[derive(Deserialize)]
    struct Files {
        files: u64,
    }
    let files = serde_json::from_slice::<Files>(bytes)
        .map_err(|e| format!("not an upload record: {}", untrusted(&e.to_string())))?
        .files;
    if files > MAX_PLAUSIBLE_FILES {
        return Err(format!(
            "it claims {files} files, more than the {MAX_PLAUSIBLE_FILES} any volume holds"
        ));
    }
    Ok(files)
}

/// What this process knows of the remote's record.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Known {
    /// Not read yet (or forgotten: another writer may have written it).
    Unread,
    /// There is none: nothing to compare with.
    Missing,
    /// It exists and cannot be used: the remote's own count is compared instead, and the next
    /// upload rewrites it whatever the count.
    Unusable,
    Files(u64),
}

/// The valve's state for one job: the threshold and the last known record.
#[derive(Debug)]
pub struct Guard {
    percent: u8,
    /// What the remote's record says, once read or written by this process.
    known: Mutex<Known>,
}

impl Guard {
    pub fn new(percent: u8) -> Self {
        Guard {
            percent,
            known: Mutex::new(Known::Unread),
        }
    }

    /// Forgets the record: after this process lost the remote path to another writer, which
    /// may have written its own; the next check reads it again, the next upload rewrites it.
    pub fn forget(&self) {
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = Known::Unread;
    }

    fn known(&self) -> Known {
        *self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_known(&self, known: Known) {
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = known;
    }

    /// The count to compare with, and how to say where it comes from: the record's, or, when
    /// the record cannot be used, the remote's own.
    async fn baseline(&self, rclone: &Rclone, end: &RemoteEnd) -> Result<Option<(u64, String)>> {
        let (remote, shown) = (end.data(), end.shown());
        let known = match self.known() {
            Known::Unread => {
                let known = self.read_record(rclone, end).await?;
                self.set_known(known);
                known
            }
            known => known,
        };
        match known {
            Known::Files(files) => Ok(Some((
                files,
                format!("the last upload to {shown} recorded {files}"),
            ))),
            Known::Missing => Ok(None),
            Known::Unusable | Known::Unread => {
                let files = count_remote_files(rclone, remote).await?;
                Ok(Some((
                    files,
                    format!("{shown} holds {files} (its upload record cannot be used)"),
                )))
            }
        }
    }

    async fn read_record(&self, rclone: &Rclone, end: &RemoteEnd) -> Result<Known> {
        let count = (MAX_RECORD_BYTES + 1).to_string();
        let args = [
            "cat",
            "--count",
            count.as_str(),
            end.object(Internal::UploadRecord).as_str(),
        ]
        .map(OsString::from);
        let text = match rclone.output(&args, None, "cat (upload record)").await {
            Ok(text) => text,
            // The path does not exist yet (rclone: directory or file not found).
            Err(e) if matches!(e.rclone_exit_code(), Some(3 | 4)) => return Ok(Known::Missing),
            Err(e) => return Err(e),
        };
        if text.is_empty() {
            // `rclone cat` of a missing object on a bucket-based remote prints nothing.
            return Ok(Known::Missing);
        }
        match parse_record(text.as_bytes()) {
            Ok(files) => Ok(Known::Files(files)),
            Err(why) => {
                tracing::warn!(
                    "the upload record {} cannot be used ({why}); the mass-delete \
                     valve compares with the files on the remote instead (one listing), and the \
                     next successful upload rewrites the record",
                    end.shown_object(Internal::UploadRecord)
                );
                Ok(Known::Unusable)
            }
        }
    }

    /// Refuses a full upload of `src` that would delete more than the threshold of the files
    /// recorded by the last upload. Returns the source's file count, for [`Guard::record`].
    pub async fn check(&self, rclone: &Rclone, src: &Path, end: &RemoteEnd) -> Result<u64> {
        let files = safety::count_files_to_upload(src)
            .map_err(|e| Error::Other(anyhow::anyhow!("cannot read {}: {e}", src.display())))?;
        let source = format!("{} holds {files} regular files", src.display());
        self.check_count(rclone, files, &source, end).await?;
        Ok(files)
    }

    /// The valve for a source holding `files` (`source` says so: "/data holds 3 regular
    /// files") synced to `end`: refused when more than the threshold of
    /// the baseline's files would go.
    pub async fn check_count(
        &self,
        rclone: &Rclone,
        files: u64,
        source: &str,
        end: &RemoteEnd,
    ) -> Result<()> {
        // A source without files is empty-source's to judge (and its override's to clear).
        if files == 0 || self.percent >= 100 {
            return Ok(());
        }
        let Some((before, said)) = self.baseline(rclone, end).await? else {
            return Ok(());
        };
        if let Some(share) = exceeds(before, files, self.percent) {
            let vanished = before - files;
            return Err(Error::refused(
                "mass-delete",
                format!(
                    "{source} where {said}: syncing would delete about {vanished} of them \
                     ({share}%, more than {MAX_DELETE_PERCENT_FLAG} {}) (is the volume only \
                     partly mounted, or was it not restored?)",
                    self.percent
                ),
                &format!("{MAX_DELETE_PERCENT_FLAG} 100"),
            ));
        }
        Ok(())
    }

    /// Whether the remote's record already says `files` (read through `server`), so that an
    /// upload of that source need not write it; then it is remembered as read. A missing or
    /// unusable record, or a failed read, is `false`.
    pub async fn is_recorded(&self, server: &RcServer, end: &RemoteEnd, files: u64) -> bool {
        let object = Object::split(&end.object(Internal::UploadRecord));
        let read = server.read(&object, MAX_RECORD_BYTES + 1, "cat (upload record)");
        let recorded = matches!(read.await, Ok(Some(bytes)) if parse_record(&bytes) == Ok(files));
        if recorded {
            self.set_known(Known::Files(files));
        }
        recorded
    }

    /// Records `files` as the source's count after a successful upload (unless already known),
    /// through `server` when the run has one (a failed request is made again as a command).
    pub async fn record(
        &self,
        rclone: &Rclone,
        server: Option<&RcServer>,
        end: &RemoteEnd,
        files: u64,
    ) -> Result<()> {
        if self.known() == Known::Files(files) {
            return Ok(());
        }
        let record = Record {
            files,
            written: chrono::Utc::now().to_rfc3339(),
        };
        let text = serde_json::to_string(&record).expect("a record serialises") + "\n";
        let object = end.object(Internal::UploadRecord);
        let what = "rcat (upload record)";
        if let Some(server) = server {
            match server
                .write(&Object::split(&object), text.as_bytes(), what)
                .await
            {
                Ok(()) => {
                    self.set_known(Known::Files(files));
                    return Ok(());
                }
                Err(e) => rc::falling_back(what, &e),
            }
        }
        let args = [
            "rcat",
            object.as_str(),
            crate::remote::rclone::NO_BUCKET_CHECK,
        ]
        .map(OsString::from);
        rclone.output(&args, Some(&text), what).await?;
        self.set_known(Known::Files(files));
        Ok(())
    }
}
/// The share (percent, rounded down) of `before` that syncing a source of `files` would delete,
/// when it is more than `percent` and at least [`MIN_VANISHED`] files. No overflow: `u128`.
fn exceeds(before: u64, files: u64, percent: u8) -> Option<u128> {
    let vanished = before.saturating_sub(files);
    if vanished < MIN_VANISHED {
        return None;
    }
    let (vanished, before) = (u128::from(vanished), u128::from(before));
    (vanished * 100 > before * u128::from(percent)).then(|| vanished * 100 / before)
}

/// The number of files under `remote` (this program's internal files aside): one
/// `rclone size --json` listing. A path that does not exist holds none.
pub async fn count_remote_files(rclone: &Rclone, remote: &str) -> Result<u64> {
    let args = ["size", "--json", "--exclude", INTERNAL_FILTER, remote].map(OsString::from);
    let text = match rclone.output(&args, None, "size (file count)").await {
        Ok(text) => text,
        Err(e) if e.rclone_exit_code() == Some(3) => return Ok(0),
        Err(e) => return Err(e),
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("count")?.as_u64())
        .ok_or_else(|| {
            Error::Other(anyhow::anyhow!(
                "rclone size printed no file count for {remote}: {}",
                untrusted(text.trim())
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_record_never_panics_and_refuses_what_it_cannot_use() {
        assert_eq!(parse_record(br#"{"files":40,"written":"x"}"#), Ok(40));
        assert_eq!(parse_record(br#"{"files":0}"#), Ok(0));
        for bad in [
            &b"garbage{{"[..],
            br#"{"files":-100}"#,
            br#"{"files":18446744073709551615}"#,
            br#"{"files":18446744073709551616}"#,
            br#"{"files":1e3}"#,
            br#"{"files":"40"}"#,
            b"",
            b"\xff\xfe",
            br#"{"files":"\u001b[2J"}"#,
        ] {
            let why = parse_record(bad).expect_err(&String::from_utf8_lossy(bad));
            assert!(!why.contains('\u{1b}'), "{why}");
        }
        assert!(parse_record(&vec![b' '; MAX_RECORD_BYTES + 1]).is_err());
        let real = br#"{"files":123456,"written":"2026-01-01T00:00:00+00:00"}"#;
        for end in 0..real.len() {
            let _ = parse_record(&real[..end]);
        }
    }

    #[test]
    fn the_threshold_never_overflows() {
        assert_eq!(exceeds(100, 40, 50), Some(60));
        assert_eq!(exceeds(100, 60, 50), None);
        assert_eq!(exceeds(15, 1, 50), Some(93));
        assert_eq!(exceeds(9, 0, 0), None, "fewer than MIN_VANISHED");
        assert_eq!(exceeds(u64::MAX, 1, 50), Some(99));
        assert_eq!(exceeds(u64::MAX, 1, 100), None);
    }
}
