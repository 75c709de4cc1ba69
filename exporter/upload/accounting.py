"""Recording what became of a batch: its record and the run's tally change in one transaction
(``BatchRepository.commit``), guarded by the batch's ETag, so a message delivered twice neither
counts a batch twice nor loses it; then the run follows its tally (``lifecycle.settle``)."""

from __future__ import annotations

from typing import Callable

from ..domain import Batch, BatchKind, BatchStatus, Failure, Tally
from ..lifecycle.settle import settle
from ..logs import get_logger
from ..messages import SendBatch, TagBatch
from ..services import Services

log = get_logger(__name__)


def commit(svc: Services, batch: Batch, etag: str | None, mutate: Callable[[Tally], None]) -> bool:
    """Write the batch and move the tally in one step; then let the run follow its tally. False when
    another worker changed the batch first (its step was already done)."""
    tally = svc.batches.commit(batch, etag, mutate)
    if tally is None:
        log.info("batch %d changed under this worker; its step was already done", batch.number,
                 extra={"run_id": batch.run_id, "batch": batch.number})
        return False
    settle(svc, batch.run_id, tally)
    return True


def fail_accepted(svc: Services, batch: Batch, etag: str | None, reason: str, detail: str) -> None:
    """An accepted batch whose outcome cannot be learned: its contacts count as failed."""
    batch.fail_all(reason, detail)

    def counted(t: Tally) -> None:
        t.add_failures({reason: batch.size})
        t.batches_done += 1

    commit(svc, batch, etag, counted)


def give_up_contacts(svc: Services, message: SendBatch, reason: str, detail: str) -> None:
    """Account for a contact batch that will not be sent (or whose send kept failing): every contact failed."""
    found = svc.batches.get(message.run_id, message.number)
    if found is not None and found[0].status.is_final:
        return
    if found is not None and found[0].status is BatchStatus.ACCEPTED:
        fail_accepted(svc, found[0], found[1], reason, detail)
        return
    size = message.size
    batch = Batch(run_id=message.run_id, number=message.number, size=size, status=BatchStatus.FAILED, error=detail,
                  failed=size, payload=message, failures=[Failure(i, reason, detail) for i in range(size)])

    def counted(t: Tally) -> None:
        t.add_failures({reason: size})
        t.batches_sent += 1  # it left the queue, unsent
        t.batches_done += 1

    if commit(svc, batch, found[1] if found else None, counted):
        log.warning("batch given up: %s (%s)", reason, detail, extra={"run_id": message.run_id, "batch": message.number})


def give_up_tags(svc: Services, message: TagBatch, detail: str) -> None:
    """A tag batch that will not be done: its members stay out of the state, so the next run redoes them."""
    kind = message.kind
    found = svc.batches.get(message.run_id, message.number, kind)
    if found is not None and found[0].status.is_final:
        return
    size = message.size
    batch = Batch(run_id=message.run_id, number=message.number, size=size, kind=kind, status=BatchStatus.FAILED,
                  failed=size, error=detail, payload=message)

    def failed(t: Tally) -> None:
        t.tag_failures += size
        if kind is BatchKind.TAGS:
            t.tags_done += 1
        else:
            t.untags_done += 1

    if commit(svc, batch, found[1] if found else None, failed):
        log.warning("%s batch failed: %s", kind.value, detail, extra={"run_id": message.run_id, "batch": message.number})
