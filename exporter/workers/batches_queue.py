"""The batches queue: dispatch, send, check and tag messages, each to its handler in ``upload/``.

A message's last delivery (host.json ``maxDequeueCount``) must account for its batch instead of
vanishing: if its handler fails then, the batch is given up with the reason "internal error". A
message that reached the poison queue anyway (its worker died on every delivery) is given up the
same way when the poison queue's function reads it.
"""

from __future__ import annotations

from .. import config
from ..domain import BatchStatus
from ..domain.reasons import REASON_INTERNAL
from ..logs import get_logger, log_context
from ..messages import (
    BatchMessage,
    CheckBatch,
    Dispatch,
    SendBatch,
    TagBatch,
    decode_batch_message,
    decode_or_none,
)
from ..services import Services
from ..upload.accounting import fail_accepted, give_up_contacts, give_up_tags
from ..upload.check import check_contacts
from ..upload.dispatch import dispatch, dispatch_failed
from ..upload.send import send_contacts
from ..upload.tags import send_tags

log = get_logger(__name__)

MAX_DEQUEUE_COUNT = config.queue_rules().max_dequeue_count  # host.json: the last delivery before the poison queue


def _context(message: BatchMessage) -> dict:
    if isinstance(message, Dispatch):  # a stretch of batches: the log line names its first
        return {"run_id": message.run_id, "export_id": message.export_id, "batch": message.first}
    return {"run_id": message.run_id, "export_id": message.export_id, "batch": message.number}


def handle_batch_message(svc: Services, text: str, dequeue_count: int = 1) -> None:
    message = decode_batch_message(text)  # a MessageError goes to the host's retry, then the poison queue
    with log_context(**_context(message)):  # every line logged while handling it names the run, export and batch
        try:
            _route(svc, message)
        except Exception as e:  # the last delivery must account for the batch, not vanish
            if dequeue_count < MAX_DEQUEUE_COUNT:
                raise
            log.exception("batch failed on its last delivery")
            give_up(svc, message, REASON_INTERNAL, f"{type(e).__name__} on the last of {dequeue_count} deliveries")


def _route(svc: Services, message: BatchMessage) -> None:
    if isinstance(message, SendBatch):
        send_contacts(svc, message)
    elif isinstance(message, CheckBatch):
        check_contacts(svc, message)
    elif isinstance(message, TagBatch):
        send_tags(svc, message)
    else:
        dispatch(svc, message)


def give_up(svc: Services, message: BatchMessage, reason: str, detail: str) -> None:
    """Account for what ``message`` was to do as not done."""
    if isinstance(message, TagBatch):
        give_up_tags(svc, message, detail)
    elif isinstance(message, Dispatch):
        dispatch_failed(svc, message, reason, detail, lambda m, r, d: give_up(svc, m, r, d))
    elif isinstance(message, SendBatch):
        give_up_contacts(svc, message, reason, detail)
    else:  # a check: the batch was accepted, and what became of its contacts is what is lost
        found = svc.batches.get(message.run_id, message.number)
        if found is not None and found[0].status is BatchStatus.ACCEPTED:
            fail_accepted(svc, found[0], found[1], reason, detail)
        elif found is not None and isinstance(found[0].payload, SendBatch):
            give_up_contacts(svc, found[0].payload, reason, detail)  # put back by a retry meanwhile
        elif found is None:
            log.error("batch %d cannot be accounted: it has no record", message.number)


def handle_poison_message(svc: Services, text: str) -> None:
    """A batch message the host gave up on (it failed on every delivery): account for its batch."""
    message = decode_or_none(decode_batch_message, text, log)
    if message is None:
        return
    with log_context(**_context(message)):
        give_up(svc, message, REASON_INTERNAL, "the message failed on every delivery and reached the poison queue")
