//! The `operator` command: the admission webhook's process.
//!
//! Start-up, in order, each step bounded and failing loudly: the API client (in-cluster or
//! KUBECONFIG), the cluster version (native or classic sidecars), the listener, the certificate
//! (generated into the Secret and the caBundle, or from files), then the PodFilesystemSync
//! cache (a kube-runtime reflector over all namespaces, of the objects as stored: each is read
//! by [`super::cache`], so one that cannot be read does not stop the others). Until the cache has synced, /readyz
//! fails and admissions are denied (never answered from an empty cache, which would deny every
//! labelled Pod as unmatched — or worse, admit it uninjected). SIGTERM/SIGINT end it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::cache;
use super::server::{Handler, serve};
use super::status::{self, StatusMetrics};
use super::tls::{self, CertSlot, Source};
use super::webhook::{Decision, decide, decide_workload, pod_name};
use crate::cli::{NativeSidecars, OperatorArgs};
use crate::inject::Settings;
use crate::resource::PodFilesystemSync;
use vso_core::error::{Error, Result};

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The first Kubernetes minor version with native sidecars (init containers with
/// `restartPolicy: Always`, on by default).
const NATIVE_SIDECARS_SINCE: u32 = 29;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

struct Webhook {
    client: kube::Client,
    store: Store<DynamicObject>,
    synced: AtomicBool,
    /// After SIGTERM: still answering, no longer ready.
    draining: AtomicBool,
    settings: Settings,
    registry: Registry,
    reviews: Family<OutcomeLabel, Counter>,
    ready_gauge: Gauge,
}

impl Webhook {
    async fn answer(&self, body: &[u8]) -> Vec<u8> {
        // Read once as any kind to see which; a Pod is then read as a Pod.
        let req: AdmissionRequest<DynamicObject> = match request(body) {
            Ok(r) => r,
            Err(answer) => {
                self.count("invalid");
                return answer;
            }
        };
        if req.kind.kind != "Pod" {
            return self.answer_workload(&req);
        }
        let req: AdmissionRequest<Pod> = match request(body) {
            Ok(r) => r,
            Err(answer) => {
                self.count("invalid");
                return answer;
            }
        };
        let response = AdmissionResponse::from(&req);
        let who = pod_name(&req);
        if !self.synced.load(Ordering::SeqCst) {
            self.count("not_ready");
            return to_json(
                response
                    .deny(format!(
                        "Pod {who}: the volume-syncing-operator has not loaded the \
                         PodFilesystemSync resources yet; retry shortly"
                    ))
                    .into_review(),
            );
        }
        let resources = cache::read_all(self.store.state());
        let namespace = req.namespace.clone().unwrap_or_default();
        // A resource of the namespace that cannot be read may be one that selects this Pod: what
        // would be decided without it is not trusted (only an Allow, which needs no resource).
        let decision = match decide(&req, &resources.readable, &self.settings) {
            Decision::Allow => Decision::Allow,
            other => match resources.refusal(&namespace, &who) {
                Some(message) => Decision::Deny(message),
                None => other,
            },
        };
        let response = match decision {
            Decision::Allow => {
                self.count("allowed");
                response
            }
            Decision::Deny(message) => {
                self.count("denied");
                tracing::info!(pod = %who, "denied: {message}");
                response.deny(message)
            }
            Decision::Patch { patch, secrets } => {
                let namespace = req.namespace.clone().unwrap_or_default();
                let mut failure = None;
                for secret in &secrets {
                    if let Err(e) =
                        super::keys::ensure(&self.client, &namespace, secret, req.dry_run).await
                    {
                        failure = Some(e);
                        break;
                    }
                }
                match failure {
                    Some(e) => {
                        self.count("denied");
                        tracing::warn!(pod = %who, "denied: {e}");
                        response.deny(format!("Pod {who}: {e}"))
                    }
                    None => match response.clone().with_patch(patch) {
                        Ok(r) => {
                            self.count("injected");
                            tracing::info!(pod = %who, dry_run = req.dry_run, "injected");
                            r
                        }
                        Err(e) => {
                            self.count("denied");
                            response.deny(format!("Pod {who}: cannot serialize the patch: {e}"))
                        }
                    },
                }
            }
        };
        to_json(response.into_review())
    }

    /// A workload's CREATE or UPDATE: checked against the rules of its injected Pods. Before
    /// the resources are loaded it is allowed (the check is the user's early warning; the
    /// restore's bounded wait still guards the data).
    fn answer_workload(&self, req: &AdmissionRequest<DynamicObject>) -> Vec<u8> {
        let response = AdmissionResponse::from(req);
        if !self.synced.load(Ordering::SeqCst) {
            self.count("not_ready");
            return to_json(response.into_review());
        }
        let syncs = cache::read_all(self.store.state()).readable;
        let response = match decide_workload(req, &syncs) {
            Decision::Deny(message) => {
                self.count("denied");
                tracing::info!(kind = %req.kind.kind, name = %req.name, "denied: {message}");
                response.deny(message)
            }
            Decision::Allow | Decision::Patch { .. } => {
                self.count("allowed");
                response
            }
        };
        to_json(response.into_review())
    }

    fn count(&self, outcome: &'static str) {
        self.reviews.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

/// The request of an AdmissionReview `body`, or the answer that says why there is none.
fn request<K>(body: &[u8]) -> std::result::Result<AdmissionRequest<K>, Vec<u8>>
where
    K: kube::Resource + serde::de::DeserializeOwned,
{
    let review: AdmissionReview<K> = serde_json::from_slice(body).map_err(|e| {
        to_json(AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")).into_review())
    })?;
    review
        .try_into()
        .map_err(|e| to_json(AdmissionResponse::invalid(format!("no request: {e}")).into_review()))
}

fn to_json<T: serde::Serialize>(review: T) -> Vec<u8> {
    serde_json::to_vec(&review).expect("an AdmissionReview serializes")
}

impl Handler for Webhook {
    fn mutate(
        &self,
        body: hyper::body::Bytes,
    ) -> std::pin::Pin<Box<dyn Future<Output = Vec<u8>> + Send + '_>> {
        Box::pin(async move { self.answer(&body).await })
    }

    fn ready(&self) -> bool {
        self.synced.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    fn metrics(&self) -> String {
        self.ready_gauge.set(i64::from(self.ready()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode");
        out
    }
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(START_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Other(anyhow::anyhow!("{what}: {e}"))),
        Err(_) => Err(Error::Other(anyhow::anyhow!(
            "{what}: no answer within {START_TIMEOUT:?}"
        ))),
    }
}

/// `"1"`, `"29+"` → 29 (providers append `+`).
fn minor_version(minor: &str) -> Option<u32> {
    minor.trim_end_matches('+').parse().ok()
}

/// Runs the webhook until SIGTERM or SIGINT.
pub async fn run(args: &OperatorArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let config = kube::Config::infer().await.map_err(|e| {
        Error::config(format!(
            "no Kubernetes API configuration (in-cluster or KUBECONFIG): {e}"
        ))
    })?;
    let client = kube::Client::try_from(config)
        .map_err(|e| Error::config(format!("cannot build the Kubernetes client: {e}")))?;
    let native_sidecars = match args.native_sidecars {
        NativeSidecars::True => true,
        NativeSidecars::False => false,
        NativeSidecars::Auto => {
            let info = bounded(
                "cannot read the cluster version",
                client.apiserver_version(),
            )
            .await?;
            let minor = minor_version(&info.minor).ok_or_else(|| {
                Error::Other(anyhow::anyhow!(
                    "cannot read the cluster version {:?}.{:?}; pass --native-sidecars",
                    info.major,
                    info.minor
                ))
            })?;
            let native = info.major != "1" || minor >= NATIVE_SIDECARS_SINCE;
            tracing::info!(
                version = %info.git_version,
                native_sidecars = native,
                "cluster version decides the sidecar kind"
            );
            native
        }
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Error::config(format!("cannot listen on --listen {}: {e}", args.listen)))?;
    let source = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Source::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => Source::Secret {
            namespace: args.namespace.clone(),
            name: args.tls_secret.clone(),
            hosts: tls::hosts(&args.service, &args.namespace, &args.cert_host),
            webhook_configuration: args.webhook_configuration.clone(),
        },
    };
    let key = tls::load(&client, &source)
        .await
        .map_err(|e| Error::Other(anyhow::anyhow!("TLS: {e}")))?;
    let slot = CertSlot::new(key);

    let resource = ApiResource::erase::<PodFilesystemSync>(&());
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let store = writer.as_reader();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let events = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                // Said when it changes; admissions it refuses say it again.
                Ok(object) => {
                    if let Err(e) = cache::read_one(&object) {
                        tracing::warn!(
                            namespace = object.metadata.namespace.as_deref().unwrap_or(""),
                            name = object.metadata.name.as_deref().unwrap_or(""),
                            "PodFilesystemSync cannot be read; labelled Pods of its namespace are \
                             refused until it is fixed: {e}"
                        );
                    }
                }
                Err(e) => tracing::warn!("PodFilesystemSync watch: {e}"),
            }
        }
    });

    let mut registry = Registry::default();
    let reviews = Family::<OutcomeLabel, Counter>::default();
    registry.register(
        "vso_operator_admission_reviews",
        "Admission reviews answered, by outcome",
        reviews.clone(),
    );
    let ready_gauge = Gauge::default();
    registry.register(
        "vso_operator_ready",
        "1 when the PodFilesystemSync cache is synced",
        ready_gauge.clone(),
    );
    if args.status_interval.is_zero() {
        tracing::info!("--status-interval 0: no status is written");
    } else {
        let metrics = StatusMetrics::default();
        metrics.register(&mut registry);
        let identity = args.identity.clone().unwrap_or_else(host_name);
        status::spawn(
            client.clone(),
            store.clone(),
            &args.namespace,
            &identity,
            args.status_interval,
            metrics,
        );
    }
    let webhook = Arc::new(Webhook {
        client: client.clone(),
        store: store.clone(),
        synced: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        settings: Settings {
            native_sidecars,
            default_image: args.image.clone(),
        },
        registry,
        reviews,
        ready_gauge,
    });
    tracing::info!(address = %listener.local_addr()?, "serving /mutate, /healthz, /readyz, /metrics (HTTPS)");
    tokio::spawn(serve(listener, Arc::clone(&slot), Arc::clone(&webhook)));
    tokio::spawn(tls::maintain(client, source, slot));
    let ready = Arc::clone(&webhook);
    tokio::spawn(async move {
        // Not one wait: the status writer waits on the same store (see status::ready).
        status::ready(&store).await;
        ready.synced.store(true, Ordering::SeqCst);
        tracing::info!(
            resources = store.state().len(),
            "PodFilesystemSync cache synced; ready"
        );
    });
    let signal = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    if args.shutdown_delay.is_zero() {
        tracing::info!("{signal}: stopping");
        return Ok(());
    }
    // The API server may still send admissions here until it sees the endpoint go: answer
    // them (with failurePolicy Fail a dropped one refuses its Pod), unready, for a while.
    webhook.draining.store(true, Ordering::SeqCst);
    tracing::info!(
        "{signal}: still answering admissions for {} (--shutdown-delay), then stopping",
        vso_core::duration::format_duration(args.shutdown_delay)
    );
    tokio::select! {
        _ = tokio::time::sleep(args.shutdown_delay) => tracing::info!("stopping"),
        _ = sigterm.recv() => tracing::info!("SIGTERM again: stopping now"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping now"),
    }
    Ok(())
}

/// This replica's default identity in the election: the host name, which in a Pod is its name.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("operator-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_versions_with_a_plus() {
        assert_eq!(minor_version("29+"), Some(29));
        assert_eq!(minor_version("20"), Some(20));
        assert_eq!(minor_version("x"), None);
    }
}
