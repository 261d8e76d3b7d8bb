"""Section 7 of the report: the lease's rclone calls and the time taking and releasing it costs."""

import os
import statistics

from .stats import load_lines, seconds


def lease_section(results, F, w):
    rows = [r for r in load_lines(os.path.join(results, "lease.jsonl"))
            if r.get("exit_code") == 0 and "acquire" in r]
    w("## 7. The lease (one writer per remote path)")
    w("")
    w("```")
    w(F("lease_cmd", ""))
    w("```")
    w("")
    if not rows:
        w("No successful run: not measured.")
        w("")
        return None
    w(f"{len(rows)} one-shot uploads of the tree of 1., one file of it changed before each (a")
    w("run that would write nothing takes no lease: section 1), each run with the rclone")
    w("recorder of 1. to count rclone calls by operation; the phases are split at the log events")
    w("\"acquired the lease\", rclone's last line and \"released the lease\" (`-v`). Taking the")
    w("lease = process start-up, config, starting the `rclone rcd` that serves it, reading the")
    w("lease, the look before writing (a dry run of the sync that stops at its first change),")
    w("writing the lease, the 750 ms settle wait (during which the valves run), reading it back.")
    w("The lease cannot be switched off.")
    w("")
    w("| phase | median | min | max |")
    w("|---|---|---|---|")
    for key, label in (("acquire", "start-up and taking the lease"), ("sync", "the sync itself"),
                       ("release", "releasing the lease"), ("total", "whole run")):
        xs = [r[key] for r in rows]
        w(f"| {label} | {seconds(statistics.median(xs))} | {seconds(min(xs))} | {seconds(max(xs))} |")
    w("")
    calls = rows[-1]["calls"]
    w("rclone calls per one-shot upload of a change: " + ", ".join(f"`{k}` {v}" for k, v in sorted(calls.items()))
      + f" — {sum(calls.values())} processes in all. The lease's read, write and read-back, the"
      " manifest, the upload record and the release (read, delete) are requests to the `rcd`,"
      " not processes.")
    w("A long-running process pays the acquisition once, then one `cat` and one `rcat` per renewal")
    w("(every `--lease-ttl`/3, default 40 s), and nothing per file or per sync.")
    w("")
    return statistics.median([r["acquire"] + r["release"] for r in rows])
