"""Reading the results (hyperfine's JSON, our JSON lines) and formatting figures for the report:
times, medians with their spread, ratios and the verdict against a target."""

import json
import os
import statistics


def load_times(results, prefix):
    """Run times (seconds) per command name, pooled over the passes prefix-1.json, prefix-2.json…"""
    times = {}
    for name in sorted(os.listdir(results)):
        if name.startswith(prefix + "-") and name.endswith(".json"):
            with open(os.path.join(results, name)) as f:
                for r in json.load(f)["results"]:
                    times.setdefault(r["command"], []).extend(r["times"])
    return times


def load_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def ms(x):
    return f"{x * 1000:.1f} ms" if x >= 0.01 else f"{x * 1000:.2f} ms"


def time_row(label, ts):
    if not ts:
        return f"| {label} | — | — | — | — | 0 |"
    sd = statistics.stdev(ts) if len(ts) > 1 else 0.0
    return (f"| {label} | **{ms(statistics.median(ts))}** | {ms(min(ts))} | {ms(max(ts))} "
            f"| {ms(sd)} | {len(ts)} |")


TIME_HEADER = "| command | median | min | max | stddev | runs |\n|---|---|---|---|---|---|"


def kib_stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    med = statistics.median(values)
    return (f"**{med / 1024:.2f} MiB** (min {min(values) / 1024:.2f}, max {max(values) / 1024:.2f}, "
            f"n={len(values)})")


def ratio(a, b):
    if not a or not b:
        return None
    return statistics.median(a) / statistics.median(b)


def verdict(value, target):
    if value is None:
        return "not measured"
    return "target met" if value <= target else "**target missed**"


def seconds(x):
    return f"{x:.3f} s" if x >= 1 else ms(x)


def seconds_row(label, xs):
    if not xs:
        return f"| {label} | — | — | — | — | 0 |"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return (f"| {label} | **{seconds(statistics.median(xs))}** | {seconds(min(xs))} "
            f"| {seconds(max(xs))} | {seconds(sd)} | {len(xs)} |")
