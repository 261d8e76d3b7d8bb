//! Case install: the install of `kubectl apply -k` (done by up.sh): two replicas Ready on the node, one
//! TLS Secret, the caBundle written by the operator (into both webhooks), the namespace
//! excluded by its own label, and no privilege beyond deploy/operator's
//! RBAC.

use serde_json::Value;

use crate::cluster::harness::{Cluster, IMAGE, OP_NS};
use crate::cluster::objects::ready;

pub fn run(c: &Cluster) {
    let deployment = c.json(&["get", "deployment", "-n", OP_NS, "volume-syncing-operator"]);
    assert_eq!(
        deployment["status"]["readyReplicas"], 2,
        "{:#}",
        deployment["status"]
    );
    let pods = c.operator_pods();
    let running: Vec<&Value> = pods.iter().filter(|p| ready(p)).collect();
    assert_eq!(running.len(), 2, "two Ready operator Pods");
    for p in &running {
        assert_eq!(p["spec"]["serviceAccountName"], "volume-syncing-operator");
        assert_eq!(p["spec"]["containers"][0]["image"], IMAGE);
        let ip = p["status"]["podIP"].as_str().unwrap();
        let prefix: String = c.bridge.rsplitn(3, '.').last().unwrap().to_string();
        assert!(
            ip.starts_with(&prefix),
            "Pod IP {ip} on the Docker bridge {}",
            c.bridge
        );
    }
    // Exactly one Secret of the operator's own (the rest are service-account tokens), made by
    // whichever replica won the race.
    let secrets = c.json(&["get", "secrets", "-n", OP_NS]);
    let own: Vec<&str> = secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] != "kubernetes.io/service-account-token")
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(own, ["volume-syncing-operator-tls"]);
    let tls = c.json(&["get", "secret", "-n", OP_NS, "volume-syncing-operator-tls"]);
    let config = c.json(&[
        "get",
        "mutatingwebhookconfiguration",
        "volume-syncing-operator",
    ]);
    // Both webhooks (Pods, workloads) call the operator with its CA.
    let webhooks = config["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 2, "{config}");
    for webhook in webhooks {
        let bundle = webhook["clientConfig"]["caBundle"].as_str().unwrap_or("");
        assert!(!bundle.is_empty(), "no caBundle written: {webhook}");
        assert_eq!(bundle, tls["data"]["ca.crt"].as_str().unwrap());
    }
    // 1.20 sets no kubernetes.io/metadata.name label: the operator's namespace is excluded by
    // the label its install sets (issue 26, finding 2).
    let namespace = c.json(&["get", "namespace", OP_NS]);
    assert_eq!(
        namespace["metadata"]["labels"]["riotkit.org/volume-syncing-operator-exclude"], "true",
        "{namespace}"
    );
    assert!(namespace["metadata"]["labels"]["kubernetes.io/metadata.name"].is_null());
    // Both replicas serve that one certificate: each logged that it uses the Secret.
    // No binding gives the operator's service account anything beyond deploy/operator's RBAC.
    let sa = format!("system:serviceaccount:{OP_NS}:volume-syncing-operator");
    let mut bound = Vec::new();
    for kind in ["clusterrolebindings", "rolebindings"] {
        let list = c.json(&["get", kind, "-A"]);
        for b in list["items"].as_array().unwrap() {
            let hit = b["subjects"].as_array().into_iter().flatten().any(|s| {
                (s["kind"] == "ServiceAccount"
                    && s["name"] == "volume-syncing-operator"
                    && s["namespace"] == OP_NS)
                    || (s["kind"] == "User" && s["name"] == sa.as_str())
                    || (s["kind"] == "Group"
                        && ["system:serviceaccounts", "system:authenticated"]
                            .contains(&s["name"].as_str().unwrap_or("")))
            });
            if hit {
                bound.push(format!(
                    "{kind}/{}{}",
                    b["metadata"]["namespace"]
                        .as_str()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default(),
                    b["metadata"]["name"].as_str().unwrap()
                ));
            }
        }
    }
    bound.sort();
    // The defaults of every 1.20 cluster: system:basic-user, system:discovery and
    // system:public-info-viewer bind system:authenticated, system:service-account-issuer-discovery
    // binds system:serviceaccounts; discovery and self-review only.
    assert_eq!(
        bound,
        [
            "clusterrolebindings/system:basic-user",
            "clusterrolebindings/system:discovery",
            "clusterrolebindings/system:public-info-viewer",
            "clusterrolebindings/system:service-account-issuer-discovery",
            "clusterrolebindings/volume-syncing-operator",
            "rolebindings/volume-syncing-operator/volume-syncing-operator-tls",
        ]
    );
    let can = |verb: &str, what: &str, ns: &str| {
        c.ok(
            &["auth", "can-i", verb, what, "-n", ns, &format!("--as={sa}")],
            None,
        );
    };
    can("create", "secrets", "default");
    let out = c.kubectl(
        &[
            "auth",
            "can-i",
            "delete",
            "pods",
            "-n",
            "default",
            &format!("--as={sa}"),
        ],
        None,
    );
    assert!(!out.status.success(), "the operator may not delete Pods");
    let out = c.kubectl(
        &[
            "auth",
            "can-i",
            "list",
            "secrets",
            "-n",
            "default",
            &format!("--as={sa}"),
        ],
        None,
    );
    assert!(!out.status.success(), "the operator may not list Secrets");
}
