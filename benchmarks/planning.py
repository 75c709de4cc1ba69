"""Benchmark 1, planning: read, map, validate, dedupe, diff and enqueue N rows, in a process of its own.

For each size two runs are planned, each in a fresh ``benchmarks.plan_worker`` process:
- ``first run``: no membership state; every valid member is spooled and handed off (N/100 batches:
  the spool uploaded as a blob, one dispatch message per 50 batches enqueued);
- ``re-run``: the refresh after 1% churn, diffed against the membership state of the base refresh
  (N members); only the ~2% changed or new members are enqueued, and the ~1% leavers untagged.
With ``previews``, each is also planned as a preview (``?dryRun=true``: ``preview`` and ``preview
re-run``): the same reading, diff and changes report, then the sample and the estimate instead of the
hand-off.
Enqueued messages and spool blobs are removed afterwards (no uploader runs here).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from devtools import azurite
from exporter import config, segments
from exporter.config import load_settings
from exporter.domain import Connection, Export, Mapping, Source, fingerprint, member_key, planned_fp, utcnow
from exporter.lifecycle.settle import fail_run
from exporter.lifecycle.start import start_preview, start_run
from exporter.planning.mapping import ContactMapper, ContactOptions, Rejection
from exporter.services import Services, build_services
from exporter.state.membership import StateHeader, Upserts

from . import segment as seg
from .stack import ROOT, loadavg


@dataclass
class PlanResult:
    rows: int
    kind: str  # "first run" | "re-run"
    wall: float
    enqueue: float
    state_load: float
    cpu: float
    rss_before_mb: float
    peak_rss_mb: float
    counts: dict
    status: str
    write_seconds: float = 0.0
    loadavg: str = ""
    enqueue_cpu: float = 0.0  # CPU seconds of this process while enqueueing (the storage client's share)
    reader_peak_rss_mb: float = 0.0  # the segment reader process (exporter/prepared_rows.py), when one ran

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall

    @property
    def rows_per_s_without_enqueue(self) -> float:
        return self.rows / max(self.wall - self.enqueue, 1e-9)

    @property
    def balanced(self) -> bool:
        c = self.counts
        return c["read"] == c["rejected"] + c["duplicates"] + c["queued"] + c["skipped"]


def services() -> Services:
    svc = build_services(load_settings({"AzureWebJobsStorage": azurite.connection_string(), "EXPORTER_DEV_MODE": "1",
                                        "REFRESH_SETTLE_SECONDS": "0"}))
    svc.clients.ensure_resources()
    return svc


def _export(svc: Services, segment: str) -> Export:
    now = utcnow()
    conn = Connection(id=uuid.uuid4().hex, display_name="benchmark", allow_contributors=False,
                      data_privacy_consent=True, consented_by="benchmark", consented_at=now, created_at=now)
    svc.connections.put(conn)
    export = Export(id=uuid.uuid4().hex, name=f"{segment} (benchmark)", connection_id=conn.id,
                    source=Source(seg.CONTAINER, seg.FOLDER, segment), mapping=Mapping.from_api(seg.MAPPING),
                    enabled=True, created_at=now, updated_at=now)
    svc.exports.put(export)
    return export


def _clear_queues(svc: Services) -> None:
    for name in (config.QUEUE_RUNS, config.QUEUE_BATCHES):
        svc.clients.queue(name).clear_messages()


def _plan_in_subprocess(run_id: str, profile: str | None) -> dict:
    env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string(), "EXPORTER_DEV_MODE": "1",
           "REFRESH_SETTLE_SECONDS": "0"}
    cmd = [sys.executable, "-m", "benchmarks.plan_worker", run_id] + (["--profile", profile] if profile else [])
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"plan_worker failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_state_of_refresh(svc: Services, export: Export) -> int:
    """The membership state a confirmed full run of the current refresh would leave (setup, not measured).

    The same rows, contacts and fingerprints as the planner computes; counts in the re-run show
    whether they agree (every unchanged member must be skipped).
    """
    container = svc.clients.segment_container(export.source.container)
    refresh = segments.find_latest_refresh(container, export.source.folder, export.source.segment)
    schema = segments.load_schema(container, export.source.folder, export.source.segment, refresh)
    mapper = ContactMapper(schema.columns, export.mapping, ContactOptions())
    seen: set[int] = set()
    upserts = Upserts()
    for _, _, fields, error in segments.read_rows(container, refresh, schema):
        if error is not None:
            continue
        mapped = mapper.map_json(fields, "2026-01-01T00:00:00Z")
        if isinstance(mapped, Rejection):
            continue
        email, fp_text, _, marks = mapped
        key = member_key(email)
        if key in seen:
            continue
        seen.add(key)
        upserts.add(key, planned_fp(fingerprint(fp_text), marks), email)
    header = StateHeader(export.id, export.connection_id, export.sync_key(), export.effective_tag, "benchmark-state", 0)
    return svc.states.write(header, upserts.sorted())


def bench_size(svc: Services, rows: int, profile_dir: str | None = None, log=print, repeat: int = 1,
               previews: bool = False) -> list[PlanResult]:
    """Each run planned ``repeat`` times (this machine's wall times vary by a third from one try to the next;
    the report shows the median and every try)."""
    segment = f"Plan{rows}x{uuid.uuid4().hex[:6]}"
    written = seg.write(segment, rows, churned=False, minutes_ago=30)
    log(f"  wrote {rows:,} rows ({written.bytes / 1e6:.0f} MB, {len(written.partitions)} partitions) "
        f"in {written.seconds:.1f}s")
    first, again = _export(svc, segment), _export(svc, segment)
    results = []

    for i in range(repeat):
        results.append(_measure(svc, first, rows, "first run", written.seconds, profile_dir, f"plan-first{i or ''}"))
        log(f"  first run: {_line(results[-1])}")
    for i in range(repeat if previews else 0):
        results.append(_measure(svc, first, rows, "preview", written.seconds, profile_dir, f"preview-first{i or ''}"))
        log(f"  preview:   {_line(results[-1])}")

    t = time.perf_counter()
    members = write_state_of_refresh(svc, again)
    log(f"  state of {members:,} members written in {time.perf_counter() - t:.1f}s (setup)")
    written = seg.write(segment, rows, churned=True, minutes_ago=20)
    for i in range(repeat):
        results.append(_measure(svc, again, rows, "re-run", written.seconds, profile_dir, f"plan-rerun{i or ''}"))
        log(f"  re-run:    {_line(results[-1])}")
    for i in range(repeat if previews else 0):
        results.append(_measure(svc, again, rows, "preview re-run", written.seconds, profile_dir,
                                f"preview-rerun{i or ''}"))
        log(f"  preview re-run: {_line(results[-1])}")
    _cleanup(svc, segment, (first, again))
    return results


def _measure(svc: Services, export: Export, rows: int, kind: str, write_seconds: float, profile_dir: str | None,
             profile_name: str) -> PlanResult:
    """Plan one run of ``export`` in a fresh process; its messages and spool are removed afterwards."""
    run = start_preview(svc, export) if kind.startswith("preview") else start_run(svc, export, "benchmark")
    _clear_queues(svc)
    prof = os.path.join(profile_dir, f"{profile_name}-{rows}.prof") if profile_dir else None
    r = _plan_in_subprocess(run.id, prof)
    _clear_queues(svc)
    svc.spools.of(run.id).delete()
    quiet = logging.getLogger("exporter.lifecycle.settle")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "run failed" is this cleanup, not news
    try:
        fail_run(svc, run.id, "benchmark: planning measured, nothing sent")  # frees the export for the next try
    finally:
        quiet.setLevel(level)
    return PlanResult(rows, kind, r["wall"], r["enqueue"], r["state_load"], r["cpu"], r["rss_before_mb"],
                      r["peak_rss_mb"], r["counts"], r["status"], write_seconds, loadavg(), r["enqueue_cpu"],
                      r.get("reader_peak_rss_mb", 0.0))


def _cleanup(svc: Services, segment: str, exports: tuple[Export, ...]) -> None:
    """Remove what the runs left: exports, connections, the state and the segment (they would linger)."""
    for export in exports:
        svc.states.delete(export.id)
        svc.exports.delete(export.id)
        svc.connections.delete(export.connection_id)
    seg.delete(segment)


def _line(r: PlanResult) -> str:
    c = r.counts
    return (f"{r.rows_per_s:,.0f} rows/s ({r.wall:.1f}s, enqueue {r.enqueue:.1f}s), peak RSS {r.peak_rss_mb:.0f} MB"
            f"{f' + reader {r.reader_peak_rss_mb:.0f} MB' if r.reader_peak_rss_mb else ''}; "
            f"read {c['read']:,} rejected {c['rejected']:,} duplicates {c['duplicates']:,} queued {c['queued']:,} "
            f"skipped {c['skipped']:,} left {c['left']:,} batches {c['batches']:,}")
