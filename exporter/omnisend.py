"""Client for the Omnisend API, version 2026-03-15 (the version string lives in ``exporter.config``).

In the manner of the Azure SDK and ``requests``: one ``requests.Session``, an explicit timeout on every
call, and typed errors that say what happened and what to do. The client never retries: callers
decide, usually by re-queueing the work (``OmnisendRateLimited.retry_after`` says when).

The API key is sent in the ``Authorization`` header of each request and is never put in an error
message, a ``repr`` or a log line; error texts are scrubbed of it as a second line of defence.
Response bodies are not logged (they hold personal data).

Typical use::

    with OmnisendClient(api_key, base_url=settings.omnisend_api_url,
                        timeout=settings.omnisend_timeout_seconds) as client:
        batch_id = client.create_batch(items, origin="segment-exporter")
        info = client.get_batch(batch_id)
        if info.is_done:
            failed = [r for r in client.get_batch_items(batch_id) if not r.ok]
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Any, Iterator
from urllib.parse import quote

import requests

from .config import OMNISEND_API_VERSION, OMNISEND_DEFAULT_URL
from .logs import get_logger

logger = get_logger(__name__)

MAX_BATCH_ITEMS = 100
MAX_TAGS_PER_REQUEST = 100
MAX_EMAILS_PER_TAG_REQUEST = 250
MAX_PAGE_SIZE = 250
DEFAULT_RETRY_AFTER = 60.0
_BATCH_DONE = frozenset({"finished", "stopped"})
_BATCH_ITEM_KEYS = ("responses", "errors")


# --------------------------------------------------------------------------------------------------
# errors


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


def _rebuild_error(cls: type, message: str, state: dict) -> OmnisendError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class OmnisendAuthError(OmnisendError):
    """401/403: the API key is missing, wrong, revoked, or lacks the permission for this call."""


class OmnisendRateLimited(OmnisendError):
    """429: the brand's request budget is used up. Wait ``retry_after`` seconds, then retry."""

    def __init__(self, message: str, *, retry_after: float = DEFAULT_RETRY_AFTER, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class OmnisendUnavailable(OmnisendError):
    """5xx, a timeout or a connection error: transient, retry later. When the failed call wrote
    something (POST), it may or may not have taken effect."""


class OmnisendValidationError(OmnisendError):
    """400/422: Omnisend refused the request as sent. ``errors`` lists ``{field, code, message}``.
    Retrying the same request will fail again; fix the data or the code."""

    def __init__(self, message: str, *, errors: list[dict] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.errors = errors or []


class OmnisendNotFound(OmnisendError):
    """404: the resource (e.g. a batch id) does not exist for this brand."""


class OmnisendVersionRetired(OmnisendError):
    """410: Omnisend retired the API version this app speaks. The app must be upgraded."""


# --------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class BatchInfo:
    batch_id: str
    status: str
    total_count: int
    finished_count: int
    errors_count: int

    @property
    def is_done(self) -> bool:
        """True once Omnisend will not process the batch further (``finished`` or ``stopped``)."""
        return self.status in _BATCH_DONE

    @classmethod
    def from_api(cls, data: dict) -> "BatchInfo":
        return cls(
            batch_id=str(data.get("batchID") or ""),
            status=str(data.get("status") or ""),
            total_count=_as_int(data.get("totalCount")),
            finished_count=_as_int(data.get("finishedCount")),
            errors_count=_as_int(data.get("errorsCount")),
        )


@dataclass(frozen=True)
class BatchItemResult:
    item_id: str | None
    request: dict | None
    response: dict | None
    response_code: int | None
    status: str | None

    @property
    def ok(self) -> bool:
        """True when the item landed (2xx). Any other code means the row did NOT land."""
        return self.response_code is not None and 200 <= self.response_code < 300

    @property
    def email(self) -> str | None:
        """The email identifier of the item's request, or None."""
        identifiers = (self.request or {}).get("identifiers") if isinstance(self.request, dict) else None
        for ident in identifiers or []:
            if isinstance(ident, dict) and ident.get("type") == "email" and isinstance(ident.get("id"), str):
                return ident["id"]
        return None

    @classmethod
    def from_api(cls, data: dict) -> "BatchItemResult":
        code = data.get("responseCode")
        try:
            code = int(code) if code is not None else None
        except (TypeError, ValueError):
            code = None
        item_id = data.get("itemID")
        return cls(
            item_id=str(item_id) if item_id is not None else None,
            request=data.get("request") if isinstance(data.get("request"), dict) else None,
            response=data.get("response") if isinstance(data.get("response"), dict) else None,
            response_code=code,
            status=data.get("status") if isinstance(data.get("status"), str) else None,
        )


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _looks_like_batch_item(value: Any) -> bool:
    return isinstance(value, dict) and ("itemID" in value or "responseCode" in value)


def _item_sort_key(item: BatchItemResult) -> tuple:
    item_id = item.item_id or ""
    return (0, int(item_id), "") if item_id.isdigit() else (1, 0, item_id)


# --------------------------------------------------------------------------------------------------
# client


class OmnisendClient:
    """Omnisend API 2026-03-15 client. Thread-safe to the extent ``requests.Session`` is; use one
    client per worker. ``base_url`` may or may not end with "/" (tests point it at the sandbox)."""

    def __init__(self, api_key: str, base_url: str = OMNISEND_DEFAULT_URL, timeout: float = 30.0,
                 session: requests.Session | None = None, pacer: Callable[[str], None] | None = None) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("An Omnisend API key is required (it is empty).")
        if not base_url:
            raise ValueError("base_url is empty; set OMNISEND_API_URL or leave it unset for Omnisend itself.")
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds.")
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = float(timeout)
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        # Called with the path before every request; it waits for the connection's shared rate budget,
        # or raises OmnisendRateLimited (no request made) when the wait would be long.
        self._pacer = pacer

    def __repr__(self) -> str:
        return f"OmnisendClient(base_url={self.base_url!r}, timeout={self.timeout!r})"

    # ---- lifecycle ----

    def close(self) -> None:
        """Close the session (only when this client created it)."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> "OmnisendClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- operations ----

    def check_key(self) -> None:
        """One cheap authenticated call (``GET /contacts?limit=1``). Raises ``OmnisendAuthError`` for a
        bad key; returns None when the key works."""
        self._call("GET", "contacts", params={"limit": 1}, what="check the API key")

    def create_batch(self, items: list[dict], *, endpoint: str = "contacts", method: str = "POST",
                     origin: str | None = None) -> str:
        """``POST /batches``; returns the ``batchID``. Omnisend processes it asynchronously: poll
        ``get_batch`` until ``is_done``, then read ``get_batch_items``."""
        if not isinstance(items, list) or not items:
            raise ValueError("A batch needs at least 1 item.")
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"A batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}; split it.")
        body: dict[str, Any] = {"endpoint": endpoint, "method": method, "items": items}
        if origin is not None:
            body["origin"] = origin
        data = self._call("POST", "batches", json_body=body, what="create a batch")
        batch_id = data.get("batchID") if isinstance(data, dict) else None
        if not batch_id:
            raise OmnisendError("Omnisend accepted the batch but its answer has no batchID; the batch may "
                                "still run. Check the brand's batches before sending it again.")
        return str(batch_id)

    def get_batch(self, batch_id: str) -> BatchInfo:
        """``GET /batches/{batchID}``."""
        data = self._call("GET", f"batches/{_segment(batch_id)}", what="read a batch")
        return BatchInfo.from_api(data if isinstance(data, dict) else {})

    def get_batch_items(self, batch_id: str) -> list[BatchItemResult]:
        """``GET /batches/{batchID}/items``: per-item outcomes from ``responses`` and ``errors``, in item
        order. Items with a non-2xx ``response_code`` did NOT land. Lists arriving under another key
        are read too (and a warning is logged, naming only the keys)."""
        return self.get_batch_result(batch_id)[1]

    def get_batch_result(self, batch_id: str) -> tuple[BatchInfo, list[BatchItemResult]]:
        """The batch's status and its per-item outcomes in ONE request (``GET /batches/{batchID}/items``
        answers with the whole Batch object): polling this instead of ``get_batch`` saves a request
        per batch from the brand's 400 requests/minute."""
        data = self._call("GET", f"batches/{_segment(batch_id)}/items", what="read batch items")
        return BatchInfo.from_api(data if isinstance(data, dict) else {}), self._items(batch_id, data)

    def _items(self, batch_id: str, data: Any) -> list[BatchItemResult]:
        if not isinstance(data, dict):
            raise OmnisendError("Omnisend answered the batch items request with something that is not a JSON "
                                "object; the per-item outcome is unknown.")
        rows: list[Any] = []
        for key in _BATCH_ITEM_KEYS:
            value = data.get(key)
            if isinstance(value, list):
                rows.extend(value)
            elif value is not None:
                logger.warning("Omnisend batch %s: %r is not a list (type %s); ignored.",
                               batch_id, key, type(value).__name__)
        unexpected = [key for key, value in data.items()
                      if key not in _BATCH_ITEM_KEYS and isinstance(value, list)
                      and value and all(_looks_like_batch_item(v) for v in value)]
        if unexpected:
            logger.warning("Omnisend batch %s: per-item results arrived under unexpected key(s) %s; "
                           "reading them too.", batch_id, ", ".join(sorted(unexpected)))
            for key in unexpected:
                rows.extend(data[key])
        if not unexpected and not any(key in data for key in _BATCH_ITEM_KEYS):
            logger.warning("Omnisend batch %s: the answer holds neither 'responses' nor 'errors' (keys: %s); "
                           "no per-item outcome was read.", batch_id, ", ".join(sorted(map(str, data))))
        results: list[BatchItemResult] = []
        seen: set[str] = set()
        for row in rows:
            if not isinstance(row, dict):
                continue
            item = BatchItemResult.from_api(row)
            if item.item_id is not None:
                if item.item_id in seen:
                    continue
                seen.add(item.item_id)
            results.append(item)
        results.sort(key=_item_sort_key)
        return results

    def upsert_contact(self, contact: dict) -> dict:
        """``POST /contacts``: creates the contact or updates the one with that email. Returns the
        ContactResponse. Mind that ``tags`` in the body REPLACE the contact's tags."""
        data = self._call("POST", "contacts", json_body=contact, what="write a contact")
        return data if isinstance(data, dict) else {}

    def iter_contacts(self, *, email: str | None = None, tag: str | None = None,
                      page_size: int = MAX_PAGE_SIZE) -> Iterator[dict]:
        """``GET /contacts``, following ``paging.cursors.after`` while ``hasMore``. Each page is one
        request against the rate limit."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}.")
        params: dict[str, Any] = {"limit": page_size}
        if email is not None:
            params["email"] = email
        if tag is not None:
            params["tag"] = tag
        seen_cursors: set[str] = set()
        while True:
            data = self._call("GET", "contacts", params=params, what="list contacts")
            if not isinstance(data, dict):
                raise OmnisendError("Omnisend answered the contact list with something that is not a JSON object.")
            yield from (c for c in data.get("contacts") or [] if isinstance(c, dict))
            paging = data.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("hasMore") or not after:
                return
            if after in seen_cursors:
                raise OmnisendError("Omnisend returned the same paging cursor twice; stopped listing contacts "
                                    "to avoid an endless loop.")
            seen_cursors.add(after)
            params["after"] = after

    def add_tags(self, tags: list[str], emails: list[str]) -> None:
        """``POST /contacts/tags`` (202, applied asynchronously; unknown emails are ignored by Omnisend).
        Own rate limit: 60 requests/minute per brand."""
        self._tags("POST", tags, emails, "add tags")

    def remove_tags(self, tags: list[str], emails: list[str]) -> None:
        """``DELETE /contacts/tags`` (202, applied asynchronously)."""
        self._tags("DELETE", tags, emails, "remove tags")

    # ---- internals ----

    def _tags(self, method: str, tags: list[str], emails: list[str], what: str) -> None:
        if isinstance(tags, str) or isinstance(emails, str):
            raise TypeError("tags and emails must be lists of strings, not a string.")
        if not tags or len(tags) > MAX_TAGS_PER_REQUEST:
            raise ValueError(f"Give 1 to {MAX_TAGS_PER_REQUEST} tags per request, got {len(tags or [])}.")
        if not emails or len(emails) > MAX_EMAILS_PER_TAG_REQUEST:
            raise ValueError(f"Give 1 to {MAX_EMAILS_PER_TAG_REQUEST} emails per request, got {len(emails or [])}.")
        self._call(method, "contacts/tags", json_body={"tags": list(tags), "emails": list(emails)}, what=what)

    def _call(self, method: str, path: str, *, params: dict | None = None, json_body: Any = None,
              what: str) -> Any:
        """Send one request; return the decoded JSON (None for an empty 2xx body) or raise."""
        if self._pacer is not None:
            self._pacer(path)
        url = self.base_url + path
        headers = {
            "Authorization": f"Omnisend-API-Key {self._api_key}",
            "Omnisend-Version": OMNISEND_API_VERSION,
            "Accept": "application/json, application/problem+json",
        }
        started = time.monotonic()
        try:
            response = self._session.request(method, url, params=params, json=json_body, headers=headers,
                                             timeout=self.timeout)
        except requests.Timeout as exc:
            raise OmnisendUnavailable(
                f"Omnisend did not answer in time ({self.timeout:g}s) when trying to {what} ({method} /{path}): "
                f"{self._describe(exc)}. This is usually transient: retry later. "
                + ("The write may or may not have taken effect." if method != "GET" else "")
            ) from None
        except requests.ConnectionError as exc:
            raise OmnisendUnavailable(
                f"Could not reach Omnisend at {self.base_url} to {what} ({method} /{path}): "
                f"{self._describe(exc)}. Retry later; if it persists, check OMNISEND_API_URL and the network."
            ) from None
        except requests.RequestException as exc:
            raise OmnisendError(
                f"The request to {what} ({method} /{path}) could not be sent: {self._describe(exc)}. "
                "Check OMNISEND_API_URL."
            ) from None
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.debug("Omnisend %s /%s -> %s in %.0f ms", method, self._scrub(path), response.status_code, elapsed_ms)
        if 200 <= response.status_code < 300:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise OmnisendError(
                    f"Omnisend answered {response.status_code} to {what} but the body is not JSON; "
                    "is OMNISEND_API_URL pointing at the Omnisend API?", status=response.status_code,
                ) from None
        raise self._error(response, method, path, what)

    def _error(self, response: requests.Response, method: str, path: str, what: str) -> OmnisendError:
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
        detail = self._scrub(detail)
        where = f"{method} /{path}"
        suffix = f" (HTTP {status}{', request ' + request_id if request_id else ''})"
        common = {"status": status, "problem": problem, "request_id": request_id}

        if status in (401, 403):
            reason = "is missing, wrong or revoked" if status == 401 else "lacks the permission (scope) for this call"
            return OmnisendAuthError(
                f"Omnisend rejected the API key when trying to {what} ({where}): the key {reason}. "
                "Create a new API key in Omnisend (Store settings > API keys) with contacts read/write access "
                f"and update this connection's key; retrying with the same key will not help.{suffix}",
                **common)
        if status == 429:
            retry_after = self._retry_after(problem, response)
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
                f"exporter/config.py); retrying will not help.{suffix}", **common)
        if status >= 500:
            return OmnisendUnavailable(
                f"Omnisend failed with a server error when trying to {what} ({where}): "
                f"{detail or 'no detail'}. This is usually transient: retry later"
                + ("; the write may or may not have taken effect" if method != "GET" else "") + f".{suffix}",
                **common)
        return OmnisendError(
            f"Omnisend answered HTTP {status} when trying to {what} ({where}): {detail or 'no detail'}.{suffix}",
            **common)

    @staticmethod
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

    def _describe(self, exc: BaseException) -> str:
        # requests' texts carry the URL (which holds no key) but never the headers; scrub anyway.
        return self._scrub(f"{type(exc).__name__}: {exc}")[:300]

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key and text else text


def _segment(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("A batch id is required.")
    return quote(value, safe="")
