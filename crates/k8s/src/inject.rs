//! The injection core: a Pod template plus the `PodFilesystemSync` resources of its namespace
//! plus [`Settings`] → the Pod template with the restore init container and the sync sidecar.
//!
//! It is a pure function over typed k8s-openapi objects (no I/O, no clock, no API server), so
//! `inject` (offline) and the admission webhook are thin shells around the same code and the
//! same golden files test both. Decisions:
//! - The containers mount the app's volume exactly as the app container with the longest
//!   mountPath above `localPath` does (same mountPath and subPath), so `localPath` means the
//!   same directory in every container. No such volume is an error, never a silent skip.
//! - Idempotent: an injected template carries [`INJECTED_ANNOTATION`] (what was added, as
//!   Istio's `sidecar.istio.io/status`) and is returned unchanged.
//! - Several resources on one Pod: sorted by name, the first gets the plain names
//!   (`init-volume-restore`, `volume-syncing-sidecar`), the next ones a `-2`, `-3` suffix; two
//!   for the same `localPath` are refused (they would fight over one directory).
//! - Only the injected containers get a security context (uid/gid from `permissions` or the
//!   Pod's annotations); the Pod-level one (fsGroup) belongs to the app and is left alone.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretEnvSource,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde::Serialize;

use super::resource::{PASSPHRASE_KEY, Placement, PodFilesystemSync, SyncMethod};
use super::template::{POD_NAME_REF, POD_NAMESPACE_REF, PodContext, render};
use vso_core::daemon::schedule::Schedule;
use vso_core::duration::{format_duration, parse_duration};
use vso_core::sync::valves::safety::{FORCE_RESTORE, FORCE_UPLOAD_EMPTY};

/// Records on an injected Pod what was injected; its presence makes injection a no-op.
pub const INJECTED_ANNOTATION: &str = "riotkit.org/volume-syncing-injected";
/// Pod annotation: the uid of the injected containers (wins over `permissions.uid`).
pub const USER_ID_ANNOTATION: &str = "riotkit.org/volume-user-id";
/// Pod annotation: the gid of the injected containers (wins over `permissions.gid`).
pub const GROUP_ID_ANNOTATION: &str = "riotkit.org/volume-group-id";
/// The restore init container (first resource; later ones get `-2`, `-3`, …).
pub const RESTORE_CONTAINER: &str = "init-volume-restore";
/// The sync sidecar (first resource; later ones get `-2`, `-3`, …).
pub const SIDECAR_CONTAINER: &str = "volume-syncing-sidecar";
/// The emptyDir shared by the injected containers: their temp dir (private rclone.conf, PID
/// files) on a read-only root file system.
pub const TMP_VOLUME: &str = "volume-syncing-tmp";
const TMP_PATH: &str = "/tmp";
/// The binary inside the image (the preStop hook runs it).
const BINARY_PATH: &str = "/usr/local/bin/volume-syncing-operator";
/// Kubernetes' default terminationGracePeriodSeconds.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Headroom beyond the final sync's bound: the app's own shutdown (native sidecars stop after
/// the app) and the `interrupt` hook's wait.
const GRACE_MARGIN_SECONDS: u64 = 60;

/// The caller's choices, not the resource's.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Native sidecar (an init container with `restartPolicy: Always`, Kubernetes ≥ 1.29) or a
    /// classic one (an ordinary container).
    pub native_sidecars: bool,
    /// The image when a resource names none.
    pub default_image: String,
}

/// Why a template cannot be injected; `field` names where (e.g.
/// `PodFilesystemSync backup: spec.remotePath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for InjectError {}

/// The result of [`inject`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// No resource matches, or the template was injected before: use it as it is.
    Unchanged,
    /// The injected template.
    Injected(Box<PodTemplateSpec>),
}

/// The value of [`INJECTED_ANNOTATION`].
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    resources: Vec<String>,
    init_containers: Vec<String>,
    containers: Vec<String>,
    volumes: Vec<String>,
}

fn field_err(sync: &PodFilesystemSync, field: &str, message: impl Into<String>) -> InjectError {
    InjectError {
        field: format!("PodFilesystemSync {}: {field}", sync.name_any()),
        message: message.into(),
    }
}

/// How [`InjectError::field`] starts when it names a field of the Pod template (`metadata.…`,
/// `spec.…` relative to the template).
pub const POD_FIELD_PREFIX: &str = "pod template: ";

fn pod_err(field: &str, message: impl Into<String>) -> InjectError {
    InjectError {
        field: format!("{POD_FIELD_PREFIX}{field}"),
        message: message.into(),
    }
}

/// Whether `sync` applies to a Pod with `labels` in `namespace` (None: unknown, as for a
/// manifest without a namespace; then any resource's namespace matches).
pub fn matches(
    sync: &PodFilesystemSync,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, InjectError> {
    if let (Some(pod_ns), Some(sync_ns)) = (namespace, sync.metadata.namespace.as_deref())
        && pod_ns != sync_ns
    {
        return Ok(false);
    }
    selector_matches(&sync.spec.pod_selector, labels)
        .map_err(|(field, msg)| field_err(sync, &format!("spec.podSelector.{field}"), msg))
}

/// Kubernetes' LabelSelector semantics: all matchLabels and all matchExpressions must hold; an
/// empty selector matches everything.
fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, (String, String)> {
    let mut ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_deref().unwrap_or_default();
        let value = labels.get(&expr.key);
        let holds = match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err((
                    format!("matchExpressions[{i}].values"),
                    format!("operator {} needs values", expr.operator),
                ));
            }
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => !value.is_some_and(|v| values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err((
                    format!("matchExpressions[{i}].operator"),
                    format!("unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"),
                ));
            }
        };
        ok &= holds;
    }
    Ok(ok)
}

/// Injects every resource of `syncs` whose selector matches `template` (a Pod's metadata and
/// spec; `namespace` is the Pod's or its workload's, when known).
pub fn inject(
    template: &PodTemplateSpec,
    namespace: Option<&str>,
    syncs: &[PodFilesystemSync],
    settings: &Settings,
) -> Result<Outcome, InjectError> {
    let meta = template.metadata.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let labels = meta.labels.clone().unwrap_or_default();
    if annotations.contains_key(INJECTED_ANNOTATION) {
        return Ok(Outcome::Unchanged);
    }
    let namespace = meta.namespace.as_deref().or(namespace);
    let mut matching = Vec::new();
    for sync in syncs {
        if matches(sync, namespace, &labels)? {
            matching.push(sync);
        }
    }
    if matching.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    matching.sort_by_key(|s| s.name_any());
    for (i, a) in matching.iter().enumerate() {
        for b in &matching[i + 1..] {
            let (pa, pb) = (normalize(&a.spec.local_path), normalize(&b.spec.local_path));
            if pa == pb {
                return Err(InjectError {
                    field: "spec.localPath".into(),
                    message: format!(
                        "PodFilesystemSync {} and {} both sync {pa} of this Pod; one directory \
                         can have one sync only: delete one or change its selector",
                        a.name_any(),
                        b.name_any(),
                    ),
                });
            }
            // Nested directories: the outer sync would upload (and its restore overwrite) the
            // inner one's data as well.
            if is_within(pa, pb) || is_within(pb, pa) {
                return Err(InjectError {
                    field: "spec.localPath".into(),
                    message: format!(
                        "PodFilesystemSync {} ({pa}) and {} ({pb}) sync nested directories of \
                         this Pod; the outer one would also sync the inner one's data: make \
                         them disjoint",
                        a.name_any(),
                        b.name_any(),
                    ),
                });
            }
        }
    }

    let mut spec = template
        .spec
        .clone()
        .ok_or_else(|| pod_err("spec", "the Pod template has no spec"))?;
    // A classic sidecar never exits, so a run-to-completion Pod (a Job's) would never complete.
    let runs_to_completion = matches!(
        spec.restart_policy.as_deref(),
        Some("Never") | Some("OnFailure")
    );
    if runs_to_completion
        && !settings.native_sidecars
        && matching
            .iter()
            .any(|s| s.spec.sync_options.allowed_directories.to_remote)
    {
        return Err(pod_err(
            "spec.restartPolicy",
            "the Pod runs to completion (restartPolicy Never/OnFailure) and a classic sidecar \
             never exits, so it would never complete: use native sidecars (Kubernetes >= 1.29) \
             or set syncOptions.allowedDirectories.toRemote to false",
        ));
    }
    let ids = Ids::from_annotations(&annotations)?;
    let ctx = PodContext {
        labels,
        annotations: annotations.clone(),
    };
    let app_containers: Vec<Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .cloned()
        .collect();
    if spec.volumes.iter().flatten().any(|v| v.name == TMP_VOLUME) {
        return Err(pod_err(
            "spec.volumes",
            format!("a volume is already named {TMP_VOLUME}, which the injector adds"),
        ));
    }

    let mut record = Record {
        volumes: vec![TMP_VOLUME.to_string()],
        ..Record::default()
    };
    let mut grace = None::<u64>;
    let mut first_metrics_port = None;
    let mut used_ports: Vec<i32> = app_containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten().map(|p| p.container_port))
        .collect();
    for (i, sync) in matching.iter().enumerate() {
        let suffix = if i == 0 {
            String::new()
        } else {
            format!("-{}", i + 1)
        };
        let added = inject_one(
            &mut spec,
            &app_containers,
            sync,
            &suffix,
            &ctx,
            &ids,
            settings,
            &mut used_ports,
        )?;
        record.resources.push(sync.name_any());
        record.init_containers.extend(added.init_containers);
        record.containers.extend(added.containers);
        if let Some(shutdown) = added.shutdown {
            let needed = shutdown.as_secs() + GRACE_MARGIN_SECONDS;
            grace = Some(grace.map_or(needed, |g| g.max(needed)));
        }
        if first_metrics_port.is_none() {
            first_metrics_port = added.metrics_port;
        }
    }

    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: TMP_VOLUME.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    });
    if let Some(needed) = grace {
        let current = spec
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        spec.termination_grace_period_seconds = Some(current.max(needed as i64));
    }

    let mut out_annotations = annotations;
    if let Some(port) = first_metrics_port
        && !out_annotations
            .keys()
            .any(|k| k.starts_with("prometheus.io/"))
    {
        out_annotations.insert("prometheus.io/scrape".into(), "true".into());
        out_annotations.insert("prometheus.io/port".into(), port.to_string());
        out_annotations.insert("prometheus.io/path".into(), "/metrics".into());
    }
    out_annotations.insert(
        INJECTED_ANNOTATION.into(),
        serde_json::to_string(&record).expect("the record serializes"),
    );
    let mut meta = meta;
    meta.annotations = Some(out_annotations);
    Ok(Outcome::Injected(Box::new(PodTemplateSpec {
        metadata: Some(meta),
        spec: Some(spec),
    })))
}

/// uid/gid overrides from the Pod's annotations.
struct Ids {
    uid: Option<i64>,
    gid: Option<i64>,
}

impl Ids {
    fn from_annotations(annotations: &BTreeMap<String, String>) -> Result<Ids, InjectError> {
        let parse = |key: &str| -> Result<Option<i64>, InjectError> {
            annotations
                .get(key)
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| {
                            pod_err(
                                &format!("metadata.annotations[{key}]"),
                                format!("{v:?} is not a numeric id"),
                            )
                        })
                })
                .transpose()
        };
        Ok(Ids {
            uid: parse(USER_ID_ANNOTATION)?,
            gid: parse(GROUP_ID_ANNOTATION)?,
        })
    }
}

/// What one resource added.
struct Added {
    init_containers: Vec<String>,
    containers: Vec<String>,
    /// The sidecar's final-sync bound, when there is a sidecar.
    shutdown: Option<Duration>,
    metrics_port: Option<u16>,
}

/// `inner` lies strictly below `outer` (both normalized).
fn is_within(inner: &str, outer: &str) -> bool {
    outer == "/"
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn normalize(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

/// The volume mount (of any app container) with the longest mountPath at or above `path`.
fn find_mount(containers: &[Container], path: &str) -> Result<VolumeMount, String> {
    let mut best: Option<(&Container, &VolumeMount)> = None;
    for c in containers {
        for m in c.volume_mounts.iter().flatten() {
            let mount = normalize(&m.mount_path);
            let covers = path == mount
                || mount == "/"
                || path
                    .strip_prefix(mount)
                    .is_some_and(|rest| rest.starts_with('/'));
            if !covers {
                continue;
            }
            match best {
                Some((_, b)) if normalize(&b.mount_path).len() > mount.len() => {}
                Some((bc, b))
                    if normalize(&b.mount_path).len() == mount.len()
                        && (b.name != m.name
                            || b.sub_path != m.sub_path
                            || b.sub_path_expr != m.sub_path_expr) =>
                {
                    return Err(format!(
                        "{mount} is a different volume in container {} ({}) and {} ({}); \
                         the directory is ambiguous",
                        bc.name, b.name, c.name, m.name
                    ));
                }
                Some((_, b)) if normalize(&b.mount_path).len() == mount.len() => {}
                _ => best = Some((c, m)),
            }
        }
    }
    best.map(|(_, m)| VolumeMount {
        name: m.name.clone(),
        mount_path: m.mount_path.clone(),
        sub_path: m.sub_path.clone(),
        sub_path_expr: m.sub_path_expr.clone(),
        ..Default::default()
    })
    .ok_or_else(|| {
        format!(
            "no container of the Pod mounts a volume at or above {path}: the directory would not \
             outlive the container, so there is nothing to sync"
        )
    })
}

fn check_local_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("{path:?} has a '.' or '..' segment"));
    }
    if normalize(path) == "/" {
        return Err("the root directory cannot be synced".into());
    }
    Ok(())
}

/// Formats a bound as the CLI reads it (`2m`, `90s`).
fn duration_arg(d: Duration) -> String {
    format_duration(d)
}

#[allow(clippy::too_many_arguments)]
fn inject_one(
    spec: &mut PodSpec,
    app_containers: &[Container],
    sync: &PodFilesystemSync,
    suffix: &str,
    ctx: &PodContext,
    ids: &Ids,
    settings: &Settings,
    used_ports: &mut Vec<i32>,
) -> Result<Added, InjectError> {
    let s = &sync.spec;
    let opts = &s.sync_options;
    let err = |field: &str, msg: String| field_err(sync, field, msg);

    check_local_path(&s.local_path).map_err(|m| err("spec.localPath", m))?;
    let local = normalize(&s.local_path).to_string();
    let data_mount = find_mount(app_containers, &local).map_err(|m| err("spec.localPath", m))?;
    let tmp = normalize(&data_mount.mount_path);
    if tmp == TMP_PATH || tmp.starts_with("/tmp/") {
        return Err(err(
            "spec.localPath",
            format!(
                "the volume is mounted at {}, where the injected containers keep their temp dir \
                 ({TMP_PATH}); mount it elsewhere",
                data_mount.mount_path
            ),
        ));
    }
    let remote = render(&s.remote_path, ctx).map_err(|m| err("spec.remotePath", m))?;
    if let Some(why) = vso_core::remote::path::problem(&remote) {
        return Err(err(
            "spec.remotePath",
            format!("the remote path {remote:?} {why}"),
        ));
    }

    let restore = opts.allowed_directories.from_remote && opts.restore_remote_on_first_run;
    let upload = opts.allowed_directories.to_remote;
    if !restore && !upload {
        return Err(err(
            "spec.syncOptions.allowedDirectories",
            "neither the restore (fromRemote and restoreRemoteOnFirstRun) nor the sidecar \
             (toRemote) is enabled: nothing to inject"
                .into(),
        ));
    }
    let shutdown =
        parse_duration(&s.shutdown_timeout).map_err(|m| err("spec.shutdownTimeout", m))?;
    let trigger: Vec<String> = match opts.method {
        SyncMethod::Scheduler => {
            Schedule::parse(&opts.schedule).map_err(|m| err("spec.syncOptions.schedule", m))?;
            vec!["--schedule".into(), opts.schedule.trim().to_string()]
        }
        SyncMethod::Fsnotify => {
            let mut t = vec!["--watch".to_string()];
            match opts.max_one_sync_per_minutes {
                Some(0) => {
                    return Err(err(
                        "spec.syncOptions.maxOneSyncPerMinutes",
                        "must be at least 1 (leave it out for no limit)".into(),
                    ));
                }
                Some(n) => t.extend(["--min-interval".to_string(), format!("{n}m")]),
                None => {}
            }
            t
        }
    };

    // Environment: the downward-API variables the templates' references need, the resource's
    // variables, the passphrase.
    let mut user_env = Vec::new();
    for (key, value) in &s.env {
        if key == "VSO_POD_NAME" || key == "VSO_POD_NAMESPACE" {
            return Err(err(
                &format!("spec.env.{key}"),
                "reserved: the injector defines it for {{ pod.name }} / {{ pod.namespace }}".into(),
            ));
        }
        let rendered = render(value, ctx).map_err(|m| err(&format!("spec.env.{key}"), m))?;
        user_env.push(EnvVar {
            name: key.clone(),
            value: Some(rendered),
            ..Default::default()
        });
    }
    let mut env = Vec::new();
    let uses = |reference: &str| {
        remote.contains(reference)
            || user_env
                .iter()
                .any(|e| e.value.as_deref().unwrap_or("").contains(reference))
    };
    for (name, reference, field) in [
        ("VSO_POD_NAME", POD_NAME_REF, "metadata.name"),
        ("VSO_POD_NAMESPACE", POD_NAMESPACE_REF, "metadata.namespace"),
    ] {
        if uses(reference) {
            env.push(EnvVar {
                name: name.into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: field.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    env.extend(user_env);
    let encryption = &s.automatic_encryption;
    if encryption.enabled {
        let secret = encryption
            .secret_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| {
                err(
                    "spec.automaticEncryption.secretName",
                    "encryption is enabled but no Secret holding the passphrase is named".into(),
                )
            })?;
        if s.env.contains_key(PASSPHRASE_KEY) {
            return Err(err(
                &format!("spec.env.{PASSPHRASE_KEY}"),
                "set by automaticEncryption; remove it from env".into(),
            ));
        }
        env.push(EnvVar {
            name: PASSPHRASE_KEY.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.to_string(),
                    key: PASSPHRASE_KEY.into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let env_from: Vec<EnvFromSource> = s
        .env_from_secret
        .iter()
        .map(|r| EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: r.reference.clone(),
                optional: None,
            }),
            ..Default::default()
        })
        .collect();

    let uid = ids.uid.or(opts.permissions.uid);
    let gid = ids.gid.or(opts.permissions.gid);
    let security = SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: uid,
        run_as_group: gid,
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    };
    let resources = s.resources.clone().unwrap_or_else(default_resources);
    let image = s
        .image
        .clone()
        .unwrap_or_else(|| settings.default_image.clone());
    let mounts = vec![
        data_mount,
        VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: TMP_PATH.into(),
            ..Default::default()
        },
    ];
    let base = Container {
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        env: (!env.is_empty()).then_some(env),
        env_from: (!env_from.is_empty()).then_some(env_from),
        security_context: Some(security),
        resources: Some(resources),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    let existing = |name: &str| {
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .any(|c| c.name == name)
    };
    let restore_name = format!("{RESTORE_CONTAINER}{suffix}");
    let sidecar_name = format!("{SIDECAR_CONTAINER}{suffix}");
    for name in [&restore_name, &sidecar_name] {
        if existing(name) {
            return Err(pod_err(
                "spec",
                format!("a container is already named {name}, which the injector adds"),
            ));
        }
    }

    let mut to_init = Vec::new();
    let mut added = Added {
        init_containers: Vec::new(),
        containers: Vec::new(),
        shutdown: None,
        metrics_port: None,
    };
    if restore {
        let mut args: Vec<String> = vec![
            "remote-to-local-sync".into(),
            "--if-local-empty".into(),
            "-s".into(),
            remote.clone(),
            "-d".into(),
            local.clone(),
        ];
        if !opts.clean_up.local {
            args.push("-x".into());
        }
        if opts.clean_up.force_local {
            args.push(FORCE_RESTORE.into());
        }
        to_init.push(Container {
            name: restore_name.clone(),
            args: Some(args),
            ..base.clone()
        });
        added.init_containers.push(restore_name);
    }
    if upload {
        let pid_path = format!("{TMP_PATH}/volume-syncing-operator{suffix}.pid");
        let mut args: Vec<String> = vec![
            "sync-to-remote".into(),
            "-s".into(),
            local.clone(),
            "-d".into(),
            remote.clone(),
        ];
        args.extend(trigger);
        args.extend([
            "--shutdown-timeout".into(),
            duration_arg(shutdown),
            "--pid-path".into(),
            pid_path.clone(),
        ]);
        let mut sidecar = Container {
            name: sidecar_name.clone(),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec![
                            BINARY_PATH.into(),
                            "interrupt".into(),
                            "--pid-path".into(),
                            pid_path,
                            "--timeout".into(),
                            duration_arg(shutdown + Duration::from_secs(GRACE_MARGIN_SECONDS)),
                        ]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_policy: settings.native_sidecars.then(|| "Always".to_string()),
            ..base.clone()
        };
        if s.metrics_port != 0 {
            let port = i32::from(s.metrics_port);
            if used_ports.contains(&port) {
                return Err(err(
                    "spec.metricsPort",
                    format!(
                        "port {port} is already used by a container of the Pod; choose another (0: no metrics)"
                    ),
                ));
            }
            used_ports.push(port);
            let port_name = format!("metrics{suffix}");
            args.extend(["--metrics-address".into(), format!("0.0.0.0:{port}")]);
            sidecar.ports = Some(vec![ContainerPort {
                name: Some(port_name.clone()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]);
            // Liveness on /livez, which fails only after several failed syncs in a row (a
            // restart re-reads rotated credentials); not /healthz, whose age and lease rules
            // would restart a long first upload from scratch, or a sidecar waiting for another
            // writer's lease. No readiness probe, since a sidecar's readiness is part of the
            // Pod's and a broken remote must not take the app out of its Services.
            sidecar.liveness_probe = Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/livez".into()),
                    port: IntOrString::String(port_name),
                    ..Default::default()
                }),
                period_seconds: Some(30),
                timeout_seconds: Some(5),
                failure_threshold: Some(3),
                ..Default::default()
            });
            added.metrics_port = Some(s.metrics_port);
        }
        if !opts.clean_up.remote {
            args.push("-x".into());
        }
        if opts.clean_up.force_remote {
            args.push(FORCE_UPLOAD_EMPTY.into());
        }
        sidecar.args = Some(args);
        added.shutdown = Some(shutdown);
        if settings.native_sidecars {
            to_init.push(sidecar);
            added.init_containers.push(sidecar_name);
        } else {
            spec.containers.push(sidecar);
            added.containers.push(sidecar_name);
        }
    }

    if !to_init.is_empty() {
        let inits = spec.init_containers.get_or_insert_with(Vec::new);
        let placement = &s.init_container_placement;
        let at = match placement.placement {
            Placement::First => 0,
            Placement::Last => inits.len(),
            Placement::Before | Placement::After => {
                let field = "spec.initContainerPlacement.containerReference";
                let reference = placement.container_reference.as_deref().ok_or_else(|| {
                    err(
                        field,
                        format!(
                            "placement {:?} needs a containerReference",
                            placement.placement
                        ),
                    )
                })?;
                let pos = inits
                    .iter()
                    .position(|c| c.name == reference)
                    .ok_or_else(|| {
                        err(
                            field,
                            format!("the Pod has no init container named {reference:?}"),
                        )
                    })?;
                if placement.placement == Placement::Before {
                    pos
                } else {
                    pos + 1
                }
            }
        };
        inits.splice(at..at, to_init);
    }
    Ok(added)
}

/// Requests and limits when the resource names none: a sync is mostly waiting on the network.
fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some([("cpu".into(), q("50m")), ("memory".into(), q("64Mi"))].into()),
        limits: Some([("cpu".into(), q("500m")), ("memory".into(), q("256Mi"))].into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};

    use crate::resource::PodFilesystemSyncSpec;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sync(name: &str, local: &str) -> PodFilesystemSync {
        let spec: PodFilesystemSyncSpec = serde_json::from_value(serde_json::json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "localPath": local,
            "remotePath": format!("b/{name}"),
        }))
        .unwrap();
        PodFilesystemSync::new(name, spec)
    }

    fn template(mounts: &[(&str, &str)]) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    volume_mounts: Some(
                        mounts
                            .iter()
                            .map(|(name, path)| VolumeMount {
                                name: name.to_string(),
                                mount_path: path.to_string(),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn settings(native: bool) -> Settings {
        Settings {
            native_sidecars: native,
            default_image: "vso:test".into(),
        }
    }

    fn injected(outcome: Outcome) -> PodTemplateSpec {
        match outcome {
            Outcome::Injected(t) => *t,
            Outcome::Unchanged => panic!("nothing was injected"),
        }
    }

    #[test]
    fn selector_semantics() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        let expr = |key: &str, op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&LabelSelector::default(), &pod).unwrap());
        assert!(selector_matches(&expr("app", "In", &["web", "api"]), &pod).unwrap());
        assert!(!selector_matches(&expr("app", "NotIn", &["web"]), &pod).unwrap());
        assert!(selector_matches(&expr("zone", "NotIn", &["a"]), &pod).unwrap());
        assert!(selector_matches(&expr("tier", "Exists", &[]), &pod).unwrap());
        assert!(!selector_matches(&expr("tier", "DoesNotExist", &[]), &pod).unwrap());
        assert!(selector_matches(&expr("app", "Like", &["w"]), &pod).is_err());
        assert!(selector_matches(&expr("app", "In", &[]), &pod).is_err());
        let mixed = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            ..expr("tier", "In", &["back"])
        };
        assert!(!selector_matches(&mixed, &pod).unwrap());
    }

    #[test]
    fn the_longest_mount_above_the_path_wins() {
        let t = template(&[("root", "/var"), ("data", "/var/lib/"), ("x", "/var/li")]);
        let containers = t.spec.unwrap().containers;
        assert_eq!(
            find_mount(&containers, "/var/lib/app").unwrap().name,
            "data"
        );
        assert_eq!(find_mount(&containers, "/var/lib").unwrap().name, "data");
        assert_eq!(find_mount(&containers, "/var/libx").unwrap().name, "root");
        assert!(find_mount(&containers, "/srv").is_err());
    }

    #[test]
    fn one_path_two_volumes_is_ambiguous() {
        let mut t = template(&[("a", "/data")]);
        let spec = t.spec.as_mut().unwrap();
        let mut other = spec.containers[0].clone();
        other.name = "other".into();
        other.volume_mounts.as_mut().unwrap()[0].name = "b".into();
        spec.containers.push(other);
        let err = find_mount(&spec.containers, "/data/x").unwrap_err();
        assert!(err.contains("ambiguous"), "{err}");
    }

    #[test]
    fn injecting_an_injected_template_is_a_no_op() {
        let syncs = [sync("one", "/data")];
        let once = injected(
            inject(
                &template(&[("data", "/data")]),
                None,
                &syncs,
                &settings(true),
            )
            .unwrap(),
        );
        assert_eq!(
            inject(&once, None, &syncs, &settings(true)).unwrap(),
            Outcome::Unchanged
        );
    }

    #[test]
    fn no_match_and_other_namespace_leave_the_pod_alone() {
        let mut other = sync("one", "/data");
        other.spec.pod_selector.match_labels = Some(labels(&[("app", "api")]));
        let t = template(&[("data", "/data")]);
        assert_eq!(
            inject(&t, None, &[other], &settings(true)).unwrap(),
            Outcome::Unchanged
        );
        let mut elsewhere = sync("one", "/data");
        elsewhere.metadata.namespace = Some("a".into());
        assert_eq!(
            inject(
                &t,
                Some("b"),
                std::slice::from_ref(&elsewhere),
                &settings(true)
            )
            .unwrap(),
            Outcome::Unchanged
        );
        assert!(matches!(
            inject(&t, Some("a"), &[elsewhere], &settings(true)).unwrap(),
            Outcome::Injected(_)
        ));
    }

    #[test]
    fn several_resources_get_unique_names_in_name_order() {
        let t = template(&[("a", "/a"), ("b", "/b"), ("c", "/c")]);
        let mut syncs = [sync("zeta", "/c"), sync("alpha", "/a"), sync("mid", "/b")];
        syncs[1].spec.metrics_port = 9091;
        syncs[2].spec.metrics_port = 9092;
        let out = injected(inject(&t, None, &syncs, &settings(false)).unwrap());
        let spec = out.spec.unwrap();
        let names = |list: &[Container]| list.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(spec.init_containers.as_deref().unwrap()),
            [
                "init-volume-restore",
                "init-volume-restore-2",
                "init-volume-restore-3"
            ]
        );
        assert_eq!(
            names(&spec.containers),
            [
                "app",
                "volume-syncing-sidecar",
                "volume-syncing-sidecar-2",
                "volume-syncing-sidecar-3"
            ]
        );
        // alpha (first by name) restores /a into the plain-named container.
        let args = spec.init_containers.unwrap()[0].args.clone().unwrap();
        assert!(args.contains(&"b/alpha".to_string()), "{args:?}");
        assert_eq!(spec.volumes.unwrap().len(), 1, "one shared temp volume");
    }

    #[test]
    fn the_grace_period_covers_the_longest_final_sync_and_is_never_lowered() {
        let mut s = sync("one", "/data");
        s.spec.shutdown_timeout = "10m".into();
        let out = injected(
            inject(
                &template(&[("data", "/data")]),
                None,
                &[s.clone()],
                &settings(true),
            )
            .unwrap(),
        );
        assert_eq!(
            out.spec.unwrap().termination_grace_period_seconds,
            Some(660)
        );
        let mut long = template(&[("data", "/data")]);
        long.spec.as_mut().unwrap().termination_grace_period_seconds = Some(3600);
        let out = injected(inject(&long, None, &[s], &settings(true)).unwrap());
        assert_eq!(
            out.spec.unwrap().termination_grace_period_seconds,
            Some(3600)
        );
    }

    #[test]
    fn a_classic_sidecar_in_a_job_is_refused() {
        let mut t = template(&[("data", "/data")]);
        t.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        let err = inject(&t, None, &[sync("one", "/data")], &settings(false)).unwrap_err();
        assert_eq!(err.field, "pod template: spec.restartPolicy");
        assert!(matches!(
            inject(&t, None, &[sync("one", "/data")], &settings(true)).unwrap(),
            Outcome::Injected(_)
        ));
    }

    #[test]
    fn nested_local_paths_are_refused_siblings_are_not() {
        let t = template(&[("data", "/data")]);
        let err = inject(
            &t,
            None,
            &[sync("a", "/data"), sync("b", "/data/sub/")],
            &settings(true),
        )
        .unwrap_err();
        assert!(err.message.contains("nested"), "{err}");
        let mut b = sync("b", "/data-2");
        b.spec.metrics_port = 9091;
        let t = template(&[("data", "/data"), ("d2", "/data-2")]);
        assert!(matches!(
            inject(&t, None, &[sync("a", "/data"), b], &settings(true)).unwrap(),
            Outcome::Injected(_)
        ));
    }

    #[test]
    fn local_path_rules() {
        for bad in ["data", "/", "/data/../etc", "/data/./x", ""] {
            assert!(check_local_path(bad).is_err(), "{bad:?}");
        }
        check_local_path("/data/x/").unwrap();
    }
}
