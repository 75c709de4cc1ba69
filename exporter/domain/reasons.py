"""Why a row was not exported: stable keys, counted per run (``rejectedByReason``, ``failedByReason``)
and written to the run's report. One copy of each: the planner, the uploader and the tests use these."""

from __future__ import annotations

# rejected while planning: the row itself is unusable
REASON_MALFORMED_ROW = "malformed row"
REASON_NOT_UTF8 = "not valid UTF-8"
REASON_MISSING_EMAIL = "missing email"
REASON_INVALID_EMAIL = "invalid email"
REASON_VALUE_TOO_LONG = "value too long"
REASON_CONTROL_CHARACTER = "control character"
REASON_CONTACT_TOO_LARGE = "contact too large"
REASON_INVALID_CONSENT_DATE = "invalid consent date"
REASON_DUPLICATE = "duplicate email"

# failed: a valid contact that was not sent
REASON_NOT_SENT_OVER_LIMIT = "not sent: over the contract limit"
REASON_NOT_SENT_UNREADABLE = "not sent: the segment could not be read"
REASON_NOT_SENT_RUN_ENDED = "not sent: the run had ended"
REASON_NOT_SENT_THRESHOLD = "not sent: over a safety threshold"
REASON_NOT_SENT_CONNECTION = "not sent: connection removed"
REASON_NOT_SENT_AUTH = "not sent: Omnisend rejected the API key"
REASON_NOT_SENT_KEY_UNUSABLE = "not sent: the stored API key is unusable"
REASON_NOT_SENT_KEY_MISSING = "not sent: the connection's API key is missing"
REASON_NOT_SENT_KEY_VAULT_DENIED = "not sent: Key Vault denied access"
REASON_NOT_SENT_KEY_VAULT_UNAVAILABLE = "not sent: Key Vault unavailable"
REASON_NOT_SENT_KEY_VAULT_ERROR = "not sent: Key Vault error"
REASON_NOT_SENT_UNAVAILABLE = "not sent: Omnisend unavailable"
REASON_NOT_SENT_REJECTED = "not sent: Omnisend rejected the batch"
REASON_INTERNAL = "not sent: internal error"

# failed: sent, and Omnisend did not store it, or its outcome could not be learned
REASON_STOPPED = "batch stopped by Omnisend"
REASON_NOT_REPORTED = "outcome not reported by Omnisend"
REASON_OUTCOME_UNKNOWN = "outcome unknown"
REASON_OUTCOME_UNKNOWN_CONNECTION = "outcome unknown: connection removed"
REASON_OUTCOME_UNKNOWN_NO_ANSWER = "outcome unknown: Omnisend did not answer"
REASON_OUTCOME_UNKNOWN_SERVER_ERROR = "outcome unknown: Omnisend answered a server error"


REJECTED_BY_OMNISEND = "rejected by Omnisend"


def rejected_by_omnisend(code: int | None) -> str:
    """The reason of a contact Omnisend answered with an error code in its batch results."""
    return f"{REJECTED_BY_OMNISEND} ({code})"

# Failed contacts that POST /runs/{id}/retry does not send again (lifecycle/retry.py resends only batches
# given up unsent or whose outcome was never learned): the planner's, never put in a batch, and those
# Omnisend answered for itself (a resend would get the same answer).
NOT_RETRIED = frozenset({REASON_NOT_SENT_OVER_LIMIT, REASON_NOT_SENT_UNREADABLE, REASON_NOT_SENT_THRESHOLD,
                         REASON_STOPPED, REASON_NOT_REPORTED})


def sent_again_by_retry(reason: str) -> bool:
    """Whether a retry sends the contacts that failed for this reason again."""
    return reason not in NOT_RETRIED and not reason.startswith(REJECTED_BY_OMNISEND)
