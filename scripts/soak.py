#!/usr/bin/env python3
"""Soak test: a scheduled sidecar syncing a tree that a writer keeps changing, while the S3
server is killed and restarted every few minutes and rclone is killed now and then.

Usage: scripts/soak.py BINARY RCLONE [SECONDS]   (make soak; SOAK_SECONDS, default 3600)

Checks, and prints as a Markdown table (also written to target/soak-report.md):
- the remote never loses a file that exists locally: a set of stable files, written once and
  never deleted locally, must stay on the remote once uploaded (checked every second);
- after SIGTERM (one final sync) the remote equals the local tree, byte for byte;
- the sidecar's RSS stays flat (first sample after a minute vs. the last and the maximum);
- the final sync succeeded (exit 0).
Not part of `make test`: it runs for as long as it is told.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ACCESS, SECRET = "AKIDSOAKTEST", "soak-secret-key-0123456789"
BUCKET_PATH = "bucket/soak"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, rclone, data, port):
        self.rclone, self.data, self.port, self.proc = rclone, data, port, None

    def start(self):
        deadline = time.time() + 30
        while True:
            self.proc = subprocess.Popen(
                [self.rclone, "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
                 "--auth-key", f"{ACCESS},{SECRET}", "--config", "/dev/null", self.data],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(50):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    if self.proc.poll() is not None:
                        break
                    time.sleep(0.1)
            self.stop()
            if time.time() > deadline:
                raise SystemExit("soak: cannot (re)start rclone serve s3")
            time.sleep(0.5)

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rclone_children(pid):
    """PIDs of rclone processes started by the sidecar (its own process groups)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append(int(entry))
        except OSError:
            pass
    return out


def snapshot(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.startswith(".volume-syncing-operator"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def main():
    binary, rclone = sys.argv[1], sys.argv[2]
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 3600
    restart_every = int(os.environ.get("SOAK_SERVER_RESTART_EVERY", "150"))
    kill_every = int(os.environ.get("SOAK_RCLONE_KILL_EVERY", "45"))
    work = tempfile.mkdtemp(prefix="vso-soak-")
    data, tree = os.path.join(work, "data"), os.path.join(work, "tree")
    os.makedirs(os.path.join(data, "bucket"))
    os.makedirs(tree)
    remote = os.path.join(data, BUCKET_PATH)
    stable = [f"stable/s{i}.txt" for i in range(20)]
    for name in stable:
        os.makedirs(os.path.join(tree, "stable"), exist_ok=True)
        with open(os.path.join(tree, name), "w") as f:
            f.write(f"stable {name}\n")

    server = Server(rclone, data, free_port())
    server.start()
    metrics_port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": work, "HOME": work,
        "REMOTE_TYPE": "s3", "REMOTE_PROVIDER": "Rclone", "REMOTE_ACCESS_KEY_ID": ACCESS,
        "REMOTE_SECRET_ACCESS_KEY": SECRET, "REMOTE_ENDPOINT": f"http://127.0.0.1:{server.port}",
        "RCLONE_BINARY": rclone,
    }
    log = open(os.path.join(work, "sidecar.log"), "w")
    sidecar = subprocess.Popen(
        [binary, "--log-format", "json", "sync-to-remote", "-s", tree, "-d", BUCKET_PATH,
         "--schedule", "@every 5s", "--metrics-address", f"127.0.0.1:{metrics_port}",
         "--pid-path", os.path.join(work, "vso.pid"), "--shutdown-timeout", "2m"],
        env=env, stdout=log, stderr=subprocess.STDOUT)

    stop = threading.Event()
    events = {"writes": 0, "deletes": 0, "server_restarts": 0, "rclone_kills": 0}
    violations = []

    def writer():
        rnd = random.Random(1)
        while not stop.is_set():
            name = f"churn/d{rnd.randrange(10)}/f{rnd.randrange(200)}.bin"
            path = os.path.join(tree, name)
            if rnd.random() < 0.25 and os.path.exists(path):
                os.remove(path)
                events["deletes"] += 1
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path + ".tmp", "wb") as f:
                    f.write(os.urandom(rnd.randrange(1, 64 * 1024)))
                os.replace(path + ".tmp", path)
                events["writes"] += 1
            stop.wait(0.2)

    def watcher():
        seen = set()
        while not stop.is_set():
            for name in stable:
                present = os.path.exists(os.path.join(remote, name))
                if present:
                    seen.add(name)
                elif name in seen:
                    violations.append(f"{time.strftime('%H:%M:%S')} {name} vanished from the remote")
                    seen.discard(name)
            stop.wait(1)

    last_metrics = {}

    def scrape():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("volume_syncing_operator_syncs_total{direction=\"upload\""):
                        key = line.split('result="')[1].split('"')[0]
                        last_metrics[key] = float(line.rsplit(" ", 1)[1])
        except OSError:
            pass

    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=watcher, daemon=True)]
    for t in threads:
        t.start()
    started = time.time()
    next_restart, next_kill = started + restart_every, started + kill_every
    next_sample = started
    rss = []
    while time.time() - started < seconds:
        time.sleep(1)
        now = time.time()
        if sidecar.poll() is not None:
            violations.append(f"the sidecar exited early with {sidecar.returncode}")
            break
        if now >= next_sample:
            rss.append((int(now - started), rss_kib(sidecar.pid)))
            scrape()
            next_sample = now + 10
        if now >= next_restart:
            server.stop()
            time.sleep(random.uniform(3, 15))
            server.start()
            events["server_restarts"] += 1
            next_restart = time.time() + restart_every
        if now >= next_kill:
            for pid in rclone_children(sidecar.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    events["rclone_kills"] += 1
                except OSError:
                    pass
            next_kill = now + kill_every
    stop.set()
    for t in threads:
        t.join()
    scrape()
    sidecar.send_signal(signal.SIGTERM)
    code = sidecar.wait(timeout=300)
    server.stop()
    local, uploaded = snapshot(tree), snapshot(remote)
    equal = local == uploaded
    differ = sorted(set(local) ^ set(uploaded)) + sorted(
        k for k in set(local) & set(uploaded) if local[k] != uploaded[k])
    warm = [r for t, r in rss if t >= 60] or [r for _, r in rss] or [0]
    summary = {
        "seconds": int(time.time() - started),
        **events,
        "syncs": {k: int(v) for k, v in last_metrics.items()},
        "final_sync_exit": code,
        "remote_equals_local": equal,
        "files": len(local),
        "differences": differ[:10],
        "stable_file_vanished": violations,
        "rss_kib_first_max_last": [warm[0], max(warm), warm[-1]],
    }
    # Flat: the maximum stays within twice the first sample after warm-up, plus 8 MiB.
    ok = equal and code == 0 and not violations and 0 < max(warm) < 2 * warm[0] + 8192
    rows = [
        ("duration", f"{summary['seconds']} s"),
        ("writes / deletes by the writer", f"{events['writes']} / {events['deletes']}"),
        ("S3 server killed and restarted", str(events["server_restarts"])),
        ("rclone killed (SIGKILL)", str(events["rclone_kills"])),
        ("syncs (upload) by result", ", ".join(f"{k} {v}" for k, v in sorted(summary["syncs"].items()))),
        ("final sync after SIGTERM", f"exit {code}"),
        ("remote equals local after it", f"{equal} ({len(local)} files)"),
        ("stable files that vanished from the remote", str(len(violations))),
        ("sidecar RSS KiB (after 1 min, max, last)", " / ".join(map(str, summary["rss_kib_first_max_last"]))),
        ("verdict", "PASS" if ok else "FAIL"),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    print(json.dumps(summary), file=sys.stderr)
    os.makedirs("target", exist_ok=True)
    with open("target/soak-report.md", "w") as f:
        f.write(table + "\n")
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"soak: FAILED; kept {work} (sidecar.log)", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
