//! The long-running mode's HTTP endpoints: `/metrics`, `/healthz`, `/livez` and `/readyz`.
//!
//! Decisions:
//! - hyper's HTTP/1.1 server, the stack the operator's webhook serves with (over TLS there):
//!   one HTTP implementation in the project. Measured against the hand-written server it
//!   replaced (static musl sidecar, `--schedule` with `--metrics-address`, after three scrapes):
//!   4.06 MiB instead of 3.94 MiB on disk (goal <= 6 MiB), idle RSS 3.4-3.5 MiB either way
//!   (goal <= 4 MiB).
//! - Every connection is bounded: the request head must arrive within [`READ_TIMEOUT`], and the
//!   connection closes after one answer, so a slow or idle client cannot pin a task.
//! - GET only; request bodies are never read.
//! - `/livez` is for a liveness probe and fails only for what a restart can cure (see
//!   [`Metrics::liveness`]); `/healthz` fails for every health rule, for alerts and humans.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::daemon::metrics::Metrics;
use crate::error::{Error, Result};

/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of the Prometheus (OpenMetrics) text exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A plain-text answer.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An answer with the Prometheus text exposition `body`.
pub fn metrics_text(body: String) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    r
}

/// Binds the listener now (so a bad address is a configuration error before anything runs) and
/// serves it in the background. Returns the bound address.
pub async fn serve(address: &str, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| Error::config(format!("cannot listen on --metrics-address {address}: {e}")))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "serving /metrics, /healthz, /livez and /readyz");
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = route(&metrics, &req);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(READ_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!("metrics connection: {e}");
                }
            });
        }
    });
    Ok(bound)
}

fn route(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let verdict = |result: std::result::Result<(), String>| match result {
        Ok(()) => text(StatusCode::OK, "ok\n"),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    };
    match req.uri().path() {
        "/metrics" => metrics_text(metrics.encode()),
        "/healthz" => verdict(metrics.health()),
        "/livez" => verdict(metrics.liveness()),
        // Ready means the schedule is armed; the body also says whether /healthz passes and why
        // not, so one probe's log explains both.
        "/readyz" if metrics.is_ready() => text(
            StatusCode::OK,
            match metrics.health() {
                Ok(()) => "ready\n".into(),
                Err(why) => format!("ready; /healthz fails:\n{why}\n"),
            },
        ),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the schedule is not armed yet\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
