//! How the lease's calls reach the remote: a request to the acquisition's running rclone
//! ([`RcServer`]), fast enough for the protocol's bound `G` (`MAX_WRITE_GAP`), or a short
//! rclone command of its own (renewal, release, the restore's wait, and every call whose
//! request failed).
//!
//! A request that fails is made again as a command before its error counts: rclone's command
//! line names the cause more precisely than its rc answer (a wrong secret is "Forbidden" to a
//! HEAD request, but `SignatureDoesNotMatch` to the `cat` that reads the body), and a server
//! that could not start (an rclone too old for a unix socket) only makes the acquisition slower.
//! The fallback's time counts in the gap `G` like any other, so the protocol's bound holds.

use std::ffi::OsString;

use anyhow::Context;
use chrono::{DateTime, Utc};

use std::time::Duration;

use super::errors::{rclone_code, rclone_first};
use super::record::{MAX_LEASE_BYTES, Record, parse_lease, parse_time};
use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::remote::rclone::Rclone;
use crate::remote::rclone::rc::{self, Object, RcServer};

/// Upper bound of one lease call (rclone also gets the short-check timeouts).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// What reading the lease found.
#[derive(Debug)]
pub(super) enum Found {
    Nothing,
    Lease(Record),
    /// An object that is not a lease of ours (corrupt, or another program's).
    Unreadable(String),
}

/// The lease object of a remote path, through the remote the sync uses.
pub(super) struct LeaseObject {
    rclone: Rclone,
    object: String,
    /// The same object as the rc server addresses it.
    target: Object,
    display: String,
}

/// Which way a lease call goes.
#[derive(Clone, Copy)]
pub(super) enum Via<'a> {
    Process,
    Rc(&'a RcServer),
}

impl LeaseObject {
    pub(super) fn new(rclone: Rclone, object: String, display: String) -> LeaseObject {
        LeaseObject {
            target: Object::split(&object),
            rclone,
            object,
            display,
        }
    }

    /// Starts the acquisition's server; `None` (with a debug line) when it cannot run, and the
    /// calls go as commands.
    pub(super) async fn start_server(&self) -> Option<RcServer> {
        let started = async {
            let server = RcServer::start(&self.rclone).await?;
            server.warm(&self.target.fs).await?;
            Ok::<_, Error>(server)
        };
        match started.await {
            Ok(server) => Some(server),
            Err(e) => {
                tracing::debug!(
                    "rclone rcd is not available ({e:#}); the lease is taken with short commands"
                );
                None
            }
        }
    }

    pub(super) async fn read(&self, via: Via<'_>) -> Result<Found> {
        // At most one byte more than a lease may be: a huge object is not read into memory.
        if let Via::Rc(server) = via {
            let read = server.read(&self.target, MAX_LEASE_BYTES + 1, "cat (lease)");
            match read.await {
                Ok(None) => return Ok(Found::Nothing),
                Ok(Some(bytes)) => return Ok(found(&bytes)),
                Err(e) => rc::falling_back("cat (lease)", &e),
            }
        }
        let count = (MAX_LEASE_BYTES + 1).to_string();
        let args = ["cat", "--count", count.as_str(), self.object.as_str()].map(OsString::from);
        let text = match self.call(&args, None, "cat (lease)").await {
            Ok(text) => text,
            // A missing bucket or directory: no lease.
            Err(e) if rclone_code(&e) == Some(3) => return Ok(Found::Nothing),
            Err(e) => return Err(e),
        };
        Ok(found(text.as_bytes()))
    }

    /// When the lease object was written, by the server's clock (`--use-server-modtime`: the
    /// modification time a writer sets itself could lie), and never later than `now`.
    pub(super) async fn written_at(
        &self,
        now: DateTime<Utc>,
        via: Via<'_>,
    ) -> Result<DateTime<Utc>> {
        let text = match via {
            Via::Rc(server) => match server.server_modtime(&self.target, "stat (lease)").await {
                Ok(written) => Some(written),
                Err(e) => {
                    rc::falling_back("stat (lease)", &e);
                    None
                }
            },
            Via::Process => None,
        };
        let written = match text {
            Some(written) => written.as_deref().and_then(parse_time),
            None => {
                let args = [
                    "lsjson",
                    "--stat",
                    "--use-server-modtime",
                    self.object.as_str(),
                ]
                .map(OsString::from);
                let text = self.call(&args, None, "lsjson --stat (lease)").await?;
                serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| parse_time(v.get("ModTime")?.as_str()?))
            }
        };
        Ok(written.map_or(now, |t| t.min(now)))
    }

    pub(super) async fn write(&self, record: &Record, via: Via<'_>) -> Result<()> {
        let json = serde_json::to_string(record).context("cannot encode the lease")?;
        if let Via::Rc(server) = via {
            match server
                .write(&self.target, json.as_bytes(), "rcat (lease)")
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => rc::falling_back("rcat (lease)", &e),
            }
        }
        let args = ["rcat", self.object.as_str()].map(OsString::from);
        match self.call(&args, Some(&json), "rcat (lease)").await {
            // The lease may be the first write to a new bucket, so the bucket check is kept
            // unless the provider's answer to it proves the bucket exists.
            Err(e) if crate::remote::rclone::is_bucket_already_exists(&e) => {
                let args = [
                    "rcat",
                    self.object.as_str(),
                    crate::remote::rclone::NO_BUCKET_CHECK,
                ]
                .map(OsString::from);
                self.call(&args, Some(&json), "rcat (lease)")
                    .await
                    .map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    pub(super) async fn delete(&self, via: Via<'_>) -> Result<()> {
        if let Via::Rc(server) = via {
            match server.delete(&self.target, "deletefile (lease)").await {
                Ok(_) => return Ok(()),
                Err(e) => rc::falling_back("deletefile (lease)", &e),
            }
        }
        let args = ["deletefile", self.object.as_str()].map(OsString::from);
        match self.call(&args, None, "deletefile (lease)").await {
            Err(e) if rclone_code(&e) == Some(4) => Ok(()), // already gone
            other => other.map(|_| ()),
        }
    }

    async fn call(&self, args: &[OsString], stdin: Option<&str>, what: &str) -> Result<String> {
        tokio::time::timeout(CALL_TIMEOUT, self.rclone.output(args, stdin, what))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Other(anyhow::anyhow!(
                    "rclone {what} on {} did not finish within {}",
                    self.display,
                    format_duration(CALL_TIMEOUT)
                )))
            })
            .map_err(rclone_first)
    }
}

/// What the bytes of the lease object are.
fn found(bytes: &[u8]) -> Found {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Found::Nothing;
    }
    match parse_lease(bytes) {
        Ok(record) => Found::Lease(record),
        Err(why) => Found::Unreadable(why),
    }
}
