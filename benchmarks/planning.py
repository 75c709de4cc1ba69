"""Benchmark 1, planning: read, map, validate, dedupe, diff and enqueue N rows, in a process of its own.

For each size two runs are planned, each in a fresh ``benchmarks.plan_worker`` process:
- ``first run``: no membership state; every valid member is spooled and handed off (N/100 batches:
  the spool uploaded as a blob, one dispatch message per 50 batches enqueued);
- ``re-run``: the refresh after 1% churn, diffed against the membership state of the base refresh
  (N members); only the ~2% changed or new members are enqueued, and the ~1% leavers untagged.
With ``previews``, each is also planned as a preview (``?dryRun=true``: ``preview`` and ``preview
re-run``), the way the app plans one: ``start_preview`` then the planner, so the same reading, diff and
changes report, then the sample and the estimate instead of the hand-off. The ``preview`` before any
run is the one a user meets first and the heaviest for the changes report (every member joins).
After every try the driver checks what it left (outside the measured process): the messages on the
two queues, whether the spool blob was uploaded, whether the membership state moved, and the changes
report's rows by kind, which must equal the run's joined, changed and left. A preview must leave no
message, no spool and the state as it was (``sent_nothing``).
Enqueued messages, spool blobs, changes reports and samples are removed afterwards (no uploader runs
here).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator

from azure.core.exceptions import ResourceNotFoundError

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
    kind: str  # "first run" | "re-run" | "preview" | "preview re-run"
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
    # what the try left, looked at after its process ended (not measured):
    queue_messages: int = 0  # on the run and batch queues right after planning
    spool_uploaded: bool = False  # exporter-runs/<run>/batches.jsonl exists
    state_moved: bool = False  # the export's current membership state is another blob than before
    changes_rows: dict[str, int] = field(default_factory=dict)  # changes report lines by kind
    changes_bytes: int = 0
    preview: dict | None = None  # the run's preview result (tags, estimate), for a preview

    @property
    def is_preview(self) -> bool:
        return self.kind.startswith("preview")

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

    @property
    def changes_add_up(self) -> bool:
        """The changes report lists exactly the members the counts say join, change and leave."""
        c, rows = self.counts, self.changes_rows
        return (c["joined"] + c["changed"] == c["queued"] and rows.get("joined", 0) == c["joined"]
                and rows.get("changed", 0) == c["changed"] and rows.get("left", 0) == c["left"]
                and sum(rows.values()) == c["joined"] + c["changed"] + c["left"])

    @property
    def sent_nothing(self) -> bool:
        """Nothing a sender could pick up: no queue message, no spool blob, no batch, the state as it was
        (no uploader runs in this benchmark, so these are the only ways out to Omnisend)."""
        return (self.queue_messages == 0 and not self.spool_uploaded and not self.state_moved
                and self.counts["batches"] == 0)


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


def _queue_messages(svc: Services) -> int:
    """Messages on the run and batch queues, delayed ones included (Azure's approximate count)."""
    return sum(svc.clients.queue(name).get_queue_properties().approximate_message_count
               for name in (config.QUEUE_RUNS, config.QUEUE_BATCHES))


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """The text lines of a blob streamed in chunks, ends kept (csv.reader joins quoted line breaks)."""
    rest = b""
    for chunk in chunks:
        *whole, rest = (rest + chunk).split(b"\n")
        for line in whole:
            yield line.decode("utf-8") + "\n"
    if rest:
        yield rest.decode("utf-8")


def count_changes(svc: Services, run_id: str) -> tuple[dict[str, int], int]:
    """The run's changes report, streamed: its rows by kind (joined, changed, left) and its size in bytes.

    The report's own reader, as the API downloads it; a report that was not written counts nothing.
    """
    size = 0

    def chunks() -> Iterator[bytes]:
        nonlocal size
        for chunk in svc.changes.read(run_id):
            size += len(chunk)
            yield chunk

    rows: dict[str, int] = {}
    try:
        reader = csv.reader(_lines(chunks()))
        next(reader, None)  # the header
        for row in reader:
            rows[row[1]] = rows.get(row[1], 0) + 1
    except ResourceNotFoundError:
        return {}, 0
    return rows, size


def _spool_exists(svc: Services, run_id: str) -> bool:
    return svc.clients.artifacts.get_blob_client(f"{run_id}/batches.jsonl").exists()


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
    _clear_queues(svc)  # the run's own plan message: plan_worker plans it directly
    state_before = svc.states.current_name(export.id)
    prof = os.path.join(profile_dir, f"{profile_name}-{rows}.prof") if profile_dir else None
    r = _plan_in_subprocess(run.id, prof)
    messages, spooled = _queue_messages(svc), _spool_exists(svc, run.id)
    state_moved = svc.states.current_name(export.id) != state_before
    changes, changes_bytes = count_changes(svc, run.id)
    _clear_queues(svc)
    svc.spools.of(run.id).delete()
    svc.changes.delete(run.id)
    svc.samples.delete(run.id)
    quiet = logging.getLogger("exporter.lifecycle.settle")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "run failed" is this cleanup, not news
    try:
        fail_run(svc, run.id, "benchmark: planning measured, nothing sent")  # frees the export for the next try
    finally:
        quiet.setLevel(level)
    return PlanResult(rows, kind, r["wall"], r["enqueue"], r["state_load"], r["cpu"], r["rss_before_mb"],
                      r["peak_rss_mb"], r["counts"], r["status"], write_seconds, loadavg(), r["enqueue_cpu"],
                      r.get("reader_peak_rss_mb", 0.0), messages, spooled, state_moved, changes, changes_bytes,
                      r.get("preview"))


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
            f"skipped {c['skipped']:,} left {c['left']:,} batches {c['batches']:,}; changes report "
            f"{sum(r.changes_rows.values()):,} rows ({r.changes_bytes / 1e6:.1f} MB), "
            f"{'adds up' if r.changes_add_up else 'DOES NOT ADD UP'}; {r.queue_messages:,} queue messages"
            + (f"; sent nothing: {'yes' if r.sent_nothing else 'NO'}" if r.is_preview else ""))
