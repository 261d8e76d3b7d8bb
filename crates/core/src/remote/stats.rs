//! Transfer statistics of one rclone run, as rclone reports them: plain data, so that an
//! error ([`crate::error::Error`]) can carry the statistics of the failed sync without
//! depending on the process code.

use serde::Deserialize;

/// Transfer statistics, as rclone reports them in the `stats` object of its JSON log.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Stats {
    pub bytes: u64,
    pub transfers: u64,
    pub deletes: u64,
    pub errors: u64,
    // No `checks`: rclone counts our own objects among them, and tells them apart only at
    // -vv (one line per unchanged file), so it is not read rather than reported wrong.
    pub elapsed_time: f64,
    /// This program's own objects among what rclone copied or deleted (not rclone's: counted
    /// from its per-object lines, and already left out of the other counts).
    #[serde(skip)]
    pub internal_files: u64,
}

impl Stats {
    /// Adds the statistics of another rclone run (incremental uploads run two).
    pub fn add(&mut self, other: &Stats) {
        self.bytes += other.bytes;
        self.transfers += other.transfers;
        self.deletes += other.deletes;
        self.errors += other.errors;
        self.elapsed_time += other.elapsed_time;
        self.internal_files += other.internal_files;
    }
}
