"""Tables for the terminal and for docs/benchmarks.md."""

from __future__ import annotations

from exporter.omnisend.limits import MAX_EMAILS_PER_TAG_REQUEST as UNTAG_BATCH
from exporter.planning.enqueue import DIRECT_ENQUEUE_LINES
from exporter.planning.spool import DISPATCH_LINES

from .planning import PlanResult
from .upload import TARGET_SHARE_NOTE, RunResult, pacer_cap


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _median_tries(results: list[PlanResult]) -> list[tuple[PlanResult, list[PlanResult]]]:
    """(the median try by rows/s, every try) for each size and kind, in the order measured."""
    groups: dict[tuple[int, str], list[PlanResult]] = {}
    for r in results:
        groups.setdefault((r.rows, r.kind), []).append(r)
    return [(sorted(tries, key=lambda t: t.rows_per_s)[(len(tries) - 1) // 2], tries) for tries in groups.values()]


def planning_table(results: list[PlanResult]) -> str:
    """Table 1. A preview's row counts the batches it would make and the queue messages found after it
    (none, or "sent nothing" says NO); "adds up" checks the counts and the changes report's rows."""
    rows = []
    for r, tries in _median_tries(results):
        c = r.counts
        # a preview makes no batch: the batches it would make (the estimate's) and the messages found
        contact_batches = r.preview["estimate"]["contactBatches"] if r.preview else c["batches"]
        batches = contact_batches + -(-c["left"] // UNTAG_BATCH)  # contact batches and untag batches
        messages = batches if batches <= DIRECT_ENQUEUE_LINES else -(-batches // DISPATCH_LINES)
        changes = r.changes_rows
        rows.append([
            _n(r.rows), r.kind, f"{r.wall:.1f}", _n(r.rows_per_s), " / ".join(_n(t.rows_per_s) for t in tries),
            f"{r.enqueue:.1f}", _n(r.rows_per_s_without_enqueue),
            _n(r.rows / (r.cpu - r.enqueue_cpu) if r.cpu > r.enqueue_cpu else 0),
            f"{1000 * r.enqueue_cpu / max(batches, 1):.1f}", f"{r.peak_rss_mb:.0f}",
            f"{r.reader_peak_rss_mb:.0f}" if r.reader_peak_rss_mb else "-",
            f"{r.peak_rss_mb + r.reader_peak_rss_mb:.0f}", f"{r.rss_before_mb:.0f}",
            f"{c['rejected']:,}/{c['duplicates']:,}/{c['queued']:,}/{c['skipped']:,}/{c['left']:,}",
            f"{_n(batches)} would be" if r.is_preview else _n(batches),
            f"{_n(r.queue_messages)} found" if r.is_preview else _n(messages),
            f"{changes.get('joined', 0):,}/{changes.get('changed', 0):,}/{changes.get('left', 0):,} "
            f"({r.changes_bytes / 1e6:.1f} MB)",
            ("yes" if all(t.sent_nothing for t in tries) else "NO") if r.is_preview else "-",
            "yes" if all(t.balanced and t.changes_add_up for t in tries) else "NO", r.loadavg,
        ])
    return table(["rows", "run", "wall s", "rows/s (median try)", "rows/s, every try", "hand-off s", "rows/s without hand-off",
                  "rows per CPU-s without hand-off", "hand-off CPU ms per batch",
                  "peak RSS MB", "reader process peak RSS MB", "peak RSS MB, both", "RSS at start MB",
                  "rejected/dup/queued/skipped/left", "batches",
                  "queue messages", "changes report joined/changed/left", "preview sent nothing", "adds up",
                  "load avg"], rows)


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def upload_table(results: list[RunResult]) -> str:
    rows = []
    for r in results:
        cpu = r.cpu
        ours = cpu["app"] + cpu["sandbox"] + cpu["azurite"] + cpu["driver"]
        others = max(0.0, cpu["machine_busy"] - ours)
        c = r.counts
        rows.append([
            _n(r.rows), r.label, r.status, f"{r.wall:.1f}", f"{r.planning:.1f}", _n(c["confirmed"]),
            _n(r.contacts_per_s), _n(r.upload_contacts_per_s), _n(r.requests["requests"]),
            f"{cpu['app']:.1f} ({_share(cpu['app'], ours)})", f"{cpu['sandbox']:.1f} ({_share(cpu['sandbox'], ours)})",
            f"{cpu['azurite']:.1f} ({_share(cpu['azurite'], ours)})", f"{cpu['driver']:.1f}",
            f"{others:.0f} of {cpu['machine_total']:.0f}", "yes" if r.balanced else "NO", r.loadavg,
        ])
    return table(["rows", "run", "status", "wall s", "planning s", "confirmed", "contacts/s end to end",
                  "contacts/s after planning", "requests", "app CPU s", "sandbox CPU s", "Azurite CPU s",
                  "driver CPU s", "others' CPU s (machine)", "adds up", "load avg"], rows)


def per_batch_table(results: list[RunResult]) -> str:
    rows = []
    for r in results:
        batches = max(r.counts["batches"], 1)
        up = r.cpu_upload
        rows.append([_n(r.rows), r.label, _n(r.counts["batches"]), f"{1000 * up['app'] / batches:.0f}",
                     f"{1000 * up['azurite'] / batches:.0f}", f"{1000 * up['sandbox'] / batches:.0f}"])
    return table(["rows", "run", "contact batches", "app CPU ms per batch", "Azurite CPU ms per batch",
                  "sandbox CPU ms per batch"], rows)


def tags_floor(r: RunResult) -> float:
    """Seconds the tags endpoint alone needs for the run's tag calls, at the pacer's cap: ceil(members
    to tag / 250) calls, ``pacer_cap`` of them a window (#18: a first run's lower bound)."""
    lim = r.limits
    members = r.counts.get("confirmed", 0) - r.counts.get("alreadyTagged", 0)
    return -(-members // UNTAG_BATCH) * lim.window_seconds / pacer_cap(lim.tags_rate_limit, lim.window_seconds)


def ceiling_table(results: list[RunResult]) -> str:
    rows = []
    for r in results:
        lim = r.limits
        for phase, limit in (("contacts", lim.rate_limit), ("tags", lim.tags_rate_limit)):
            w = r.windows(phase)
            if not w:
                continue
            floor = tags_floor(r) if phase == "tags" else 0.0
            rows.append([
                _n(r.rows), r.label, f"{lim.rate_limit}/{lim.tags_rate_limit} per {lim.window_seconds}s", phase,
                f"{w['busy_seconds']:.0f}", _n(w["requests"]), w["windows"], f"{w['mean']:.1f}",
                f"{w['min']:.0f}" if w["min"] is not None else "-", f"{w['max']:.0f}" if w["max"] is not None else "-",
                f"{100 * w['mean'] / limit:.0f}%", f"{100 * pacer_cap(limit, lim.window_seconds) / limit:.1f}%",
                f"{r.requests['rateLimited']:,} of {r.requests['requests']:,} "
                f"({100 * r.requests['rateLimited'] / max(r.requests['requests'], 1):.2f}%)",
                f"{floor:.1f}" if floor else "-", f"{r.wall / floor:.3f}x" if floor else "-",
            ])
    return table(["rows", "run", "limit", "phase", "busy s", "requests", "windows", "mean per window",
                  "min", "max", "share of limit", "pacer's cap", "answered 429 (whole run)",
                  "tags floor s", "wall / floor"], rows) + "\n\n" + TARGET_SHARE_NOTE + \
        " The tags floor: ceil(members tagged / 250) tag calls at the pacer's cap of the tags endpoint; " \
        "wall / floor is the whole run's wall time (planning and the last check included) over it."


def incremental_table(pairs: list[tuple[RunResult, RunResult]]) -> str:
    rows = []
    for full, inc in pairs:
        rows.append([
            _n(full.rows), full.limits.name, _n(full.requests["requests"]), _n(inc.requests["requests"]),
            f"{100 * inc.requests['requests'] / max(full.requests['requests'], 1):.1f}%",
            f"{full.wall:.1f}", f"{inc.wall:.1f}", f"{100 * inc.wall / full.wall:.1f}%",
            f"{inc.planning:.1f}", _n(inc.counts["confirmed"]), _n(inc.counts["skipped"]), _n(inc.counts["untagged"]),
            "yes" if inc.balanced else "NO",
        ])
    return table(["rows", "limits", "full run requests", "re-run requests", "requests share", "full run wall s",
                  "re-run wall s", "wall share", "re-run planning s", "re-run sent", "skipped", "untagged",
                  "adds up"], rows)
