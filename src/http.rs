//! A minimal HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`.
//!
//! Decision: three read-only GET endpoints for Prometheus and the kubelet do not justify an HTTP
//! framework in a sidecar whose footprint matters; this reads one request head (bounded size and
//! time), answers, and closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};
use crate::metrics::Metrics;

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the listener now (so a bad address is a configuration error before anything runs) and
/// serves it in the background. Returns the bound address.
pub async fn serve(address: &str, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| Error::config(format!("cannot listen on --metrics-address {address}: {e}")))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let metrics = Arc::clone(&metrics);
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &metrics).await {
                            tracing::debug!("metrics connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("metrics listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(bound)
}

async fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timeout")
            })??;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        ("GET", "/healthz") => match metrics.health() {
            Ok(()) => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string()),
            Err(reason) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("{reason}\n"),
            ),
        },
        // Ready means the schedule is armed; the body also says whether /healthz passes and why
        // not, so one probe's log explains both.
        ("GET", "/readyz") if metrics.is_ready() => (
            "200 OK",
            "text/plain; charset=utf-8",
            match metrics.health() {
                Ok(()) => "ready\n".into(),
                Err(why) => format!("ready; /healthz fails:\n{why}\n"),
            },
        ),
        ("GET", "/readyz") => (
            "503 Service Unavailable",
            "text/plain; charset=utf-8",
            "the schedule is not armed yet\n".into(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
