"""Section 6 of the report: the cost of restore fidelity, the binary from before vs. this one."""

from .stats import TIME_HEADER, load_times, ratio, time_row, verdict


def fidelity_report(results, F):
    """Section 6: the cost of restore fidelity, the binary from before vs. this one."""
    sync = load_times(results, "fidelity-sync")
    restore = load_times(results, "fidelity-restore")
    if not sync and not restore:
        return []
    L = ["", "## 6. Restore fidelity: before vs. after", ""]
    w = L.append
    w(f"Before: {F('fidelity_baseline')}. After: this binary, which also writes the metadata")
    w("manifest after every upload (its `rclone rcat` started together with the sync) and fetches")
    w("and applies it after every restore. Both measured side by side in one run, in alternating")
    w("hyperfine passes. Target from the issue: at most 5 % slower.")
    w("")
    w(f"a. No-change sync of the tree of section 1: `{F('fidelity_sync_cmd')}`")
    w("")
    w(TIME_HEADER)
    for label in ("before", "after"):
        w(time_row(label, sync.get(label, [])))
    r = ratio(sync.get("after"), sync.get("before"))
    w("")
    w(f"**Ratio after / before (medians): {r:.3f}** - {verdict(r, 1.05)}." if r else "not measured")
    w("")
    w(f"b. Restore of {F('fidelity_restore_files')} objects into a fresh directory "
      f"({F('fidelity_restore_runs')} runs each): `{F('fidelity_restore_cmd')}`")
    w("")
    w(TIME_HEADER)
    for label in ("before", "after"):
        w(time_row(label, restore.get(label, [])))
    r = ratio(restore.get("after"), restore.get("before"))
    w("")
    w(f"**Ratio after / before (medians): {r:.3f}** - {verdict(r, 1.05)}." if r else "not measured")
    if F("fidelity_restore_check"):
        w("")
        w(f"Checked: {F('fidelity_restore_check')}.")
    return L
