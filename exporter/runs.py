"""A run's life: started, planned, uploaded, verified, ended, with every row accounted for.

All changes to a run go through ``Storage.update_run`` (ETag-guarded), because the planner and many
upload workers report into the same run at the same time.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta

from .domain import BatchStatus, Export, Refresh, Run, RunCounts, RunStatus, Tally
from .logs import get_logger
from .services import Services

log = get_logger(__name__)

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


def _is_active(svc: Services, run_id: str) -> bool:
    run = svc.storage.get_run(run_id)
    return run is not None and run.status in ACTIVE


def active_run(svc: Services, export_id: str) -> Run | None:
    for locked_export, run_id in svc.storage.locked_runs():
        if locked_export == export_id:
            run = svc.storage.get_run(run_id)
            return run if run is not None and run.status in ACTIVE else None
    return None


def last_succeeded_run(svc: Services, export_id: str) -> Run | None:
    for run in svc.storage.list_runs(export_id, limit=50):
        if run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIALLY_SUCCEEDED):
            return run
    return None


def start_run(svc: Services, export: Export, trigger: str, refresh: Refresh | None = None, full: bool = False) -> Run:
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
    )
    holder = svc.storage.claim_export(export.id, run.id, lambda run_id: _is_active(svc, run_id))
    if holder is not None:
        current = svc.storage.get_run(holder)
        raise RunConflictError(current)
    svc.storage.create_run(run)
    svc.storage.send_run_message({"type": "plan", "runId": run.id})
    log.info("run queued", extra={"run_id": run.id, "export_id": export.id, "trigger": trigger})
    return run


def _finish(run: Run, status: RunStatus, now: datetime, error: str | None = None) -> None:
    run.status = status
    run.finished_at = now
    if error:
        run.error = error


def conclude(run: Run, now: datetime) -> None:
    """The final status of a run whose every row is accounted for."""
    c = run.counts
    if c.read != c.accounted:
        _finish(
            run,
            RunStatus.FAILED,
            now,
            f"Counts do not add up: {c.read} rows read but {c.accounted} accounted for "
            f"({c.rejected} rejected, {c.duplicates} duplicates, {c.confirmed} confirmed, {c.failed} failed, "
            f"{c.skipped} skipped). Do not trust this run; report it.",
        )
    elif c.failed == 0 and c.rejected == 0 and c.tag_failures == 0:
        _finish(run, RunStatus.SUCCEEDED, now)
    elif c.confirmed + c.skipped > 0:
        _finish(run, RunStatus.PARTIALLY_SUCCEEDED, now)
    else:
        _finish(run, RunStatus.FAILED, now, run.error or "No contact of the segment reached Omnisend; see the report.")


def _no_tags(t: Tally) -> None:
    if t.tags_planned == -1:
        t.tags_planned = 0


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

        return svc.storage.update_run(run_id, verifying)
    if tally.tags_planned == -2 or (tally.tags_planned >= 0 and not tally.tags_complete):
        return None  # tags being planned or sent: the last of them to be counted moves the run on
    run = svc.storage.get_run(run_id)
    if run is None or (run.status.is_final and run.counts_final):
        return run
    if not run.status.is_final:
        from .finalizer import request_tags, write_state

        if tally.tags_planned == -1 and tally.confirmed == 0:
            tally = svc.storage.update_tally(run_id, _no_tags)  # nothing confirmed: nothing to tag
        if tally.tags_planned < 0:
            if tally.tags_planned == -1:
                request_tags(svc, run_id)
            return run
        if not tally.tags_complete:
            return run
        write_state(svc, run)
    elif tally.wave_tags_in_flight:
        return run  # an ended run's counts are final once the tag batches its waves planned are counted

    def mutate(run: Run):
        if run.counts_final and run.status.is_final:
            return False
        if not run.status.is_final:
            conclude(run, svc.clock())
        run.counts_final = True

    run = svc.storage.update_run(run_id, mutate)
    log.info("run ended %s", run.status.value, extra={"run_id": run.id, "export_id": run.export_id})
    try:
        svc.storage.delete_spool(run_id)  # every batch is recorded: the plan's copy of the contacts goes
    except Exception:  # noqa: BLE001 - the run has ended either way; the blob is only left over
        log.warning("the run's batch spool could not be deleted", exc_info=True, extra={"run_id": run_id})
    return run


# How long a run may show no progress before it is reported as stuck.
STUCK_AFTER = {
    RunStatus.QUEUED: timedelta(minutes=15),
    RunStatus.PLANNING: timedelta(minutes=45),
    RunStatus.UPLOADING: timedelta(minutes=30),
    RunStatus.VERIFYING: timedelta(minutes=30),
}


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
    for _, run_id in svc.storage.locked_runs():
        run = svc.storage.get_run(run_id)
        if run is None or (run.status.is_final and run.counts_final):
            continue
        tally, _ = svc.storage.get_tally(run_id)
        if tally.tags_planned == -2 and run.progress_at and now - run.progress_at > timedelta(minutes=2):
            svc.storage.send_run_message({"type": "tags", "runId": run_id})  # its planner died: ask again
        run = settle(svc, run_id, tally) or run
        if not run.status.is_final and stuck_reason(run, now):
            log.warning("run looks stuck: %s", stuck_reason(run, now), extra={"run_id": run.id, "export_id": run.export_id})
            stuck.append(run)
    return stuck


class RetryError(RuntimeError):
    """A run's failed batches cannot be sent again now; the message says why."""


def retry_failed_batches(svc: Services, run_id: str) -> tuple[Run, int]:
    """Send a run's failed batches again: those that were never sent or whose outcome was never learned.

    Batches Omnisend processed keep their per-item results (resending a contact Omnisend rejected
    would fail the same way). The run opens again: its failed counts go back to in-flight, it holds
    its export's lock, and it ends like any run when the resent batches are counted.
    """
    run = svc.storage.get_run(run_id)
    if run is None:
        raise KeyError(run_id)
    if not run.status.is_final:
        raise RetryError(f"Run {run_id} is still {run.status.value}; retry its failed batches once it has ended.")
    # FAILED: give-ups and unknown outcomes; QUEUED: put back by a retry that was interrupted
    candidates = [b.number for b in svc.storage.list_batches(run_id)
                  if b.status in (BatchStatus.FAILED, BatchStatus.QUEUED)]
    if not candidates:
        return run, 0
    holder = svc.storage.claim_export(run.export_id, run.id, lambda other: other != run.id and _is_active(svc, other))
    if holder is not None:
        raise RetryError(f"Export {run.export_id} has run {holder} in progress; retry after it ends.")
    payloads = []
    for number in candidates:  # first take them out of the counts: the run cannot look complete meanwhile
        found = svc.storage.get_batch(run_id, number)
        if found is None:
            continue
        batch, etag = found
        if batch.status is BatchStatus.QUEUED:
            payloads.append(batch.payload)
            continue
        if batch.status is not BatchStatus.FAILED:
            continue
        by_reason, was_accepted, size = batch.failed_by_reason(), batch.omnisend_batch_id is not None, batch.size
        batch.status, batch.failures, batch.failed, batch.confirmed, batch.error = BatchStatus.QUEUED, [], 0, 0, None

        def uncount(t: Tally, by_reason=by_reason, was_accepted=was_accepted, size=size) -> None:
            t.add_failures({reason: -n for reason, n in by_reason.items()})
            t.failed_by_reason = {k: v for k, v in t.failed_by_reason.items() if v}
            t.batches_done -= 1
            t.batches_sent -= 1
            if was_accepted:
                t.sent -= size

        if svc.storage.commit_batch(batch, etag, uncount) is not None:
            payloads.append(batch.payload)

    def reopen(r: Run):
        r.status = RunStatus.UPLOADING
        r.finished_at = None
        r.error = None
        r.counts_final = False

    svc.storage.update_run(run_id, reopen)

    def tag_again(t: Tally) -> None:  # the contacts the retry confirms need their tag too
        t.tag_retry = True  # and no more waves: what is left is tagged once the retry is counted
        if t.tags_planned >= 0:
            t.tags_planned = -1

    svc.storage.update_tally(run_id, tag_again)
    for payload in payloads:
        svc.storage.send_batch_message(json.dumps({"type": "send", **payload}, separators=(",", ":")))
    log.info("retrying %d failed batches", len(payloads), extra={"run_id": run_id, "export_id": run.export_id})
    return svc.storage.get_run(run_id), len(payloads)


def fail_run(svc: Services, run_id: str, error: str) -> Run:
    def mutate(run: Run):
        if run.status.is_final:
            return False
        _finish(run, RunStatus.FAILED, svc.clock(), error)

    run = svc.storage.update_run(run_id, mutate)
    log.warning("run failed: %s", error, extra={"run_id": run_id, "export_id": run.export_id})
    return run
