//! Step 1, spec → plan: one `PodFilesystemSync` and the Pod it applies to become a [`Plan`], a
//! validated, typed description of one injection (the directory and the app's mount that holds
//! it, the rendered remote path, the restore and the sidecar with their trigger and bounds, the
//! environment, the ids), or the first [`InjectError`] that forbids it.
//!
//! Main decision: everything that can be refused from the resource and the Pod as written is
//! refused here, before a command line or a container exists, in the order the fields are
//! read (so the error a user sees first stays the same); what depends on the containers added
//! so far (a taken name or metrics port, the init container to place next to) is checked by
//! [`super::containers`]. The plan holds values, not raw strings: a parsed shutdown bound, a
//! checked schedule, a trigger as an enum, env as the `EnvVar`s the containers will carry.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, SecretEnvSource,
    SecretKeySelector, VolumeMount,
};
use kube::ResourceExt;

use super::common::{
    InjectError, PodInjection, RESTORE_CONTAINER, SIDECAR_CONTAINER, TMP_PATH, field_err,
};
use crate::resource::{InitContainerPlacement, PASSPHRASE_KEY, PodFilesystemSync, SyncMethod};
use crate::template::{POD_NAME_REF, POD_NAMESPACE_REF, render};
use vso_core::daemon::schedule::Schedule;
use vso_core::duration::parse_duration;

/// One resource's injection into one Pod, validated: what [`super::argv`] and
/// [`super::containers`] are built from.
pub(super) struct Plan<'a> {
    /// The resource; later steps name it in their errors.
    pub sync: &'a PodFilesystemSync,
    /// `""` for the Pod's first resource (by name), `-2`, `-3`, … after: it makes the names of
    /// the containers, the PID file and the metrics port unique.
    pub suffix: &'a str,
    /// `localPath`, absolute, without `.`/`..` and without a trailing slash.
    pub local: String,
    /// The app's mount at or above `local` (name, mountPath, subPath), for the same directory.
    pub data_mount: VolumeMount,
    /// `remotePath` rendered over the Pod and accepted by the sync commands' own rule.
    pub remote: String,
    /// The restore init container, when `fromRemote` asks for it.
    pub restore: Option<Restore>,
    /// The sync sidecar, when `toRemote` asks for it.
    pub sidecar: Option<Sidecar>,
    /// The downward-API variables the templates' references need, the resource's variables
    /// (rendered), the encryption passphrase from its Secret: in this order.
    pub env: Vec<EnvVar>,
    /// `envFromSecret`, in order.
    pub env_from: Vec<EnvFromSource>,
    /// The injected containers' uid: the Pod's annotation, else `permissions.uid`.
    pub uid: Option<i64>,
    /// The injected containers' gid: the Pod's annotation, else `permissions.gid`.
    pub gid: Option<i64>,
    /// Where native sidecars and the restore go among the Pod's init containers.
    pub placement: &'a InitContainerPlacement,
}

/// The restore (`remote-to-local-sync --if-local-empty`).
pub(super) struct Restore {
    /// `cleanUp.local`: delete local files that are not on the remote (false: `-x`).
    pub clean_up: bool,
    /// `cleanUp.forceLocal`: override the valve that protects local data.
    pub force: bool,
    /// `restoreRemoteOnFirstRun: false`: skip the restore of a path no upload ever wrote (the
    /// first Pod of a remote path keeps its own data; every later start restores).
    pub skip_if_never_uploaded: bool,
}

/// The sidecar (`sync-to-remote`).
pub(super) struct Sidecar {
    /// What starts a sync.
    pub trigger: Trigger,
    /// The final sync's bound (`shutdownTimeout`); the grace period and the preStop hook's wait
    /// follow from it.
    pub shutdown: Duration,
    /// The port of `/metrics` and `/livez`; None for `metricsPort: 0`.
    pub metrics_port: Option<u16>,
    /// `cleanUp.remote`: delete on the remote what was deleted locally (false: `-x`).
    pub clean_up: bool,
    /// `cleanUp.forceRemote`: upload even an empty directory.
    pub force: bool,
}

/// What starts the sidecar's syncs.
pub(super) enum Trigger {
    /// `method: scheduler`: a schedule the core's parser accepts (trimmed).
    Schedule(String),
    /// `method: fsnotify`: file changes, at most one sync per this many minutes when set.
    Watch { min_interval_minutes: Option<u32> },
}

impl Plan<'_> {
    pub fn restore_name(&self) -> String {
        format!("{RESTORE_CONTAINER}{}", self.suffix)
    }

    pub fn sidecar_name(&self) -> String {
        format!("{SIDECAR_CONTAINER}{}", self.suffix)
    }

    /// The sidecar's PID file, which the preStop hook's `interrupt` reads.
    pub fn pid_path(&self) -> String {
        format!("{TMP_PATH}/volume-syncing-operator{}.pid", self.suffix)
    }

    /// The name of the sidecar's metrics port (the liveness probe's target).
    pub fn metrics_port_name(&self) -> String {
        format!("metrics{}", self.suffix)
    }
}

/// Validates `sync` against the Pod of `pod` (its app containers as written, its labels and
/// annotations, its uid/gid annotations) into the plan of one injection.
pub(super) fn plan<'a>(
    pod: &PodInjection<'_>,
    sync: &'a PodFilesystemSync,
    suffix: &'a str,
) -> Result<Plan<'a>, InjectError> {
    let s = &sync.spec;
    let opts = &s.sync_options;
    let err = |field: &str, msg: String| field_err(sync, field, msg);

    check_local_path(&s.local_path).map_err(|m| err("spec.localPath", m))?;
    let local = normalize(&s.local_path).to_string();
    let data_mount =
        find_mount(&pod.app_containers, &local).map_err(|m| err("spec.localPath", m))?;
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
    let remote = render(&s.remote_path, &pod.ctx).map_err(|m| err("spec.remotePath", m))?;
    if let Some(why) = vso_core::remote::path::problem(&remote) {
        return Err(err(
            "spec.remotePath",
            format!("the remote path {remote:?} {why}"),
        ));
    }

    // restoreRemoteOnFirstRun is decided at run time, per remote path: the restore skips a path
    // that no upload ever wrote (--skip-if-never-uploaded), so later starts still restore.
    let restore = opts.allowed_directories.from_remote;
    let upload = opts.allowed_directories.to_remote;
    if !restore && !upload {
        return Err(err(
            "spec.syncOptions.allowedDirectories",
            "neither the restore (fromRemote) nor the sidecar \
             (toRemote) is enabled: nothing to inject"
                .into(),
        ));
    }
    // Checked even without a sidecar: a resource is valid or not whatever it enables.
    let shutdown =
        parse_duration(&s.shutdown_timeout).map_err(|m| err("spec.shutdownTimeout", m))?;
    let trigger = match opts.method {
        SyncMethod::Scheduler => {
            Schedule::parse(&opts.schedule).map_err(|m| err("spec.syncOptions.schedule", m))?;
            Trigger::Schedule(opts.schedule.trim().to_string())
        }
        SyncMethod::Fsnotify => match opts.max_one_sync_per_minutes {
            Some(0) => {
                return Err(err(
                    "spec.syncOptions.maxOneSyncPerMinutes",
                    "must be at least 1 (leave it out for no limit)".into(),
                ));
            }
            min_interval_minutes => Trigger::Watch {
                min_interval_minutes,
            },
        },
    };

    let env = env(pod, sync, &remote)?;
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

    Ok(Plan {
        sync,
        suffix,
        local,
        data_mount,
        remote,
        restore: restore.then_some(Restore {
            clean_up: opts.clean_up.local,
            force: opts.clean_up.force_local,
            skip_if_never_uploaded: !opts.restore_remote_on_first_run,
        }),
        sidecar: upload.then(|| Sidecar {
            trigger,
            shutdown,
            metrics_port: (s.metrics_port != 0).then_some(s.metrics_port),
            clean_up: opts.clean_up.remote,
            force: opts.clean_up.force_remote,
        }),
        env,
        env_from,
        uid: pod.ids.uid.or(opts.permissions.uid),
        gid: pod.ids.gid.or(opts.permissions.gid),
        placement: &s.init_container_placement,
    })
}

/// The environment of the injected containers: the downward-API variables the templates'
/// references need, the resource's variables, the passphrase.
fn env(
    pod: &PodInjection<'_>,
    sync: &PodFilesystemSync,
    remote: &str,
) -> Result<Vec<EnvVar>, InjectError> {
    let s = &sync.spec;
    let err = |field: &str, msg: String| field_err(sync, field, msg);
    let mut user_env = Vec::new();
    for (key, value) in &s.env {
        if key == "VSO_POD_NAME" || key == "VSO_POD_NAMESPACE" {
            return Err(err(
                &format!("spec.env.{key}"),
                "reserved: the injector defines it for {{ pod.name }} / {{ pod.namespace }}".into(),
            ));
        }
        let rendered = render(value, &pod.ctx).map_err(|m| err(&format!("spec.env.{key}"), m))?;
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
    if let Some(secret) = sync.encryption_secret() {
        let secret = secret.map_err(|m| err("spec.automaticEncryption.secretName", m))?;
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
    Ok(env)
}

/// Two resources on one Pod must sync disjoint directories: `matching` sorted by name, the
/// first offending pair is refused.
pub(super) fn disjoint(matching: &[&PodFilesystemSync]) -> Result<(), InjectError> {
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
    Ok(())
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
pub(super) fn find_mount(containers: &[Container], path: &str) -> Result<VolumeMount, String> {
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

pub(super) fn check_local_path(path: &str) -> Result<(), String> {
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
