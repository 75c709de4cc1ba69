"""Client for the Omnisend API, version 2026-03-15 (the version string lives in ``omnisend/limits.py``).

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
        info, items = client.get_batch_result(batch_id)
        if info.is_done:
            failed = [r for r in items if not r.ok]
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any, Callable
from urllib.parse import quote

import requests
import urllib3

from ..logs import get_logger
from ..redaction import register_secret, scrub
from .errors import OmnisendError, OmnisendKeyUnusable, OmnisendNoAnswer, OmnisendUnavailable, error_from_response
from .limits import (
    MAX_BATCH_ITEMS,
    MAX_EMAILS_PER_TAG_REQUEST,
    MAX_TAGS_PER_REQUEST,
    OMNISEND_API_VERSION,
    OMNISEND_DEFAULT_URL,
)
from .results import BatchInfo, BatchItemResult, _item_sort_key, _looks_like_batch_item

logger = get_logger(__name__)

_BATCH_ITEM_KEYS = ("responses", "errors")
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")  # what a key in an HTTP header may hold


class OmnisendClient:
    """Omnisend API 2026-03-15 client. Thread-safe to the extent ``requests.Session`` is; use one
    client per worker. ``base_url`` may or may not end with "/" (tests point it at the sandbox)."""

    def __init__(self, api_key: str, base_url: str = OMNISEND_DEFAULT_URL, timeout: float = 30.0,
                 session: requests.Session | None = None, pacer: Callable[[str], None] | None = None) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("An Omnisend API key is required (it is empty).")
        register_secret(api_key)  # whatever happens next, no text the app writes shows it
        if not _VISIBLE_ASCII.fullmatch(api_key.strip()):
            raise OmnisendKeyUnusable(
                "The Omnisend API key holds characters an HTTP header cannot carry (a space or line break "
                "inside it, or a letter that is not ASCII), so nothing was sent with it. Store the key again "
                "exactly as Omnisend shows it (Store settings > API keys)."
            )
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

    @property
    def key_id(self) -> str:
        """Which key this client sends, as ``key_id`` names it (to notice a rotated key; never the key)."""
        return key_id(self._api_key)

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
                     origin: str | None = None, timeout: float | None = None) -> str:
        """``POST /batches``; returns the ``batchID``. Omnisend processes it asynchronously: poll
        ``get_batch_result`` until its status ``is_done``. ``timeout``: seconds to wait for the answer
        (default the client's); an answer that does not come raises ``OmnisendNoAnswer``."""
        if not isinstance(items, list) or not items:
            raise ValueError("A batch needs at least 1 item.")
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"A batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}; split it.")
        body: dict[str, Any] = {"endpoint": endpoint, "method": method, "items": items}
        if origin is not None:
            body["origin"] = origin
        data = self._call("POST", "batches", json_body=body, what="create a batch", timeout=timeout)
        batch_id = data.get("batchID") if isinstance(data, dict) else None
        if not batch_id:
            raise OmnisendError("Omnisend accepted the batch but its answer has no batchID; the batch may "
                                "still run. Check the brand's batches before sending it again.")
        return str(batch_id)

    def get_batch_result(self, batch_id: str) -> tuple[BatchInfo, list[BatchItemResult]]:
        """The batch's status and its per-item outcomes in ONE request (``GET /batches/{batchID}/items``
        answers with the whole Batch object): polling this instead of ``GET /batches/{batchID}`` saves a request
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
              what: str, timeout: float | None = None) -> Any:
        """Send one request (waiting ``timeout`` seconds, default the client's, for the answer); return
        the decoded JSON (None for an empty 2xx body) or raise."""
        if self._pacer is not None:
            self._pacer(path)
        url = self.base_url + path
        headers = {
            "Authorization": f"Omnisend-API-Key {self._api_key}",
            "Omnisend-Version": OMNISEND_API_VERSION,
            "Accept": "application/json, application/problem+json",
        }
        started = time.monotonic()
        wait = self.timeout if timeout is None else timeout
        try:
            response = self._session.request(method, url, params=params, json=json_body, headers=headers,
                                             timeout=wait)
        except requests.ConnectTimeout as exc:  # before Timeout, of which it is one: nothing was sent
            raise OmnisendUnavailable(
                f"Could not connect to Omnisend in time ({wait:g}s) to {what} ({method} /{path}): "
                f"{self._describe(exc)}. Nothing was sent; retry later."
            ) from None
        except requests.Timeout as exc:
            unanswered = OmnisendNoAnswer if method != "GET" else OmnisendUnavailable
            raise unanswered(
                f"Omnisend did not answer in time ({wait:g}s) when trying to {what} ({method} /{path}): "
                f"{self._describe(exc)}. This is usually transient: retry later. "
                + ("The write may or may not have taken effect." if method != "GET" else "")
            ) from None
        except requests.ConnectionError as exc:
            if method != "GET" and _request_went_out(exc):
                raise OmnisendNoAnswer(
                    f"The connection to Omnisend closed before it answered the request to {what} ({method} "
                    f"/{path}): {self._describe(exc)}. The write may or may not have taken effect; retry later."
                ) from None
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
        raise error_from_response(response, method, path, what, self._scrub)

    def _describe(self, exc: BaseException) -> str:
        # requests' texts carry the URL (which holds no key) but never the headers; scrub anyway.
        return self._scrub(f"{type(exc).__name__}: {exc}")[:300]

    def _scrub(self, text: str) -> str:
        return scrub(text.replace(self._api_key, "***")) if self._api_key and text else text


def key_id(api_key: str) -> str:
    """A short one-way digest of a key: tells two keys apart without holding either."""
    return hashlib.sha256(api_key.strip().encode()).hexdigest()[:16]


def _request_went_out(exc: requests.ConnectionError) -> bool:
    """Whether a failed connection may have carried the request: False only when it never connected
    (refused, name not resolved); a connection reset or closed mid-answer may come after the write."""
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps what happened
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)


def _segment(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("A batch id is required.")
    return quote(value, safe="")

