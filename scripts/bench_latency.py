#!/usr/bin/env python3
"""Section 8 of `make bench` (issue 18): speed at a real bucket's latency, side by side.

Why a section of its own: on loopback a request costs microseconds, so sections 1-5 cannot show
what a user feels, which is request latency (10-50 ms per request at a real bucket). Here the
S3 server sits behind scripts/delay-proxy.py, and four ways of moving the same data run
interleaved (A,B,C,D, then the next repetition in another order) so that the load of the machine
hits them alike:

  ours     our binary with its defaults (sync-to-remote / remote-to-local-sync)
  plain    plain `rclone sync` with rclone's defaults
  tuned    plain `rclone sync` tuned by hand (BENCH_LAT_TUNED)
  archive  `tar c | rclone rcat` and `rclone cat | tar x`: one object, the latency floor

Operations: restore into an empty directory, upload into an empty path, and a no-change upload
(the same upload again). Wall time per command; the peak of the summed RSS of the command's
whole process tree (ours + rclone, or rclone + tar), sampled every 100 ms.

Usage (bench.sh runs these):
  bench_latency.py run WORK RESULTS BIN RCLONE   measure; appends to RESULTS/latency.jsonl
  bench_latency.py report RESULTS OUT [PYTHON]   writes the section into OUT (between markers),
                                                 and the plot with PYTHON (matplotlib)
Environment (defaults in brackets):
  BENCH_LAT_DELAYS ["10 50"] one-way delays in ms; the first gets every workload, the others
                   only the restore of "many small" of BENCH_LAT_FAR_COUNT files [the largest]
  BENCH_LAT_COUNTS ["1000 10000"] file counts of the "many small" trees (1-16 KiB, 50 per dir);
                   the largest gets every operation, the others only the restore
  BENCH_LAT_LARGE ["8x64"] COUNTxMiB of the "few large" workload ("" to skip)
  BENCH_LAT_MIXED [2000] files of the mixed app-like tree (0 to skip)
  BENCH_LAT_RUNS [3] repetitions   BENCH_LAT_TUNED ["--transfers 64 --checkers 64 --fast-list"]
  BENCH_LAT_MEMORY [100000] a "many small" tree of this many files, restored once by ours and
                   by tuned rclone at the first delay only (plain defaults would take about ten
                   minutes a run): how time and peak memory grow with the file count (0 to skip)
"""
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time

MARK_BEGIN = "<!-- bench section 8 (latency): begin -->"
MARK_END = "<!-- bench section 8 (latency): end -->"
VARIANTS = ["ours", "plain", "tuned", "archive"]
OPS = ["restore", "upload", "nochange"]


def env(name, default):
    return os.environ.get(name, default)


# --- data ------------------------------------------------------------------------------------
def make_small(root, n, seed=18, max_bytes=16384):
    """n files of 1 KiB to max_bytes (16 KiB), 50 per directory (10,000 files: 200 directories)."""
    rnd = random.Random(seed)
    for i in range(n):
        d = os.path.join(root, f"dir-{i // 50:04d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"file-{i:06d}.dat"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(1024, max_bytes)))


def make_large(root, count, mib):
    os.makedirs(root, exist_ok=True)
    block = random.Random(64).randbytes(1 << 20)
    for i in range(count):
        with open(os.path.join(root, f"large-{i}.bin"), "wb") as f:
            for j in range(mib):
                # Different bytes per MiB, cheaply: no two files or blocks alike.
                f.write(bytes([i, j & 255]) + block[2:])


def make_mixed(root, n, seed=7):
    """An app-like volume: a deep tree of mostly small files (configs, thumbnails, sources),
    some medium ones (images, documents), a few empty ones, a database and a log (up to 24 and
    8 MiB, scaled down with n)."""
    rnd = random.Random(seed)
    for i in range(n):
        depth = rnd.randint(1, 4)
        d = os.path.join(root, *[f"d{rnd.randint(0, 9)}" for _ in range(depth)])
        os.makedirs(d, exist_ok=True)
        r = rnd.random()
        size = rnd.randint(100, 8192) if r < 0.9 else rnd.randint(16384, 262144) if r < 0.99 else 0
        with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
            f.write(rnd.randbytes(size))
    with open(os.path.join(root, "app.db"), "wb") as f:
        f.write(rnd.randbytes(min(24, max(1, n // 100)) << 20))
    with open(os.path.join(root, "app.log"), "wb") as f:
        f.write(rnd.randbytes(min(8, max(1, n // 300)) << 20))


def tree_facts(root):
    files = size = dirs = 0
    for _, dnames, fnames in os.walk(root):
        dirs += len(dnames)
        for name in fnames:
            files += 1
    size = int(subprocess.check_output(["du", "-sb", root]).split()[0])
    return files, dirs, size


# --- measuring ---------------------------------------------------------------------------------
def tree_memory_kib(root_pid):
    """(summed VmRSS, summed Pss) of root_pid and its descendants, in KiB. RSS counts the pages
    of the rclone executable that every rclone maps once per process; PSS shares each page among
    the processes that map it, so the sum is the memory the tree uses."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    members, frontier = {root_pid}, [root_pid]
    while frontier:
        p = frontier.pop()
        for c, pp in parent.items():
            if pp == p and c not in members:
                members.add(c)
                frontier.append(c)
    rss = pss = 0
    for p in members:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def timed(cmd, env_vars, log):
    """Runs cmd (a shell command line); returns (seconds, (peak tree RSS, peak tree PSS) in KiB,
    exit code)."""
    peak = [0, 0]
    with open(log, "ab") as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, shell=True, env=env_vars, stdout=out, stderr=out,
                                start_new_session=True)
        done = threading.Event()

        def sample():
            while not done.is_set():
                rss, pss = tree_memory_kib(proc.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                done.wait(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        code = proc.wait()
        elapsed = time.monotonic() - start
        done.set()
        sampler.join()
    return elapsed, tuple(peak), code


def run(work, results, binary, rclone):
    delays = [int(d) for d in env("BENCH_LAT_DELAYS", "10 50").split()]
    counts = [int(c) for c in env("BENCH_LAT_COUNTS", "1000 10000").split()]
    large = env("BENCH_LAT_LARGE", "8x64")
    mixed = int(env("BENCH_LAT_MIXED", "2000"))
    runs = int(env("BENCH_LAT_RUNS", "3"))
    tuned = env("BENCH_LAT_TUNED", "--transfers 64 --checkers 64 --fast-list")
    far = int(env("BENCH_LAT_FAR_COUNT", str(counts[-1])))
    memory = int(env("BENCH_LAT_MEMORY", "100000") or 0)
    out_path = os.path.join(results, "latency.jsonl")
    facts = {"delays_ms": delays, "counts": counts, "large": large, "mixed": mixed,
             "memory": memory,
             "runs": runs, "tuned": tuned, "workloads": {}, "commands": {},
             "load_start": open("/proc/loadavg").read().split()[:3]}

    # The trees, and each one also as the restore's seed, created directly in the server's data
    # directory (the plain files, and the archive variant's one object).
    trees = os.path.join(work, "lat-trees")
    data = os.path.join(work, "s3", "demo")
    workloads = [(f"small-{n}", lambda r, n=n: make_small(r, n)) for n in counts]
    if large:
        c, m = (int(x) for x in large.split("x"))
        workloads.append((f"large-{c}x{m}MiB", lambda r: make_large(r, c, m)))
    if mixed:
        workloads.append((f"mixed-{mixed}", lambda r: make_mixed(r, mixed)))
    if memory:
        workloads.append((f"small-{memory}", lambda r: make_small(r, memory)))
    for name, make in workloads:
        src = os.path.join(trees, name)
        make(src)
        facts["workloads"][name] = tree_facts(src)
        shutil.copytree(src, os.path.join(data, f"seed-{name}"))
        if name != f"small-{memory}":  # the memory run restores with ours and tuned only
            with tarfile.open(os.path.join(data, f"seed-{name}.tar"), "w") as t:
                t.add(src, arcname=".")
        print(f"bench: workload {name}: {facts['workloads'][name]}", file=sys.stderr)

    def save_facts():
        shown = dict(facts, commands={
            k: c.replace(work, "$WORK").replace(binary, "volume-syncing-operator")
            .replace(rclone, "rclone") for k, c in facts["commands"].items()})
        with open(os.path.join(results, "latency-facts.json"), "w") as f:
            json.dump(shown, f)

    # Saved now and after each cell, so that a run cut short can still be reported.
    facts["load_end"] = facts["load_start"]
    save_facts()
    port = open(os.path.join(work, "port")).read().strip()
    base_env = dict(os.environ)
    log = os.path.join(work, "latency.log")
    conf = os.path.join(work, "lat-rclone.conf")
    direct = os.path.join(work, "lat-direct.conf")
    with open(direct, "w") as f:
        f.write("[remote]\ntype = s3\nprovider = Rclone\n"
                f"access_key_id = {base_env['REMOTE_ACCESS_KEY_ID']}\n"
                f"secret_access_key = {base_env['REMOTE_SECRET_ACCESS_KEY']}\n"
                f"endpoint = {base_env['REMOTE_ENDPOINT']}\n")
    scratch = os.path.join(work, "lat-scratch")
    uid = "setpriv --reuid=65534 --regid=65534 --clear-groups " if os.geteuid() == 0 else ""

    def commands(variant, op, name, path, dst):
        seed, q = f"demo/seed-{name}", shlex.quote
        src = os.path.join(trees, name)
        if variant == "ours":
            if op == "restore":
                # As root the foreign-owner valve would refuse a directory of root's: the
                # restore runs as the unprivileged uid, as an init container would.
                return f"{uid}{q(binary)} remote-to-local-sync -s {seed} -d {q(dst)}"
            return f"{q(binary)} sync-to-remote -s {q(src)} -d demo/{path}"
        if variant == "archive":
            if op == "restore":
                return (f"mkdir -p {q(dst)} && {q(rclone)} --config {q(conf)} cat "
                        f"remote:{seed}.tar | tar x -C {q(dst)}")
            return (f"tar c -C {q(src)} . | {q(rclone)} --config {q(conf)} rcat "
                    f"remote:demo/{path}.tar")
        flags = "" if variant == "plain" else " " + tuned
        if op == "restore":
            return f"{q(rclone)} --config {q(conf)} sync remote:{seed}/ {q(dst)}{flags}"
        return f"{q(rclone)} --config {q(conf)} sync {q(src)} remote:demo/{path}/{flags}"

    proxy = subprocess.Popen([sys.executable, "scripts/delay-proxy.py", port, "0"],
                             stdout=subprocess.PIPE, text=True)
    try:
        for di, delay in enumerate(delays):
            proxy.terminate()
            proxy.wait()
            proxy = subprocess.Popen([sys.executable, "scripts/delay-proxy.py", port, str(delay)],
                                     stdout=subprocess.PIPE, text=True)
            pport = proxy.stdout.readline().strip()
            endpoint = f"http://127.0.0.1:{pport}"
            with open(conf, "w") as f:
                f.write("[remote]\ntype = s3\nprovider = Rclone\n"
                        f"access_key_id = {base_env['REMOTE_ACCESS_KEY_ID']}\n"
                        f"secret_access_key = {base_env['REMOTE_SECRET_ACCESS_KEY']}\n"
                        f"endpoint = {endpoint}\n")
            os.chmod(conf, 0o644)
            env_vars = dict(base_env, REMOTE_ENDPOINT=endpoint)
            # The biggest "many small" tree, "few large" and mixed get every operation; the
            # smaller "many small" trees only the restore (the plot's points).
            memory_name = f"small-{memory}" if memory else None
            plan = [(w, op) for w, _ in workloads for op in ("restore", "upload")
                    if w != memory_name and (op == "restore" or not w.startswith("small-")
                                             or w == f"small-{counts[-1]}")]
            if di > 0:  # the further delays: one restore of "many small" only
                plan = [(f"small-{far}", "restore")]
            cells = [(rep, name, op, VARIANTS[rep % 4:] + VARIANTS[:rep % 4])
                     for rep in range(runs) for name, op in plan]
            if memory_name and di == 0:
                cells.append((0, memory_name, "restore", ["ours", "tuned"]))
            for rep, name, op, order in cells:
                for variant in order:
                    path = f"up-{variant}-{name}-{delay}-{rep}"
                    dst = os.path.join(scratch, f"{variant}-{rep}")
                    os.makedirs(scratch, mode=0o777, exist_ok=True)
                    os.chmod(scratch, 0o777)
                    # An upload into an empty path is followed at once by the same upload
                    # again, which finds nothing to do: the no-change sync.
                    for timed_op in [op] if op == "restore" else ["upload", "nochange"]:
                        cmd = commands(variant, timed_op, name, path, dst)
                        facts["commands"][f"{variant} {timed_op}"] = cmd
                        secs, peak, code = timed(cmd, env_vars, log)
                        row = {"delay": delay, "workload": name, "op": timed_op,
                               "variant": variant, "rep": rep, "seconds": secs,
                               "peak_kib": peak[0], "peak_pss_kib": peak[1], "code": code}
                        if op == "restore" and code == 0:
                            row["restored"] = tree_facts(dst)[0]
                        with open(out_path, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(f"bench: {delay} ms {name} {timed_op} {variant} run {rep + 1}/"
                              f"{runs}: {secs:.2f} s, peak RSS {peak[0] / 1024:.0f} MiB, PSS "
                              f"{peak[1] / 1024:.0f} MiB, exit {code}",
                              file=sys.stderr)
                    shutil.rmtree(dst, ignore_errors=True)
                    facts["load_end"] = open("/proc/loadavg").read().split()[:3]
                    save_facts()
                    # Removed through the server, not behind its back: `rclone serve s3`
                    # caches directory listings.
                    if op != "restore":
                        gone = (["deletefile", f"remote:demo/{path}.tar"]
                                if variant == "archive" else ["purge", f"remote:demo/{path}"])
                        subprocess.run([rclone, "--config", direct] + gone, check=True,
                                       stdout=subprocess.DEVNULL)
    finally:
        proxy.terminate()
        proxy.wait()
    facts["load_end"] = open("/proc/loadavg").read().split()[:3]
    save_facts()


# --- the report ------------------------------------------------------------------------------
def write_section(out, section, begin, end):
    """Puts `section` (which starts with `begin` and ends with `end`) into the file `out` in place
    of the text between those markers, or at its end when they are not there."""
    text = open(out).read() if os.path.exists(out) else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(out, "w") as f:
        f.write(text)


def fmt_s(x):
    return f"{x:.2f} s" if x >= 1 else f"{x * 1000:.0f} ms"


def report(results, out, python):
    rows = [json.loads(line) for line in open(os.path.join(results, "latency.jsonl"))]
    facts = json.load(open(os.path.join(results, "latency-facts.json")))
    groups = {}
    for r in rows:
        groups.setdefault((r["delay"], r["workload"], r["op"], r["variant"]), []).append(r)
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in groups.items()}
    L = [MARK_BEGIN, "", "## 8. Speed at a real bucket's latency (issue 18)", ""]
    L += [
        "The S3 server (`rclone serve s3`) sits behind `scripts/delay-proxy.py`, a TCP proxy of "
        "ours that forwards every chunk after a fixed one-way delay, in order, without waiting "
        "for earlier chunks to be written (so it adds latency and does not cap bandwidth, beyond "
        "what one Python process can copy). There is no `netem` on these kernels: the delay is in "
        "user space, and a new connection also waits one round trip. "
        f"One-way delays: {', '.join(str(d) + ' ms' for d in facts['delays_ms'])} "
        f"(round trip {', '.join(str(2 * d) + ' ms' for d in facts['delays_ms'])}).",
        "",
        f"Repetitions: {facts['runs']} per cell, the variants interleaved and their order rotated "
        "per repetition. Load average at start / end: "
        f"{' '.join(facts['load_start'])} / {' '.join(facts['load_end'])}.",
        "",
        "**Reduced sizes** (the issue asks for 1,000-10,000 \"many small\" files and 8 x 64 MiB; "
        f"this run: counts {facts['counts']}, large {facts['large']}, mixed {facts['mixed']}, "
        f"{facts['runs']} repetitions): a run of the full sizes did not fit the time available."
        if (facts["counts"], facts["large"], facts["mixed"]) != ([1000, 10000], "8x64", 2000)
        else "Full sizes.",
        "",
        f"**Load above the core count** ({os.cpu_count()} cores; see above): the bench's own "
        "processes (rclone, `rclone serve s3`, the proxy) count, and anything else that ran; the "
        "interleaving spreads any CPU contention over the variants alike, the spread columns "
        "show how much."
        if max(float(x) for x in facts["load_start"] + facts["load_end"]) > (os.cpu_count() or 1)
        else "The load average stayed below the core count.",
        "",
        "| workload | files | directories | bytes |",
        "|---|---|---|---|",
    ]
    for name, (files, dirs, size) in facts["workloads"].items():
        L.append(f"| {name} | {files} | {dirs} | {size} |")
    L += ["", "Commands (`$WORK` the work directory; `demo/seed-*` the restore's source, `demo/up-*` "
          "a fresh path per run):", "", "```"]
    for key, cmd in sorted(facts["commands"].items()):
        L.append(f"{key:18} {cmd}")
    L += ["```", "",
          "`nochange` is the same upload run again right after it (the archive variant has no "
          "such thing and uploads the whole archive again). Peak memory: the summed RSS of the "
          "command's process tree (ours + rclone; rclone + tar), sampled every 100 ms, and its "
          "summed PSS (`/proc/PID/smaps_rollup`): RSS counts the ~50 MiB of the rclone "
          "executable's pages once per rclone process, PSS shares them among the processes "
          "that map them, so it is the memory the tree takes from the node.", ""]
    failures = [r for r in rows if r["code"] != 0]
    if failures:
        L += [f"**{len(failures)} run(s) failed** (exit code ≠ 0): "
              + ", ".join(f"{r['variant']} {r['op']} {r['workload']} {r['delay']} ms"
                          for r in failures[:10]), ""]
    for delay in facts["delays_ms"]:
        L += [f"### One-way delay {delay} ms", "",
              "| workload | operation | variant | median | min | max | n | ÷ plain defaults "
              "| peak RSS (median) | peak PSS (median) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for (d, w, op, v), rs in sorted(groups.items(), key=lambda kv: (
                kv[0][1], OPS.index(kv[0][2]), VARIANTS.index(kv[0][3]))):
            if d != delay:
                continue
            xs = [r["seconds"] for r in rs]
            base = med.get((d, w, op, "plain"))
            ratio = f"{med[(d, w, op, v)] / base:.2f}" if base else "—"
            peak = statistics.median(r["peak_kib"] for r in rs) / 1024
            psss = [r["peak_pss_kib"] / 1024 for r in rs if "peak_pss_kib" in r]
            pss = f"{statistics.median(psss):.0f} MiB" if psss else "—"
            name = f"**{v}**" if v == "ours" else v
            L.append(f"| {w} | {op} | {name} | **{fmt_s(statistics.median(xs))}** | {fmt_s(min(xs))}"
                     f" | {fmt_s(max(xs))} | {len(xs)} | {ratio} | {peak:.0f} MiB | {pss} |")
        L.append("")
    # The goals of the issue, at the first delay.
    d0 = facts["delays_ms"][0]
    small = f"small-{facts['counts'][-1]}"
    goal = []
    k = lambda v, w=small, op="restore": med.get((d0, w, op, v))
    if k("ours") and k("plain") and k("tuned"):
        goal.append(f"- Restore of {small} at {2 * d0} ms round trip: plain defaults ÷ ours = "
                    f"**{k('plain') / k('ours'):.2f}×** (goal ≥ 4×); ours ÷ hand-tuned = "
                    f"**{k('ours') / k('tuned'):.2f}** (goal ≤ 1.25).")
    slower = [f"{w} {op} at {d} ms ({med[(d, w, op, 'ours')] / med[(d, w, op, 'plain')]:.2f})"
              for (d, w, op, v) in groups if v == "ours" and (d, w, op, "plain") in med
              and med[(d, w, op, "ours")] > med[(d, w, op, "plain")]]
    goal.append("- Cells where ours is slower than plain defaults (median ratio): "
                + (", ".join(sorted(set(slower))) if slower else "none") + ".")
    lw = [w for w in facts["workloads"] if w.startswith("large")]
    for w in lw:
        bytes_ = facts["workloads"][w][2]
        for op in ("restore", "upload"):
            if k("ours", w, op) and k("plain", w, op):
                goal.append(f"- {w} {op}: ours {bytes_ / k('ours', w, op) / 1048576:.0f} MiB/s, "
                            f"plain {bytes_ / k('plain', w, op) / 1048576:.0f} MiB/s "
                            f"(ours ÷ plain time {k('ours', w, op) / k('plain', w, op):.2f}; "
                            "goal ≤ 1.05).")
    L += ["### Against the goals of issue 18", ""] + goal + [""]
    L += ["### rclone calls per sync (each one is a process start and at least one round trip)",
          "",
          "- restore (`remote-to-local-sync`) into an empty directory: **3**: `cat` of the "
          "lease (it waits while a writer holds it), `sync`, and `cat` of the metadata manifest "
          "beside the sync. Only when nothing came (an absent or empty remote path, the first "
          "run) does one `lsjson` of the bucket follow, to tell a missing bucket (exit 2) from "
          "the first run; and one `lsf` when rclone says \"directory not found\", to tell an "
          "absent path from one that vanished mid-run. +1 with encryption (the key check).",
          "- restore into a directory that holds data: +1 (`lsf` of at most one entry for the "
          "`empty-remote` valve); the valve is what makes that restore safe.",
          "- one-shot upload (`sync-to-remote`) with nothing to write: **2**: one `rclone rcd` "
          "(the lease's read, the manifest's and the upload record's as requests) and a "
          "`sync --dry-run`; it writes nothing and takes no lease (+1 with encryption: the key "
          "check).",
          "- one-shot upload with something to write: **5**: the same two (the dry run stops at "
          "the first change), then the lease through the `rcd` (write, the 750 ms settle delay, "
          "read back), the manifest, the upload record and the release as requests; during the "
          "settle the checks at once (`lsf` of the encryption marker, `cat` of the "
          "`mass-delete` record); then the `sync`. The settle delay is what makes two racing "
          "writers unable to both proceed; it is paid once per process, so by one-shot uploads "
          "only. +1 `lsf` only when the source holds no file (`empty-source`), +1 with "
          "encryption (the key check).",
          "- a scheduled or `--watch` uploader, every run after its first: `sync` (`--watch`: "
          "`copy`/`delete` of the changed paths), then the manifest's `rcat` only when the "
          "volume's metadata changed, + the record's `rcat` when the count changed; the lease "
          "is renewed on its own timer (`cat` + `rcat` every third of `--lease-ttl`), not per "
          "run.",
          ""]
    # Memory against the file count: ours, restore and upload.
    sm = sorted((int(w.split("-")[1]), w) for w in facts["workloads"] if w.startswith("small-"))
    if len(sm) > 1:
        L += ["Peak RSS (ours + rclone, median) against the file count, at "
              f"{d0} ms: " + "; ".join(
                  f"{op}: " + ", ".join(
                      f"{n} files {statistics.median(r['peak_kib'] for r in groups[(d0, w, op, 'ours')]) / 1024:.0f} MiB"
                      for n, w in sm if (d0, w, op, "ours") in groups)
                  for op in ("restore", "upload")) + ".", ""]
    # The plot: restore time against file count, one line per variant.
    png = os.path.join(os.path.dirname(os.path.abspath(out)), "benchmarks-restore-latency.png")
    series = {v: [(n, med[(d0, w, "restore", v)]) for n, w in sm if (d0, w, "restore", v) in med]
              for v in VARIANTS}
    plot = (
        "import json, sys\nimport matplotlib\nmatplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "series, title, png = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
        "fig, ax = plt.subplots(figsize=(7, 4.5))\n"
        "for v, pts in series.items():\n"
        "    if pts:\n"
        "        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=v)\n"
        "ax.set_xscale('log'); ax.set_yscale('log')\n"
        "ax.set_xlabel('files (1-16 KiB each)'); ax.set_ylabel('restore time, median (s)')\n"
        "ax.set_title(title); ax.grid(True, which='both', alpha=0.3); ax.legend()\n"
        "fig.tight_layout(); fig.savefig(png, dpi=100)\n")
    subprocess.run([python, "-c", plot, json.dumps(series),
                    f"Restore into an empty directory, {2 * d0} ms round trip", png], check=True)
    L += [f"![restore time against file count]({os.path.basename(png)})", "",
          "Restore time against file count (medians; log-log): "
          + "; ".join(f"{v}: " + ", ".join(f"{n} → {fmt_s(t)}" for n, t in pts)
                      for v, pts in series.items() if pts) + ".", "", MARK_END, ""]
    write_section(out, "\n".join(L), MARK_BEGIN, MARK_END)


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "run":
        run(*sys.argv[2:6])
    elif len(sys.argv) >= 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else sys.executable)
    else:
        sys.exit(__doc__)
