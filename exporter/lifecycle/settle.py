"""Moving a run on from what its tally says, and ending it: the one place a run's end is decided.

All changes to a run go through ``RunRepository.update`` (ETag-guarded), because the planner and
many upload workers report into the same run at the same time.
"""

from __future__ import annotations

from datetime import datetime

from .. import telemetry
from ..domain import Run, RunCounts, RunStatus, TagPlanning, Tally
from ..logs import get_logger
from ..services import Services
from .member_state import write_state
from .tag_planning import plan_remaining_tags, request_tags

log = get_logger(__name__)


def _finish(run: Run, status: RunStatus, now: datetime, error: str | None = None) -> None:
    run.status = status
    run.finished_at = now
    if error:
        run.error = error


def final_status(c: RunCounts) -> tuple[RunStatus, str | None]:
    """How a run whose every row is accounted for ends, and the error that says why when it failed."""
    if c.read != c.accounted:
        return RunStatus.FAILED, (
            f"Counts do not add up: {c.read} rows read but {c.accounted} accounted for "
            f"({c.rejected} rejected, {c.duplicates} duplicates, {c.confirmed} confirmed, {c.failed} failed, "
            f"{c.skipped} skipped). Do not trust this run; report it.")
    if c.failed == 0 and c.rejected == 0 and c.tag_failures == 0:
        return RunStatus.SUCCEEDED, None
    if c.confirmed + c.skipped > 0:
        return RunStatus.PARTIALLY_SUCCEEDED, None
    return RunStatus.FAILED, "Omnisend confirmed no contact of the segment; see the report."


def conclude(run: Run, now: datetime) -> None:
    """The final status of a run whose every row is accounted for."""
    status, error = final_status(run.counts)
    if status is RunStatus.FAILED and run.error and run.counts.read == run.counts.accounted:
        error = run.error  # the run's own account of why nothing arrived says more
    _finish(run, status, now, error)


def fail_run(svc: Services, run_id: str, error: str, stop_reason: str | None = None) -> Run:
    """End the run as failed. ``stop_reason``: the reason the batches not yet sent are counted under,
    when the cause is one they share (otherwise they count as "not sent: the run had ended")."""
    def mutate(run: Run):
        if run.status.is_final:
            return False
        _finish(run, RunStatus.FAILED, svc.clock(), error)
        run.stop_reason = stop_reason

    run = svc.runs.update(run_id, mutate)
    log.warning("run failed: %s", error, extra={"run_id": run_id, "export_id": run.export_id})
    return run


def _no_tags(t: Tally) -> None:
    if t.tag_planning is TagPlanning.NOT_PLANNED:
        t.plan_tags(0)


def settle(svc: Services, run_id: str, tally: Tally) -> Run | None:
    """Move a run on from what its tally says; safe to call any number of times, from any worker.

    uploading -> verifying once every contact batch is sent; once every contact and untag batch is
    counted, an active run gets its tag batches planned, and when those are counted too its new
    membership state is written and it ends. A run already ended (cancelled, failed) just has its
    counts made final once everything in flight drained.
    """
    if tally.planned < 0:
        return None
    if not (tally.complete and tally.untags_done >= tally.untags_planned):
        if tally.batches_sent < tally.planned:
            return None

        def verifying(run: Run):
            if run.status is not RunStatus.UPLOADING:
                return False
            run.status = RunStatus.VERIFYING

        return svc.runs.update(run_id, verifying)
    if tally.tag_planning is TagPlanning.PLANNING or (tally.tags_are_planned and not tally.tags_complete):
        return None  # tags being planned or sent: the last of them to be counted moves the run on
    run = svc.runs.get(run_id)
    if run is None or (run.status.is_final and run.counts_final):
        return run
    if not run.status.is_final:
        if tally.tag_planning is TagPlanning.NOT_PLANNED and tally.confirmed == 0:
            tally = svc.tallies.update(run_id, _no_tags)  # nothing confirmed: nothing to tag
        if not tally.tags_are_planned:
            if tally.tag_planning is TagPlanning.NOT_PLANNED:
                request_tags(svc, run_id)
            return run
        if not tally.tags_complete:
            return run
        if final_status(run.counts)[0] is not RunStatus.FAILED:  # a failed run leaves the membership state as it was
            write_state(svc, run)
    elif tally.wave_tags_in_flight:
        return run  # an ended run's counts are final once the tag batches its waves planned are counted
    return _end(svc, run_id)


def _end(svc: Services, run_id: str) -> Run:
    ended: list[bool] = []  # this call made the counts final (the last try of ``mutate`` says)

    def mutate(run: Run):
        ended[:] = []
        if run.counts_final and run.status.is_final:
            return False
        if not run.status.is_final:
            conclude(run, svc.clock())
        run.counts_final = True
        ended.append(True)

    run = svc.runs.update(run_id, mutate)
    log.info("run ended %s", run.status.value, extra={"run_id": run.id, "export_id": run.export_id})
    if ended:
        telemetry.run_ended(run)
    try:
        svc.spools.of(run_id).delete()  # every batch is recorded: the plan's copy of the contacts goes
    except Exception:  # the run has ended either way; the blob is only left over
        log.warning("the run's batch spool could not be deleted", exc_info=True, extra={"run_id": run_id})
    return run


def plan_tags_and_settle(svc: Services, run_id: str) -> None:
    """The runs queue's ``PlanTags``: the run's last tag batches are planned, then the run moves on."""
    tally = plan_remaining_tags(svc, run_id)
    if tally is not None:
        settle(svc, run_id, tally)
