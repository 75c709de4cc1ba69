"""A run's life: started, planned, uploaded, verified, ended, with every row accounted for.

All changes to a run go through ``Storage.update_run`` (ETag-guarded), because the planner and many
upload workers report into the same run at the same time.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime

from .domain import Export, Refresh, Run, RunCounts, RunStatus
from .services import Services

log = logging.getLogger(__name__)

ACTIVE = (RunStatus.QUEUED, RunStatus.PLANNING, RunStatus.UPLOADING, RunStatus.VERIFYING)


class RunConflictError(RuntimeError):
    """The export already has a run in progress."""

    def __init__(self, active: Run):
        self.active = active
        super().__init__(f"Export {active.export_id} already has run {active.id} in progress ({active.status.value}).")


def new_run_id() -> str:
    """Run ids sort newest first in table order: inverted milliseconds, then randomness."""
    inverted = 10**13 - int(time.time() * 1000)
    return f"{inverted:013d}{uuid.uuid4().hex[:8]}"


def active_run(svc: Services, export_id: str) -> Run | None:
    for run in svc.storage.list_runs(export_id, limit=20):
        if run.status in ACTIVE:
            return run
    return None


def last_succeeded_run(svc: Services, export_id: str) -> Run | None:
    for run in svc.storage.list_runs(export_id, limit=50):
        if run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIALLY_SUCCEEDED):
            return run
    return None


def start_run(svc: Services, export: Export, trigger: str, refresh: Refresh | None = None) -> Run:
    """Record a queued run and hand it to the planner queue. Never plans inline (HTTP must answer fast)."""
    current = active_run(svc, export.id)
    if current is not None:
        raise RunConflictError(current)
    run = Run(
        id=new_run_id(),
        export_id=export.id,
        connection_id=export.connection_id,
        trigger=trigger,
        status=RunStatus.QUEUED,
        counts=RunCounts(),
        created_at=svc.clock(),
        refresh_folder=refresh.folder if refresh else None,
        refresh_fingerprint=refresh.fingerprint if refresh else None,
    )
    svc.storage.create_run(run)
    svc.storage.send_run_message({"type": "plan", "runId": run.id})
    log.info("run queued", extra={"run_id": run.id, "export_id": export.id, "trigger": trigger})
    return run


def _finish(run: Run, status: RunStatus, now: datetime, error: str | None = None) -> None:
    run.status = status
    run.finished_at = now
    if error:
        run.error = error


def settle(run: Run, now: datetime) -> None:
    """Move an uploading run on once its batches are sent, and end it once all are accounted for."""
    c = run.counts
    if run.status not in (RunStatus.UPLOADING, RunStatus.VERIFYING):
        return
    if c.batches_done >= c.batches:
        if c.read != c.accounted:
            _finish(
                run,
                RunStatus.FAILED,
                now,
                f"Counts do not add up: {c.read} rows read but {c.accounted} accounted for "
                f"({c.rejected} rejected, {c.duplicates} duplicates, {c.confirmed} confirmed, {c.failed} failed, "
                f"{c.skipped} skipped). Do not trust this run; report it.",
            )
        elif c.failed == 0 and c.rejected == 0:
            _finish(run, RunStatus.SUCCEEDED, now)
        elif c.confirmed + c.skipped > 0:
            _finish(run, RunStatus.PARTIALLY_SUCCEEDED, now)
        else:
            _finish(run, RunStatus.FAILED, now, run.error or "No contact of the segment reached Omnisend; see the report.")
    elif run.status is RunStatus.UPLOADING and c.batches_sent >= c.batches:
        run.status = RunStatus.VERIFYING


def fail_run(svc: Services, run_id: str, error: str) -> Run:
    def mutate(run: Run):
        if run.status.is_final:
            return False
        _finish(run, RunStatus.FAILED, svc.clock(), error)

    run = svc.storage.update_run(run_id, mutate)
    log.warning("run failed: %s", error, extra={"run_id": run_id, "export_id": run.export_id})
    return run


def record_batch_outcome(
    svc: Services,
    run_id: str,
    *,
    confirmed: int = 0,
    failed_by_reason: dict[str, int] | None = None,
    skipped: int = 0,
    was_sent: bool = True,
) -> Run:
    """Count one batch as done. Call exactly once per batch (the batch entity's ETag guarantees it).

    ``was_sent`` is False for a batch given up before Omnisend accepted it.
    """

    def mutate(run: Run):
        c = run.counts
        if not was_sent:
            c.batches_sent += 1
        c.confirmed += confirmed
        for reason, n in (failed_by_reason or {}).items():
            c.add_failures(reason, n)
        c.skipped += skipped
        c.batches_done += 1
        settle(run, svc.clock())

    return svc.storage.update_run(run_id, mutate)


def record_batch_sent(svc: Services, run_id: str, size: int) -> Run:
    def mutate(run: Run):
        run.counts.sent += size
        run.counts.batches_sent += 1
        settle(run, svc.clock())

    return svc.storage.update_run(run_id, mutate)
