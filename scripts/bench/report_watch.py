"""Section 5 of the report, watch mode: its rows of the summary and its section."""

import os
import statistics

from .stats import TIME_HEADER, load_lines, seconds, seconds_row


def load_watch(results):
    """The watch-mode results: per debounce label, and the one-shot full no-change syncs."""
    runs = load_lines(os.path.join(results, "watch.jsonl"))
    full = [x for x in load_lines(os.path.join(results, "watch-full.jsonl"))
            if x.get("exit_code") == 0 and x.get("result") == "success"]
    return runs, full


def watch_summary_rows(results, F):
    runs, full = load_watch(results)
    if not runs:
        return ["| 5. watch mode | not measured | — |"]
    full_med = statistics.median([x["seconds"] for x in full]) if full else None
    parts = []
    for r in runs:
        if r["latency"]:
            parts.append(f"latency {seconds(statistics.median(r['latency']))} with "
                         f"{debounce_label(r['label'])}")
    incremental = [x for r in runs for x in r["incremental"]]
    rows = [f"| 5. watch mode, one changed file in {F('watch_files')} files | "
            + ("; ".join(parts) or "—") + " | — |"]
    if incremental and full_med:
        rows.append(f"| 5. incremental sync ÷ full no-change sync, {F('watch_files')} files | "
                    f"{statistics.median(incremental) / full_med:.3f} | — |")
    return rows


def debounce_label(label):
    return f"`--debounce {label}`" + (" (the default)" if label == "2s" else "")


def watch_section(results, F, w):
    runs, full = load_watch(results)
    w(f"## 5. Watch mode: one changed file in a tree of {F('watch_files')} files")
    w("")
    w(f"A tree of {F('watch_files')} files ({F('watch_tree_bytes')} bytes in "
      f"{F('watch_tree_dirs')} directories), uploaded once beforehand. A `--watch` process")
    w("starts (its first sync is a full one, with nothing to transfer); then, "
      f"{F('watch_runs')} times, one")
    w("file of the tree, picked at random, is rewritten with new bytes, and the time is taken")
    w("from the end of that write (the file closed) until the S3 server's data directory holds")
    w("the new bytes (polled every 2 ms): the **change-to-remote latency**, which includes the")
    w("quiet period `--debounce` (default 2 s). The sync that carried the change reports its")
    w("own duration in its summary line (`duration_seconds`, `kind=\"incremental\"`: the valves,")
    w("then `rclone copy --filter-from … --no-traverse` of the one changed path). It is compared")
    w("with a **full no-change sync** of the same tree: `sync-to-remote` without `--watch`, the")
    w("duration from its summary line (`kind=\"full\"`, nothing to transfer). That duration")
    w("starts after the lease step; the one-shot run lists the tree in a dry run before it and,")
    w("finding nothing to write, takes no lease and leaves the sync out, so it is no longer a")
    w("full listing: the whole process's wall time below is the fuller comparison.")
    w("")
    w("```")
    for r in runs:
        w(f"watch:     {F('watch_cmd_' + r['label'])}")
    w(f"full sync: {F('watch_full_cmd')}")
    w("```")
    w("")
    if not runs:
        w("Not measured (no results).")
        w("")
        return
    w(TIME_HEADER.replace("command", "figure"))
    for r in runs:
        w(seconds_row(f"change-to-remote latency, {debounce_label(r['label'])}", r["latency"]))
    for r in runs:
        w(seconds_row(f"— of which the incremental sync (summary), {debounce_label(r['label'])}",
                      r["incremental"]))
    w(seconds_row("full no-change sync, one-shot `sync-to-remote` (summary)",
                  [x["seconds"] for x in full]))
    w(seconds_row("— the same, whole process (wall time)", [x["total"] for x in full]))
    w(seconds_row("first sync of each `--watch` process (full, nothing to transfer; summary)",
                  [r["first_seconds"] for r in runs if "first_seconds" in r]))
    w("")
    incremental = [x for r in runs for x in r["incremental"]]
    if incremental and full:
        full_med = statistics.median([x["seconds"] for x in full])
        inc_med = statistics.median(incremental)
        w(f"**Incremental sync ÷ full no-change sync (medians): {inc_med / full_med:.3f}** "
          f"({seconds(inc_med)} vs. {seconds(full_med)}, all debounce settings pooled).")
        w("")
    for r in runs:
        if r["latency"]:
            try:
                debounce = parse_duration(r["label"])
            except ValueError:
                continue
            beyond = [x - debounce for x in r["latency"]]
            w(f"- {debounce_label(r['label'])}: latency minus the quiet period, median "
              f"{seconds(statistics.median(beyond))} (the sync itself, the log and the polling).")
    w("")
    kinds = [k for r in runs for k in r["kinds"]]
    if any(k != "incremental" for k in kinds):
        w(f"Kinds of the syncs that carried the changes: {kinds} (expected: all incremental).")
        w("")
    bad = [r for r in runs if r["errors"] or r.get("exit_code") != 0
           or r.get("first_kind") != "full"]
    if bad:
        w("**Problems during the watch runs:** "
          + "; ".join(f"`--debounce {r['label']}`: {r['errors']}, exit code {r.get('exit_code')}"
                      for r in bad))
        w("")


def parse_duration(text):
    """`2s`, `200ms`, `1m` -> seconds."""
    for unit, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(unit) and text[:-len(unit)].replace(".", "").isdigit():
            return float(text[:-len(unit)]) * factor
    raise ValueError(text)
