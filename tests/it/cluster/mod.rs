//! The operator in a real single-node Kubernetes 1.20.2 (issue 26): etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and a kubelet running Pods on the local Docker engine
//! through dockershim, all built from Debian 12's sources by `make kubernetes` and started by
//! `scripts/cluster/up.sh` (see its header for the addresses: nothing listens beyond loopback and
//! the Docker bridge, there is no kube-proxy and nothing is sent to a Service IP). The operator is
//! installed by `kubectl apply -k` of an overlay of deploy/operator that only sets the locally
//! built image (and the API server's address, for want of kube-proxy); the kubelet really runs
//! the injected init container and sidecar against an S3 server (`rclone serve s3`) on the
//! bridge address, and the data is checked there byte for byte.
//!
//! The cases share one cluster and run in order in one test (fail-closed scales the operator to
//! zero, and burst deletes one of its Pods, which no other case may see); each has its own
//! namespace and its own file under `cases/`. `CLUSTER_CASES=install,statefulset` runs only those
//! (the names of [`CASES`]).
//! The cluster is started here unless `make cluster-up` left a healthy one (then it is reused and
//! left running); one started here is always stopped and cleaned (`scripts/cluster/down.sh`) when
//! the test ends, passed or failed. `make cluster-test` runs this and then `make cluster-down`.
//! Needs root (the kubelet), Docker, kubectl, `make kubernetes`, `make image`, `make tools`.
//!
//! Self-contained on purpose (its own small helpers in [`harness`], [`s3`] and [`objects`], not
//! tests/support): it drives a cluster, not the binary on the host.

mod cases;
mod harness;
mod objects;
mod s3;

use std::time::Instant;

use harness::Cluster;
use s3::S3;

/// The cases, in the order they run (`CLUSTER_CASES` picks some of them).
const CASES: [&str; 8] = [
    "install",
    "fail_closed",
    "status",
    "statefulset",
    "rollouts",
    "automatic_encryption",
    "replication",
    "burst",
];

#[test]
fn the_operator_in_a_real_cluster() {
    let cases: Option<Vec<String>> = std::env::var("CLUSTER_CASES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let wanted = |name: &str| cases.as_ref().is_none_or(|c| c.iter().any(|c| c == name));
    if let Some(unknown) = cases
        .iter()
        .flatten()
        .find(|c| !CASES.contains(&c.as_str()))
    {
        panic!("CLUSTER_CASES names {unknown:?}: the cases are {CASES:?}");
    }
    let started = Instant::now();
    let cluster = Cluster::up();
    let s3 = S3::start(&cluster.bridge);
    let mut timings = Vec::new();
    let mut run = |name: &str, case: &dyn Fn()| {
        assert!(CASES.contains(&name), "{name} is missing from CASES");
        if wanted(name) {
            let started = Instant::now();
            eprintln!("cluster: case {name}");
            case();
            timings.push(format!("{name}: {:.1?}", started.elapsed()));
        }
    };
    run("install", &|| cases::install::run(&cluster));
    run("fail_closed", &|| cases::fail_closed::run(&cluster, &s3));
    run("status", &|| cases::status::run(&cluster, &s3));
    run("statefulset", &|| cases::statefulset::run(&cluster, &s3));
    run("rollouts", &|| cases::rollouts::run(&cluster, &s3));
    run("automatic_encryption", &|| {
        cases::automatic_encryption::run(&cluster, &s3)
    });
    run("replication", &|| cases::replication::run(&cluster));
    run("burst", &|| cases::burst::run(&cluster, &s3));
    eprintln!(
        "cluster: cases passed: {} ({:.1?} since the test began)",
        timings.join(", "),
        started.elapsed()
    );
    assert!(
        !timings.is_empty(),
        "CLUSTER_CASES={cases:?} names no case ({CASES:?})"
    );
}
