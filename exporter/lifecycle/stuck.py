"""Runs that stopped making progress: ended when their tally says they are done, reported otherwise."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..domain import Run, RunStatus, TagPlanning
from ..logs import get_logger
from ..messages import PlanTags
from ..services import Services
from .settle import settle

log = get_logger(__name__)

# How long a run may show no progress before it is reported as stuck.
STUCK_AFTER = {
    RunStatus.QUEUED: timedelta(minutes=15),
    RunStatus.PLANNING: timedelta(minutes=45),
    RunStatus.UPLOADING: timedelta(minutes=30),
    RunStatus.VERIFYING: timedelta(minutes=30),
}
TAG_PLANNER_LOST_AFTER = timedelta(minutes=2)  # tags asked for this long ago and still not planned


def stuck_reason(run: Run, now: datetime) -> str | None:
    """Why an active run looks stuck, or None. Progress is the last change of the run or its tally."""
    limit = STUCK_AFTER.get(run.status)
    if limit is None or run.progress_at is None or now - run.progress_at < limit:
        return None
    minutes = int((now - run.progress_at).total_seconds() // 60)
    if run.status is RunStatus.QUEUED:
        return f"queued for {minutes} minutes: no planner picked it up (is the queue trigger running?)"
    if run.status is RunStatus.PLANNING:
        return f"planning for {minutes} minutes without finishing"
    return f"no batch has made progress for {minutes} minutes"


def reconcile(svc: Services) -> list[Run]:
    """Look at every export's latest run: end the ones whose tally is complete (a worker died between
    counting a batch and moving the run on), and return the ones that look stuck."""
    stuck = []
    now = svc.clock()
    for _, run_id in svc.locks.held():
        run = svc.runs.get(run_id)
        if run is None or (run.status.is_final and run.counts_final):
            continue
        tally = svc.tallies.get(run_id)
        if (tally.tag_planning is TagPlanning.PLANNING and run.progress_at
                and now - run.progress_at > TAG_PLANNER_LOST_AFTER):
            svc.run_queue.send(PlanTags(run_id))  # its planner died: ask again
        run = settle(svc, run_id, tally) or run
        if not run.status.is_final and stuck_reason(run, now):
            log.warning("run looks stuck: %s", stuck_reason(run, now), extra={"run_id": run.id, "export_id": run.export_id})
            stuck.append(run)
    return stuck
