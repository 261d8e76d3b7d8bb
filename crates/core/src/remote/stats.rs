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
    pub checks: u64,
    pub elapsed_time: f64,
}

impl Stats {
    /// Adds the statistics of another rclone run (incremental uploads run two).
    pub fn add(&mut self, other: &Stats) {
        self.bytes += other.bytes;
        self.transfers += other.transfers;
        self.deletes += other.deletes;
        self.errors += other.errors;
        self.checks += other.checks;
        self.elapsed_time += other.elapsed_time;
    }
}
