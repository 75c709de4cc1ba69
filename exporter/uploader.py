"""Send one batch to Omnisend, then learn what became of every contact in it.

Two message types share the batch queue:
- ``send``: the planner's batch; POST /batches, then schedule a ``check``.
- ``check``: a delayed follow-up; GET /batches/{id} until done, then its items, then count them.
Waiting is done by the queue (a message's visibility delay), never by a worker sleeping.

Each batch has an entity in the batches table; every state change is ETag-guarded, so a message
delivered twice neither sends a batch twice (once accepted) nor counts it twice.
"""

from __future__ import annotations

import json
import logging
import random

from .domain import Batch, BatchStatus
from .omnisend import (
    BatchItemResult,
    OmnisendAuthError,
    OmnisendError,
    OmnisendRateLimited,
    OmnisendUnavailable,
)
from .runs import fail_run, record_batch_outcome, record_batch_sent
from .secrets import SecretStoreError
from .services import Services

log = logging.getLogger(__name__)

MAX_SEND_ATTEMPTS = 6  # transient failures (5xx, timeouts, resets) before a batch is given up
MAX_CHECK_POLLS = 200  # follow-ups before a batch's outcome is declared unknown
MAX_DEQUEUE_COUNT = 5  # host.json maxDequeueCount: the last delivery before the poison queue

REASON_NOT_SENT_RUN_ENDED = "not sent: the run had ended"
REASON_NOT_SENT_AUTH = "not sent: Omnisend rejected the API key"
REASON_NOT_SENT_UNAVAILABLE = "not sent: Omnisend unavailable"
REASON_NOT_SENT_REJECTED = "not sent: Omnisend rejected the batch"
REASON_NOT_SENT_CONNECTION = "not sent: connection removed"
REASON_INTERNAL = "not sent: internal error"
REASON_STOPPED = "batch stopped by Omnisend"
REASON_NOT_REPORTED = "outcome not reported by Omnisend"
REASON_OUTCOME_UNKNOWN = "outcome unknown"


def _dumps(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"))


def _backoff(attempt: int, base: float = 2.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(base / 2, min(cap, base * 2**attempt))


def auth_error_message(svc: Services, connection_id: str) -> str:
    conn = svc.storage.get_connection(connection_id)
    name = f"{conn.display_name!r} ({connection_id})" if conn else connection_id
    return (
        f"Omnisend rejected the API key of connection {name}. Create a new API key in Omnisend "
        "(Store settings > API keys) and replace the connection; remaining batches were not sent."
    )


def handle_batch_message(svc: Services, text: str, dequeue_count: int = 1) -> None:
    msg = json.loads(text)
    ctx = {"run_id": msg.get("runId"), "export_id": msg.get("exportId"), "batch": msg.get("batch")}
    try:
        if msg.get("type") == "send":
            _send(svc, msg, ctx)
        elif msg.get("type") == "check":
            _check(svc, msg, ctx)
        else:
            log.error("unknown batch message type %r dropped", msg.get("type"), extra=ctx)
    except Exception as e:  # noqa: BLE001 - the last delivery must account for the batch, not vanish
        if dequeue_count < MAX_DEQUEUE_COUNT:
            raise
        log.exception("batch failed on its last delivery", extra=ctx)
        _give_up(svc, msg, REASON_INTERNAL, f"{type(e).__name__} on the last of {dequeue_count} deliveries")


# --- send ---------------------------------------------------------------------------------------


def _emails(msg: dict) -> list[str]:
    return [c["identifiers"][0]["id"] for c in msg["contacts"]]


def _send(svc: Services, msg: dict, ctx: dict) -> None:
    run_id, number = msg["runId"], msg["batch"]
    found = svc.storage.get_batch(run_id, number)
    if found is not None:
        batch, _ = found
        if batch.status is BatchStatus.ACCEPTED:  # redelivered after a crash: make sure a check follows
            _schedule_check(svc, msg, batch.omnisend_batch_id, polls=0)
        log.info("batch already %s; redelivery ignored", batch.status.value, extra=ctx)
        return
    run = svc.storage.get_run(run_id)
    if run is None:
        log.warning("run no longer exists; batch dropped", extra=ctx)
        return
    if run.status.is_final:
        _give_up(svc, msg, REASON_NOT_SENT_RUN_ENDED, f"the run was {run.status.value} before this batch was sent")
        return
    connection = svc.storage.get_connection(msg["connectionId"])
    if connection is None:
        _give_up(svc, msg, REASON_NOT_SENT_CONNECTION, "the connection was removed")
        return
    try:
        client = svc.omnisend(connection)
        batch_id = client.create_batch(msg["contacts"], origin="omnisend-segment-exporter")
    except SecretStoreError as e:
        _give_up(svc, msg, REASON_NOT_SENT_CONNECTION, str(e))
        return
    except OmnisendRateLimited as e:
        delay = e.retry_after + random.uniform(0, 1)
        log.info("rate limited; batch resent in %.1fs", delay, extra=ctx)
        svc.storage.send_batch_message(_dumps(msg), delay_seconds=delay)
        return
    except OmnisendAuthError:
        fail_run(svc, run_id, auth_error_message(svc, msg["connectionId"]))
        _give_up(svc, msg, REASON_NOT_SENT_AUTH, "Omnisend answered 401/403")
        return
    except OmnisendUnavailable as e:
        attempt = msg.get("attempt", 0) + 1
        if attempt >= MAX_SEND_ATTEMPTS:
            _give_up(svc, msg, REASON_NOT_SENT_UNAVAILABLE, f"{attempt} attempts; last: {e}")
            return
        delay = _backoff(attempt)
        log.warning("Omnisend unavailable (%s); attempt %d, retry in %.1fs", e, attempt, delay, extra=ctx)
        svc.storage.send_batch_message(_dumps({**msg, "attempt": attempt}), delay_seconds=delay)
        return
    except OmnisendError as e:
        _give_up(svc, msg, REASON_NOT_SENT_REJECTED, str(e))
        return
    batch = Batch(run_id=run_id, number=number, size=len(msg["contacts"]), status=BatchStatus.ACCEPTED,
                  omnisend_batch_id=batch_id, attempts=msg.get("attempt", 0) + 1)
    if not svc.storage.save_batch(batch, etag=None):
        log.warning("another delivery sent this batch concurrently; Omnisend upserts, nothing counted twice", extra=ctx)
        return
    record_batch_sent(svc, run_id, batch.size)
    _schedule_check(svc, msg, batch_id, polls=0)
    log.info("batch accepted by Omnisend as %s", batch_id, extra=ctx)


def _schedule_check(svc: Services, msg: dict, omnisend_batch_id: str, polls: int, delay: float | None = None) -> None:
    check = {
        "type": "check",
        "runId": msg["runId"],
        "exportId": msg.get("exportId"),
        "connectionId": msg["connectionId"],
        "batch": msg["batch"],
        "omnisendBatchId": omnisend_batch_id,
        "polls": polls,
        "parts": msg["parts"],
        "refs": msg["refs"],
        "emails": msg.get("emails") or _emails(msg),
    }
    if delay is None:
        delay = svc.settings.batch_check_delay_seconds * min(2**polls, 15)
    svc.storage.send_batch_message(_dumps(check), delay_seconds=delay)


# --- check --------------------------------------------------------------------------------------


def _item_reason(item: BatchItemResult) -> tuple[str, str]:
    """A low-cardinality reason for counting, and the detail Omnisend gave for the report."""
    code = item.response_code
    body = item.response if isinstance(item.response, dict) else {}
    errors = body.get("errors") or []
    if errors:
        detail = "; ".join(f"{e.get('field', '?')}: {e.get('message', e.get('code', ''))}" for e in errors[:5])
    else:
        detail = str(body.get("detail") or body.get("title") or "")
    return f"rejected by Omnisend ({code})", detail


def _check(svc: Services, msg: dict, ctx: dict) -> None:
    run_id, number = msg["runId"], msg["batch"]
    found = svc.storage.get_batch(run_id, number)
    if found is None:
        log.error("check for a batch that was never recorded; ignored", extra=ctx)
        return
    batch, etag = found
    if batch.status.is_final:
        return
    polls = msg.get("polls", 0) + 1
    connection = svc.storage.get_connection(msg["connectionId"])
    try:
        if connection is None:
            raise SecretStoreError("the connection was removed")
        client = svc.omnisend(connection)
        info = client.get_batch(msg["omnisendBatchId"])
        if not info.is_done:
            if polls >= MAX_CHECK_POLLS:
                _finish(svc, msg, batch, etag, {}, {REASON_OUTCOME_UNKNOWN: batch.size}, "never finished at Omnisend")
                return
            _schedule_check(svc, msg, msg["omnisendBatchId"], polls)
            return
        items = client.get_batch_items(msg["omnisendBatchId"])
    except OmnisendRateLimited as e:
        _schedule_check(svc, msg, msg["omnisendBatchId"], msg.get("polls", 0), delay=e.retry_after + random.uniform(0, 1))
        return
    except OmnisendUnavailable as e:
        if polls >= MAX_CHECK_POLLS:
            _finish(svc, msg, batch, etag, {}, {REASON_OUTCOME_UNKNOWN: batch.size}, str(e))
            return
        _schedule_check(svc, msg, msg["omnisendBatchId"], polls, delay=_backoff(min(polls, 6)))
        return
    except (OmnisendError, SecretStoreError) as e:
        if isinstance(e, OmnisendAuthError):
            fail_run(svc, run_id, auth_error_message(svc, msg["connectionId"]))
        _finish(svc, msg, batch, etag, {}, {REASON_OUTCOME_UNKNOWN: batch.size}, str(e))
        return

    index = {email.casefold(): i for i, email in enumerate(msg["emails"])}
    outcome: dict[int, tuple[str, str] | None] = {}  # contact index -> None (stored) or (reason, detail)
    for item in items:
        i = index.get((item.email or "").casefold())
        if i is None:
            continue
        outcome[i] = None if item.ok else _item_reason(item)
    missing_reason = REASON_STOPPED if info.status == "stopped" else REASON_NOT_REPORTED
    failures: dict[int, tuple[str, str]] = {}
    for i in range(len(msg["emails"])):
        result = outcome.get(i, (missing_reason, f"Omnisend batch {info.status}"))
        if result is not None:
            failures[i] = result
    by_reason: dict[str, int] = {}
    for reason, _ in failures.values():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    _finish(svc, msg, batch, etag, failures, by_reason, None)


def _finish(svc: Services, msg: dict, batch: Batch, etag: str, failures: dict, by_reason: dict[str, int],
            error: str | None) -> None:
    """End a batch once: whoever wins the ETag race reports and counts it."""
    failed = sum(by_reason.values())
    batch.status = BatchStatus.FAILED if error else BatchStatus.FINISHED
    batch.failed = failed
    batch.confirmed = batch.size - failed
    batch.error = error
    if not svc.storage.save_batch(batch, etag):
        return
    report = svc.storage.open_report(msg["runId"])
    parts, refs, emails = msg["parts"], msg["refs"], msg["emails"]
    if failures:
        for i, (reason, detail) in sorted(failures.items()):
            pi, row = refs[i]
            report.add("upload", parts[pi], row, emails[i], reason, detail)
    else:
        for reason in by_reason:  # every contact failed the same way (outcome unknown)
            for i, email in enumerate(emails):
                pi, row = refs[i]
                report.add("upload", parts[pi], row, email, reason, error or "")
    report.close()
    record_batch_outcome(svc, msg["runId"], confirmed=batch.confirmed, failed_by_reason=by_reason)


def _give_up(svc: Services, msg: dict, reason: str, detail: str) -> None:
    """Account for a batch that will not be sent (or whose send kept failing): every contact failed."""
    contacts = msg.get("contacts")
    size = len(contacts) if contacts is not None else len(msg.get("emails", []))
    found = svc.storage.get_batch(msg["runId"], msg["batch"])
    if found is not None and found[0].status.is_final:
        return
    was_sent = found is not None  # an accepted batch whose outcome could not be learned
    batch = Batch(run_id=msg["runId"], number=msg["batch"], size=size, status=BatchStatus.FAILED, error=detail,
                  failed=size, omnisend_batch_id=found[0].omnisend_batch_id if found else None)
    if not svc.storage.save_batch(batch, found[1] if found else None):
        return
    emails = msg.get("emails") or _emails(msg)
    report = svc.storage.open_report(msg["runId"])
    for i, email in enumerate(emails):
        pi, row = msg["refs"][i]
        report.add("upload", msg["parts"][pi], row, email, reason, detail)
    report.close()
    record_batch_outcome(svc, msg["runId"], failed_by_reason={reason: size}, was_sent=was_sent)
    log.warning("batch given up: %s (%s)", reason, detail, extra={"run_id": msg["runId"], "batch": msg["batch"]})
