//! Case status: the status the operator writes on a PodFilesystemSync (issue 27), from the
//! sidecars it scrapes and the termination messages the injected containers leave. A Secret
//! with a wrong S3 key makes every sync of the first Pod fail: `Ready` turns False (reason
//! ConsecutiveFailures or LastSyncFailed) and a Warning SyncFailed event names the Pod. The spec
//! is changed (restore on: generation 2, `observedGeneration` follows), the Secret fixed and the
//! Pod replaced; its deletion's final sync (still with the old key) shows as a failure with its
//! message, and the new Pod's restore and syncs turn `Ready` True (`lastRestore` names it).
//! `kubectl get pfss` prints the columns (`-o wide` adds Bytes and Rule). Last, a file written
//! just before `kubectl delete pod` reaches the S3 server through the final sync, and
//! `lastSyncTime` is that sync's, as its termination message says.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::cluster::harness::{
    ACCESS_KEY, BUCKET, Cluster, INJECT_LABEL, OP_LABEL, OP_NS, SECRET_KEY, repo,
};
use crate::cluster::objects::{app_pod, container_state, names, sync_resource};
use crate::cluster::s3::{S3, snapshot};

/// The resource (and the `app` label of its Pods).
const NAME: &str = "st";
/// The sidecars' schedule: the status follows within one of it plus one status round (15 s).
const SCHEDULE: &str = "@every 10s";
const SIDECAR: &str = "volume-syncing-sidecar";
const RESTORE: &str = "init-volume-restore";

fn time(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// `(status, reason)` of the condition `type_`, `("", "")` while there is none.
fn condition(status: &Value, type_: &str) -> (String, String) {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default()
}

fn ready_condition(status: &Value) -> Value {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or(Value::Null)
}

/// The last sync's time in the status, if any.
fn last_sync(status: &Value) -> Option<DateTime<Utc>> {
    status["lastSyncTime"].as_str().map(time)
}

/// Polls the resource until `check` (given the whole object) returns Some; on timeout panics
/// with what was expected, the last status seen, the Pods and the operator's log.
#[track_caller]
fn wait_status<T>(
    c: &Cluster,
    ns: &str,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let object = c.json(&["get", "pfss", "-n", ns, NAME]);
        if let Some(v) = check(&object) {
            return v;
        }
        if Instant::now() > deadline {
            let pods = c.kubectl(&["get", "pods", "-n", ns, "-o", "wide"], None);
            let log = c.kubectl(
                &["logs", "-n", OP_NS, "-l", OP_LABEL, "--prefix", "--tail=30"],
                None,
            );
            panic!(
                "timed out after {timeout:?} waiting for {what}\nlast status seen (generation \
                 {}):\n{:#}\npods:\n{}\noperator log:\n{}",
                object["metadata"]["generation"],
                object["status"],
                String::from_utf8_lossy(&pods.stdout),
                String::from_utf8_lossy(&log.stdout)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The rows of `kubectl get`'s table as `(column, cell)`, cut where the header's columns start
/// (a blank cell stays blank).
fn columns(table: &str) -> Vec<Vec<(String, String)>> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or("");
    // A column starts after two spaces or more ("LAST SYNC" is one column).
    let mut starts = vec![0];
    let bytes = header.as_bytes();
    for i in 2..bytes.len() {
        if bytes[i] != b' ' && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            starts.push(i);
        }
    }
    let cut = |line: &str, i: usize| -> String {
        let end = starts
            .get(i + 1)
            .copied()
            .unwrap_or(line.len())
            .min(line.len());
        line.get(starts[i].min(end)..end)
            .unwrap_or("")
            .trim()
            .to_string()
    };
    lines
        .map(|line| {
            (0..starts.len())
                .map(|i| (cut(header, i), cut(line, i)))
                .collect()
        })
        .collect()
}

/// Puts `content` at `bucket/<path>` through the S3 server (rclone's S3 client), as a backup
/// made elsewhere would be: a file written into its directory instead may stay unseen, since
/// the server caches directory listings (other cases' requests have filled that cache).
fn put(s3: &S3, path: &str, content: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), content).unwrap();
    let out = Command::new(repo("tools/bin/rclone"))
        .args(["--config", "/dev/null", "copyto"])
        .arg(file.path())
        .arg(format!("s3:{path}"))
        .env_clear()
        .envs([
            ("RCLONE_CONFIG_S3_TYPE", "s3"),
            ("RCLONE_CONFIG_S3_PROVIDER", "Rclone"),
            ("RCLONE_CONFIG_S3_ACCESS_KEY_ID", ACCESS_KEY),
            ("RCLONE_CONFIG_S3_SECRET_ACCESS_KEY", SECRET_KEY),
            ("RCLONE_CONFIG_S3_ENDPOINT", s3.endpoint.as_str()),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run tools/bin/rclone");
    assert!(
        out.status.success(),
        "rclone copyto s3:{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(s3.path(path)).unwrap(), content, "{path} on disk");
}

/// `(reason, note)` of the Warning events (events.k8s.io) about the resource.
fn warnings(c: &Cluster, ns: &str) -> Vec<(String, String)> {
    c.json(&["get", "events.v1.events.k8s.io", "-n", ns])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["type"] == "Warning"
                && e["regarding"]["kind"] == "PodFilesystemSync"
                && e["regarding"]["name"] == NAME
        })
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The Pod, once it runs with its sidecar (and its restore done, when it has one).
fn running(c: &Cluster, ns: &str, name: &str) -> Option<Value> {
    let p = c.pod(ns, name);
    let restored =
        container_state(&p, RESTORE).is_none_or(|s| s["state"]["terminated"]["exitCode"] == 0);
    let sidecar = container_state(&p, SIDECAR).is_some_and(|s| s["state"]["running"].is_object());
    (p["status"]["phase"] == "Running" && restored && sidecar).then_some(p)
}

pub fn run(c: &Cluster, s3: &S3) {
    let ns = &format!("status-{}", std::process::id());
    c.fresh_namespace(ns);
    let remote = format!("{BUCKET}/status");
    // The wrong key: the S3 server answers every request of the sidecar with 403.
    let mut wrong = s3.secret(ns, "remote");
    wrong["stringData"]["REMOTE_SECRET_ACCESS_KEY"] = json!("not-the-secret-key");
    c.apply(&wrong);
    // No restore at first: with the wrong key it would fail, and the Pod would never start (its
    // init container restarting); this case is about the sidecar's syncs.
    let mut resource = sync_resource(ns, NAME, &remote, "remote");
    resource["spec"]["syncOptions"]["schedule"] = json!(SCHEDULE);
    resource["spec"]["syncOptions"]["allowedDirectories"] = json!({"fromRemote": false});
    c.apply(&resource);
    let labels = json!({"app": NAME, INJECT_LABEL: "true"});
    let script = |name: &str| {
        format!(
            "trap 'exit 0' TERM; \
             if [ -f /data/seed.txt ]; then cat /data/seed.txt > /data/seen.txt; fi; \
             echo 'written by {name}' > /data/app.txt; sleep 3600 & wait"
        )
    };

    // 1. The failing remote.
    let started = Instant::now();
    let a = "st-a";
    c.create(&app_pod(ns, a, labels.clone(), &script(a)))
        .expect("the first Pod is created");
    let p = c.wait_for(
        "st-a Running with its sidecar",
        ns,
        Duration::from_secs(120),
        || running(c, ns, a),
    );
    assert!(
        p["spec"]["initContainers"].is_null(),
        "no restore with fromRemote: false: {:?}",
        names(&p["spec"]["initContainers"])
    );
    assert_eq!(names(&p["spec"]["containers"]), ["app", SIDECAR]);
    let sidecar_up = Instant::now();
    eprintln!(
        "cluster: status: st-a Running {:.0?} after creation",
        started.elapsed()
    );
    // The reasons Ready had on the way, in order.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut note = |status: &Value| {
        let r = condition(status, "Ready");
        if seen.last() != Some(&r) {
            eprintln!(
                "cluster: status: Ready {} ({}) {:.0?} after the sidecar started",
                r.0,
                r.1,
                sidecar_up.elapsed()
            );
            seen.push(r);
        }
    };
    // The sidecar syncs at its start, then on its schedule: the first failure shows within a
    // status round (15 s) of it.
    let first_reason = wait_status(
        c,
        ns,
        "Ready False because a sync failed (within a status round)",
        Duration::from_secs(60),
        |o| {
            let s = &o["status"];
            note(s);
            let (ready, reason) = condition(s, "Ready");
            (ready == "False" && s["lastSyncResult"] == "failure").then_some(reason)
        },
    );
    // Every sync reads the lease of the remote path first: with the wrong key that read fails,
    // which is the failure itself, not another writer (never `RemoteInUse`).
    assert!(
        ["LastSyncFailed", "ConsecutiveFailures"].contains(&first_reason.as_str()),
        "Ready False for a failed sync, not {first_reason:?}"
    );
    // Then the sidecar's own rule: 3 failures in a row (--max-consecutive-failures).
    let failing = wait_status(
        c,
        ns,
        "Ready False with reason ConsecutiveFailures or LastSyncFailed",
        Duration::from_secs(90),
        |o| {
            let s = &o["status"];
            note(s);
            let (ready, reason) = condition(s, "Ready");
            (ready == "False"
                && ["ConsecutiveFailures", "LastSyncFailed"].contains(&reason.as_str()))
            .then(|| s.clone())
        },
    );
    eprintln!(
        "cluster: status: Ready False ({}) {:.0?} after the sidecar started; reasons on the way: \
         {seen:?}",
        condition(&failing, "Ready").1,
        sidecar_up.elapsed()
    );
    assert!(
        !seen.iter().any(|(_, reason)| reason == "RemoteInUse"),
        "a wrong key is not another writer: {seen:?}"
    );
    assert_eq!(failing["lastSyncResult"], "failure", "{failing:#}");
    assert_eq!(failing["lastSyncPod"], a, "{failing:#}");
    assert!(failing["lastSuccessTime"].is_null(), "{failing:#}");
    assert!(
        failing["lastRestore"].is_null(),
        "no restore ran: {failing:#}"
    );
    assert_eq!(failing["pods"], 1, "{failing:#}");
    assert!(failing["nextSyncTime"].is_string(), "{failing:#}");
    assert_eq!(failing["observedGeneration"], 1, "{failing:#}");
    let pods = failing["podStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(pods.len(), 1, "{failing:#}");
    assert_eq!(pods[0]["name"], a);
    assert_eq!(pods[0]["lastSyncResult"], "failure");
    assert!(
        pods[0]["consecutiveFailures"].as_u64().unwrap_or(0) >= 1,
        "{failing:#}"
    );
    let ready = ready_condition(&failing);
    assert_eq!(ready["observedGeneration"], 1, "{ready:#}");
    assert!(
        ready["message"].as_str().is_some_and(|m| m.contains(a)),
        "the Ready message names the Pod: {ready:#}"
    );
    let events = c.wait_for(
        "a Warning SyncFailed event on the resource naming st-a",
        ns,
        Duration::from_secs(30),
        || {
            let w = warnings(c, ns);
            w.iter()
                .any(|(reason, note)| reason == "SyncFailed" && note.contains("pod st-a"))
                .then_some(w)
        },
    );
    eprintln!(
        "cluster: status: {} Warning event(s) on the resource, the first: {:?}",
        events.len(),
        events[0]
    );

    // 2. The spec changes (restore on): observedGeneration follows within a round.
    c.ok(
        &[
            "patch",
            "pfss",
            "-n",
            ns,
            NAME,
            "--type=merge",
            "-p",
            r#"{"spec":{"syncOptions":{"allowedDirectories":{"fromRemote":true}}}}"#,
        ],
        None,
    );
    let patched = Instant::now();
    wait_status(
        c,
        ns,
        "observedGeneration 2 (status and Ready) after the spec changed",
        Duration::from_secs(45),
        |o| {
            assert_eq!(o["metadata"]["generation"], 2, "{:#}", o["metadata"]);
            let s = &o["status"];
            (s["observedGeneration"] == 2 && ready_condition(s)["observedGeneration"] == 2)
                .then_some(())
        },
    );
    eprintln!(
        "cluster: status: observedGeneration 2 {:.0?} after the spec changed",
        patched.elapsed()
    );

    // 3. The fix. Secrets in envFrom are read when a container starts, so the running sidecar
    // keeps the wrong key: the Pod is replaced (a bare Pod here; a Deployment's would be by
    // `kubectl rollout restart`). Its final sync still fails, with the old key, and the status
    // says so with the message of its termination summary.
    c.apply(&s3.secret(ns, "remote"));
    put(s3, &format!("{remote}/seed.txt"), b"restored by st-b\n");
    let watch = c.watch(&["pod", "-n", ns, a]);
    let deleted_a = Utc::now();
    let deleting = Instant::now();
    c.ok(&["delete", "pod", "-n", ns, a, "--wait=false"], None);
    c.wait_for("st-a gone", ns, Duration::from_secs(120), || {
        (!c.exists("pod", ns, a)).then_some(())
    });
    // What the kubelet published of the sidecar's end. A 1.20 kubelet may remove the dead
    // containers of a deleted Pod before it reads their termination message (seen once: a
    // final sync that failed within half a second of the deletion): then the API never carries
    // it and the operator cannot report it.
    let published = watch.stop().iter().any(|p| {
        container_state(p, SIDECAR).is_some_and(|s| s["state"]["terminated"]["message"].is_string())
    });
    if published {
        let final_a = wait_status(
            c,
            ns,
            "st-a's failed final sync (after its deletion) in the status",
            Duration::from_secs(60),
            |o| {
                let s = &o["status"];
                (s["lastSyncPod"] == a
                    && last_sync(s).is_some_and(|t| t.timestamp() >= deleted_a.timestamp())
                    && s["lastSyncMessage"].is_string())
                .then(|| s.clone())
            },
        );
        eprintln!(
            "cluster: status: st-a's final sync in the status {:.0?} after kubectl delete pod: \
             {} ({})",
            deleting.elapsed(),
            final_a["lastSyncResult"],
            final_a["lastSyncMessage"]
        );
        assert_eq!(final_a["lastSyncResult"], "failure", "{final_a:#}");
        assert_eq!(condition(&final_a, "Ready").0, "False", "{final_a:#}");
    } else {
        eprintln!(
            "cluster: NOTICE: status: the kubelet published no termination message of st-a's \
             sidecar (its containers were removed first); its final sync is not in the status"
        );
        let status = c.json(&["get", "pfss", "-n", ns, NAME])["status"].clone();
        assert_eq!(status["lastSyncResult"], "failure", "{status:#}");
        assert_eq!(condition(&status, "Ready").0, "False", "{status:#}");
    }
    let b = "st-b";
    let fixed = Instant::now();
    let stored = c
        .create(&app_pod(ns, b, labels.clone(), &script(b)))
        .expect("the second Pod is created");
    assert_eq!(
        names(&stored["spec"]["initContainers"]),
        [RESTORE],
        "generation 2 restores"
    );
    c.wait_for(
        "st-b restored and Running with its sidecar",
        ns,
        Duration::from_secs(120),
        || running(c, ns, b),
    );
    let healthy = wait_status(
        c,
        ns,
        "Ready True (Synced) from st-b, its restore in lastRestore",
        Duration::from_secs(60),
        |o| {
            let s = &o["status"];
            (condition(s, "Ready") == ("True".into(), "Synced".into())
                && s["lastSyncPod"] == b
                && s["lastRestore"]["pod"] == b)
                .then(|| s.clone())
        },
    );
    eprintln!(
        "cluster: status: Ready True {:.0?} after st-b was created",
        fixed.elapsed()
    );
    assert_eq!(healthy["lastSyncResult"], "success", "{healthy:#}");
    // The same sync (the sidecar's two clock readings of its end may straddle a second).
    let success = time(
        healthy["lastSuccessTime"]
            .as_str()
            .expect("lastSuccessTime"),
    );
    assert!(
        (last_sync(&healthy).unwrap() - success).num_seconds().abs() <= 1,
        "{healthy:#}"
    );
    assert!(healthy["lastSyncRule"].is_null(), "{healthy:#}");
    assert!(healthy["lastSyncMessage"].is_null(), "{healthy:#}");
    assert!(healthy["lastTransferredBytes"].is_u64(), "{healthy:#}");
    assert!(
        healthy["lastSyncDurationSeconds"].is_number(),
        "{healthy:#}"
    );
    assert_eq!(healthy["pods"], 1, "{healthy:#}");
    assert_eq!(healthy["observedGeneration"], 2, "{healthy:#}");
    let next = time(healthy["nextSyncTime"].as_str().expect("nextSyncTime"));
    assert!(
        next > last_sync(&healthy).unwrap(),
        "the next sync is after the last: {healthy:#}"
    );
    let restore = &healthy["lastRestore"];
    assert_eq!(restore["result"], "success", "{restore:#}");
    assert!(
        time(restore["time"].as_str().unwrap()) <= last_sync(&healthy).unwrap(),
        "the restore ran before the sidecar's syncs: {healthy:#}"
    );
    let pods = healthy["podStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(pods.len(), 1, "st-a is gone, st-b runs: {healthy:#}");
    assert_eq!(pods[0]["name"], b);
    assert_eq!(pods[0]["lastSyncResult"], "success");
    assert_eq!(pods[0]["consecutiveFailures"], 0);
    assert!(pods[0]["unhealthy"].is_null(), "{healthy:#}");
    let ready = ready_condition(&healthy);
    assert!(
        time(ready["lastTransitionTime"].as_str().unwrap()).timestamp() >= deleted_a.timestamp(),
        "Ready became True after the fix: {ready:#}"
    );
    assert!(
        !condition(&healthy, "Synchronizing").1.is_empty(),
        "{healthy:#}"
    );
    let events = warnings(c, ns);
    assert!(
        !events.iter().any(|(_, note)| note.contains("pod st-b")),
        "no warning about st-b: {events:?}"
    );
    // What the restore brought, what the app saw of it and wrote: at the S3 server.
    c.wait_for(
        "st-b's files at the S3 server",
        ns,
        Duration::from_secs(30),
        || {
            (fs::read(s3.path(&remote).join("seen.txt")).ok()? == b"restored by st-b\n"
                && fs::read(s3.path(&remote).join("app.txt")).ok()? == b"written by st-b\n")
                .then_some(())
        },
    );

    // 4. The printer columns (cut where the header's columns start: a blank cell stays
    // blank).
    let table = c.ok(&["get", "pfss", "-n", ns], None);
    let rows = columns(&table);
    assert_eq!(rows.len(), 1, "{table}");
    let header: Vec<&str> = rows[0].iter().map(|(h, _)| h.as_str()).collect();
    let columns_of = [
        "NAME",
        "LAST SYNC",
        "NEXT SYNC",
        "RESULT",
        "PODS",
        "READY",
        "AGE",
    ];
    assert_eq!(header, columns_of, "{table}");
    let cell = |row: &[(String, String)], h: &str| -> String {
        row.iter().find(|(k, _)| k == h).unwrap().1.clone()
    };
    let row = &rows[0];
    assert_eq!(cell(row, "NAME"), NAME, "{table}");
    for h in ["LAST SYNC", "NEXT SYNC"] {
        assert!(
            cell(row, h).parse::<DateTime<Utc>>().is_ok(),
            "{h}: {table}"
        );
    }
    assert_eq!(
        [cell(row, "RESULT"), cell(row, "PODS"), cell(row, "READY")],
        ["success", "1", "True"],
        "{table}"
    );
    assert!(!cell(row, "AGE").is_empty(), "{table}");
    let wide = c.ok(&["get", "pfss", "-n", ns, "-o", "wide"], None);
    let rows = columns(&wide);
    assert_eq!(rows.len(), 1, "{wide}");
    let header: Vec<&str> = rows[0].iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        header,
        [&columns_of[..], &["BYTES", "RULE"]].concat(),
        "{wide}"
    );
    assert!(cell(&rows[0], "BYTES").parse::<u64>().is_ok(), "{wide}");
    assert_eq!(cell(&rows[0], "RULE"), "", "no rule refused: {wide}");

    // 5. A deleted Pod's final sync: a file written just before the delete reaches the S3
    // server, and lastSyncTime is that sync's (its termination summary, read off the watch).
    c.ok(
        &[
            "exec",
            "-n",
            ns,
            b,
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "printf 'late\\n' > /data/late.txt",
        ],
        None,
    );
    let watch = c.watch(&["pod", "-n", ns, b]);
    let deleted_b = Utc::now();
    let deleting = Instant::now();
    c.ok(&["delete", "pod", "-n", ns, b, "--wait=false"], None);
    c.wait_for(
        "late.txt at the S3 server (st-b's final sync)",
        ns,
        Duration::from_secs(60),
        || (fs::read(s3.path(&remote).join("late.txt")).ok()? == b"late\n").then_some(()),
    );
    let at_s3 = deleting.elapsed();
    let final_b = wait_status(
        c,
        ns,
        "st-b's final sync (after its deletion) in lastSyncTime",
        Duration::from_secs(60),
        |o| {
            let s = &o["status"];
            (s["lastSyncPod"] == b
                && last_sync(s).is_some_and(|t| t.timestamp() >= deleted_b.timestamp()))
            .then(|| s.clone())
        },
    );
    let in_status = deleting.elapsed();
    c.wait_for("st-b gone", ns, Duration::from_secs(90), || {
        (!c.exists("pod", ns, b)).then_some(())
    });
    let versions = watch.stop();
    let summary: Value = versions
        .iter()
        .filter_map(|p| container_state(p, SIDECAR)?["state"]["terminated"]["message"].as_str())
        .next_back()
        .map(|m| serde_json::from_str(m).unwrap_or_else(|e| panic!("{m:?}: {e}")))
        .expect("st-b's sidecar left its termination message");
    eprintln!(
        "cluster: status: st-b's final sync at the S3 server {at_s3:.0?} and in the status \
         {in_status:.0?} after kubectl delete pod; its summary: {summary}"
    );
    assert_eq!(summary["result"], "success", "{summary}");
    assert_eq!(final_b["lastSyncResult"], "success", "{final_b:#}");
    assert_eq!(condition(&final_b, "Ready").0, "True", "{final_b:#}");
    // With no Pod left: none counted, no next sync; the last sync and restore stay.
    let gone = wait_status(
        c,
        ns,
        "pods 0 once st-b is gone",
        Duration::from_secs(45),
        |o| (o["status"]["pods"] == 0).then(|| o["status"].clone()),
    );
    assert!(gone["nextSyncTime"].is_null(), "{gone:#}");
    assert!(gone["podStatuses"].is_null(), "{gone:#}");
    // The final sync's time as its summary says (the sidecar's metrics, should a scrape have
    // caught the sync before the process ended, may say a second later or earlier).
    let finished = time(summary["finished"].as_str().unwrap());
    let last = last_sync(&gone).unwrap();
    assert!(
        (last - finished).num_seconds().abs() <= 1,
        "lastSyncTime is the final sync's: {gone:#}\n{summary}"
    );
    assert_eq!(gone["lastSyncPod"], b, "{gone:#}");
    assert_eq!(
        gone["lastTransferredBytes"], summary["transferredBytes"],
        "{gone:#}"
    );
    assert_eq!(gone["lastRestore"]["pod"], b, "{gone:#}");
    assert_eq!(condition(&gone, "Ready").0, "True", "{gone:#}");
    let data: Vec<String> = snapshot(&s3.path(&remote))
        .into_keys()
        .filter(|f| !f.starts_with(".volume-syncing-operator."))
        .collect();
    assert_eq!(data, ["app.txt", "late.txt", "seed.txt", "seen.txt"]);
    eprintln!("cluster: status: the case took {:.0?}", started.elapsed());
    c.drop_namespace(ns);
}
