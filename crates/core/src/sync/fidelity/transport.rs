//! Moving the manifest: written only after the data sync succeeded, and only when it changed,
//! either through the rclone server the run already has (a one-shot upload keeps the lease's:
//! one request, no process start) or by an `rclone rcat` started then (no second rclone waits
//! beside the sync: its memory would count in the run's peak); read by a bounded `rclone cat`
//! that reads at most [`super::format::MAX_MANIFEST_BYTES`].

use std::io;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};

use super::format::{MAX_MANIFEST_BYTES, Record};
use crate::error::{Error, Result};
use crate::remote::path::{Internal, RemoteEnd};
use crate::remote::rclone::Rclone;
use crate::remote::rclone::rc::{self, Object, RcServer};

/// Upper bound for writing or reading the manifest once its rclone runs.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// Writes the manifest once the data sync succeeded: through `server` when the run has one
/// (the lease's, in a one-shot upload; a request that fails is made again as a command), else
/// by an `rclone rcat` started now.
pub async fn write(
    rclone: &Rclone,
    remote: &RemoteEnd,
    server: Option<&RcServer>,
    record: &Record,
) -> Result<()> {
    if let Some(server) = server {
        let what = "uploadfile (metadata manifest)";
        let object = Object::split(&remote.object(Internal::Manifest));
        match server
            .write_within(&object, &record.bytes(), what, TRANSFER_TIMEOUT)
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) => rc::falling_back(what, &e),
        }
    }
    Rcat::start(rclone, remote)?.write(record).await
}

/// Reads the manifest through `server`, at most [`MAX_MANIFEST_BYTES`] of it: `None` when it
/// is missing or larger.
pub async fn read_via(server: &RcServer, remote: &RemoteEnd) -> Result<Option<Vec<u8>>> {
    let object = Object::split(&remote.object(Internal::Manifest));
    let read = server.read(&object, MAX_MANIFEST_BYTES + 1, "cat (metadata manifest)");
    Ok(read
        .await?
        .filter(|bytes| bytes.len() <= MAX_MANIFEST_BYTES))
}

/// An `rclone rcat` of the manifest. Dropped unfed (the write interrupted), rclone is killed
/// before it reads the end of its input, so nothing is written.
struct Rcat {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Rcat {
    fn start(rclone: &Rclone, remote: &RemoteEnd) -> Result<Rcat> {
        // Started only after the data sync succeeded: the bucket exists by then.
        let args = [
            "rcat".into(),
            remote.object(Internal::Manifest).into(),
            crate::remote::rclone::NO_BUCKET_CHECK.into(),
        ];
        let mut child = rclone.spawn_piped(&args, "rcat (metadata manifest)")?;
        let stdin = child.stdin.take();
        Ok(Rcat { child, stdin })
    }

    /// Writes the manifest and waits for rclone to store it.
    async fn write(mut self, record: &Record) -> Result<()> {
        let bytes = record.bytes();
        let mut stdin = self.stdin.take().context("rclone rcat stdin")?;
        let mut stdout = self.child.stdout.take().context("rclone rcat stdout")?;
        let mut stderr = self.child.stderr.take().context("rclone rcat stderr")?;
        let work = async {
            let feed = async {
                stdin.write_all(&bytes).await?;
                stdin.shutdown().await?;
                drop(stdin);
                Ok::<_, io::Error>(())
            };
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (fed, _, _) = tokio::join!(
                feed,
                stdout.read_to_end(&mut out),
                stderr.read_to_end(&mut err)
            );
            let status = self.child.wait().await?;
            Ok::<_, io::Error>((fed, status, err))
        };
        let (fed, status, err) = tokio::time::timeout(TRANSFER_TIMEOUT, work)
            .await
            .map_err(|_| {
                Error::Other(anyhow::anyhow!(
                    "writing the metadata manifest did not finish within {TRANSFER_TIMEOUT:?}"
                ))
            })?
            .context("writing the metadata manifest")?;
        if !status.success() {
            return Err(rclone_error("rcat (metadata manifest)", status, &err));
        }
        fed.context("writing the metadata manifest to rclone")?;
        Ok(())
    }
}

impl Drop for Rcat {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            // Kill first: once rclone sees the end of its input it would write.
            let _ = self.child.start_kill();
            self.stdin = None;
        }
    }
}

fn rclone_error(operation: &str, status: std::process::ExitStatus, stderr: &[u8]) -> Error {
    let code = status.code().unwrap_or(-1);
    let tail = String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    let err = Error::Rclone {
        operation: operation.to_string(),
        code,
        meaning: crate::remote::rclone::exit_meaning(code),
        cause: None,
        stats: Default::default(),
    };
    if tail.is_empty() {
        err
    } else {
        Error::Other(anyhow::Error::new(err).context(tail))
    }
}

/// What the restore found of the manifest.
#[derive(Debug)]
pub enum Fetched {
    /// The remote has none (written by an older release, or never uploaded).
    Missing,
    Found(Vec<u8>),
    /// Larger than [`MAX_MANIFEST_BYTES`]: reading stopped there.
    TooLarge,
}

/// Reads the manifest, at most [`MAX_MANIFEST_BYTES`] of it: the remote is not trusted to
/// keep it small.
pub async fn fetch(rclone: &Rclone, remote: &RemoteEnd) -> Result<Fetched> {
    let args = ["cat".into(), remote.object(Internal::Manifest).into()];
    let operation = "cat (metadata manifest)";
    let mut child = rclone.spawn_piped(&args, operation)?;
    drop(child.stdin.take());
    let mut stdout = child.stdout.take().context("rclone cat stdout")?;
    let mut stderr = child.stderr.take().context("rclone cat stderr")?;
    let work = async {
        let read_out = async move {
            let mut out = Vec::new();
            let read = (&mut stdout)
                .take(MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .await;
            // Closing the pipe stops an rclone that has more to say (SIGPIPE).
            drop(stdout);
            read.map(|_| out)
        };
        let mut err = Vec::new();
        let (out, b) = tokio::join!(read_out, stderr.read_to_end(&mut err));
        let out = out?;
        b?;
        let status = child.wait().await?;
        Ok::<_, io::Error>((status, out, err))
    };
    let (status, out, err) = tokio::time::timeout(TRANSFER_TIMEOUT, work)
        .await
        .map_err(|_| {
            Error::Other(anyhow::anyhow!(
                "reading the metadata manifest did not finish within {TRANSFER_TIMEOUT:?}"
            ))
        })?
        .context("reading the metadata manifest")?;
    if out.len() > MAX_MANIFEST_BYTES {
        return Ok(Fetched::TooLarge);
    }
    // `rclone cat` of a missing object lists it as a directory: exit 3 (directory not found)
    // on most backends, an empty success on bucket-based ones.
    match status.code() {
        Some(0) if out.is_empty() => Ok(Fetched::Missing),
        Some(0) => Ok(Fetched::Found(out)),
        Some(3) | Some(4) => Ok(Fetched::Missing),
        _ => Err(rclone_error(operation, status, &err)),
    }
}
