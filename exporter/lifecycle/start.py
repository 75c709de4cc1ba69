"""Starting a run: one per export at a time, whatever triggers it."""

from __future__ import annotations

import time
import uuid

from ..domain import Export, Refresh, Run, RunCounts, RunKind, RunStatus, Trigger
from ..logs import get_logger
from ..messages import PlanRun
from ..services import Services

log = get_logger(__name__)


class RunConflictError(RuntimeError):
    """The export already has a run in progress."""

    def __init__(self, active: Run | None, export_id: str, run_id: str):
        self.active = active
        self.active_run_id = run_id
        state = f" ({active.status.value})" if active is not None else ""
        super().__init__(f"Export {export_id} already has run {run_id} in progress{state}.")


def new_run_id() -> str:
    """Run ids sort newest first in table order: inverted milliseconds, then randomness."""
    inverted = 10**13 - int(time.time() * 1000)
    return f"{inverted:013d}{uuid.uuid4().hex[:8]}"


def holds_export(svc: Services, run_id: str) -> bool | None:
    """Whether the run a lock names still holds its export; None when there is no such run (yet)."""
    status = svc.runs.status(run_id)
    return None if status is None else status.is_active


def active_run(svc: Services, export_id: str) -> Run | None:
    run_id = svc.locks.holder(export_id)
    run = svc.runs.get(run_id) if run_id is not None else None
    return run if run is not None and run.status.is_active else None


def last_succeeded_run(svc: Services, export_id: str) -> Run | None:
    """The newest run that reached Omnisend (a preview never did)."""
    for run in svc.runs.list(export_id, limit=50):
        if not run.is_preview and run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIALLY_SUCCEEDED):
            return run
    return None


def latest_run(svc: Services, export_id: str) -> Run | None:
    """The newest run, previews aside."""
    return next((r for r in svc.runs.list(export_id, limit=50) if not r.is_preview), None)


def start_run(svc: Services, export: Export, trigger: str, refresh: Refresh | None = None, full: bool = False,
              confirm: bool = False) -> Run:
    """Record a queued run and hand it to the planner queue. Never plans inline (HTTP must answer fast).

    One run per export at a time: the export's lock names its run, and only an ended run's lock
    can be taken over (so two triggers at the same moment cannot both start one).
    """
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
        full=full,
        confirm=confirm,
    )
    holder = svc.locks.claim(export.id, run.id, lambda run_id: holds_export(svc, run_id), now=svc.clock)
    if holder is not None:
        raise RunConflictError(svc.runs.get(holder), export.id, holder)
    svc.runs.create(run)
    svc.run_queue.send(PlanRun(run.id))
    log.info("run queued", extra={"run_id": run.id, "export_id": export.id, "trigger": trigger})
    return run


def start_preview(svc: Services, export: Export, refresh: Refresh | None = None, full: bool = False) -> Run:
    """Record a queued preview and hand it to the planner queue, as a run.

    A preview takes no lock: it sends nothing and writes no membership state, so it may plan beside a
    run (and a run may start while a preview plans). It reads the state the last confirmed run left.
    """
    run = Run(id=new_run_id(), export_id=export.id, connection_id=export.connection_id, trigger=Trigger.MANUAL.value,
              status=RunStatus.QUEUED, counts=RunCounts(), created_at=svc.clock(),
              refresh_folder=refresh.folder if refresh else None,
              refresh_fingerprint=refresh.fingerprint if refresh else None, full=full, kind=RunKind.PREVIEW)
    svc.runs.create(run)
    svc.run_queue.send(PlanRun(run.id))
    log.info("preview queued", extra={"run_id": run.id, "export_id": export.id})
    return run
