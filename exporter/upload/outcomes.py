"""The one mapping from a failed Omnisend call to what the upload step does next.

Every step that calls Omnisend (send a contact batch, check it, add or remove tags) meets the same
errors; what they mean does not depend on the step:

- ``WAIT``: rate limited (by Omnisend or by our own pacer): try again after its ``retry_after``,
  no attempt spent;
- ``BACK_OFF``: transient (Omnisend's 5xx, timeouts, connection resets; Key Vault unreachable or
  throttling): try again after an exponential backoff,
  one attempt spent (MAX_SEND_ATTEMPTS, MAX_CHECK_POLLS end it). A contact batch whose POST went out
  and was never answered (``OmnisendNoAnswer``), or was answered a server error that does not say the
  request was not done (``OmnisendWriteUnconfirmed``: not 501, 503, 505), may be at Omnisend already:
  it is sent again (contacts are upserted by email, so a copy changes nothing), each copy after a lost
  answer waiting longer for its answer, the first copy Omnisend answers is the one checked, and after
  MAX_UNANSWERED_SENDS such sends its contacts count as "outcome unknown", never as "not sent";
- ``ACCESS_PENDING``: Key Vault refused the app's identity: right after a deployment a role
  assignment takes minutes to apply, so try again for about ten minutes, then fail the run naming
  the role;
- ``KEY_REJECTED``: Omnisend answered 401/403, or the key is missing from the key store: the run
  fails at once (every other batch would fail the same way), unless the key was replaced since the
  call (then the batch goes again with the new key);
- ``GIVE_UP``: terminal for this batch (Omnisend refused it, the stored key is unusable).

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
    REASON_NOT_SENT_KEY_MISSING,
    REASON_NOT_SENT_KEY_UNUSABLE,
    REASON_NOT_SENT_KEY_VAULT_DENIED,
    REASON_NOT_SENT_KEY_VAULT_ERROR,
    REASON_NOT_SENT_KEY_VAULT_UNAVAILABLE,
    REASON_NOT_SENT_REJECTED,
    REASON_NOT_SENT_UNAVAILABLE,
    REASON_OUTCOME_UNKNOWN,
    REASON_OUTCOME_UNKNOWN_NO_ANSWER,
    REASON_OUTCOME_UNKNOWN_SERVER_ERROR,
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
    OmnisendWriteUnconfirmed,
)
from ..services import Services
from ..state.secrets import (
    SecretAccessDeniedError,
    SecretNotFoundError,
    SecretStoreError,
    SecretStoreUnavailableError,
)

log = get_logger(__name__)

MAX_SEND_ATTEMPTS = 6  # transient failures (5xx, timeouts, resets) before a batch is given up
MAX_CHECK_POLLS = 200  # follow-ups before a batch's outcome is declared unknown
MAX_UNANSWERED_SENDS = 4  # POSTs of one contact batch left unconfirmed (each may have landed) before it is left unknown
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
    ACCESS_PENDING = "accessPending"  # Key Vault refused the app: a role assignment may still be propagating
    KEY_REJECTED = "keyRejected"  # the connection's key is refused or missing: every batch would fail alike
    GIVE_UP = "giveUp"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    delay: float = 0.0  # WAIT: seconds until the budget has room again
    reason: str = ""  # the not-sent reason when the batch ends here (at once, or once retries run out)
    detail: str = ""  # what happened, for the report


def classify(error: Exception) -> Outcome:
    """What a failed call means (errors that are not Omnisend's or Key Vault's are not caught here)."""
    detail = str(error)
    if isinstance(error, OmnisendRateLimited):
        if error.status == 429:  # Omnisend's own answer, not our pacer's
            telemetry.omnisend_throttled()
        return Outcome(Verdict.WAIT, delay=error.retry_after + random.uniform(0, 1), detail=detail)
    if isinstance(error, OmnisendTransientError):
        return Outcome(Verdict.BACK_OFF, reason=REASON_NOT_SENT_UNAVAILABLE, detail=detail)
    if isinstance(error, OmnisendKeyUnusable):
        return Outcome(Verdict.GIVE_UP, reason=REASON_NOT_SENT_KEY_UNUSABLE, detail=detail)
    if isinstance(error, OmnisendAuthError):
        return Outcome(Verdict.KEY_REJECTED, reason=REASON_NOT_SENT_AUTH, detail="Omnisend rejected the API key (401/403)")
    if isinstance(error, SecretNotFoundError):
        return Outcome(Verdict.KEY_REJECTED, reason=REASON_NOT_SENT_KEY_MISSING, detail=detail)
    if isinstance(error, SecretAccessDeniedError):
        return Outcome(Verdict.ACCESS_PENDING, reason=REASON_NOT_SENT_KEY_VAULT_DENIED, detail=detail)
    if isinstance(error, SecretStoreUnavailableError):
        return Outcome(Verdict.BACK_OFF, reason=REASON_NOT_SENT_KEY_VAULT_UNAVAILABLE, detail=detail)
    if isinstance(error, SecretStoreError):
        return Outcome(Verdict.GIVE_UP, reason=REASON_NOT_SENT_KEY_VAULT_ERROR, detail=detail)
    return Outcome(Verdict.GIVE_UP, reason=REASON_NOT_SENT_REJECTED, detail=detail)


HANDLED = (OmnisendError, SecretStoreError)  # what ``classify`` decides about; anything else is a bug

# Key Vault answering 403 right after a deployment: role assignments take minutes to apply. A batch
# waits up to ACCESS_PENDING_TRIES times (backoff capped at ACCESS_PENDING_MAX_DELAY: about 10 minutes).
ACCESS_PENDING_TRIES = 12
ACCESS_PENDING_MAX_DELAY = 60.0


def after_failed_send(svc: Services, message: SendBatch | TagBatch, error: Exception,
                      give_up: Callable[[str, str], None], used_key: str | None = None) -> None:
    """A contact or tag batch whose send failed: sent again later, or given up (``give_up(reason,
    detail)``), and the run failed when the connection's key is refused or missing. ``used_key``:
    the ``key_id`` of the key the call used, when one was (a 401 on a key replaced meanwhile is sent
    again at once with the new key)."""
    outcome = classify(error)
    if outcome.verdict is Verdict.WAIT:
        log.info("rate limited; batch resent in %.1fs", outcome.delay)
        svc.batch_queue.send(message, delay_seconds=outcome.delay)
    elif outcome.verdict is Verdict.BACK_OFF:
        _back_off(svc, message, error, outcome, give_up)
    elif outcome.verdict is Verdict.ACCESS_PENDING:
        attempt = message.attempt + 1
        if attempt >= ACCESS_PENDING_TRIES:
            fail_run(svc, message.run_id, f"Key Vault kept refusing the app's identity ({attempt} tries over about "
                                          f"{ACCESS_PENDING_TRIES * ACCESS_PENDING_MAX_DELAY / 60:.0f} minutes): "
                                          f"{outcome.detail}", stop_reason=outcome.reason)
            give_up(outcome.reason, outcome.detail)
            return
        delay = min(ACCESS_PENDING_MAX_DELAY, svc.backoff(attempt))
        log.warning("Key Vault refused access (a role assignment may still be propagating); attempt %d, retry in "
                    "%.1fs", attempt, delay)
        svc.batch_queue.send(message.with_attempt(attempt), delay_seconds=delay)
    elif outcome.verdict is Verdict.KEY_REJECTED:
        if used_key is not None and svc.key_rotated(message.connection_id, used_key):
            log.info("the connection's key was replaced since this call; sent again with the new key")
            svc.batch_queue.send(message)
            return
        fail_run(svc, message.run_id, key_problem_message(svc, message.connection_id, outcome),
                 stop_reason=outcome.reason)
        give_up(outcome.reason, outcome.detail)
    else:
        give_up(outcome.reason, outcome.detail)


def _back_off(svc: Services, message: SendBatch | TagBatch, error: Exception, outcome: Outcome,
              give_up: Callable[[str, str], None]) -> None:
    attempt = message.attempt + 1
    if isinstance(message, SendBatch):
        # OmnisendNoAnswer is an OmnisendWriteUnconfirmed: a lost answer, or else a server error answered
        unanswered = message.unanswered + isinstance(error, OmnisendNoAnswer)
        server_errors = message.server_errors + (isinstance(error, OmnisendWriteUnconfirmed)
                                                 and not isinstance(error, OmnisendNoAnswer))
        unconfirmed = unanswered + server_errors
        if unconfirmed and (unconfirmed >= MAX_UNANSWERED_SENDS or attempt >= MAX_SEND_ATTEMPTS):
            reason, said = _unconfirmed(unanswered, server_errors)
            give_up(reason, f"{said} of {attempt} sends of this batch (last: {outcome.detail}); it may hold the "
                            f"contacts (upserted by email, so once each). POST /runs/{message.run_id}/retry sends "
                            "it again to learn the outcome.")
            return
        retry: SendBatch | TagBatch = message.with_attempt(attempt, unanswered, server_errors)
    else:
        retry = message.with_attempt(attempt)
    if attempt >= MAX_SEND_ATTEMPTS:
        give_up(outcome.reason, f"unavailable after {attempt} attempts; last: {outcome.detail}")
        return
    delay = svc.backoff(attempt)
    log.warning("transient failure (%s); attempt %d, retry in %.1fs", outcome.detail, attempt, delay)
    svc.batch_queue.send(retry, delay_seconds=delay)


def _unconfirmed(unanswered: int, server_errors: int) -> tuple[str, str]:
    """The reason and the account of a contact batch given up with sends Omnisend did not confirm."""
    if not server_errors:
        return REASON_OUTCOME_UNKNOWN_NO_ANSWER, f"Omnisend did not answer {unanswered}"
    if not unanswered:
        return REASON_OUTCOME_UNKNOWN_SERVER_ERROR, f"Omnisend answered a server error to {server_errors}"
    return REASON_OUTCOME_UNKNOWN, (f"Omnisend did not answer {unanswered} and answered a server error to "
                                    f"{server_errors}")


def key_problem_message(svc: Services, connection_id: str, outcome: Outcome) -> str:
    """The run's error when the connection's key cannot be used: every other batch would fail alike."""
    if outcome.reason == REASON_NOT_SENT_KEY_MISSING:
        conn = svc.connections.get(connection_id)
        name = f"{conn.display_name!r} ({connection_id})" if conn else connection_id
        return (f"The API key of connection {name} is missing from the key store: store it again (PATCH "
                f"/api/connections/{connection_id} with apiKey; console: Edit the connection; CLI: connections "
                f"update {connection_id} --key-stdin), then run the export again. Remaining batches were not sent.")
    return key_rejected_message(svc, connection_id)


def key_rejected_message(svc: Services, connection_id: str) -> str:
    conn = svc.connections.get(connection_id)
    name = f"{conn.display_name!r} ({connection_id})" if conn else connection_id
    return (
        f"Omnisend rejected the API key of connection {name}. Create a new API key in Omnisend "
        "(Store settings > API keys) and replace the connection; remaining batches were not sent."
    )
