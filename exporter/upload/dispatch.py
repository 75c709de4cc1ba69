"""Fan out a stretch of a run's spooled plan: one batch message per line of its spool blob."""

from __future__ import annotations

from typing import Callable

from ..domain import BatchKind
from ..lifecycle.settle import fail_run
from ..messages import BatchMessage, Dispatch, SendBatch, TagBatch, decode_batch_message
from ..services import Services


def dispatch(svc: Services, message: Dispatch) -> None:
    """Delivered twice, it enqueues the same batches twice; the send step recognises a batch already
    recorded, so nothing is sent or counted twice."""
    for line in svc.spools.of(message.run_id).read(message.start, message.end):
        svc.batch_queue.send_text(line)


def dispatch_failed(svc: Services, message: Dispatch, reason: str, detail: str,
                    give_up: Callable[[BatchMessage, str, str], None]) -> None:
    """A stretch of batches that could not be fanned out: account for each of them as not sent."""
    try:
        lines = svc.spools.of(message.run_id).read(message.start, message.end)
    except Exception as e:  # noqa: BLE001 - without its spool the stretch cannot be counted: say so on the run
        fail_run(svc, message.run_id, f"Batches {message.first} to {message.last} of the run's plan could not be "
                                      f"read back ({type(e).__name__}); they were not sent, and the run's counts "
                                      "cannot add up.")
        return
    for line in lines:
        batch = decode_batch_message(line)
        if isinstance(batch, SendBatch):
            kind = BatchKind.CONTACTS
        elif isinstance(batch, TagBatch):
            kind = batch.kind
        else:
            continue
        if svc.batches.get(batch.run_id, batch.number, kind) is None:  # else its message got out
            give_up(batch, reason, detail)
