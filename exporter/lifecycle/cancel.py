"""Cancelling a run, and telling a running run why it will stop sending."""

from __future__ import annotations

from ..domain import Run, RunStatus
from ..logs import get_logger
from ..services import Services

log = get_logger(__name__)


class AlreadyEndedError(RuntimeError):
    def __init__(self, run: Run):
        self.run = run
        super().__init__(f"Run {run.id} already ended as {run.status.value}.")


def cancel_run(svc: Services, run_id: str, by: str) -> Run:
    """No further batches of the run are sent; batches in flight are still counted."""
    cancelled: list[bool] = []

    def mutate(r: Run):
        cancelled.clear()  # called again when another writer got in first: only the last call counts
        if r.status.is_final:
            return False
        r.status = RunStatus.CANCELLED
        r.finished_at = svc.clock()
        r.error = f"Cancelled by {by}."
        cancelled.append(True)

    run = svc.runs.update(run_id, mutate)
    if not cancelled:
        raise AlreadyEndedError(run)
    log.info("run cancelled: no further batches are sent", extra={"run_id": run.id, "export_id": run.export_id})
    return run


def note_on_active_run(svc: Services, run_id: str, error: str) -> None:
    """Say on a run that is still going why it will not send everything (it keeps its status)."""

    def mutate(r: Run):
        if r.status.is_final:
            return False
        r.error = error

    try:
        svc.runs.update(run_id, mutate)
    except KeyError:  # the run was deleted meanwhile
        pass
