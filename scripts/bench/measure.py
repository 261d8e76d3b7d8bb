"""The measurement runners: each runs a command once (our binary or rclone) and appends one JSON
line of its figures to a results file (`trace` prints facts.env lines instead): memory (`rss`,
`maxrss`), the valve's listing (`trace`), the phases of a sync (`phases`), a sync's summary
(`summary`), watch mode's change-to-remote latency (`watch`) and the lease's cost (`lease`)."""

import datetime
import json
import os
import random
import resource
import signal
import subprocess
import threading
import time


def status_kib(pid, keys=("VmRSS", "VmHWM", "RssAnon", "RssFile")):
    """The given /proc/PID/status fields in KiB; {} once the process is gone or a zombie."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def rss(out_path, cmd, log_path):
    """Runs a scheduled process; measures its rclone child's peak during the first sync and its
    own idle RSS one second after it logged the next run time following that sync."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finished = threading.Event()
    idle = threading.Event()
    result = {"first_sync_ok": None}

    def read_log():
        with open(log_path, "w") as log:
            for line in proc.stderr:
                log.write(line)
                log.flush()
                if "sync finished" in line or "sync failed" in line:
                    result["first_sync_ok"] = result["first_sync_ok"] or "sync finished" in line
                    finished.set()
                elif finished.is_set() and "next scheduled sync" in line:
                    idle.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    child_peak = {}  # pid -> last VmHWM seen (KiB)
    deadline = time.monotonic() + 900
    while not idle.is_set() and proc.poll() is None and time.monotonic() < deadline:
        if not finished.is_set():
            for c in children(proc.pid):
                hwm = status_kib(c, ("VmHWM",)).get("VmHWM")
                if hwm:
                    child_peak[c] = max(child_peak.get(c, 0), hwm)
            # Poll the known child's status often, rescan /proc less often.
            for _ in range(5):
                for c in list(child_peak):
                    hwm = status_kib(c, ("VmHWM",)).get("VmHWM")
                    if hwm:
                        child_peak[c] = max(child_peak[c], hwm)
                time.sleep(0.01)
        else:
            time.sleep(0.01)
    result["first_sync_seconds"] = time.monotonic() - t0
    if idle.is_set():
        time.sleep(1.0)
        result["idle"] = status_kib(proc.pid)
        time.sleep(2.0)
        result["idle_plus_3s"] = status_kib(proc.pid)
    else:
        result["error"] = "the process did not reach the idle state (see the log)"
    result["rclone_children"] = len(child_peak)
    result["rclone_peak_kib"] = max(child_peak.values()) if child_peak else None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # final sync, then exit
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    result["exit_code"] = proc.returncode
    with open(out_path, "a") as f:
        f.write(json.dumps(result) + "\n")


def maxrss(out_path, cmd):
    t0 = time.monotonic()
    code = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    with open(out_path, "a") as f:
        f.write(json.dumps({"peak_kib": peak, "exit_code": code,
                            "seconds": time.monotonic() - t0}) + "\n")


def trace(prefix, cmd):
    """Which HTTP requests an rclone listing sent, and how many list pages it fetched before
    the first line of its output arrived (the valve stops rclone at that line)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    requests = []
    first_at = [None]

    def read_stderr():
        for line in proc.stderr:
            _, sep, rest = line.partition(" : ")
            method = rest.split(" ", 1)[0]
            if sep and method in ("GET", "HEAD", "PUT", "POST", "DELETE") and " /" in rest:
                requests.append(rest.split(" HTTP/")[0])

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    for line in proc.stdout:
        if first_at[0] is None and line.strip():
            first_at[0] = len([r for r in requests if "list-type=2" in r])
    proc.wait()
    reader.join(timeout=5)
    lists = [r for r in requests if r.startswith("GET ") and "list-type=2" in r]
    heads = [r for r in requests if r.startswith("HEAD ")]
    print(f"{prefix}_heads={len(heads)}")
    print(f"{prefix}_lists={len(lists)}")
    print(f"{prefix}_others={len(requests) - len(lists) - len(heads)}")
    print(f"{prefix}_lists_before_first={'—' if first_at[0] is None else first_at[0]}")
    print(f"{prefix}_first_list={lists[0] if lists else ''}")


def phases(out_path, cmd):
    env = dict(os.environ, RUST_LOG="volume_syncing_operator=debug")
    start = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    end = time.time()
    stamps = {}
    for line in proc.stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        msg = event.get("message", "")
        if msg in ("started rclone", "sync finished") and msg not in stamps:
            ts = event["timestamp"].replace("Z", "+00:00")
            stamps[msg] = datetime.datetime.fromisoformat(ts).timestamp()
    result = {"exit_code": proc.returncode, "total": end - start}
    if len(stamps) == 2:
        result["before"] = stamps["started rclone"] - start
        result["rclone"] = stamps["sync finished"] - stamps["started rclone"]
        result["after"] = end - stamps["sync finished"]
    with open(out_path, "a") as f:
        f.write(json.dumps(result) + "\n")


def summary_of(line):
    """The summary event of a sync in a JSON log line, or None."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    msg = event.get("message", "")
    if msg == "sync finished" or msg.startswith("sync failed") or msg.startswith("sync skipped"):
        return event
    return None


def summary(out_path, label, cmd):
    """One run of a one-shot sync: its summary's duration and kind, and the process's wall time."""
    start = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    result = {"label": label, "exit_code": proc.returncode, "total": time.monotonic() - start}
    for line in proc.stderr.splitlines():
        event = summary_of(line)
        if event is not None:
            result.update(result=event.get("result"), kind=event.get("kind"),
                          seconds=float(event.get("duration_seconds", "nan")),
                          transferred_files=event.get("transferred_files"))
    with open(out_path, "a") as f:
        f.write(json.dumps(result) + "\n")


def watch(out_path, label, tree, objects, runs, cmd):
    """Change-to-remote latency in watch mode: the time from the write of one file (after its
    close) until the S3 server's data directory holds the new bytes, polled every 2 ms; and the
    duration of the sync that carried it, from its summary."""
    import queue
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    summaries = queue.Queue()
    log_tail = []

    def read_log():
        for line in proc.stderr:
            log_tail.append(line)
            del log_tail[:-50]
            event = summary_of(line)
            if event is not None:
                summaries.put(event)

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    result = {"label": label, "latency": [], "incremental": [], "kinds": [], "errors": []}

    def next_summary(timeout):
        try:
            return summaries.get(timeout=timeout)
        except queue.Empty:
            return None

    first = next_summary(900)
    if first is None:
        result["errors"].append("no first sync")
    else:
        result["first_kind"] = first.get("kind")
        result["first_result"] = first.get("result")
        result["first_seconds"] = float(first.get("duration_seconds", "nan"))
    files = sorted(os.path.relpath(os.path.join(d, n), tree)
                   for d, _, names in os.walk(tree) for n in names)
    rnd = random.Random(7)
    time.sleep(1.0)
    for i in range(runs if first is not None and first.get("result") == "success" else 0):
        rel = files[rnd.randrange(len(files))]
        content = f"watch run {label} {i}\n".encode() + rnd.randbytes(rnd.randint(512, 4096))
        target = os.path.join(objects, rel)
        with open(os.path.join(tree, rel), "wb") as f:
            f.write(content)
        t0 = time.monotonic()
        deadline = t0 + 300
        while time.monotonic() < deadline:
            try:
                with open(target, "rb") as f:
                    if f.read() == content:
                        break
            except OSError:
                pass
            time.sleep(0.002)
        else:
            result["errors"].append(f"run {i}: {rel} did not reach the remote within 300 s")
            break
        result["latency"].append(time.monotonic() - t0)
        event = next_summary(300)
        if event is None:
            result["errors"].append(f"run {i}: no summary for the sync")
            break
        result["kinds"].append(event.get("kind"))
        if event.get("result") != "success":
            result["errors"].append(f"run {i}: {event.get('message')}")
        elif event.get("kind") == "incremental":
            result["incremental"].append(float(event["duration_seconds"]))
        # Any later summary would belong to this change too (none is expected): let it pass.
        time.sleep(1.0)
        while not summaries.empty():
            extra = summaries.get()
            result["errors"].append(f"run {i}: an extra sync ({extra.get('kind')})")
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # final sync (nothing to do), then exit
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    result["exit_code"] = proc.returncode
    if result["errors"] or proc.returncode != 0:
        result["log_tail"] = "".join(log_tail[-10:])
    with open(out_path, "a") as f:
        f.write(json.dumps(result) + "\n")


def lease(out_path, argv_dir, cmd):
    for f in os.listdir(argv_dir):
        os.unlink(os.path.join(argv_dir, f))
    start = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.time()
    # With -v: "acquired the lease", rclone's own lines, then (debug) "released the lease",
    # then the summary. rclone's last line after the acquisition and before the release marks
    # the end of the sync; with none (the dry run during the settle found nothing to do, and
    # the sync was left out), the sync phase is empty.
    at = {}
    for line in proc.stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        ts = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        message = event.get("message", "")
        if "acquired the lease" in message and "acquired" not in at:
            at["acquired"] = at["finished"] = ts
        elif event.get("target") == "rclone" and "acquired" in at and "released" not in at:
            at["finished"] = ts
        elif "released the lease" in message and "released" not in at:
            at["released"] = ts
    calls = {}
    for f in os.listdir(argv_dir):
        with open(os.path.join(argv_dir, f), "rb") as fh:
            args = fh.read().split(b"\0")
        op = args[2].decode() if len(args) > 2 and args[0] == b"--config" else "?"
        if b"--dry-run" in args:
            op += " --dry-run"
        calls[op] = calls.get(op, 0) + 1
    row = {"exit_code": proc.returncode, "total": end - start, "calls": calls}
    if len(at) == 3:
        row["acquire"] = at["acquired"] - start
        row["sync"] = at["finished"] - at["acquired"]
        row["release"] = at["released"] - at["finished"]
    with open(out_path, "a") as f:
        f.write(json.dumps(row) + "\n")
