"""Learn what became of a contact batch Omnisend accepted: ``GET /batches/{id}/items`` until the
batch is done, then count every contact as confirmed or failed with Omnisend's reason."""

from __future__ import annotations

from ..domain import Batch, BatchStatus, Failure, Tally
from ..domain.reasons import (
    REASON_NOT_REPORTED,
    REASON_OUTCOME_UNKNOWN,
    REASON_OUTCOME_UNKNOWN_CONNECTION,
    REASON_STOPPED,
    rejected_by_omnisend,
)
from ..lifecycle.settle import fail_run
from ..logs import get_logger
from ..messages import CheckBatch, SendBatch
from ..omnisend import BatchInfo, BatchItemResult
from ..services import Services
from .accounting import commit, fail_accepted
from .outcomes import HANDLED, MAX_CHECK_POLLS, Verdict, classify, key_problem_message
from .send import schedule_check

log = get_logger(__name__)

CONNECTION_MAX_AGE_FOR_RESULTS = 30.0  # seconds a worker may reuse a connection it read, to read results only


def _item_reason(item: BatchItemResult) -> tuple[str, str]:
    """A low-cardinality reason for counting, and the detail Omnisend gave for the report."""
    body = item.response if isinstance(item.response, dict) else {}
    errors = body.get("errors") or []
    if errors:
        detail = "; ".join(f"{e.get('field', '?')}: {e.get('message', e.get('code', ''))}" for e in errors[:5])
    else:
        detail = str(body.get("detail") or body.get("title") or "")
    return rejected_by_omnisend(item.response_code), detail


def check_contacts(svc: Services, message: CheckBatch) -> None:
    found = svc.batches.get(message.run_id, message.number)
    if found is None:
        log.error("check for a batch that was never recorded; ignored")
        return
    batch, etag = found
    if batch.status is not BatchStatus.ACCEPTED or batch.omnisend_batch_id != message.omnisend_batch_id:
        return  # already counted, or sent again since (a retry schedules its own check)
    polls = message.polls + 1
    connection = svc.connection_for_results(message.connection_id, max_age=CONNECTION_MAX_AGE_FOR_RESULTS)
    if connection is None:  # Omnisend accepted the batch, but without the key its outcome cannot be read
        fail_accepted(svc, batch, etag, REASON_OUTCOME_UNKNOWN_CONNECTION,
                      "the connection was removed before Omnisend's result could be read; the contacts may have landed")
        return
    try:
        info, items = svc.omnisend(connection).get_batch_result(message.omnisend_batch_id)  # status and items: one request
    except HANDLED as e:
        _after_failed_check(svc, message, batch, etag, polls, e)
        return
    if not info.is_done:
        if polls >= MAX_CHECK_POLLS:
            fail_accepted(svc, batch, etag, REASON_OUTCOME_UNKNOWN, "the batch never finished at Omnisend")
            return
        schedule_check(svc, message, message.omnisend_batch_id, polls)
        return
    _count_items(svc, batch, etag, info, items)


def _after_failed_check(svc: Services, message: CheckBatch, batch: Batch, etag: str | None, polls: int,
                        error: Exception) -> None:
    """The outcome could not be read this time: look again later, or count the batch as unknown."""
    outcome = classify(error)
    if outcome.verdict is Verdict.WAIT:
        schedule_check(svc, message, message.omnisend_batch_id, message.polls, delay=outcome.delay)
    elif outcome.verdict in (Verdict.BACK_OFF, Verdict.ACCESS_PENDING) and polls < MAX_CHECK_POLLS:
        schedule_check(svc, message, message.omnisend_batch_id, polls, delay=svc.backoff(min(polls, 6)))
    else:
        if outcome.verdict is Verdict.KEY_REJECTED:
            fail_run(svc, message.run_id, key_problem_message(svc, message.connection_id, outcome),
                     stop_reason=outcome.reason)
        fail_accepted(svc, batch, etag, REASON_OUTCOME_UNKNOWN, str(error))


def _count_items(svc: Services, batch: Batch, etag: str | None, info: BatchInfo,
                 items: list[BatchItemResult]) -> None:
    sent = batch.payload if isinstance(batch.payload, SendBatch) else None
    index = {sent.email(i).casefold(): i for i in range(sent.size)} if sent else {}
    outcome: dict[int, tuple[str, str] | None] = {}  # contact index -> None (stored) or (reason, detail)
    for item in items:
        i = index.get((item.email or "").casefold())
        if i is not None:
            outcome[i] = None if item.ok else _item_reason(item)
    missing = (REASON_STOPPED if info.status == "stopped" else REASON_NOT_REPORTED, f"Omnisend batch {info.status}")
    batch.failures = []
    for i in range(batch.size):
        failed = outcome.get(i, missing)  # no item for the contact: Omnisend never reported it
        if failed is not None:
            batch.failures.append(Failure(i, *failed))
    batch.status = BatchStatus.FINISHED
    batch.failed = len(batch.failures)
    batch.confirmed = batch.size - batch.failed
    by_reason = batch.failed_by_reason()

    def counted(t: Tally) -> None:
        t.confirmed += batch.confirmed
        t.add_failures(by_reason)
        t.batches_done += 1

    commit(svc, batch, etag, counted)
