"""Typed errors of the Omnisend client, split as dlt splits destination errors: transient (wait and
try again: ``OmnisendTransientError``) and terminal (the same request will fail again:
``OmnisendTerminalError``). Messages say what happened and what to do, and never hold the API key."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable

import requests

from .limits import DEFAULT_RETRY_AFTER, OMNISEND_API_VERSION


class OmnisendError(Exception):
    """A call to Omnisend failed. ``status`` is the HTTP status (None when no answer came), ``problem``
    the RFC 9457 problem body when Omnisend sent one, ``request_id`` its ``instance`` (quote it to
    Omnisend support)."""

    def __init__(self, message: str, *, status: int | None = None, problem: dict | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.problem = problem
        self.request_id = request_id

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, request_id={self.request_id!r}, message={self.message!r})"

    def __reduce__(self):  # keep the attributes when pickled (e.g. across processes)
        return (_rebuild_error, (type(self), self.message, dict(self.__dict__)))


def _rebuild_error(cls: type[OmnisendError], message: str, state: dict) -> OmnisendError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class OmnisendTransientError(OmnisendError):
    """Omnisend could not do it now; the same request may succeed later."""


class OmnisendTerminalError(OmnisendError):
    """Omnisend refused the request as sent, or this key; sending it again unchanged will fail again."""


class OmnisendAuthError(OmnisendTerminalError):
    """401/403: the API key is missing, wrong, revoked, or lacks the permission for this call."""


class OmnisendKeyUnusable(OmnisendTerminalError):
    """The key cannot be sent at all: it holds characters an HTTP header cannot carry. Nothing was sent."""


class OmnisendRateLimited(OmnisendTransientError):
    """429: the brand's request budget is used up. Wait ``retry_after`` seconds, then retry."""

    def __init__(self, message: str, *, retry_after: float = DEFAULT_RETRY_AFTER, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class OmnisendUnavailable(OmnisendTransientError):
    """5xx, a timeout or a connection error: transient, retry later. When the failed call wrote
    something (POST), it may or may not have taken effect."""


# Server errors that say the request was not done (RFC 9110, 15.6): 501 Not Implemented, 503 Service
# Unavailable (the service could not take it), 505 HTTP Version Not Supported. Any other 5xx answered to
# a write (500, a gateway's 502 or 504, ...) may come after the work was done.
NOT_DONE_SERVER_ERRORS = frozenset({501, 503, 505})


class OmnisendWriteUnconfirmed(OmnisendUnavailable):
    """A write Omnisend may have done without saying so: its outcome is unknown, not "not sent";
    sending it again is safe only where the write is an upsert. Raised as such for a server error
    answered to a write, except those of NOT_DONE_SERVER_ERRORS (they stay ``OmnisendUnavailable``)."""


class OmnisendNoAnswer(OmnisendWriteUnconfirmed):
    """A write went out and no answer came back (the answer was later than the timeout, or the
    connection closed after the request was sent): Omnisend may have done it."""


class OmnisendValidationError(OmnisendTerminalError):
    """400/422: Omnisend refused the request as sent. ``errors`` lists ``{field, code, message}``.
    Retrying the same request will fail again; fix the data or the code."""

    def __init__(self, message: str, *, errors: list[dict] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.errors = errors or []


class OmnisendNotFound(OmnisendTerminalError):
    """404: the resource (e.g. a batch id) does not exist for this brand."""


class OmnisendVersionRetired(OmnisendTerminalError):
    """410: Omnisend retired the API version this app speaks. The app must be upgraded."""


# One branch per kind of answer Omnisend documents, kept in one function so that the mapping from
# status to error reads as a table (61 lines, most of them the messages).
def error_from_response(response: requests.Response, method: str, path: str, what: str,
                        scrub: Callable[[str], str]) -> OmnisendError:
    """The typed error for a non-2xx answer; ``scrub`` takes the API key out of any text quoted."""
    status = response.status_code
    problem: dict | None = None
    try:
        decoded = response.json()
        problem = decoded if isinstance(decoded, dict) else None
    except ValueError:
        pass
    request_id = problem.get("instance") if problem and isinstance(problem.get("instance"), str) else None
    detail = ""
    if problem:
        detail = str(problem.get("detail") or problem.get("title") or "")
    elif response.text:
        detail = " ".join(response.text.split())[:200]
    detail = scrub(detail)
    where = f"{method} /{path}"
    suffix = f" (HTTP {status}{', request ' + request_id if request_id else ''})"
    common: dict[str, Any] = {"status": status, "problem": problem, "request_id": request_id}

    if status in (401, 403):
        reason = "is missing, wrong or revoked" if status == 401 else "lacks the permission (scope) for this call"
        return OmnisendAuthError(
            f"Omnisend rejected the API key when trying to {what} ({where}): the key {reason}. "
            "Create a new API key in Omnisend (Store settings > API keys) with contacts read/write access "
            f"and update this connection's key; retrying with the same key will not help.{suffix}",
            **common)
    if status == 429:
        retry_after = _retry_after(problem, response)
        return OmnisendRateLimited(
            f"Omnisend's rate limit for this brand is exhausted ({where}); retry after {retry_after:g} "
            f"seconds. The limit is shared by every integration of the brand.{suffix}",
            retry_after=retry_after, **common)
    if status in (400, 422):
        errors = [e for e in (problem or {}).get("errors") or [] if isinstance(e, dict)]
        fields = ", ".join(f"{e.get('field')} ({e.get('code')})" for e in errors[:10])
        more = f" and {len(errors) - 10} more" if len(errors) > 10 else ""
        return OmnisendValidationError(
            f"Omnisend refused the request to {what} ({where}): {detail or 'invalid request'}"
            + (f" Invalid: {fields}{more}." if fields else "")
            + f" Fix the data or the request; sending it again unchanged will fail again.{suffix}",
            errors=errors, **common)
    if status == 404:
        return OmnisendNotFound(
            f"Omnisend has no such resource ({where}): {detail or 'not found'}. Check the id and that it "
            f"belongs to this brand's API key.{suffix}", **common)
    if status == 410:
        return OmnisendVersionRetired(
            f"Omnisend has retired API version {OMNISEND_API_VERSION} ({where}): {detail or 'gone'}. "
            "Upgrade the exporter to a supported Omnisend API version (OMNISEND_API_VERSION in "
            f"exporter/omnisend/limits.py); retrying will not help.{suffix}", **common)
    if status >= 500:
        unconfirmed = method != "GET" and status not in NOT_DONE_SERVER_ERRORS
        return (OmnisendWriteUnconfirmed if unconfirmed else OmnisendUnavailable)(
            f"Omnisend failed with a server error when trying to {what} ({where}): "
            f"{detail or 'no detail'}. This is usually transient: retry later"
            + ("; the write may or may not have taken effect" if unconfirmed else "") + f".{suffix}",
            **common)
    return OmnisendError(
        f"Omnisend answered HTTP {status} when trying to {what} ({where}): {detail or 'no detail'}.{suffix}",
        **common)

def _retry_after(problem: dict | None, response: requests.Response) -> float:
    value = (problem or {}).get("retryAfter")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            try:
                when = parsedate_to_datetime(header)
                if when.tzinfo is None:
                    when = when.replace(tzinfo=timezone.utc)
                return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
            except (TypeError, ValueError):
                pass
    return DEFAULT_RETRY_AFTER
