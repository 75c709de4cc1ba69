"""A run's status while it is planned: claimed, planned (then uploading), or ended before sending."""

from __future__ import annotations

from .. import telemetry
from ..domain import PreviewResult, Refresh, Run, RunCounts, RunStatus, Tally
from ..domain.reasons import REASON_NOT_SENT_UNREADABLE
from ..logs import get_logger
from ..services import Services
from .settle import conclude, settle

log = get_logger(__name__)


def claim_for_planning(svc: Services, run_id: str, redelivered: bool) -> tuple[Run | None, bool]:
    """Claim a queued run for planning: (run, False) when another delivery of the message already did,
    or the run was cancelled before it was planned; (None, False) when it was deleted with its export.

    A redelivered message may take over a run left in planning: its worker died (planning is
    repeatable; batches already enqueued are recognised by number and not sent twice).
    """
    claimed: list[bool] = []

    def mutate(run: Run):
        claimed.clear()  # called again when another writer got in first: only the last call counts
        if not (run.status is RunStatus.QUEUED or (redelivered and run.status is RunStatus.PLANNING)):
            return False
        run.status = RunStatus.PLANNING
        run.started_at = svc.clock()
        claimed.append(True)

    try:
        run = svc.runs.update(run_id, mutate)
    except KeyError:  # deleted with its export (a run cancelled before it was planned)
        return None, False
    return run, bool(claimed)


def _copy_planning_counts(c: RunCounts, counts: RunCounts) -> None:
    c.read, c.rejected, c.rejected_by_reason = counts.read, counts.rejected, dict(counts.rejected_by_reason)
    c.duplicates, c.queued = counts.duplicates, counts.queued
    c.joined, c.changed, c.changed_fields = counts.joined, counts.changed, dict(counts.changed_fields)
    c.skipped, c.left, c.already_tagged = counts.skipped, counts.left, counts.already_tagged


def record_plan(svc: Services, run_id: str, counts: RunCounts, refresh: Refresh, untags: int = 0) -> Run:
    """Planning is done and its batches are out: its counts go on the run, then the tally learns how
    many batches to expect.

    In this order, because the tally's planned count is what lets the run end: no worker may
    conclude the run before the planning counts are on it.
    """

    def mutate(run: Run):
        _copy_planning_counts(run.counts, counts)
        run.counts.batches = counts.batches
        run.refresh_folder, run.refresh_fingerprint = refresh.folder, refresh.fingerprint
        run.changes_kept = True
        if run.status is RunStatus.PLANNING:
            run.status = RunStatus.UPLOADING

    svc.runs.update(run_id, mutate)

    def planned(t: Tally) -> None:
        t.planned = counts.batches
        t.untags_planned = untags

    tally = svc.tallies.update(run_id, planned)
    try:
        return settle(svc, run_id, tally) or svc.runs.require(run_id)
    except Exception:  # batches are out: this is no planning failure ("nothing was sent")
        # the workers' next settle, or the timer's reconcile (lifecycle/stuck.py), moves the run on
        log.exception("moving the run on after planning failed", extra={"run_id": run_id})
        return svc.runs.require(run_id)


def abandon(svc: Services, run_id: str, counts: RunCounts, refresh: Refresh | None, reason: str,
            error: str | None, held: bool = False) -> Run:
    """End a run whose contacts will not be sent; they are counted as failed with ``reason``.

    The planning counts, the unsent contacts, the end of the run and ``counts_final`` are written in
    one step: a run never shows as ended with counts that do not add up yet (a caller polling it
    would take them for its result). The tally records the same afterwards. ``held``: a safety
    threshold stopped it (the same run with ``confirm`` would go through).
    """
    unsent, counts.batches = counts.queued, 0

    def mutate(run: Run):
        _copy_planning_counts(run.counts, counts)
        run.counts.batches, run.counts.left, run.counts.already_tagged = 0, 0, 0
        run.counts.add_failures(reason, unsent)
        if refresh is not None:  # the refresh was read: its changes report was written
            run.refresh_folder, run.refresh_fingerprint = refresh.folder, refresh.fingerprint
            run.changes_kept = True
        if not run.status.is_final:  # a run cancelled while planning stays cancelled
            run.held = held
            if error:
                run.status, run.finished_at, run.error = RunStatus.FAILED, svc.clock(), error
            else:
                conclude(run, svc.clock())
        run.counts_final = True

    run = svc.runs.update(run_id, mutate)
    if run.is_preview:  # nothing would have been sent anyway: no alert, no run metrics
        log.info("preview ended %s: %s", run.status.value, error or reason,
                 extra={"run_id": run_id, "export_id": run.export_id})
    else:
        log.warning("run ended %s before sending: %s", run.status.value, error or reason,
                    extra={"run_id": run_id, "export_id": run.export_id})
        telemetry.run_ended(run)

    def nothing_sent(t: Tally) -> None:
        t.planned = 0
        t.add_failures({reason: unsent})

    svc.tallies.update(run_id, nothing_sent)
    return run


def fail_before_reading(svc: Services, run_id: str, error: str) -> Run:
    """A run that ends before reading any row: nothing read, nothing to account for."""
    return abandon(svc, run_id, RunCounts(), None, REASON_NOT_SENT_UNREADABLE, error)


def note_empty_refresh(svc: Services, run_id: str, refresh: Refresh, left: int) -> None:
    """A refresh without a single row is an empty segment: the run goes on (and can succeed), but
    says so, since an empty export by mistake of the platform looks the same."""
    untagged = f" and the {left} members of the last confirmed run lose the tag" if left else ""
    note = (f"The refresh {refresh.folder} has no rows: the segment is empty, so nothing was sent{untagged}. "
            "If the segment is not empty, the platform wrote an empty refresh; check its export.")

    def mutate(run: Run):
        if run.status.is_final:
            return False
        run.error = note

    svc.runs.update(run_id, mutate)
    log.warning("refresh %s has no rows; %d members left", refresh.folder, left)


def record_preview(svc: Services, run_id: str, counts: RunCounts, refresh: Refresh, preview: PreviewResult) -> Run:
    """A preview is planned: its counts and result go on the run, which ends. Nothing was sent, so
    there is no tally to wait for; a preview cancelled meanwhile stays cancelled."""

    def mutate(run: Run):
        _copy_planning_counts(run.counts, counts)
        run.counts.batches = 0  # none exists: the estimate says how many a run would send
        run.refresh_folder, run.refresh_fingerprint = refresh.folder, refresh.fingerprint
        run.preview = preview
        run.changes_kept = True
        if not run.status.is_final:
            run.status, run.finished_at = RunStatus.SUCCEEDED, svc.clock()
        run.counts_final = True

    run = svc.runs.update(run_id, mutate)
    log.info("preview %s: %d would be sent (%d joined, %d changed), %d unchanged, %d would leave; about %.0f s",
             run.status.value, counts.queued, counts.joined, counts.changed, counts.skipped, counts.left,
             preview.estimate.seconds)
    return run
