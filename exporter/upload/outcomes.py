"""The one mapping from a failed Omnisend call to what the upload step does next.

Every step that calls Omnisend (send a contact batch, check it, add or remove tags) meets the same
errors; what they mean does not depend on the step:

- ``WAIT``: rate limited (by Omnisend or by our own pacer): try again after its ``retry_after``,
  no attempt spent;
- ``BACK_OFF``: transient (5xx, timeout, connection reset): try again after an exponential backoff,
  one attempt spent (MAX_SEND_ATTEMPTS, MAX_CHECK_POLLS end it). A contact batch whose POST went out
  and was never answered (``OmnisendNoAnswer``) may be at Omnisend already: it is sent again (contacts
  are upserted by email, so a copy changes nothing) waiting longer for the answer each time, the first
  copy Omnisend answers is the one checked, and after MAX_UNANSWERED_SENDS such sends its contacts
  count as "outcome unknown", never as "not sent";
- ``KEY_REJECTED``: 401/403, the connection's key no longer works: the run fails at once (every
  other batch would fail the same way);
- ``GIVE_UP``: terminal for this batch (Omnisend refused it, the key cannot be read from Key Vault).

What a step then records (not sent / outcome unknown) is the step's own: see send.py, check.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from .. import telemetry
from ..domain.reasons import (
    REASON_NOT_SENT_AUTH,
    REASON_NOT_SENT_CONNECTION,
    REASON_NOT_SENT_KEY_UNUSABLE,
    REASON_NOT_SENT_REJECTED,
    REASON_NOT_SENT_UNAVAILABLE,
    REASON_OUTCOME_UNKNOWN_NO_ANSWER,
)
from ..lifecycle.settle import fail_run
from ..logs import get_logger
from ..messages import SendBatch, TagBatch
from ..omnisend import (
    OmnisendAuthError,
    OmnisendError,
    OmnisendKeyUnusable,
    OmnisendNoAnswer,
    OmnisendRateLimited,
    OmnisendTransientError,
)
from ..services import Services
from ..state.secrets import SecretStoreError

log = get_logger(__name__)

MAX_SEND_ATTEMPTS = 6  # transient failures (5xx, timeouts, resets) before a batch is given up
MAX_CHECK_POLLS = 200  # follow-ups before a batch's outcome is declared unknown
MAX_UNANSWERED_SENDS = 4  # POSTs of one contact batch that got no answer (each may have landed) before it is left unknown
ANSWER_WAIT_GROWTH = 2.0  # after an unanswered send, the next waits this much longer for its answer
MAX_ANSWER_WAIT_FACTOR = 4.0  # at most this many times the client's timeout


def answer_timeout(base: float, unanswered: int) -> float:
    """Seconds a contact batch's POST waits for its answer: longer after sends Omnisend was too slow
    to answer (the answer comes late, it does not fail), so a copy sent again can be the one that is
    answered instead of one more copy in the dark."""
    return base * min(ANSWER_WAIT_GROWTH ** unanswered, MAX_ANSWER_WAIT_FACTOR)


class Verdict(Enum):
    WAIT = "wait"
    BACK_OFF = "backOff"
    KEY_REJECTED = "keyRejected"
    GIVE_UP = "giveUp"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    delay: float = 0.0  # WAIT: seconds until the budget has room again
    reason: str = ""  # GIVE_UP: the not-sent reason, when the batch was not sent
    detail: str = ""  # what happened, for the report


def classify(error: Exception) -> Outcome:
    """What a failed call means (errors that are not Omnisend's or Key Vault's are not caught here)."""
    if isinstance(error, OmnisendRateLimited):
        if error.status == 429:  # Omnisend's own answer, not our pacer's
            telemetry.omnisend_throttled()
        return Outcome(Verdict.WAIT, delay=error.retry_after + random.uniform(0, 1), detail=str(error))
    if isinstance(error, OmnisendTransientError):
        return Outcome(Verdict.BACK_OFF, detail=str(error))
    if isinstance(error, OmnisendKeyUnusable):
        return Outcome(Verdict.GIVE_UP, reason=REASON_NOT_SENT_KEY_UNUSABLE, detail=str(error))
    if isinstance(error, OmnisendAuthError):
        return Outcome(Verdict.KEY_REJECTED, detail="Omnisend rejected the API key (401/403)")
    if isinstance(error, SecretStoreError):
        return Outcome(Verdict.GIVE_UP, reason=REASON_NOT_SENT_CONNECTION, detail=str(error))
    return Outcome(Verdict.GIVE_UP, reason=REASON_NOT_SENT_REJECTED, detail=str(error))


HANDLED = (OmnisendError, SecretStoreError)  # what ``classify`` decides about; anything else is a bug


def after_failed_send(svc: Services, message: SendBatch | TagBatch, error: Exception,
                      give_up: Callable[[str, str], None]) -> None:
    """A contact or tag batch whose send failed: sent again later, or given up (``give_up(reason,
    detail)``), and the run failed when the key was rejected."""
    outcome = classify(error)
    if outcome.verdict is Verdict.WAIT:
        log.info("rate limited; batch resent in %.1fs", outcome.delay)
        svc.batch_queue.send(message, delay_seconds=outcome.delay)
    elif outcome.verdict is Verdict.BACK_OFF:
        attempt = message.attempt + 1
        if isinstance(message, SendBatch):
            unanswered = message.unanswered + isinstance(error, OmnisendNoAnswer)
            if unanswered and (unanswered >= MAX_UNANSWERED_SENDS or attempt >= MAX_SEND_ATTEMPTS):
                give_up(REASON_OUTCOME_UNKNOWN_NO_ANSWER,
                        f"Omnisend did not answer {unanswered} of {attempt} sends of this batch (last: {outcome.detail}"
                        f"); it may hold the contacts (upserted by email, so once each). POST /runs/{message.run_id}"
                        "/retry sends it again to learn the outcome.")
                return
            retry: SendBatch | TagBatch = message.with_attempt(attempt, unanswered)
        else:
            retry = message.with_attempt(attempt)
        if attempt >= MAX_SEND_ATTEMPTS:
            give_up(REASON_NOT_SENT_UNAVAILABLE, f"Omnisend unavailable after {attempt} attempts; last: {outcome.detail}")
            return
        delay = svc.backoff(attempt)
        log.warning("Omnisend unavailable (%s); attempt %d, retry in %.1fs", outcome.detail, attempt, delay)
        svc.batch_queue.send(retry, delay_seconds=delay)
    elif outcome.verdict is Verdict.KEY_REJECTED:
        fail_run(svc, message.run_id, key_rejected_message(svc, message.connection_id))
        give_up(REASON_NOT_SENT_AUTH, outcome.detail)
    else:
        give_up(outcome.reason, outcome.detail)


def key_rejected_message(svc: Services, connection_id: str) -> str:
    conn = svc.connections.get(connection_id)
    name = f"{conn.display_name!r} ({connection_id})" if conn else connection_id
    return (
        f"Omnisend rejected the API key of connection {name}. Create a new API key in Omnisend "
        "(Store settings > API keys) and replace the connection; remaining batches were not sent."
    )
