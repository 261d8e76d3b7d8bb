//! Step 3, plan + argv → containers: the restore init container and the sync sidecar as
//! `Container` objects, added to the Pod's spec at their place, and the shared temp volume.
//!
//! Main decisions: both containers share one base (image, env, the app's data mount plus the
//! temp dir, a locked-down security context with the plan's uid/gid, resources), so they see
//! the same directory with the same rights; a native sidecar (`restartPolicy: Always`) goes
//! among the init containers right after the restore, a classic one at the end of the
//! containers; the init containers are placed as `initContainerPlacement` says. What depends on
//! the Pod as injected so far (a taken container name or metrics port, the init container to
//! place next to) is refused here, in that order.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, ExecAction, HTTPGetAction,
    Lifecycle, LifecycleHandler, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::argv::Argv;
use super::common::{
    InjectError, PodInjection, TERMINATION_MESSAGE_PATH, TMP_PATH, TMP_VOLUME, field_err, pod_err,
};
use super::validate::Plan;
use crate::resource::Placement;

/// What one resource added.
pub(super) struct Added {
    pub init_containers: Vec<String>,
    pub containers: Vec<String>,
    /// The sidecar's final-sync bound, when there is a sidecar.
    pub shutdown: Option<Duration>,
    pub metrics_port: Option<u16>,
}

/// The emptyDir behind [`TMP_VOLUME`], added once per Pod.
pub(super) fn tmp_volume() -> Volume {
    Volume {
        name: TMP_VOLUME.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Adds the containers of `plan` (running `argv`) to `pod`'s spec.
pub(super) fn add(
    pod: &mut PodInjection<'_>,
    plan: &Plan<'_>,
    argv: Argv,
) -> Result<Added, InjectError> {
    let err = |field: &str, msg: String| field_err(plan.sync, field, msg);
    let base = base(pod, plan);

    let spec = &pod.spec;
    let existing = |name: &str| {
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .any(|c| c.name == name)
    };
    let restore_name = plan.restore_name();
    let sidecar_name = plan.sidecar_name();
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
    if let Some(args) = argv.restore {
        to_init.push(Container {
            name: restore_name.clone(),
            args: Some(args),
            ..base.clone()
        });
        added.init_containers.push(restore_name);
    }
    if let (Some(planned), Some(argv)) = (&plan.sidecar, argv.sidecar) {
        let mut sidecar = Container {
            name: sidecar_name.clone(),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(argv.pre_stop),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_policy: pod.settings.native_sidecars.then(|| "Always".to_string()),
            ..base.clone()
        };
        if let Some(metrics_port) = planned.metrics_port {
            let port = i32::from(metrics_port);
            if pod.used_ports.contains(&port) {
                return Err(err(
                    "spec.metricsPort",
                    format!(
                        "port {port} is already used by a container of the Pod; choose another (0: no metrics)"
                    ),
                ));
            }
            pod.used_ports.push(port);
            let port_name = plan.metrics_port_name();
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
            added.metrics_port = Some(metrics_port);
        }
        sidecar.args = Some(argv.args);
        added.shutdown = Some(planned.shutdown);
        if pod.settings.native_sidecars {
            to_init.push(sidecar);
            added.init_containers.push(sidecar_name);
        } else {
            pod.spec.containers.push(sidecar);
            added.containers.push(sidecar_name);
        }
    }

    if !to_init.is_empty() {
        let inits = pod.spec.init_containers.get_or_insert_with(Vec::new);
        let placement = plan.placement;
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

/// What the restore and the sidecar of `plan` have in common.
fn base(pod: &PodInjection<'_>, plan: &Plan<'_>) -> Container {
    let s = &plan.sync.spec;
    let security = SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: plan.uid,
        run_as_group: plan.gid,
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
        .unwrap_or_else(|| pod.settings.default_image.clone());
    let mounts = vec![
        plan.data_mount.clone(),
        VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: TMP_PATH.into(),
            ..Default::default()
        },
    ];
    Container {
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        env: (!plan.env.is_empty()).then(|| plan.env.clone()),
        env_from: (!plan.env_from.is_empty()).then(|| plan.env_from.clone()),
        security_context: Some(security),
        resources: Some(resources),
        volume_mounts: Some(mounts),
        // The binary writes the summary of its last sync (JSON, with the cause of a failure)
        // to the termination message; should it die before writing one, a failure still says
        // why in `kubectl describe pod`: the last lines of its log, whose last is the cause.
        termination_message_path: Some(TERMINATION_MESSAGE_PATH.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
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
