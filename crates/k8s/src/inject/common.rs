//! What every step of one injection shares: the names it gives (annotations, containers,
//! volumes), the caller's [`Settings`], the error type, and [`PodInjection`] — the Pod being
//! injected, which the steps read and change in turn. A leaf of the injection core: the steps
//! and the orchestration (`mod.rs`) import it, it imports none of them.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::ResourceExt;

use crate::resource::PodFilesystemSync;
use crate::template::PodContext;

/// Records on an injected Pod what was injected; its presence makes injection a no-op.
pub const INJECTED_ANNOTATION: &str = "riotkit.org/volume-syncing-injected";
/// Pod label `"true"` on every injected Pod: the operator watches only these
/// (`--status-interval`), by a label selector the API server applies.
pub const INJECTED_LABEL: &str = "riotkit.org/volume-syncing-injected";
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
pub(super) const TMP_PATH: &str = "/tmp";
/// The injected containers' terminationMessagePath: the binary writes the summary of its last
/// sync there (`--termination-message-path`), the operator reads it from the Pod's status.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The binary inside the image (the preStop hook runs it).
pub(super) const BINARY_PATH: &str = "/usr/local/bin/volume-syncing-operator";
/// Kubernetes' default terminationGracePeriodSeconds.
pub(super) const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Headroom beyond the final sync's bound: the app's own shutdown (native sidecars stop after
/// the app) and the `interrupt` hook's wait.
pub(super) const GRACE_MARGIN_SECONDS: u64 = 60;

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

pub(super) fn field_err(
    sync: &PodFilesystemSync,
    field: &str,
    message: impl Into<String>,
) -> InjectError {
    InjectError {
        field: format!("PodFilesystemSync {}: {field}", sync.name_any()),
        message: message.into(),
    }
}

/// How [`InjectError::field`] starts when it names a field of the Pod template (`metadata.…`,
/// `spec.…` relative to the template).
pub const POD_FIELD_PREFIX: &str = "pod template: ";

pub(super) fn pod_err(field: &str, message: impl Into<String>) -> InjectError {
    InjectError {
        field: format!("{POD_FIELD_PREFIX}{field}"),
        message: message.into(),
    }
}

/// One Pod's injection in progress: what every resource's steps read (the caller's settings,
/// the Pod as its author wrote it) and what they change in turn (the spec, the container ports
/// taken). It is what `inject_one` once took as eight arguments.
pub(super) struct PodInjection<'a> {
    pub(super) settings: &'a Settings,
    /// The Pod's init containers and containers before any injection: where `localPath` is
    /// mounted is read from these only, never from an injected container.
    pub(super) app_containers: Vec<Container>,
    /// The Pod's labels and annotations, for the templates.
    pub(super) ctx: PodContext,
    /// The uid/gid annotations, checked once per Pod.
    pub(super) ids: Ids,
    /// The spec being injected: each resource's containers are added to it.
    pub(super) spec: PodSpec,
    /// Container ports of the app and of the sidecars added so far (a metrics port must be
    /// free).
    pub(super) used_ports: Vec<i32>,
}

/// uid/gid overrides from the Pod's annotations.
pub(super) struct Ids {
    pub uid: Option<i64>,
    pub gid: Option<i64>,
}

impl Ids {
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Result<Ids, InjectError> {
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
