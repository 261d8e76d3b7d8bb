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
    w(f"{len(rows)} one-shot uploads of the tree of 1., nothing to transfer, each run with the")
    w("rclone recorder of 1. to count rclone calls by operation; the phases are split at the")
    w("log events \"acquired the lease\", rclone's last line and \"released the lease\" (`-v`).")
    w("Taking the lease = process start-up, config, reading the lease, writing it, the 5 s")
    w("settle wait, reading it back. The lease cannot be switched off, so \"without the lease\"")
    w("is the sync phase alone (rclone sync plus the valves).")
    w("")
    w("| phase | median | min | max |")
    w("|---|---|---|---|")
    for key, label in (("acquire", "start-up and taking the lease"), ("sync", "the sync itself"),
                       ("release", "releasing the lease"), ("total", "whole run")):
        xs = [r[key] for r in rows]
        w(f"| {label} | {seconds(statistics.median(xs))} | {seconds(min(xs))} | {seconds(max(xs))} |")
    w("")
    calls = rows[-1]["calls"]
    w("rclone calls per one-shot upload: " + ", ".join(f"`{k}` {v}" for k, v in sorted(calls.items()))
      + f" — {sum(calls.values())} in all, of which the lease's: `cat` 3 (read, read back, read"
      " before release), `rcat` 1, `deletefile` 1.")
    w("A long-running process pays the acquisition once, then one `cat` and one `rcat` per renewal")
    w("(every `--lease-ttl`/3, default 40 s), and nothing per file or per sync.")
    w("")
    return statistics.median([r["acquire"] + r["release"] for r in rows])
