//! The operator's HTTPS server: `POST /mutate` (AdmissionReview), `GET /healthz`, `/readyz`,
//! `/metrics`, over rustls with the certificate of [`super::tls::CertSlot`].
//!
//! Decisions: hyper's HTTP/1.1 server (the API server speaks HTTP/1.1 or 2 to webhooks and
//! falls back to 1.1); one port for everything, since the kubelet's probes and Prometheus can
//! both use HTTPS without verification inside the cluster; every connection is bounded (TLS
//! handshake, request head, body size and read time), so a slow client cannot pin the server.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::tls::CertSlot;
use vso_core::daemon::http::{metrics_text, text};

/// Largest admission request read (a Pod with big annotations stays far below).
const MAX_BODY: usize = 4 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What answers the routes.
pub trait Handler: Send + Sync + 'static {
    /// The AdmissionReview answer (JSON) to a request body.
    fn mutate(&self, body: Bytes) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send + '_>>;
    /// Ready to answer admissions (cache synced, certificate loaded).
    fn ready(&self) -> bool;
    /// The Prometheus text exposition.
    fn metrics(&self) -> String;
}

async fn route<H: Handler>(h: Arc<H>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/mutate") => {
            let body = Limited::new(req.into_body(), MAX_BODY);
            let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("bad body: {e}\n")),
                Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "body timed out\n"),
            };
            let mut r = Response::new(Full::new(Bytes::from(h.mutate(bytes).await)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if h.ready() => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/readyz") => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the PodFilesystemSync cache is not synced yet\n",
        ),
        (&Method::GET, "/metrics") => metrics_text(h.metrics()),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves on `listener` until the task is dropped.
pub async fn serve<H: Handler>(listener: TcpListener, certs: Arc<CertSlot>, handler: Arc<H>) {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_no_client_auth()
    .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let handler = Arc::clone(&handler);
                async move { Ok::<_, Infallible>(route(handler, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}
