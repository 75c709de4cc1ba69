"""Send one contact batch: ``POST /batches``, then schedule the ``CheckBatch`` that learns its outcome.
Waiting is done by the queue (a message's visibility delay), never by a worker sleeping."""

from __future__ import annotations

from ..domain import Batch, BatchStatus, RunStatus, Tally
from ..domain.reasons import REASON_NOT_SENT_CONNECTION, REASON_NOT_SENT_RUN_ENDED
from ..logs import get_logger
from ..messages import CheckBatch, SendBatch
from ..services import Services
from .accounting import commit, give_up_contacts
from .outcomes import HANDLED, after_failed_send, answer_timeout

log = get_logger(__name__)

ORIGIN = "omnisend-segment-exporter"  # Omnisend's batch ``origin``: which integration sent it


def reason_after_end(svc: Services, run_id: str, status: RunStatus) -> str:
    """Why a batch handled after its run ended is not sent: the run's own cause when it failed for one
    every batch shares (a missing or refused key), else that the run had ended."""
    run = svc.runs.get(run_id) if status is RunStatus.FAILED else None
    return (run.stop_reason if run else None) or REASON_NOT_SENT_RUN_ENDED


def schedule_check(svc: Services, message: SendBatch | CheckBatch, omnisend_batch_id: str, polls: int,
                   delay: float | None = None) -> None:
    check = CheckBatch(message.run_id, message.export_id, message.connection_id, number=message.number,
                       omnisend_batch_id=omnisend_batch_id, polls=polls)
    if delay is None:
        delay = svc.settings.batch_check_delay_seconds * min(2**polls, 15)
    svc.batch_queue.send(check, delay_seconds=delay)


def send_contacts(svc: Services, message: SendBatch) -> None:
    run_id, number = message.run_id, message.number
    found = svc.batches.get(run_id, number)
    etag = None
    if found is not None:
        batch, etag = found
        if batch.status is BatchStatus.ACCEPTED:  # redelivered after a crash: make sure a check follows
            schedule_check(svc, message, batch.omnisend_batch_id or "", polls=0)
        if batch.status is not BatchStatus.QUEUED:  # QUEUED: put back for a retry; anything else: done
            log.info("batch already %s; redelivery ignored", batch.status.value)
            return
    status = svc.runs.status(run_id, message.export_id)
    if status is None:
        log.warning("run no longer exists; batch dropped")
        return
    if status.is_final:
        give_up_contacts(svc, message, reason_after_end(svc, run_id, status),
                         f"the run had ended ({status.value}) before this batch was sent")
        return
    connection = svc.connections.get(message.connection_id)
    if connection is None:
        give_up_contacts(svc, message, REASON_NOT_SENT_CONNECTION, "the connection was removed")
        return
    client = None
    try:
        client = svc.omnisend(connection)
        wait = answer_timeout(svc.settings.omnisend_timeout_seconds, message.unanswered)
        batch_id = client.create_batch(message.contacts, origin=ORIGIN, timeout=wait)
    except HANDLED as e:
        after_failed_send(svc, message, e, lambda reason, detail: give_up_contacts(svc, message, reason, detail),
                          used_key=client.key_id if client is not None else None)
        return
    size = message.size
    batch = Batch(run_id=run_id, number=number, size=size, status=BatchStatus.ACCEPTED,
                  omnisend_batch_id=batch_id, attempts=message.attempt + 1, payload=message)

    def sent(t: Tally) -> None:
        t.sent += size
        t.batches_sent += 1

    if commit(svc, batch, etag, sent):
        schedule_check(svc, message, batch_id, polls=0)
        log.info("batch accepted by Omnisend as %s", batch_id)
