"""Send one batch to Omnisend, then learn what became of every contact in it.

Two message types share the batch queue:
- ``send``: the planner's batch; POST /batches, then schedule a ``check``.
- ``check``: a delayed follow-up; GET /batches/{id} until done, then its items, then count them.
Waiting is done by the queue (a message's visibility delay), never by a worker sleeping.

Every step that changes a batch also changes the run's tally, in one transaction
(``Storage.commit_batch``), guarded by the batch's ETag. So a message delivered twice neither sends
an accepted batch again nor counts it twice, and a worker killed at any point loses nothing: its
message comes back and finds the batch exactly as the last completed step left it.
"""

from __future__ import annotations

import json
import random

from .domain import Batch, BatchStatus, Failure, Tally
from .logs import get_logger, log_context
from .omnisend import (
    BatchItemResult,
    OmnisendAuthError,
    OmnisendError,
    OmnisendRateLimited,
    OmnisendUnavailable,
)
from .runs import fail_run, settle
from .secrets import SecretStoreError
from .services import Services

log = get_logger(__name__)

MAX_SEND_ATTEMPTS = 6  # transient failures (5xx, timeouts, resets) before a batch is given up
MAX_CHECK_POLLS = 200  # follow-ups before a batch's outcome is declared unknown
MAX_DEQUEUE_COUNT = 5  # host.json maxDequeueCount: the last delivery before the poison queue
CONNECTION_MAX_AGE_FOR_RESULTS = 30.0  # seconds a worker may reuse a connection it read, to read results only

REASON_NOT_SENT_RUN_ENDED = "not sent: the run had ended"
REASON_NOT_SENT_AUTH = "not sent: Omnisend rejected the API key"
REASON_NOT_SENT_UNAVAILABLE = "not sent: Omnisend unavailable"
REASON_NOT_SENT_REJECTED = "not sent: Omnisend rejected the batch"
REASON_NOT_SENT_CONNECTION = "not sent: connection removed"
REASON_INTERNAL = "not sent: internal error"
REASON_STOPPED = "batch stopped by Omnisend"
REASON_NOT_REPORTED = "outcome not reported by Omnisend"
REASON_OUTCOME_UNKNOWN = "outcome unknown"
REASON_OUTCOME_UNKNOWN_CONNECTION = "outcome unknown: connection removed"


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
    with log_context(**ctx):  # every line logged while handling it names the run, export and batch
        _handle(svc, msg, ctx, dequeue_count)


def _handle(svc: Services, msg: dict, ctx: dict, dequeue_count: int) -> None:
    try:
        if msg.get("type") == "send":
            _send(svc, msg, ctx)
        elif msg.get("type") == "check":
            _check(svc, msg, ctx)
        elif msg.get("type") in ("tags", "untags"):
            _tags(svc, msg, ctx)
        elif msg.get("type") == "dispatch":
            _dispatch(svc, msg)
        else:
            log.error("unknown batch message type %r dropped", msg.get("type"), extra=ctx)
    except Exception as e:  # noqa: BLE001 - the last delivery must account for the batch, not vanish
        if dequeue_count < MAX_DEQUEUE_COUNT:
            raise
        log.exception("batch failed on its last delivery", extra=ctx)
        _give_up_any(svc, msg, REASON_INTERNAL, f"{type(e).__name__} on the last of {dequeue_count} deliveries")


def _give_up_any(svc: Services, msg: dict, reason: str, detail: str) -> None:
    if msg.get("type") in ("tags", "untags"):
        _tags_failed(svc, msg, detail)
    elif msg.get("type") == "dispatch":
        _dispatch_failed(svc, msg, reason, detail)
    else:
        _give_up(svc, msg, reason, detail)


def handle_poison_message(svc: Services, text: str) -> None:
    """A batch message the host gave up on (it failed on every delivery): account for its batch."""
    try:
        msg = json.loads(text)
        msg["runId"], msg["first"] if msg.get("type") == "dispatch" else msg["batch"]
    except (ValueError, KeyError, TypeError):
        log.error("unreadable message in the poison queue dropped (%d characters)", len(text))
        return
    with log_context(run_id=msg["runId"], export_id=msg.get("exportId"), batch=msg.get("batch")):
        _give_up_any(svc, msg, REASON_INTERNAL, "the message failed on every delivery and reached the poison queue")


def _commit(svc: Services, batch: Batch, etag: str | None, mutate) -> bool:
    """Write the batch and move the tally in one step; then let the run follow its tally."""
    tally = svc.storage.commit_batch(batch, etag, mutate)
    if tally is None:
        log.info("batch %d changed under this worker; its step was already done", batch.number,
                 extra={"run_id": batch.run_id, "batch": batch.number})
        return False
    settle(svc, batch.run_id, tally)
    return True


# --- dispatch -----------------------------------------------------------------------------------


def _dispatch(svc: Services, msg: dict) -> None:
    """Fan out a stretch of the run's spool blob: one batch message per line.

    Delivered twice, it enqueues the same batches twice; the send step recognises a batch already
    recorded, so nothing is sent or counted twice.
    """
    for line in svc.storage.read_spool(msg["runId"], msg["start"], msg["end"]):
        svc.storage.send_batch_message(line)


def _dispatch_failed(svc: Services, msg: dict, reason: str, detail: str) -> None:
    """A stretch of batches that could not be fanned out: account for each of them as not sent."""
    try:
        lines = svc.storage.read_spool(msg["runId"], msg["start"], msg["end"])
    except Exception as e:  # noqa: BLE001 - without its spool the stretch cannot be counted: say so on the run
        fail_run(svc, msg["runId"], f"Batches {msg['first']} to {msg['first'] + msg['lines'] - 1} of the run's plan "
                                    f"could not be read back ({type(e).__name__}); they were not sent, and the "
                                    "run's counts cannot add up.")
        return
    for line in lines:
        batch = json.loads(line)
        kind = "contacts" if batch["type"] == "send" else batch["type"]
        if svc.storage.get_batch(batch["runId"], batch["batch"], kind) is None:  # else its message got out
            _give_up_any(svc, batch, reason, detail)


# --- send ---------------------------------------------------------------------------------------


def _send(svc: Services, msg: dict, ctx: dict) -> None:
    run_id, number = msg["runId"], msg["batch"]
    found = svc.storage.get_batch(run_id, number)
    etag = None
    if found is not None:
        batch, etag = found
        if batch.status is BatchStatus.ACCEPTED:  # redelivered after a crash: make sure a check follows
            _schedule_check(svc, msg, batch.omnisend_batch_id, polls=0)
        if batch.status is not BatchStatus.QUEUED:  # QUEUED: put back for a retry; anything else: done
            log.info("batch already %s; redelivery ignored", batch.status.value, extra=ctx)
            return
    status = svc.storage.get_run_status(run_id, msg.get("exportId"))
    if status is None:
        log.warning("run no longer exists; batch dropped", extra=ctx)
        return
    if status.is_final:
        _give_up(svc, msg, REASON_NOT_SENT_RUN_ENDED, f"the run was {status.value} before this batch was sent")
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
    size = len(msg["contacts"])
    batch = Batch(run_id=run_id, number=number, size=size, status=BatchStatus.ACCEPTED,
                  omnisend_batch_id=batch_id, attempts=msg.get("attempt", 0) + 1, payload=_payload(msg))

    def sent(t: Tally) -> None:
        t.sent += size
        t.batches_sent += 1

    if _commit(svc, batch, etag, sent):
        _schedule_check(svc, msg, batch_id, polls=0)
        log.info("batch accepted by Omnisend as %s", batch_id, extra=ctx)


def _payload(msg: dict) -> dict:
    """What a batch keeps of its send message: enough to report on it and to send it again."""
    return {k: msg[k] for k in ("runId", "exportId", "connectionId", "batch", "parts", "refs", "fps", "tagged", "contacts") if k in msg}


def _schedule_check(svc: Services, msg: dict, omnisend_batch_id: str, polls: int, delay: float | None = None) -> None:
    check = {
        "type": "check",
        "runId": msg["runId"],
        "exportId": msg.get("exportId"),
        "connectionId": msg["connectionId"],
        "batch": msg["batch"],
        "omnisendBatchId": omnisend_batch_id,
        "polls": polls,
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
    if batch.status is not BatchStatus.ACCEPTED or batch.omnisend_batch_id != msg["omnisendBatchId"]:
        return  # already counted, or sent again since (a retry schedules its own check)
    polls = msg.get("polls", 0) + 1
    connection = svc.connection(msg["connectionId"], max_age=CONNECTION_MAX_AGE_FOR_RESULTS)
    if connection is None:  # Omnisend accepted the batch, but without the key its outcome cannot be read
        _fail_all(svc, batch, etag, REASON_OUTCOME_UNKNOWN_CONNECTION,
                  "the connection was removed before Omnisend's result could be read; the contacts may have landed")
        return
    try:
        client = svc.omnisend(connection)
        info, items = client.get_batch_result(msg["omnisendBatchId"])  # status and items: one request
        if not info.is_done:
            if polls >= MAX_CHECK_POLLS:
                _fail_all(svc, batch, etag, REASON_OUTCOME_UNKNOWN, "the batch never finished at Omnisend")
                return
            _schedule_check(svc, msg, msg["omnisendBatchId"], polls)
            return
    except OmnisendRateLimited as e:
        _schedule_check(svc, msg, msg["omnisendBatchId"], msg.get("polls", 0), delay=e.retry_after + random.uniform(0, 1))
        return
    except OmnisendUnavailable as e:
        if polls >= MAX_CHECK_POLLS:
            _fail_all(svc, batch, etag, REASON_OUTCOME_UNKNOWN, str(e))
            return
        _schedule_check(svc, msg, msg["omnisendBatchId"], polls, delay=_backoff(min(polls, 6)))
        return
    except (OmnisendError, SecretStoreError) as e:
        if isinstance(e, OmnisendAuthError):
            fail_run(svc, run_id, auth_error_message(svc, msg["connectionId"]))
        _fail_all(svc, batch, etag, REASON_OUTCOME_UNKNOWN, str(e))
        return

    contacts = (batch.payload or {}).get("contacts", [])
    index = {c["identifiers"][0]["id"].casefold(): i for i, c in enumerate(contacts)}
    outcome: dict[int, tuple[str, str] | None] = {}  # contact index -> None (stored) or (reason, detail)
    for item in items:
        i = index.get((item.email or "").casefold())
        if i is not None:
            outcome[i] = None if item.ok else _item_reason(item)
    missing = (REASON_STOPPED if info.status == "stopped" else REASON_NOT_REPORTED, f"Omnisend batch {info.status}")
    batch.failures = [Failure(i, *outcome.get(i, missing)) for i in range(batch.size) if outcome.get(i, missing) is not None]
    batch.status = BatchStatus.FINISHED
    batch.failed = len(batch.failures)
    batch.confirmed = batch.size - batch.failed
    by_reason = batch.failed_by_reason()

    def counted(t: Tally) -> None:
        t.confirmed += batch.confirmed
        t.add_failures(by_reason)
        t.batches_done += 1

    _commit(svc, batch, etag, counted)


def _fail_all(svc: Services, batch: Batch, etag: str, reason: str, detail: str) -> None:
    """An accepted batch whose outcome cannot be learned: its contacts count as failed."""
    batch.status = BatchStatus.FAILED
    batch.error = detail
    batch.failures = [Failure(i, reason, detail) for i in range(batch.size)]
    batch.failed, batch.confirmed = batch.size, 0

    def counted(t: Tally) -> None:
        t.add_failures({reason: batch.size})
        t.batches_done += 1

    _commit(svc, batch, etag, counted)


def _give_up(svc: Services, msg: dict, reason: str, detail: str) -> None:
    """Account for a batch that will not be sent (or whose send kept failing): every contact failed."""
    found = svc.storage.get_batch(msg["runId"], msg["batch"])
    if found is not None and found[0].status.is_final:
        return
    if found is not None and found[0].status is BatchStatus.ACCEPTED:
        _fail_all(svc, found[0], found[1], reason, detail)
        return
    payload = _payload(msg) if msg.get("type") == "send" else (found[0].payload if found else None)
    if payload is None:
        log.error("batch %s cannot be accounted: its contacts are unknown", msg.get("batch"), extra={"run_id": msg["runId"]})
        return
    size = len(payload["contacts"])
    batch = Batch(run_id=msg["runId"], number=msg["batch"], size=size, status=BatchStatus.FAILED, error=detail,
                  failed=size, payload=payload, failures=[Failure(i, reason, detail) for i in range(size)])

    def counted(t: Tally) -> None:
        t.add_failures({reason: size})
        t.batches_sent += 1  # it left the queue, unsent
        t.batches_done += 1

    if _commit(svc, batch, found[1] if found else None, counted):
        log.warning("batch given up: %s (%s)", reason, detail, extra={"run_id": msg["runId"], "batch": msg["batch"]})


# --- membership tags ------------------------------------------------------------------------------


def _tags(svc: Services, msg: dict, ctx: dict) -> None:
    """Add (``tags``) or remove (``untags``) the export's membership tag for up to 250 emails."""
    kind = msg["type"]
    found = svc.storage.get_batch(msg["runId"], msg["batch"], kind)
    if found is not None and found[0].status.is_final:
        return
    status = svc.storage.get_run_status(msg["runId"], msg.get("exportId"))
    if status is None:
        return
    if status.is_final:
        _tags_failed(svc, msg, f"not sent: the run was {status.value}")
        return
    connection = svc.storage.get_connection(msg["connectionId"])
    if connection is None:
        _tags_failed(svc, msg, "not sent: the connection was removed")
        return
    try:
        client = svc.omnisend(connection)
        if kind == "tags":
            client.add_tags([msg["tag"]], msg["emails"])
        else:
            client.remove_tags([msg["tag"]], msg["emails"])
    except OmnisendRateLimited as e:
        svc.storage.send_batch_message(_dumps(msg), delay_seconds=e.retry_after + random.uniform(0, 1))
        return
    except OmnisendUnavailable as e:
        attempt = msg.get("attempt", 0) + 1
        if attempt >= MAX_SEND_ATTEMPTS:
            _tags_failed(svc, msg, f"Omnisend unavailable after {attempt} attempts: {e}")
            return
        svc.storage.send_batch_message(_dumps({**msg, "attempt": attempt}), delay_seconds=_backoff(attempt))
        return
    except OmnisendAuthError:
        fail_run(svc, msg["runId"], auth_error_message(svc, msg["connectionId"]))
        _tags_failed(svc, msg, "Omnisend rejected the API key")
        return
    except (OmnisendError, SecretStoreError) as e:
        _tags_failed(svc, msg, str(e))
        return
    size = len(msg["emails"])
    batch = Batch(run_id=msg["runId"], number=msg["batch"], size=size, kind=kind, status=BatchStatus.FINISHED,
                  confirmed=size, payload={"tag": msg["tag"], "emails": msg["emails"]})

    def done(t: Tally) -> None:
        if kind == "tags":
            t.tags_done += 1
            t.tagged += size
        else:
            t.untags_done += 1
            t.untagged += size

    _commit(svc, batch, found[1] if found else None, done)


def _tags_failed(svc: Services, msg: dict, detail: str) -> None:
    """A tag batch that will not be done: its members stay out of the state, so the next run redoes them."""
    kind = msg["type"]
    found = svc.storage.get_batch(msg["runId"], msg["batch"], kind)
    if found is not None and found[0].status.is_final:
        return
    size = len(msg["emails"])
    batch = Batch(run_id=msg["runId"], number=msg["batch"], size=size, kind=kind, status=BatchStatus.FAILED,
                  failed=size, error=detail, payload={"tag": msg["tag"], "emails": msg["emails"]})

    def failed(t: Tally) -> None:
        t.tag_failures += size
        if kind == "tags":
            t.tags_done += 1
        else:
            t.untags_done += 1

    if _commit(svc, batch, found[1] if found else None, failed):
        log.warning("%s batch failed: %s", kind, detail, extra={"run_id": msg["runId"], "batch": msg["batch"]})
