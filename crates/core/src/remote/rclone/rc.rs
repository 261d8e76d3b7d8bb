//! One `rclone rcd` for the small calls on single objects of ours (the lease's acquisition;
//! in a one-shot upload also its renewals, release, manifest and upload record): each call is an HTTP request to an rclone that is already running, so it costs
//! a request to the remote and no process start, config parse or crypt key derivation.
//!
//! Decisions (issue 28, BENCHMARKS.md section 9):
//! - The server listens on a unix socket in a private temporary directory (mode 0700), so no
//!   other user can reach it and no credential is needed; nothing listens on the network.
//! - It is the same rclone executable, config file and environment as every other call
//!   ([`Rclone::spawn_server`]), with the short-check flags: a dead endpoint fails in seconds.
//! - Reads go through `--rc-serve` (`GET /[fs]/name`), which streams the object, so a read
//!   stops after the bytes the caller allows and a huge object is never loaded; writes are
//!   `operations/uploadfile`, deletions `operations/deletefile`, the server's modification
//!   time `operations/stat` with `UseServerModTime`.
//! - Every call is bounded in time ([`CALL_TIMEOUT`]); the server is killed when the value is
//!   dropped (and with us, `PR_SET_PDEATHSIG`).
//! - A failed call is an [`Error::Rclone`] with rclone's message as the cause (scrubbed), so it
//!   reads, and is retried, like a failed short command.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::{Rclone, collect_tail, failure, failure_with_code};
use crate::error::{Error, Result};
use crate::remote::cause::Causes;
use crate::remote::config::PrivateDir;
use crate::remote::scrub::Scrubber;

/// The bound of one call (the server's own timeouts end a stalled request first).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The most of an error answer that is read.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// A running `rclone rcd`, killed when dropped.
pub struct RcServer {
    child: Child,
    socket: PathBuf,
    scrubber: Arc<Scrubber>,
    /// Drains the server's log (trace) so it never blocks on a full pipe; its last line and
    /// causes explain a server that exits.
    log: Option<JoinHandle<(String, Causes)>>,
    _dir: PrivateDir,
}

/// An object of ours split as rc wants it: the configured remote (`fs`, up to its colon), the
/// directory in it and the name. The remote is only the config section's name, which has no
/// `]`: `--rc-serve` ends the `[fs]` of a URL at the first `]`, and a path may hold one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub fs: String,
    pub dir: String,
    pub name: String,
}

impl Object {
    /// `remote:bucket/path/name` → (`remote:`, `bucket/path`, `name`); `remote:/abs/name` →
    /// (`remote:/`, `abs`, `name`); `crypt:name` → (`crypt:`, ``, `name`).
    pub fn split(object: &str) -> Object {
        let (fs, path) = match object.split_once(':') {
            // An absolute path (the local backend's) keeps its root in the remote part.
            Some((remote, path)) => {
                let relative = path.trim_start_matches('/');
                let root = &path[..path.len() - relative.len()];
                (format!("{remote}:{root}"), relative)
            }
            None => (String::new(), object),
        };
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        Object {
            fs,
            dir: dir.to_string(),
            name: name.to_string(),
        }
    }

    /// The path in the remote: `dir/name`.
    fn path(&self) -> String {
        if self.dir.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.dir, self.name)
        }
    }
}

impl RcServer {
    /// Starts the server and waits until it answers (bounded by [`START_TIMEOUT`]).
    pub async fn start(rclone: &Rclone) -> Result<RcServer> {
        let dir = PrivateDir::new("volume-syncing-operator-rc-", "rclone's rc socket")?;
        let socket = dir.path().join("rc.sock");
        let addr = format!("unix://{}", socket.display());
        let mut child = rclone.spawn_server(
            &[
                "rcd",
                "--rc-addr",
                &addr,
                "--rc-no-auth",
                "--rc-serve",
                "--use-json-log",
            ],
            "rcd",
        )?;
        let stderr = child.stderr.take().context("rclone stderr")?;
        let scrubber = rclone.scrubber();
        let log = tokio::spawn(collect_tail(stderr, Arc::clone(&scrubber), true));
        let mut server = RcServer {
            child,
            socket,
            scrubber,
            log: Some(log),
            _dir: dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for rclone rcd")? {
                // Its output (an unparsable config, say) is the cause.
                let log = self
                    .log
                    .take()
                    .map(|log| tokio::time::timeout(Duration::from_secs(5), log));
                let (tail, causes) = match log {
                    Some(log) => log.await.ok().and_then(|r| r.ok()).unwrap_or_default(),
                    None => Default::default(),
                };
                return Err(failure("rcd", status, &tail, &causes));
            }
            if self.socket.exists() && UnixStream::connect(&self.socket).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Other(anyhow::anyhow!(
                    "rclone rcd did not listen on its socket within {}s",
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Creates (and caches in the server) the remote `fs`: with crypt, this derives the key,
    /// so later calls on it cost a request only.
    pub async fn warm(&self, fs: &str) -> Result<()> {
        self.call(
            "operations/fsinfo",
            serde_json::json!({ "fs": fs }),
            "fsinfo",
        )
        .await
        .map(|_| ())
    }

    /// Reads at most `max` bytes of an object; `None` when it (or its bucket) does not exist.
    pub async fn read(&self, object: &Object, max: usize, what: &str) -> Result<Option<Vec<u8>>> {
        let path = format!("/[{}]/{}", object.fs, object.path());
        let request = hyper::Request::get(format!("http://rc{}", percent_encode(&path)))
            .body(Full::new(Bytes::new()))
            .context("building an rc request")?;
        let response = self.send(request, what).await?;
        let status = response.status();
        if status == hyper::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.failure(what, response).await);
        }
        let mut body = response.into_body();
        // One bound for the whole body, however slowly it drips.
        let collect = async {
            let mut bytes = Vec::new();
            while bytes.len() < max {
                let Some(frame) = body.frame().await else {
                    break;
                };
                if let Ok(data) = frame.map_err(|e| self.broken(what, e))?.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            bytes.truncate(max);
            Ok(Some(bytes))
        };
        tokio::time::timeout(CALL_TIMEOUT, collect)
            .await
            .unwrap_or_else(|_| Err(self.timed_out(what, CALL_TIMEOUT)))
    }

    /// Writes a small object (replacing it), within [`CALL_TIMEOUT`].
    pub async fn write(&self, object: &Object, data: &[u8], what: &str) -> Result<()> {
        self.write_within(object, data, what, CALL_TIMEOUT).await
    }

    /// Writes an object (replacing it), within `limit`.
    pub async fn write_within(
        &self,
        object: &Object,
        data: &[u8],
        what: &str,
        limit: Duration,
    ) -> Result<()> {
        const BOUNDARY: &str = "volume-syncing-operator-a8a2f1c07e";
        let mut body = Vec::with_capacity(data.len() + 256);
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file0\"; \
                 filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                quoted(&object.name)
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let query = format!(
            "/operations/uploadfile?fs={}&remote={}",
            percent_encode(&object.fs),
            percent_encode(&object.dir)
        );
        let request = hyper::Request::post(format!("http://rc{query}"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Full::new(Bytes::from(body)))
            .context("building an rc request")?;
        let response = self.send_within(request, what, limit).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.failure(what, response).await)
    }

    /// Deletes an object; `false` when it did not exist.
    pub async fn delete(&self, object: &Object, what: &str) -> Result<bool> {
        let body = serde_json::json!({ "fs": object.fs, "remote": object.path() });
        match self.call("operations/deletefile", body, what).await {
            Ok(_) => Ok(true),
            Err(e) if e.rclone_exit_code() == Some(4) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The object's modification time by the server's clock (`--use-server-modtime`), as
    /// rclone prints it; `None` when absent.
    pub async fn server_modtime(&self, object: &Object, what: &str) -> Result<Option<String>> {
        let body = serde_json::json!({
            "fs": object.fs,
            "remote": object.path(),
            "_config": { "UseServerModTime": true },
        });
        let answer = self.call("operations/stat", body, what).await?;
        Ok(answer
            .pointer("/item/ModTime")
            .and_then(|t| t.as_str())
            .map(str::to_string))
    }

    /// An rc call with a JSON body; its JSON answer.
    async fn call(
        &self,
        path: &str,
        body: serde_json::Value,
        what: &str,
    ) -> Result<serde_json::Value> {
        let request = hyper::Request::post(format!("http://rc/{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .context("building an rc request")?;
        let response = self.send(request, what).await?;
        if !response.status().is_success() {
            return Err(self.failure(what, response).await);
        }
        let bytes = self.body(response, what).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    async fn send(
        &self,
        request: hyper::Request<Full<Bytes>>,
        what: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        self.send_within(request, what, CALL_TIMEOUT).await
    }

    /// Sends a request and waits for the answer's head, within `limit`.
    async fn send_within(
        &self,
        mut request: hyper::Request<Full<Bytes>>,
        what: &str,
        limit: Duration,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        request.headers_mut().insert(
            hyper::header::HOST,
            hyper::header::HeaderValue::from_static("rc"),
        );
        let exchange = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .context("cannot connect to rclone rcd")?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .context("cannot talk to rclone rcd")?;
            tokio::spawn(connection);
            sender
                .send_request(request)
                .await
                .context("rclone rcd did not answer")
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(Error::Other(e.context(format!("rclone {what}")))),
            Err(_) => Err(self.timed_out(what, limit)),
        }
    }

    async fn body(
        &self,
        response: hyper::Response<hyper::body::Incoming>,
        what: &str,
    ) -> Result<Vec<u8>> {
        let limited = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BYTES);
        match tokio::time::timeout(CALL_TIMEOUT, limited.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
            Ok(Err(e)) => Err(Error::Other(anyhow::anyhow!("rclone {what}: {e}"))),
            Err(_) => Err(self.timed_out(what, CALL_TIMEOUT)),
        }
    }

    /// rclone's error answer as a failed short command would read: "object not found" is exit
    /// code 4 (file not found), the rest exit code 1 with rclone's message as the cause.
    async fn failure(&self, what: &str, response: hyper::Response<hyper::body::Incoming>) -> Error {
        let status = response.status();
        let message = match self.body(response, what).await {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => e.to_string(),
        };
        let message = self.scrubber.scrub(message.trim()).into_owned();
        let code = if status == hyper::StatusCode::NOT_FOUND {
            4
        } else {
            1
        };
        let mut causes = Causes::default();
        causes.add(&message);
        failure_with_code(what, code, &message, &causes)
    }

    fn timed_out(&self, what: &str, limit: Duration) -> Error {
        Error::Other(anyhow::anyhow!(
            "rclone {what} did not finish within {}s (the endpoint does not answer?)",
            limit.as_secs()
        ))
    }

    fn broken(&self, what: &str, e: hyper::Error) -> Error {
        Error::Other(anyhow::anyhow!("rclone {what}: the answer broke off: {e}"))
    }
}

/// Logs (debug) that a request failed and is made again as a command, whose error, if any,
/// is the one that counts.
pub fn falling_back(what: &str, e: &Error) {
    tracing::debug!("rclone rcd: {what} failed ({e:#}); trying it as a command");
}

/// Percent-encodes all but unreserved characters and `/` (rclone's server decodes the path
/// before it reads the `[fs]` part).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A file name inside a multipart header's quotes.
fn quoted(name: &str) -> String {
    name.replace(['"', '\r', '\n'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_split_into_remote_and_name() {
        let plain = Object::split("remote:bucket/a]b: c/.volume-syncing-operator.lease");
        assert_eq!(plain.fs, "remote:");
        assert_eq!(plain.dir, "bucket/a]b: c");
        assert_eq!(plain.name, ".volume-syncing-operator.lease");
        assert_eq!(plain.path(), "bucket/a]b: c/.volume-syncing-operator.lease");
        let local = Object::split("remote:/tmp/a b/.volume-syncing-operator.lease");
        assert_eq!(local.fs, "remote:/");
        assert_eq!(local.dir, "tmp/a b");
        let crypt = Object::split("crypt:.volume-syncing-operator.lease");
        assert_eq!(crypt.fs, "crypt:");
        assert_eq!(crypt.dir, "");
        assert_eq!(crypt.path(), ".volume-syncing-operator.lease");
    }

    #[test]
    fn paths_are_percent_encoded_but_for_slashes() {
        assert_eq!(
            percent_encode("/[remote:b c/ä]/x"),
            "/%5Bremote%3Ab%20c/%C3%A4%5D/x"
        );
    }
}
