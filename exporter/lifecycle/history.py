"""An export's history: its runs and everything they left (batch records, reports, spools) and its
membership state. Deleting an export deletes all of it: the batch records hold the contacts that
were sent and the reports the emails of rejected rows, personal data with no purpose once the
export is gone."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..domain import Run
from ..logs import get_logger
from ..services import Services

log = get_logger(__name__)

# An ended run whose batches in flight have not moved for this long never will (their messages are
# gone): it no longer holds its export. The same time a run goes without progress before it is stuck.
DRAINED_AFTER = timedelta(minutes=30)


def in_flight(run: Run, now: datetime) -> bool:
    """Whether anything of the run may still write: it is going, or it ended (cancelled, failed) while
    batches it had sent out are still being counted, and they still move. A run cancelled before it
    was picked up for planning has nothing out."""
    if run.status.is_active:
        return True
    if run.counts_final or run.started_at is None:
        return False
    return run.progress_at is None or now - run.progress_at < DRAINED_AFTER


def busy_run(svc: Services, export_id: str) -> Run | None:
    """The export's latest run while anything of it may still write, else None."""
    run_id = svc.locks.holder(export_id)
    run = svc.runs.get(run_id) if run_id is not None else None
    return run if run is not None and in_flight(run, svc.clock()) else None


def delete_history(svc: Services, export_id: str) -> int:
    """Delete every run of the export with its records and files, then its state; returns the runs
    deleted. The caller checks first that no run is ``busy_run``, and deletes the export after: a
    delete that fails part way leaves the export, so it can be deleted again."""
    run_ids = svc.runs.ids_of_export(export_id)
    for run_id in run_ids:
        svc.batches.delete_run(run_id)
        svc.reports.delete(run_id)
        svc.changes.delete(run_id)
        svc.samples.delete(run_id)
        svc.spools.of(run_id).delete()
        svc.runs.delete(export_id, run_id)
    svc.locks.release(export_id)
    svc.states.delete(export_id)
    log.info("export deleted with its %d runs", len(run_ids), extra={"export_id": export_id})
    return len(run_ids)
