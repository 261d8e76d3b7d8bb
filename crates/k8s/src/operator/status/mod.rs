//! The status of every `PodFilesystemSync`, written by the operator: one writer (the leader of
//! its replicas, [`leader`]), fed by the injected Pods' sidecars ([`scrape`]) and by what their
//! containers leave when they end (the termination messages: [`vso_core::daemon::summary`]);
//! the status itself is computed by [`compute`].
//!
//! Decisions:
//! - Every replica watches the injected Pods (by the label the injection sets, so the API server
//!   filters); only the leader scrapes and writes. App Pods get no credentials and no API
//!   access; the sidecar has no Kubernetes client: it serves /metrics and writes its summary,
//!   the kubelet carries that into the Pod's status.
//! - Each Pod event is read for termination messages when it arrives, the DELETED one
//!   included, so a Pod that stops between two rounds still reports its final sync. What was
//!   read is kept for [`KEEP_LEFT`] after the Pod is gone (the status has it by then).
//! - One round every `--status-interval`: per resource, the running Pods' sidecars are scraped
//!   concurrently (each bounded by [`scrape::TIMEOUT`]), the status is computed and written
//!   only when it changed (a JSON merge patch of the status subresource that also removes what
//!   is no longer there), then the events are published.

pub mod compute;
pub mod leader;
pub mod scrape;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use vso_core::daemon::summary::{Summary, parse_time};

use super::cache;
use crate::inject::{INJECTED_LABEL, InjectedNames, injected_names, injected_resources};
use crate::resource::PodFilesystemSync;
use crate::status::PodFilesystemSyncStatus;
use compute::{Left, LivePod, Note};

/// The Lease of the election, in the operator's namespace.
pub const LEASE_NAME: &str = "volume-syncing-operator-status";
/// What a gone Pod left is kept this long.
const KEEP_LEFT: Duration = Duration::from_secs(15 * 60);
/// The bound of one status write or event.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The operator's metrics of this part.
#[derive(Clone, Default)]
pub struct StatusMetrics {
    writes: Family<ResultLabel, Counter>,
    scrape_failures: Counter,
    leader: Gauge,
}

impl StatusMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "vso_operator_status_writes",
            "PodFilesystemSync status writes, by result (ok, error)",
            self.writes.clone(),
        );
        for result in ["ok", "error"] {
            drop(self.writes.get_or_create(&ResultLabel { result }));
        }
        registry.register(
            "vso_operator_scrape_failures",
            "Sidecar /metrics that could not be read",
            self.scrape_failures.clone(),
        );
        registry.register(
            "vso_operator_leader",
            "1 while this replica writes the status (holds the Lease)",
            self.leader.clone(),
        );
    }
}

/// What a Pod's containers left, by (namespace, resource, Pod).
type LeftBy = HashMap<(String, String, String), (Left, Option<Instant>)>;

/// Starts the Pod watch, the election and the rounds.
pub fn spawn(
    client: kube::Client,
    syncs: Store<DynamicObject>,
    namespace: &str,
    identity: &str,
    interval: Duration,
    metrics: StatusMetrics,
) {
    let left: Arc<Mutex<LeftBy>> = Arc::default();
    let (pods, writer) = reflector::store();
    let api: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{INJECTED_LABEL}=true"));
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    let harvest = Arc::clone(&left);
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    read_left(&harvest, &pod, false)
                }
                Ok(watcher::Event::Delete(pod)) => read_left(&harvest, &pod, true),
                Ok(_) => {}
                Err(e) => tracing::warn!("Pod watch (status): {e}"),
            }
        }
    });
    let election = leader::Election::new(client.clone(), namespace, LEASE_NAME, identity);
    tokio::spawn(Arc::clone(&election).run());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "volume-syncing-operator".into(),
            instance: Some(identity.to_string()),
        },
    );
    let rounds = Rounds {
        client,
        syncs,
        pods,
        left,
        recorder,
        metrics,
        written: Mutex::default(),
    };
    tokio::spawn(async move {
        ready(&rounds.syncs).await;
        ready(&rounds.pods).await;
        tracing::info!(
            pods = rounds.pods.state().len(),
            "injected Pods watched; the leader writes the status every {}",
            vso_core::duration::format_duration(interval)
        );
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let leading = election.leading();
            rounds.metrics.leader.set(i64::from(leading));
            if leading {
                rounds.round().await;
            } else {
                // Another replica may write meanwhile: start from the cluster's status next time.
                rounds.written().clear();
            }
        }
    });
}

/// Waits until `store` has its first full list. The store's readiness wakes only the task that
/// polled it last (kube-runtime's one-shot channel), and the webhook waits on the same
/// PodFilesystemSync store: so poll again every second rather than wait once, forever.
pub async fn ready<K>(store: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    while tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready())
        .await
        .is_err()
    {}
}

/// The summaries in a container's status: its current and its last termination.
fn summaries(status: &ContainerStatus) -> impl Iterator<Item = Summary> + '_ {
    [status.state.as_ref(), status.last_state.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|s| s.terminated.as_ref()?.message.as_deref())
        .filter_map(Summary::parse)
}

/// The newest summary a container named `name` left in `statuses`.
fn newest_left(statuses: &[&ContainerStatus], name: &str) -> Option<Summary> {
    statuses
        .iter()
        .filter(|s| s.name == name)
        .flat_map(|s| summaries(s))
        .max_by_key(|s| parse_time(&s.finished))
}

/// Reads what `pod`'s injected containers left into `left`.
fn read_left(left: &Mutex<LeftBy>, pod: &Pod, gone: bool) {
    let annotations = pod.annotations();
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let statuses: Vec<&ContainerStatus> = pod
        .status
        .iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .collect();
    let mut left = left.lock().unwrap_or_else(|p| p.into_inner());
    left.retain(|_, (_, gone_at)| gone_at.is_none_or(|at| at.elapsed() < KEEP_LEFT));
    for (resource, names) in injected_resources(annotations) {
        let entry = left
            .entry((namespace.clone(), resource, name.clone()))
            .or_insert_with(|| {
                (
                    Left {
                        pod: name.clone(),
                        ..Left::default()
                    },
                    None,
                )
            });
        // A summary stays once seen: a restarted container's older one must not replace it.
        keep_newest(&mut entry.0.sidecar, newest_left(&statuses, &names.sidecar));
        keep_newest(&mut entry.0.restore, newest_left(&statuses, &names.restore));
        if gone {
            entry.1 = Some(Instant::now());
        }
    }
}

/// Replaces `kept` by `seen` when `seen` ended later.
fn keep_newest(kept: &mut Option<Summary>, seen: Option<Summary>) {
    let finished = |s: &Summary| parse_time(&s.finished);
    if let Some(seen) = seen
        && kept.as_ref().is_none_or(|k| finished(&seen) > finished(k))
    {
        *kept = Some(seen);
    }
}

/// The address of the sidecar's /metrics in a running Pod, when it has one and it runs.
fn metrics_address(pod: &Pod, names: &InjectedNames) -> Option<SocketAddr> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    let sidecar = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == names.sidecar)?;
    let port = sidecar
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(names.metrics_port.as_str()))?
        .container_port;
    let running = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .any(|s| s.name == names.sidecar && s.state.as_ref().is_some_and(|s| s.running.is_some()));
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let port = u16::try_from(port).ok().filter(|p| *p > 0)?;
    running.then_some(SocketAddr::new(ip, port))
}

struct Rounds {
    client: kube::Client,
    syncs: Store<DynamicObject>,
    pods: Store<Pod>,
    left: Arc<Mutex<LeftBy>>,
    recorder: Recorder,
    metrics: StatusMetrics,
    /// What this replica wrote during its current leadership, by the resource's uid: the
    /// cache may not show a write yet at the next round, and computing from the older status
    /// would publish the same event twice.
    written: Mutex<HashMap<String, PodFilesystemSyncStatus>>,
}

impl Rounds {
    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<String, PodFilesystemSyncStatus>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn round(&self) {
        // Read as the webhook reads them; one that cannot be read gets no status (the webhook
        // and the operator's log say why).
        let syncs = cache::read_all(self.syncs.state()).readable;
        let uids: std::collections::HashSet<&str> = syncs
            .iter()
            .filter_map(|s| s.metadata.uid.as_deref())
            .collect();
        self.written().retain(|uid, _| uids.contains(uid.as_str()));
        let running: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        let updates = syncs.iter().map(|sync| self.update(sync, &running));
        futures::future::join_all(updates).await;
    }

    /// Computes and writes one resource's status; `running` are the injected Pods that run.
    async fn update(&self, sync: &PodFilesystemSync, running: &[Arc<Pod>]) {
        let namespace = sync.namespace().unwrap_or_default();
        let name = sync.name_any();
        let scrapes = running
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
            .filter_map(|pod| {
                let names = injected_names(pod.annotations(), &name)?;
                let address = metrics_address(pod, &names);
                Some(async move {
                    let scrape = match address {
                        Some(a) => Some(scrape::scrape(a).await),
                        None => None,
                    };
                    LivePod {
                        name: pod.name_any(),
                        scrape,
                    }
                })
            });
        let live = futures::future::join_all(scrapes).await;
        for pod in &live {
            if let Some(Err(e)) = &pod.scrape {
                self.metrics.scrape_failures.inc();
                tracing::debug!(pod = %pod.name, "cannot read the sidecar: {e}");
            }
        }
        let left: Vec<Left> = self
            .left
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((ns, r, _), _)| *ns == namespace && *r == name)
            .map(|(_, (l, _))| l.clone())
            .collect();
        let uid = sync.metadata.uid.clone().unwrap_or_default();
        let previous = self
            .written()
            .get(&uid)
            .cloned()
            .or_else(|| sync.status.clone())
            .unwrap_or_default();
        let (status, notes) = compute::compute(
            &previous,
            sync.metadata.generation,
            &live,
            &left,
            chrono::Utc::now(),
        );
        if status != previous {
            let result = self.write(&namespace, &name, &previous, &status).await;
            let label = if result.is_ok() { "ok" } else { "error" };
            self.metrics
                .writes
                .get_or_create(&ResultLabel { result: label })
                .inc();
            if let Err(e) = result {
                // Not written: the events wait for the next round, which computes them again.
                tracing::warn!(resource = %format!("{namespace}/{name}"), "cannot write the status: {e}");
                return;
            }
            self.written().insert(uid, status);
        }
        for note in notes {
            self.publish(sync, &note).await;
        }
    }

    async fn write(
        &self,
        namespace: &str,
        name: &str,
        previous: &PodFilesystemSyncStatus,
        status: &PodFilesystemSyncStatus,
    ) -> Result<(), String> {
        let api: Api<PodFilesystemSync> = Api::namespaced(self.client.clone(), namespace);
        let mut new = serde_json::to_value(status).map_err(|e| e.to_string())?;
        let old = serde_json::to_value(previous).map_err(|e| e.to_string())?;
        null_what_is_gone(&old, &mut new);
        let patch = serde_json::json!({ "status": new });
        tokio::time::timeout(
            WRITE_TIMEOUT,
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .map_err(|_| "the API server did not answer within 10s".to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    async fn publish(&self, sync: &PodFilesystemSync, note: &Note) {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.message.clone()),
            action: "Sync".into(),
            secondary: None,
        };
        let reference = sync.object_ref(&());
        match tokio::time::timeout(WRITE_TIMEOUT, self.recorder.publish(&event, &reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot publish the event {}: {e}", note.reason),
            Err(_) => tracing::warn!(
                "cannot publish the event {}: no answer within 10s",
                note.reason
            ),
        }
    }
}

/// In a JSON merge patch a missing key keeps its old value: `null` removes it. Sets `null` in
/// `new` for every key of `old` that `new` lacks, in nested objects too.
fn null_what_is_gone(old: &serde_json::Value, new: &mut serde_json::Value) {
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object_mut()) {
        for (key, value) in old {
            match new.get_mut(key) {
                None => {
                    new.insert(key.clone(), serde_json::Value::Null);
                }
                Some(n) => null_what_is_gone(value, n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_removes_what_is_gone() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let mut new = json!({"b": {"c": 2}, "e": []});
        null_what_is_gone(&old, &mut new);
        assert_eq!(new, json!({"a": null, "b": {"c": 2, "d": null}, "e": []}));
    }

    #[test]
    fn what_a_pod_left_is_read_from_its_termination_messages() {
        let ok = Summary::of(
            "upload",
            &Ok(vso_core::sync::outcome::Outcome::Skipped("x".into())),
            Duration::ZERO,
            None,
        );
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "shop", "annotations": {
                "riotkit.org/volume-syncing-injected":
                    "{\"resources\":[\"a\",\"b\"],\"initContainers\":[],\"containers\":[],\"volumes\":[]}"
            }},
            "status": {
                "initContainerStatuses": [{"name": "init-volume-restore-2", "image": "i", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "message": ok.to_json()}}}],
                "containerStatuses": [{"name": "volume-syncing-sidecar", "image": "i", "imageID": "",
                    "ready": false, "restartCount": 1,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "not json"}}}]
            }
        }))
        .unwrap();
        let left = Mutex::new(LeftBy::new());
        read_left(&left, &pod, true);
        let left = left.into_inner().unwrap();
        let b = &left[&("shop".into(), "b".into(), "web-0".into())];
        assert_eq!(b.0.restore.as_ref(), Some(&ok));
        assert!(b.1.is_some());
        let a = &left[&("shop".into(), "a".into(), "web-0".into())];
        assert!(a.0.sidecar.is_none() && a.0.restore.is_none());
    }
}
