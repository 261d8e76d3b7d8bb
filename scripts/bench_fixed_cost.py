#!/usr/bin/env python3
"""Section 11 of `make bench` (issue 28): the fixed costs of a run, before and after, side by side.

Why a section of its own: a one-shot upload used to take the remote lease with one rclone process
per call (read, write, a fixed 5 s settle delay, read back) before doing anything else. After
issue 28 a one-shot upload that would write nothing takes no lease at all (a read-only look: a dry
run of its sync, the remote's manifest and record), the acquisition goes through one `rclone rcd`
on a unix socket, the settle delay is 750 ms, and the upload's read-only checks run during it.
Here three variants do the same work,
interleaved (A,B,C, then the next repetition in another order) so that the load of the machine
hits them alike; the first run of each variant is a warm-up and is not counted:

  after    AFTER_BIN (the binary of the change)
  before   BEFORE_BIN (the release built from the revision before it, BENCH_BEFORE28_REV)
  plain    plain `rclone sync SRC remote:DST --transfers 64 --checkers 64`, same [remote] section

Rows (wall time of the whole command, time.monotonic(); median, min, max):
  1. one-shot `sync-to-remote` with nothing to do, a tree of BENCH_FC_FILES small files, local
     S3; also the peak summed RSS and PSS of the process tree (ours + every rclone), every 50 ms
  2. the same at BENCH_FC_DELAY ms one way (scripts/delay-proxy.py in front of the server)
  3. a `--schedule` process: the `duration_seconds` of its no-change runs after the first (the
     lease is held by then), against the plain rclone wall time of row 1
  4. a dry run that prints one line per file: a tree of BENCH_FC_DRY_FILES files uploaded once,
     then every file's mtime changed, then `sync-to-remote --dry-run` / `rclone sync --dry-run`

Usage (bench.sh runs these):
  bench_fixed_cost.py run WORK RESULTS AFTER_BIN BEFORE_BIN RCLONE
                       measure; the S3 server of scripts/s3-server.sh must run with its state in
                       WORK and its REMOTE_* in the environment; appends to RESULTS/fixed-cost.jsonl
  bench_fixed_cost.py report RESULTS OUT
                       writes the section into OUT (between its markers; appended if absent)
Environment (defaults in brackets):
  BENCH_FC_RUNS [10] counted repetitions per variant and row (each after one warm-up run)
  BENCH_FC_FILES [2000] files of the tree of rows 1-3 (1-4 KiB, 50 per directory)
  BENCH_FC_DRY_FILES [20000] files of the tree of row 4
  BENCH_FC_DELAY [10] one-way delay of row 2, ms
  BENCH_FC_SCHEDULE ["@every 3s"] the schedule of row 3
  BENCH_FC_ROWS ["1 2 3 4"] the rows to run
  BENCH_BEFORE28_REV [a830176] the revision BEFORE_BIN was built from (for the report)
  BENCH_NOTE [""] a remark printed in the section (e.g. where AFTER_BIN came from)
"""
import datetime
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_latency import fmt_s, make_small, tree_memory_kib, write_section  # noqa: E402  (definitions only, no side effects)

MARK_BEGIN = "<!-- bench section 11 (fixed costs): begin -->"
MARK_END = "<!-- bench section 11 (fixed costs): end -->"
VARIANTS = ["after", "before", "plain"]
DEFAULTS = {"runs": 10, "files": 2000, "dry_files": 20000, "delay_ms": 10,
            "schedule": "@every 3s"}
SAMPLE_EVERY = 0.05


def env(name, default):
    return os.environ.get(name, default)


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def make_tree(root, n, seed=28):
    """n files of 1-4 KiB, 50 per directory."""
    make_small(root, n, seed, max_bytes=4096)


def summary_of(line):
    """The summary event of a sync in one JSON log line of ours, or None."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    msg = event.get("message", "")
    if msg == "sync finished" or msg.startswith("sync failed") or msg.startswith("sync skipped"):
        return event
    return None


def binary_facts(path):
    """Path, size and modification time (UTC) of a binary: which build was measured."""
    st = os.stat(path)
    return {"path": path, "bytes": st.st_size,
            "mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(st.st_mtime))}


def stamp_of(event):
    """The timestamp of a JSON log event of ours, in seconds since the epoch (or None)."""
    try:
        return datetime.datetime.fromisoformat(
            event["timestamp"].replace("Z", "+00:00")).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def timed(argv, env_vars, log, rss=False):
    """Runs argv (no shell), its stdout and stderr into the file log (truncated); returns
    (seconds, (peak summed RSS, peak summed PSS) of its process tree in KiB or None, exit code)."""
    peak = [0, 0]
    with open(log, "wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(argv, env=env_vars, stdout=out, stderr=out, start_new_session=True)
        done = threading.Event()

        def sample():
            while not done.is_set():
                rss, pss = tree_memory_kib(proc.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                done.wait(SAMPLE_EVERY)

        sampler = threading.Thread(target=sample) if rss else None
        if sampler:
            sampler.start()
        code = proc.wait()
        elapsed = time.monotonic() - start
        done.set()
        if sampler:
            sampler.join()
    return elapsed, (tuple(peak) if rss else None), code


def log_facts(log):
    """What a run's log says: the summary of ours (if any) and the number of lines."""
    facts = {"lines": 0}
    with open(log, errors="replace") as f:
        for line in f:
            facts["lines"] += 1
            event = summary_of(line)
            if event is not None:
                facts.update(result=event.get("result"),
                             duration_seconds=event.get("duration_seconds"),
                             transferred_files=event.get("transferred_files"),
                             deleted_files=event.get("deleted_files"))
    return facts


def run(work, results, after, before, rclone):
    runs = int(env("BENCH_FC_RUNS", str(DEFAULTS["runs"])))
    files = int(env("BENCH_FC_FILES", str(DEFAULTS["files"])))
    dry_files = int(env("BENCH_FC_DRY_FILES", str(DEFAULTS["dry_files"])))
    delay = int(env("BENCH_FC_DELAY", str(DEFAULTS["delay_ms"])))
    schedule = env("BENCH_FC_SCHEDULE", DEFAULTS["schedule"])
    rows_wanted = [int(r) for r in env("BENCH_FC_ROWS", "1 2 3 4").split()]
    out_path = os.path.join(results, "fixed-cost.jsonl")
    sched_path = os.path.join(results, "fixed-cost-schedule.jsonl")
    binaries = {"after": after, "before": before}

    def git(*args):
        try:
            return subprocess.check_output(["git", "-C", HERE, *args], text=True,
                                           stderr=subprocess.DEVNULL).strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "nproc": subprocess.check_output(["nproc"], text=True).strip(),
        "load_start": loadavg(), "load_end": loadavg(),
        "head": head, "dirty": dirty,
        "before_rev": env("BENCH_BEFORE28_REV", "a830176"),
        "after_version": subprocess.check_output([after, "--version"], text=True).strip(),
        "before_version": subprocess.check_output([before, "--version"], text=True).strip(),
        "rclone_version": subprocess.check_output([rclone, "version"], text=True).splitlines()[0],
        "after_binary": binary_facts(after), "before_binary": binary_facts(before),
        "note": env("BENCH_NOTE", ""),
        "runs": runs, "files": files, "dry_files": dry_files, "delay_ms": delay,
        "schedule": schedule, "rows": rows_wanted, "row_load": {}, "commands": {},
        "notes": [],
    }

    def save_facts():
        shown = dict(facts, commands={
            k: c.replace(work, "$WORK").replace(after, "AFTER_BIN").replace(before, "BEFORE_BIN")
            .replace(rclone, "rclone") for k, c in facts["commands"].items()})
        with open(os.path.join(results, "fixed-cost-facts.json"), "w") as f:
            json.dump(shown, f, indent=1)

    save_facts()
    port = open(os.path.join(work, "port")).read().strip()
    base_env = dict(os.environ, RCLONE_BINARY=rclone)
    logs = os.path.join(work, "fc-logs")
    os.makedirs(logs, exist_ok=True)

    def write_conf(path, endpoint):
        with open(path, "w") as f:
            f.write("[remote]\n"
                    f"type = {base_env['REMOTE_TYPE']}\n"
                    f"provider = {base_env['REMOTE_PROVIDER']}\n"
                    f"access_key_id = {base_env['REMOTE_ACCESS_KEY_ID']}\n"
                    f"endpoint = {endpoint}\n"
                    f"secret_access_key = {base_env['REMOTE_SECRET_ACCESS_KEY']}\n")
        os.chmod(path, 0o644)

    direct_conf = os.path.join(work, "fc-rclone.conf")
    write_conf(direct_conf, base_env["REMOTE_ENDPOINT"])

    def argv(variant, src, path, conf, dry=False):
        if variant == "plain":
            return [rclone, "--config", conf, "sync", src, f"remote:demo/{path}",
                    "--transfers", "64", "--checkers", "64"] + (["--dry-run"] if dry else [])
        return ([binaries[variant], "--log-format", "json", "sync-to-remote"]
                + (["--dry-run"] if dry else []) + ["-s", src, "-d", f"demo/{path}"])

    def seed(variant, src, path):
        """The first upload of a path, directly to the server, by the variant itself."""
        log = os.path.join(logs, f"seed-{path}.log")
        secs, _, code = timed(argv(variant, src, path, direct_conf), base_env, log)
        print(f"bench: seeded demo/{path} ({variant}): {secs:.2f} s, exit {code}", file=sys.stderr)
        if code != 0:
            sys.stderr.write(open(log, errors="replace").read()[-3000:])
            raise SystemExit(f"bench: the first upload of demo/{path} by {variant} failed")

    def interleaved(row, src, paths, conf, env_vars, dry=False, rss=False):
        """1 + runs repetitions of the three variants, order rotated per repetition."""
        facts["row_load"][str(row)] = {"start": loadavg()}
        for rep in range(runs + 1):
            order = VARIANTS[rep % 3:] + VARIANTS[:rep % 3]
            for variant in order:
                cmd = argv(variant, src, paths[variant], conf, dry)
                facts["commands"][f"{row} {variant}"] = shlex.join(cmd)
                log = os.path.join(logs, f"row{row}-{variant}.log")
                secs, peak, code = timed(cmd, env_vars, log, rss)
                r = {"row": row, "variant": variant, "rep": rep, "warmup": rep == 0,
                     "seconds": secs, "peak_kib": peak and peak[0],
                     "peak_pss_kib": peak and peak[1], "code": code, **log_facts(log)}
                with open(out_path, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"bench: 11.{row} {variant} run {rep}/{runs}"
                      f"{' (warm-up)' if rep == 0 else ''}: {secs:.2f} s"
                      + (f", peak RSS {peak[0] / 1024:.0f} MiB, PSS {peak[1] / 1024:.0f} MiB" if peak else "")
                      + f", {r['lines']} log lines, exit {code}", file=sys.stderr)
                if code != 0:
                    sys.stderr.write(open(log, errors="replace").read()[-2000:])
            facts["load_end"] = loadavg()
            save_facts()
        facts["row_load"][str(row)]["end"] = loadavg()
        save_facts()

    tree = os.path.join(work, "fc-tree")
    if set(rows_wanted) & {1, 2, 3}:
        make_tree(tree, files)

    # Row 1: one-shot, nothing to do, local S3.
    if 1 in rows_wanted:
        paths = {v: f"fc1-{v}" for v in VARIANTS}
        for v in VARIANTS:
            seed(v, tree, paths[v])
        interleaved(1, tree, paths, direct_conf, base_env, rss=True)

    # Row 2: the same through the delay proxy.
    if 2 in rows_wanted:
        paths = {v: f"fc2-{v}" for v in VARIANTS}
        for v in VARIANTS:
            seed(v, tree, paths[v])
        # The proxy's own log (a traceback of cancelled tasks when it is stopped) into a file.
        proxy_log = open(os.path.join(logs, "delay-proxy.log"), "w")
        proxy = subprocess.Popen([sys.executable, os.path.join(HERE, "delay-proxy.py"), port,
                                  str(delay)], stdout=subprocess.PIPE, stderr=proxy_log, text=True)
        try:
            pport = proxy.stdout.readline().strip()
            if not pport:
                raise SystemExit("bench: scripts/delay-proxy.py did not start")
            endpoint = f"http://127.0.0.1:{pport}"
            proxy_conf = os.path.join(work, "fc-rclone-delay.conf")
            write_conf(proxy_conf, endpoint)
            interleaved(2, tree, paths, proxy_conf, dict(base_env, REMOTE_ENDPOINT=endpoint))
        finally:
            proxy.terminate()
            proxy.wait()
            proxy_log.close()

    # Row 3: a scheduled process, its runs after the first.
    if 3 in rows_wanted:
        facts["row_load"]["3"] = {"start": loadavg()}
        for v in ("after", "before"):
            path = f"fc3-{v}"
            seed(v, tree, path)
            cmd = [binaries[v], "--log-format", "json", "sync-to-remote", "--schedule", schedule,
                   "-s", tree, "-d", f"demo/{path}",
                   "--pid-path", os.path.join(work, f"fc-sched-{v}.pid")]
            facts["commands"][f"3 {v}"] = shlex.join(cmd)
            log = os.path.join(logs, f"row3-{v}.log")
            summaries, got = [], threading.Event()
            with open(log, "w") as out:
                proc = subprocess.Popen(cmd, env=base_env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)

                def read(proc=proc, out=out, summaries=summaries, got=got):
                    started = None
                    for line in proc.stderr:
                        out.write(line)
                        event = summary_of(line)
                        if event is None:
                            if '"starting a sync"' in line:
                                try:
                                    started = stamp_of(json.loads(line))
                                except ValueError:
                                    pass
                            continue
                        end = stamp_of(event)
                        event["span"] = (end - started if end is not None and started is not None
                                         else None)
                        started = None
                        summaries.append(event)
                        if len(summaries) >= runs + 1:
                            got.set()
                    got.set()

                reader = threading.Thread(target=read)
                reader.start()
                every = 3.0
                if schedule.startswith("@every ") and schedule.endswith("s"):
                    try:
                        every = float(schedule[len("@every "):-1])
                    except ValueError:
                        pass
                if not got.wait((runs + 1) * every + 180):
                    facts["notes"].append(f"row 3 {v}: fewer than {runs + 1} runs within the "
                                          "time allowed")
                before_term = len(summaries)
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout=330)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
                    facts["notes"].append(f"row 3 {v}: killed after SIGTERM did not end it "
                                          f"within 330 s (its lease is left on demo/{path})")
                reader.join()
            for i, event in enumerate(summaries[:before_term]):
                r = {"variant": v, "run": i, "first": i == 0, "message": event.get("message"),
                     "result": event.get("result"), "kind": event.get("kind"),
                     "seconds": float(event.get("duration_seconds", "nan")),
                     "span": event.get("span"),
                     "transferred_files": event.get("transferred_files"), "exit_code": code}
                with open(sched_path, "a") as f:
                    f.write(json.dumps(r) + "\n")
            print(f"bench: 11.3 {v}: {before_term} runs before SIGTERM, durations "
                  + ", ".join(f"{float(e.get('duration_seconds', 'nan')):.2f}"
                              for e in summaries[:before_term]) + f"; exit {code}",
                  file=sys.stderr)
            facts["load_end"] = loadavg()
            save_facts()
        facts["row_load"]["3"]["end"] = loadavg()
        save_facts()

    # Row 4: a dry run that prints one line per file.
    if 4 in rows_wanted:
        dtree = os.path.join(work, "fc-dry-tree")
        make_tree(dtree, dry_files, seed=2828)
        paths = {v: f"fc4-{v}" for v in VARIANTS}
        for v in VARIANTS:
            seed(v, dtree, paths[v])
        # A new mtime for every file, the same content: rclone compares size and time, then the
        # MD5, and logs one line per file.
        stamp = time.time() - 86400
        for root, _, names in os.walk(dtree):
            for name in names:
                os.utime(os.path.join(root, name), (stamp, stamp))
        interleaved(4, dtree, paths, direct_conf, base_env, dry=True)
        # One line of each variant's log, as an example of what it prints per file.
        examples = {}
        for v in VARIANTS:
            with open(os.path.join(logs, f"row4-{v}.log"), errors="replace") as f:
                for line in f:
                    if "dry-run" in line or "dry run" in line.lower():
                        if "file-" in line:
                            examples[v] = line.strip()[:300]
                            break
        facts["dry_examples"] = examples

    facts["load_end"] = loadavg()
    save_facts()


# --- the report ------------------------------------------------------------------------------
def report(results, out):
    facts = json.load(open(os.path.join(results, "fixed-cost-facts.json")))
    path = os.path.join(results, "fixed-cost.jsonl")
    rows = [json.loads(x) for x in open(path)] if os.path.exists(path) else []
    spath = os.path.join(results, "fixed-cost-schedule.jsonl")
    sched = [json.loads(x) for x in open(spath)] if os.path.exists(spath) else []
    runs = facts["runs"]
    counted = [r for r in rows if not r["warmup"]]
    groups = {}
    for r in counted:
        if r["code"] == 0:
            groups.setdefault((r["row"], r["variant"]), []).append(r)
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in groups.items()}
    source = f"`{facts['head']}`" + (" with uncommitted changes" if facts["dirty"] else "")
    full = all(facts[k] == v for k, v in DEFAULTS.items()) and facts["rows"] == [1, 2, 3, 4]

    L = [MARK_BEGIN, "", "## 11. Fixed costs of a run: before and after (issue 28)", "",
         "Generated by `scripts/bench_fixed_cost.py` (the end of `make bench`, or "
         "`BENCH_SECTIONS=11 scripts/bench.sh` alone); the next run replaces this section.", ""]
    if not full:
        L += ["**Reduced sizes or rows** (defaults: "
              + ", ".join(f"{k} {v}" for k, v in DEFAULTS.items()) + ", rows 1-4; this run: "
              + ", ".join(f"{k} {facts[k]}" for k in DEFAULTS) + f", rows {facts['rows']}): "
              "a check of the harness, not a result.", ""]
    L += ["### How to read this", "",
          f"- **before**: the release binary built from `{facts['before_rev']}`, the commit "
          "before issue 28's change of the lease. A one-shot upload takes the remote lease with "
          "one rclone process per call: read it, write it, wait the fixed 5 s settle delay, "
          "read it back; the upload's read-only checks and the sync come after it.",
          "- **after**: the binary under test (`VSO_BINARY`; `make bench` builds it from the "
          "working tree), with issue 28's change: a one-shot upload first looks, read-only, "
          "at what it would write (rclone's dry run of the sync, stopped at its first change; "
          "the remote's manifest and upload record through one `rclone rcd`); when that is "
          "nothing, it ends without taking the lease (rows 1 and 2). Otherwise the lease's "
          "acquisition goes through the same `rcd` (its read, write and read-back), the settle "
          "delay is 750 ms, and the upload's read-only checks run during it.",
          "- **plain**: `rclone sync SRC remote:demo/PATH --transfers 64 --checkers 64` with a "
          "config file holding the same `[remote]` section: no lease, no safety checks, no "
          "metadata manifest. It is the floor of the same transfer work, not an alternative.",
          f"- Each figure is the wall time of the whole command, process start to exit, over "
          f"{runs} counted runs per variant (median, min, max); one warm-up run per variant "
          "came first and is not counted. In every repetition the three variants ran one after "
          "the other, in an order rotated each repetition, so that changes of the machine's "
          "load fall on all of them alike. Each variant uploads to its own remote path, "
          "uploaded once by that variant before the timed runs.",
          "- `÷ plain` and `÷ before` are ratios of medians.",
          "- Our binaries run with `--log-format json` (to read each run's summary); their "
          "defaults otherwise.", ""]
    la = lambda x: " ".join(x)

    def binary_row(b):
        if not b:
            return ""
        shown = b["path"].replace(os.getcwd() + os.sep, "")
        return f"; `{shown}`, {b['bytes']} bytes, modified {b['mtime']} UTC"

    L += ["### Machine and sources", "", "| | |", "|---|---|",
          f"| date (UTC) | {facts['date']} |",
          f"| cores (`nproc`) | {facts['nproc']} |",
          f"| load average at start / end | {la(facts['load_start'])} / {la(facts['load_end'])} |",
          f"| rclone | {facts['rclone_version']} |",
          f"| working tree at the start (`git rev-parse --short HEAD`) | {source} |",
          f"| after | {facts['after_version']}{binary_row(facts.get('after_binary'))} |",
          f"| before | {facts['before_version']}, built from `{facts['before_rev']}`"
          f"{binary_row(facts.get('before_binary'))} |",
          f"| tree of rows 1-3 | {facts['files']} files of 1-4 KiB, 50 per directory |",
          f"| tree of row 4 | {facts['dry_files']} files of 1-4 KiB, 50 per directory |",
          "", "The machine was not otherwise idle: the load averages above and per row below "
          "say how busy it was; they count the benchmark's own processes (our binary, rclone, "
          "`rclone serve s3`, the delay proxy).", ""]
    failures = [r for r in counted if r["code"] != 0]
    if failures:
        L += [f"**{len(failures)} counted run(s) failed** (exit code ≠ 0; left out of the "
              "figures): " + ", ".join(f"row {r['row']} {r['variant']} run {r['rep']} "
                                       f"(exit {r['code']})" for r in failures[:12]), ""]
    if facts.get("note"):
        L += [f"**Note on this run**: {facts['note']}", ""]
    for note in facts.get("notes", []):
        L += [f"**Note**: {note}.", ""]

    def table(row, rss=False, extra=None):
        head = "| variant | median | min | max | n | ÷ plain | ÷ before |"
        sep = "|---|---|---|---|---|---|---|"
        if rss:
            head += " peak RSS, median (min–max) | peak PSS, median (min–max) |"
            sep += "---|---|"
        T = [head, sep]
        for v in VARIANTS:
            rs = groups.get((row, v))
            if not rs:
                T.append(f"| {v} | not measured |" + " |" * (7 if rss else 5))
                continue
            xs = [r["seconds"] for r in rs]
            m = med[(row, v)]
            p = med.get((row, "plain"))
            b = med.get((row, "before"))
            line = (f"| {v} | **{fmt_s(m)}** | {fmt_s(min(xs))} | {fmt_s(max(xs))} | {len(xs)} "
                    f"| {f'{m / p:.2f}' if p else '—'} | {f'{m / b:.2f}' if b else '—'} |")
            if rss:
                for key in ("peak_kib", "peak_pss_kib"):
                    ks = [r[key] / 1024 for r in rs if r.get(key)]
                    line += (f" {statistics.median(ks):.1f} MiB ({min(ks):.1f}–{max(ks):.1f}) |"
                             if ks else " — |")
            T.append(line)
        return T

    def row_load(row):
        rl = facts["row_load"].get(str(row), {})
        if "start" in rl and "end" in rl:
            return f"Load average at the row's start / end: {la(rl['start'])} / {la(rl['end'])}."
        return ""

    def nothing_check(row):
        ours = [r for r in counted if r["row"] == row and r["variant"] != "plain"
                and r["code"] == 0]
        moved = sorted({(r.get("transferred_files"), r.get("deleted_files")) for r in ours},
                       key=str)
        return ("Our runs' summaries: transferred / deleted files "
                + ", ".join(f"{t} / {d}" for t, d in moved) + ".") if moved else ""

    def commands(row):
        C = ["```"]
        for v in VARIANTS:
            c = facts["commands"].get(f"{row} {v}")
            if c:
                C.append(f"{v:7} {c}")
        return C + ["```"]

    if (1, "after") in groups or (1, "before") in groups or (1, "plain") in groups:
        L += ["### Row 1: one-shot upload, nothing to do, local S3", "",
              f"`sync-to-remote` of the tree of {facts['files']} files to a path that already "
              "holds it, against `rclone serve s3` on 127.0.0.1. Peak RSS: the summed `Rss` "
              "of the command's whole process tree (ours, its `rclone rcd`, every rclone it "
              f"starts), sampled every {int(SAMPLE_EVERY * 1000)} ms from "
              "/proc/PID/smaps_rollup (a process that lives less than that can be missed); "
              "peak PSS the same with `Pss`, which shares the rclone executable's pages among "
              "the rclone processes that map them instead of counting them once per process.", ""]
        L += table(1, rss=True) + [""]
        L += [x for x in (nothing_check(1), row_load(1)) if x] + [""] + commands(1) + [""]
    if any((2, v) in groups for v in VARIANTS):
        L += [f"### Row 2: the same at {facts['delay_ms']} ms one way", "",
              "The S3 server behind `scripts/delay-proxy.py UPSTREAM_PORT "
              f"{facts['delay_ms']}` (every chunk forwarded {facts['delay_ms']} ms after it "
              "arrived, in each direction; a new connection also waits one round trip): "
              "`REMOTE_ENDPOINT` for our binaries and `endpoint` in plain rclone's config point "
              "at the proxy. Separate remote paths from row 1, uploaded directly (without the "
              "proxy) before the timed runs.", ""]
        L += table(2) + [""]
        L += [x for x in (nothing_check(2), row_load(2)) if x] + [""] + commands(2) + [""]
    if sched:
        p1 = med.get((1, "plain"))
        L += ["### Row 3: a `--schedule` run after the first, nothing to do, local S3", "",
              f"One `sync-to-remote --schedule '{facts['schedule']}'` process per binary "
              f"(after, then before, not interleaved), on the tree of row 1, to a path that "
              f"already held it; it ran {runs + 1} scheduled runs, then got SIGTERM (its final "
              "sync is not counted). The figure is each run's `duration_seconds` from its JSON "
              "summary line (measured inside the running process: no process start), the first "
              "run left out. **The scheduled process holds its lease already from its first run "
              "(renewed on its own timer), so neither binary pays the settle delay in these "
              "runs.** `plain` is the wall time of plain rclone in row 1 (a process start "
              "included), for comparison. The span column is the time between the log events "
              "\"starting a sync\" and \"sync finished\" of the same run: in the first run it "
              "includes taking the lease, which `duration_seconds` does not.", ""]
        T = ["| variant | median | min | max | n | ÷ plain (row 1) | span, median "
             "| first run (not counted): `duration_seconds` / span |",
             "|---|---|---|---|---|---|---|---|"]
        for v in ("after", "before"):
            rs = [r for r in sched if r["variant"] == v and not r["first"]
                  and r["result"] == "success"]
            first = [r for r in sched if r["variant"] == v and r["first"]]
            if not rs:
                T.append(f"| {v} | not measured | | | | | | |")
                continue
            xs = [r["seconds"] for r in rs]
            m = statistics.median(xs)
            spans = [r["span"] for r in rs if r.get("span") is not None]
            f0 = first[0] if first else None
            T.append(f"| {v} | **{fmt_s(m)}** | {fmt_s(min(xs))} | {fmt_s(max(xs))} | {len(xs)} "
                     f"| {f'{m / p1:.2f}' if p1 else '—'} "
                     f"| {fmt_s(statistics.median(spans)) if spans else '—'} "
                     f"| {fmt_s(f0['seconds']) if f0 else '—'} / "
                     f"{fmt_s(f0['span']) if f0 and f0.get('span') is not None else '—'} |")
        if p1:
            xs = [r["seconds"] for r in groups[(1, "plain")]]
            T.append(f"| plain (row 1, wall time) | **{fmt_s(p1)}** | {fmt_s(min(xs))} "
                     f"| {fmt_s(max(xs))} | {len(xs)} | 1.00 | — | — |")
        L += T + [""]
        bad = [r for r in sched if r["result"] != "success"]
        if bad:
            L += [f"**{len(bad)} scheduled run(s) did not succeed**: "
                  + ", ".join(f"{r['variant']} run {r['run']}: {r['message']}" for r in bad[:10]),
                  ""]
        kinds = sorted({(r["variant"], r.get("kind"), r.get("transferred_files"))
                        for r in sched}, key=str)
        L += ["Summaries (variant, kind, transferred files): "
              + "; ".join(f"{v} {k} {t}" for v, k, t in kinds) + ". "
              + (f"Exit codes after SIGTERM: "
                 + ", ".join(f"{v} {next(r['exit_code'] for r in sched if r['variant'] == v)}"
                             for v in ("after", "before") if any(r['variant'] == v for r in sched))
                 + ". ") + row_load(3), ""]
        L += ["```"] + [f"{v:7} {facts['commands'][f'3 {v}']}" for v in ("after", "before")
                        if f"3 {v}" in facts["commands"]] + ["```", ""]
    if any((4, v) in groups for v in VARIANTS):
        L += ["### Row 4: a dry run that prints one line per file", "",
              f"A tree of {facts['dry_files']} files, uploaded once per variant; then every "
              "local file got a new modification time (the content unchanged), and each "
              "variant ran a dry run of the upload. rclone compares size and time, then the "
              "MD5 of each file whose time differs; as the content is equal, it would only "
              "update the remote modification time, and with `--dry-run` it logs one "
              "\"Skipped update modification time as --dry-run is set\" line per file (our "
              "binaries pass those lines on as their own log lines). The logs go to a file.", ""]
        L += table(4) + [""]
        lines = {v: statistics.median(r["lines"] for r in groups[(4, v)])
                 for v in VARIANTS if (4, v) in groups}
        L += ["Log lines per run (median): "
              + ", ".join(f"{v} {n:.0f}" for v, n in lines.items()) + ". " + row_load(4), ""]
        ex = facts.get("dry_examples", {})
        if ex:
            L += ["One line of each log:", "", "```"] + [f"{v:7} {ex[v]}" for v in VARIANTS
                                                       if v in ex] + ["```", ""]
        L += commands(4) + [""]
    L += ["The commands: `$WORK` is the benchmark's work directory, `AFTER_BIN` and "
          "`BEFORE_BIN` the two binaries; the remote is configured from `REMOTE_*` (our "
          "binaries) and a config file of the same `[remote]` section (plain rclone).", "",
          MARK_END, ""]
    write_section(out, "\n".join(L), MARK_BEGIN, MARK_END)


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "run":
        run(*sys.argv[2:7])
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
