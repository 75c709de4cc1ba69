"""Sending a run's failed batches again, after it ended."""

from __future__ import annotations

from ..domain import BatchStatus, Run, RunStatus, TagPlanning, Tally
from ..logs import get_logger
from ..messages import SendBatch
from ..services import Services
from .start import holds_export

log = get_logger(__name__)


class RetryError(RuntimeError):
    """A run's failed batches cannot be sent again now; the message says why."""


def _uncount(svc: Services, run_id: str, number: int) -> SendBatch | None:
    """Take a failed batch out of the counts (the run cannot look complete meanwhile); its message."""
    found = svc.batches.get(run_id, number)
    if found is None:
        return None
    batch, etag = found
    payload = batch.payload if isinstance(batch.payload, SendBatch) else None
    if batch.status is BatchStatus.QUEUED:
        return payload
    if batch.status is not BatchStatus.FAILED:
        return None
    by_reason, was_accepted, size = batch.failed_by_reason(), batch.omnisend_batch_id is not None, batch.size
    batch.status, batch.failures, batch.failed, batch.confirmed, batch.error = BatchStatus.QUEUED, [], 0, 0, None

    def uncount(t: Tally) -> None:
        t.add_failures({reason: -n for reason, n in by_reason.items()})
        t.failed_by_reason = {k: v for k, v in t.failed_by_reason.items() if v}
        t.batches_done -= 1
        t.batches_sent -= 1
        if was_accepted:
            t.sent -= size

    return payload if svc.batches.commit(batch, etag, uncount) is not None else None


def retry_failed_batches(svc: Services, run_id: str) -> tuple[Run, int]:
    """Send a run's failed batches again: those that were never sent or whose outcome was never learned.

    Batches Omnisend processed keep their per-item results (resending a contact Omnisend rejected
    would fail the same way). The run opens again: its failed counts go back to in-flight, it holds
    its export's lock, and it ends like any run when the resent batches are counted.
    """
    run = svc.runs.get(run_id)
    if run is None:
        raise KeyError(run_id)
    if not run.status.is_final:
        raise RetryError(f"Run {run_id} is still {run.status.value}; retry its failed batches once it has ended.")
    if run.is_preview:
        raise RetryError(f"Run {run_id} is a preview: it sends nothing, so it has nothing to retry. Start a run of the "
                         "export instead.")
    if svc.exports.get(run.export_id) is None:
        raise RetryError(f"The export of run {run_id} was deleted; its batches are not sent again.")
    if svc.connections.get(run.connection_id) is None:
        raise RetryError(f"The connection run {run_id} was made with ({run.connection_id}) was removed; its batches "
                         "cannot be sent again. Run the export with a connection that exists instead.")
    # FAILED: give-ups and unknown outcomes; QUEUED: put back by a retry that was interrupted
    candidates = [b.number for b in svc.batches.list(run_id) if b.status in (BatchStatus.FAILED, BatchStatus.QUEUED)]
    if not candidates:
        return run, 0
    holder = svc.locks.claim(run.export_id, run.id,
                             lambda other: False if other == run.id else holds_export(svc, other), now=svc.clock)
    if holder is not None:
        raise RetryError(f"Export {run.export_id} has run {holder} in progress; retry after it ends.")
    payloads = [p for p in (_uncount(svc, run_id, n) for n in candidates) if p is not None]

    def reopen(r: Run):
        r.status = RunStatus.UPLOADING
        r.finished_at = None
        r.error = None
        r.counts_final = False

    svc.runs.update(run_id, reopen)

    def tag_again(t: Tally) -> None:  # the contacts the retry confirms need their tag too
        t.tag_retry = True  # and no more waves: what is left is tagged once the retry is counted
        if t.tags_are_planned:
            t.tag_planning = TagPlanning.NOT_PLANNED

    svc.tallies.update(run_id, tag_again)
    for payload in payloads:
        svc.batch_queue.send(payload)
    log.info("retrying %d failed batches", len(payloads), extra={"run_id": run_id, "export_id": run.export_id})
    return svc.runs.require(run_id), len(payloads)
