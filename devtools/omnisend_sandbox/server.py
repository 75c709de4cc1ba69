"""A local stand-in for the Omnisend API, version 2026-03-15 (see /work/shared/omnisend-api.md).

It speaks real HTTP, so tests and the demo use the production client unchanged. Where the
documentation says the real API rejects something, the sandbox rejects it too; where the
documentation is silent the sandbox picks the stricter reading and says so in a comment marked
"Sandbox assumption". The module docstring of ``SandboxServer`` lists every assumption.

Layers:

* ``OmnisendSandbox``: state and rules, transport-free: ``handle(method, path, query, headers, body)``
  returns a ``Reply``. Asynchronous work (batches, tags) goes to a ``_Scheduler`` thread.
* ``SandboxServer``: a ``ThreadingHTTPServer`` around it plus the public Python API used by tests.
* ``Faults``: the fault-injection hook consulted for every admitted API request and every batch.

Standard library only.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import heapq
import itertools
import json
import logging
import math
import random
import re
import secrets
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from exporter.config import OMNISEND_API_VERSION

from .iso_countries import ISO_ALPHA2, code_for_country_name

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
ADMIN_PREFIX = "/_sandbox/"
PROBLEM_BASE = "https://problems.omnisend.com/"
RATE_LIMIT_PROBLEM = PROBLEM_BASE + "rate-limit-exceeded"
VALIDATION_PROBLEM = PROBLEM_BASE + "validation-failed"
PROBLEM_JSON = "application/problem+json"

# Omnisend's own WordPress plugin accepts only these tags. The API documents no rule (UNVERIFIED);
# Sandbox assumption: enforce the plugin's rule by default so that an exporter that would send a tag
# the real API might refuse fails here first. Pass ``tag_pattern=None`` to accept any non-empty tag.
SAFE_TAG_PATTERN = r"^[a-zA-Z0-9_\- ]{1,128}$"

RETIRED_VERSIONS = frozenset({"v3", "v4", "v5"})
CHANNEL_STATUSES = ("subscribed", "nonSubscribed", "unsubscribed")
BATCH_ENDPOINTS = ("products", "contacts", "events", "categories")
BATCH_METHODS = ("POST", "PUT")
MAX_BATCH_ITEMS = 100
MAX_TAGS = 100
MAX_SELECTOR_VALUES = 250
MAX_PAGE = 250
DEFAULT_PAGE = 100

_PROFILE_STRING_FIELDS = ("firstName", "lastName", "address", "city", "state", "country", "postalCode")
_CONTACT_FIELDS = frozenset(_PROFILE_STRING_FIELDS) | {
    "identifiers", "countryCode", "gender", "birthdate", "createdAt", "customProperties", "tags",
}
_IDENTIFIER_FIELDS = frozenset({"type", "id", "channels", "consent", "sendWelcomeMessage", "source"})
_CONSENT_FIELDS = frozenset({"createdAt", "ip", "source", "userAgent"})
_CHANNEL_FIELDS = frozenset({"status", "statusChangedAt"})
# Sandbox assumption: an email identifier carries only the "email" channel, a phone only "sms".
_CHANNEL_FOR_TYPE = {"email": "email", "phone": "sms"}
_TAGS_FIELDS = frozenset({"tags", "emails", "contactIDs", "phones", "segmentID"})
_BATCH_FIELDS = frozenset({"endpoint", "method", "items", "origin"})

_EMAIL_RE = re.compile(
    r"^(?=.{3,254}$)(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")  # E.164
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_OBJECT_ID_RE = re.compile(r"^[0-9a-f]{24}$")


# --------------------------------------------------------------------------------------------------
# small helpers


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_datetime(value: Any) -> datetime | None:
    """An ISO 8601 date-time with a time part; naive values are read as UTC. None when invalid."""
    if not isinstance(value, str) or len(value) < 16 or "T" not in value.upper():
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _object_id() -> str:
    """24 lower-case hex characters, the shape of Omnisend ids."""
    return secrets.token_hex(12)


def _request_urn() -> str:
    return f"urn:omnisend:request:{uuid.uuid4()}"


def is_valid_email(value: Any) -> bool:
    return isinstance(value, str) and bool(_EMAIL_RE.match(value)) and ".." not in value


@dataclass
class Reply:
    """What the transport should send. ``drop`` closes the connection without any answer."""

    status: int
    body: Any = None  # JSON-serialisable, or None for no body
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0  # seconds to wait (outside any lock) before answering
    drop: bool = False


def problem(status: int, title: str, detail: str, type_: str | None = None, **extra: Any) -> Reply:
    """An RFC 9457 problem reply, ``instance`` being a fresh ``urn:omnisend:request:<uuid>``."""
    body = {
        "type": type_ or PROBLEM_BASE + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": _request_urn(),
    }
    body.update(extra)
    return Reply(status, body, content_type=PROBLEM_JSON)


def validation_problem(errors: list[dict], detail: str = "One or more fields are invalid.") -> Reply:
    return problem(400, "Validation failed", detail, VALIDATION_PROBLEM, errors=errors)


class _Errors(list):
    def add(self, field_: str, code: str, message: str) -> None:
        self.append({"field": field_, "code": code, "message": message})


# --------------------------------------------------------------------------------------------------
# fault injection


@dataclass
class FaultAction:
    """What ``Faults.on_request`` asks the sandbox to do with one admitted API request."""

    delay: float = 0.0  # answer this much later
    status: int | None = None  # answer with this problem status instead of handling the request
    status_after: bool = False  # handle the request (state changes!), then answer ``status`` all the same
    drop_before: bool = False  # close the connection without handling the request
    drop_after: bool = False  # handle the request (state changes!) and then close without answering
    slow: bool = False  # ``delay`` includes ``Faults.slow_seconds`` (counted as an injected fault)


class Faults:
    """Fault injection, consulted for every admitted ``/api/`` request and for every batch.

    The hooks are ``on_request(method, route) -> FaultAction | None``, ``stop_batch_after(batch)`` and
    ``item_errors(item)``; subclass and override them for richer behaviour, or set the simple knobs
    below. Everything is off by default. ``route`` is the route template, e.g. ``"POST /batches"``;
    requests answered 401 or 429 never reach the hook (the gateway answers those). Attributes may be
    changed while the server runs.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.error_rate = 0.0  # share of requests answered 500
        self.latency_seconds = 0.0  # added to every request
        self.drop_rate = 0.0  # share of requests whose connection is closed without an answer
        # Drops happen after the request changed state: True, False, or the share of drops that do.
        self.drop_after_processing: bool | float = False
        self.stop_batches_after: int | None = None  # batches end "stopped" after this many items
        self.retry_after_seconds = 1  # retryAfter of injected 429s
        # A share of requests answered ``slow_seconds`` late (after being handled: a POST that times out
        # at the client has still taken effect, as with a slow real API).
        self.slow_rate = 0.0
        self.slow_seconds = 0.0
        # A share of batch items refused with a 400 validation problem, chosen by the item's email (the
        # same email always fails: see ``item_fails``), so that a test can compute which ones fail.
        self.item_error_rate = 0.0
        self._forced: deque[tuple[int, str | None, bool]] = deque()

    def force_status(self, status: int, count: int = 1, route: str | None = None,
                     after_processing: bool = False) -> None:
        """Answer the next ``count`` requests (of ``route`` only, when given) with problem ``status``.
        ``after_processing``: the request is handled first and its answer replaced, as a gateway's 502
        or 504 does when the backend did the work, or a 500 raised after a write."""
        with self._lock:
            self._forced.extend([(status, route, after_processing)] * count)

    @property
    def forced_pending(self) -> int:
        """How many forced answers (``force_status``) are still waiting for a request."""
        with self._lock:
            return len(self._forced)

    def reset(self) -> None:
        with self._lock:
            self._forced.clear()
        self.error_rate = self.latency_seconds = self.drop_rate = 0.0
        self.slow_rate = self.slow_seconds = self.item_error_rate = 0.0
        self.drop_after_processing = False
        self.stop_batches_after = None

    def on_request(self, method: str, route: str) -> FaultAction | None:
        action = FaultAction(delay=self.latency_seconds)
        with self._lock:
            for i, (status, only, after) in enumerate(self._forced):
                if only is None or only == route:
                    del self._forced[i]
                    action.status, action.status_after = status, after
                    return action
            roll_error = self._random.random()
            roll_drop = self._random.random()
            roll_slow = self._random.random()
            roll_after = self._random.random()
        if self.error_rate and roll_error < self.error_rate:
            action.status = 500
        elif self.drop_rate and roll_drop < self.drop_rate:
            if roll_after < float(self.drop_after_processing):
                action.drop_after = True
            else:
                action.drop_before = True
        elif self.slow_rate and roll_slow < self.slow_rate:
            action.delay += self.slow_seconds
            action.slow = True
        return action if (action.delay or action.status or action.drop_before or action.drop_after) else None

    def stop_batch_after(self, batch: Mapping[str, Any]) -> int | None:
        """How many items of ``batch`` to process before forcing it to end "stopped" (None: never)."""
        return self.stop_batches_after

    @staticmethod
    def item_fails(email: str, rate: float) -> bool:
        """Whether an item with this email is refused at ``item_error_rate`` ``rate`` (case-insensitive)."""
        if rate <= 0:
            return False
        digest = hashlib.sha256(email.strip().lower().encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") < rate * 2**64

    def item_errors(self, item: Any) -> list[dict] | None:
        """Validation errors to answer a batch item with instead of processing it (None: process it).

        The default refuses ``item_error_rate`` of the items by their email, the way Omnisend refuses
        an address it will not accept (the answer is a 400 ``validation-failed`` problem, as for
        ``POST /contacts``)."""
        rate = self.item_error_rate
        if not rate or not isinstance(item, dict):
            return None
        for i, ident in enumerate(item.get("identifiers") or []):
            if isinstance(ident, dict) and ident.get("type") == "email" and isinstance(ident.get("id"), str):
                if self.item_fails(ident["id"], rate):
                    return [{"field": f"identifiers[{i}].id", "code": "invalid_value",
                             "message": "The email address is not accepted: its domain does not receive mail."}]
        return None


# --------------------------------------------------------------------------------------------------
# background work


class _Scheduler:
    """One worker thread running jobs at their due time, in due-time order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._running = 0  # jobs being run right now
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="omnisend-sandbox-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()
            self._cond.notify_all()

    def schedule(self, delay: float, job: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), job))
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopping:
                    return
                _, _, job = heapq.heappop(self._heap)
                self._running += 1
            try:
                job()
            except Exception:  # a sandbox bug must not kill the worker
                logger.exception("Omnisend sandbox background job failed")
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()


# --------------------------------------------------------------------------------------------------
# state


@dataclass
class _Brand:
    contacts: dict[str, dict] = field(default_factory=dict)  # id -> record
    by_email: dict[str, str] = field(default_factory=dict)  # lower-cased email -> id
    by_phone: dict[str, str] = field(default_factory=dict)
    batches: dict[str, dict] = field(default_factory=dict)
    window: deque = field(default_factory=deque)  # monotonic times of admitted requests
    tags_window: deque = field(default_factory=deque)
    stats: dict = field(default_factory=lambda: {
        "requests": 0, "admitted": 0, "rateLimited": 0, "byPath": {}, "admittedByPath": {}, "byStatus": {},
        "welcomeMessagesSent": 0, "contactsCreated": 0, "contactsUpdated": 0,
        "batchesCreated": 0, "batchItemsProcessed": 0, "faultsInjected": 0,
    })


_MISSING = object()


class OmnisendSandbox:
    """State and rules of the sandbox. Thread-safe: one lock guards all state."""

    def __init__(
        self,
        api_keys: Mapping[str, str] | None = None,
        *,
        rate_limit: int = 400,
        window_seconds: float = 60.0,
        tags_rate_limit: int = 60,
        batch_delay_seconds: float = 0.05,
        batch_item_delay_seconds: float = 0.0,
        tags_delay_seconds: float = 0.05,
        batch_stop_min_errors: int = 10,
        batch_stop_error_share: float = 0.5,
        tag_pattern: str | None = SAFE_TAG_PATTERN,
        faults: Faults | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.keys: dict[str, str] = dict(api_keys or {})
        self.rate_limit = rate_limit
        self.window_seconds = window_seconds
        self.tags_rate_limit = tags_rate_limit
        self.batch_delay_seconds = batch_delay_seconds
        self.batch_item_delay_seconds = batch_item_delay_seconds
        self.tags_delay_seconds = tags_delay_seconds
        self.batch_stop_min_errors = batch_stop_min_errors
        self.batch_stop_error_share = batch_stop_error_share
        self.tag_re = re.compile(tag_pattern) if tag_pattern else None
        self.faults = faults or Faults()
        self.scheduler = _Scheduler()
        self._brands: dict[str, _Brand] = {}
        self._seq = itertools.count(1)
        self._generation = 0  # bumped by reset(); stale background jobs check it

    # ---- public helpers (used by SandboxServer and the admin endpoints) ----

    def brand(self, name: str) -> _Brand:
        with self.lock:
            b = self._brands.get(name)
            if b is None:
                b = self._brands[name] = _Brand()
            return b

    def add_api_key(self, key: str, brand: str) -> None:
        if not key or not brand:
            raise ValueError("key and brand must be non-empty")
        with self.lock:
            self.keys[key] = brand

    def revoke_api_key(self, key: str) -> None:
        """The key is deleted in Omnisend's settings: from now on every request with it is answered 401."""
        with self.lock:
            self.keys.pop(key, None)

    def contacts(self, brand: str) -> list[dict]:
        with self.lock:
            b = self._brands.get(brand)
            if not b:
                return []
            return [self._contact_view(c) for c in sorted(b.contacts.values(), key=lambda c: c["_seq"])]

    def stats(self, brand: str) -> dict:
        with self.lock:
            b = self._brands.get(brand)
            return copy.deepcopy(b.stats if b else _Brand().stats)

    def reset(self) -> None:
        """Forget contacts, batches, stats, rate-limit windows and pending work; keep the API keys."""
        self.scheduler.clear()
        with self.lock:
            self._brands.clear()
            self._generation += 1
        self.faults.reset()

    # ---- request entry point ----

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        parts = urlsplit(raw_path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path.startswith(ADMIN_PREFIX):
            return self._admin(method, path, body)
        if not path.startswith(API_PREFIX):
            return problem(404, "Not found", "No such resource; the API lives under /api/.")
        route, params, allowed = _route(path[len(API_PREFIX) - 1:])

        brand_name = self._authenticate(headers.get("Authorization"))
        if brand_name is None:
            return problem(401, "Unauthorized",
                           "Missing or invalid API key. Send 'Authorization: Omnisend-API-Key {key}'.")
        route_key = f"{method} {route}" if route else f"{method} (unknown)"
        is_tags = route == "/contacts/tags" and method in ("POST", "DELETE")
        with self.lock:
            b = self.brand(brand_name)
            st = b.stats
            st["requests"] += 1
            st["byPath"][route_key] = st["byPath"].get(route_key, 0) + 1
            limited = self._rate_limit(b, is_tags)
            if limited is not None:
                st["rateLimited"] += 1
                self._count_status(st, limited.status)
                return limited
            st["admitted"] += 1
            st["admittedByPath"][route_key] = st["admittedByPath"].get(route_key, 0) + 1

        action = self.faults.on_request(method, route_key) if self.faults else None
        if action and ((action.status and not action.status_after) or action.drop_before):
            with self.lock:
                st["faultsInjected"] += 1
            if action.drop_before:
                return Reply(0, drop=True, delay=action.delay)
            if action.status == 429:  # as faithful as a real one: typed, with retryAfter and the header
                reply = problem(429, "Too Many Requests", "Injected by the sandbox fault hook.",
                                RATE_LIMIT_PROBLEM, retryAfter=self.faults.retry_after_seconds)
                reply.headers["Retry-After"] = str(self.faults.retry_after_seconds)
            else:
                reply = problem(action.status, HTTPStatus(action.status).phrase,
                                "Injected by the sandbox fault hook.")
            reply.delay = action.delay
            with self.lock:
                self._count_status(st, reply.status)
            return reply

        reply = self._handle_admitted(method, route, params, allowed, query, headers, body, brand_name)
        if action and action.status_after and action.status:  # done, and answered as a failure
            reply = problem(action.status, HTTPStatus(action.status).phrase,
                            "Injected by the sandbox fault hook after the request was handled.")
            with self.lock:
                st["faultsInjected"] += 1
        with self.lock:
            self._count_status(st, reply.status)
        if action:
            reply.delay = action.delay
            if action.drop_after or action.slow:
                with self.lock:
                    st["faultsInjected"] += 1
            if action.drop_after:
                reply.drop = True
        return reply

    def _handle_admitted(self, method, route, params, allowed, query, headers, body, brand) -> Reply:
        version = headers.get("Omnisend-Version")
        version_error = _check_version(version)
        if version_error:
            return version_error
        if route is None:
            return problem(404, "Not found", "No such resource in API 2026-03-15.")
        if route == "/contacts/{contactID}":
            # Exists in the real API (GET/PATCH/DELETE); the sandbox does not implement it.
            return problem(501, "Not implemented", "The Omnisend sandbox does not implement /contacts/{id}.")
        if method not in allowed:
            reply = problem(405, "Method not allowed", f"{method} is not allowed on {route}.")
            reply.headers["Allow"] = ", ".join(sorted(allowed))
            return reply
        payload: Any = _MISSING
        if method in ("POST", "PUT", "PATCH", "DELETE") and (body or method != "DELETE"):
            try:
                payload = json.loads(body.decode("utf-8")) if body else _MISSING
            except (UnicodeDecodeError, ValueError):
                return problem(400, "Bad request", "The request body is not valid JSON.",
                               PROBLEM_BASE + "invalid-json")
            if payload is _MISSING:
                return problem(400, "Bad request", "A JSON request body is required.",
                               PROBLEM_BASE + "invalid-json")
        handler = {
            ("GET", "/contacts"): lambda: self._list_contacts(brand, query),
            ("POST", "/contacts"): lambda: self._post_contact(brand, payload),
            ("POST", "/contacts/tags"): lambda: self._tags(brand, payload, add=True),
            ("DELETE", "/contacts/tags"): lambda: self._tags(brand, payload, add=False),
            ("POST", "/batches"): lambda: self._create_batch(brand, payload),
            ("GET", "/batches/{batchID}"): lambda: self._get_batch(brand, params["batchID"], items=False),
            ("GET", "/batches/{batchID}/items"): lambda: self._get_batch(brand, params["batchID"], items=True),
        }[(method, route)]
        return handler()

    # ---- gateway concerns ----

    def _authenticate(self, value: str | None) -> str | None:
        if not value:
            return None
        scheme, _, key = value.strip().partition(" ")
        if scheme.lower() != "omnisend-api-key" or not key.strip():
            return None
        with self.lock:
            return self.keys.get(key.strip())

    def _rate_limit(self, b: _Brand, is_tags: bool) -> Reply | None:
        """Sliding window per brand. Caller holds the lock.

        Sandbox assumption: a request answered 429 does not consume budget (the documentation does
        not say); every other authenticated request does, whatever its outcome (polling included).
        Tags requests count against both the tags budget and the general budget.
        """
        now = time.monotonic()
        horizon = now - self.window_seconds
        for window in (b.window, b.tags_window):
            while window and window[0] <= horizon:
                window.popleft()
        waits = []
        if len(b.window) >= self.rate_limit:
            waits.append(b.window[len(b.window) - self.rate_limit] + self.window_seconds - now)
        if is_tags and len(b.tags_window) >= self.tags_rate_limit:
            waits.append(b.tags_window[len(b.tags_window) - self.tags_rate_limit] + self.window_seconds - now)
        if waits:
            retry_after = max(1, math.ceil(max(waits)))
            which = "the tags endpoints' limit" if is_tags and len(b.tags_window) >= self.tags_rate_limit \
                else "the brand's request limit"
            reply = problem(429, "Too many requests",
                            f"Rate limit exceeded ({which}). Retry after {retry_after} seconds.",
                            RATE_LIMIT_PROBLEM, retryAfter=retry_after)
            reply.headers["Retry-After"] = str(retry_after)
            return reply
        b.window.append(now)
        if is_tags:
            b.tags_window.append(now)
        return None

    @staticmethod
    def _count_status(st: dict, status: int) -> None:
        key = str(status) if status else "dropped"
        st["byStatus"][key] = st["byStatus"].get(key, 0) + 1

    # ---- contacts ----

    def _validate_contact(self, body: Any) -> _Errors:
        errors = _Errors()
        if not isinstance(body, dict):
            errors.add("", "invalid_type", "The contact must be a JSON object.")
            return errors
        for key in body:
            if key not in _CONTACT_FIELDS:
                # Sandbox assumption (strictness): unknown fields are rejected, so typos surface.
                errors.add(key, "unknown_field", "Unknown field.")
        identifiers = body.get("identifiers", _MISSING)
        if identifiers is _MISSING:
            errors.add("identifiers", "required", "At least one identifier is required.")
        elif not isinstance(identifiers, list):
            errors.add("identifiers", "invalid_type", "Must be an array.")
        elif not identifiers:
            errors.add("identifiers", "too_few", "At least one identifier is required.")
        else:
            seen_types: dict[str, int] = {}
            for i, ident in enumerate(identifiers):
                self._validate_identifier(ident, f"identifiers[{i}]", errors)
                if isinstance(ident, dict) and ident.get("type") in _CHANNEL_FOR_TYPE:
                    seen_types[ident["type"]] = seen_types.get(ident["type"], 0) + 1
            for type_, n in seen_types.items():
                if n > 1:
                    # Sandbox assumption: one identifier per type, the upsert key must be unambiguous.
                    errors.add("identifiers", "duplicate", f"At most one {type_} identifier is allowed.")
        for name in _PROFILE_STRING_FIELDS:
            if name in body and not isinstance(body[name], str):
                errors.add(name, "invalid_type", "Must be a string.")
        if "countryCode" in body:
            code = body["countryCode"]
            if not isinstance(code, str):
                errors.add("countryCode", "invalid_type", "Must be a string.")
            elif code not in ISO_ALPHA2:
                errors.add("countryCode", "invalid_value", "Must be an ISO 3166-1 alpha-2 code, e.g. 'US'.")
        if "gender" in body and body["gender"] not in ("m", "f"):
            errors.add("gender", "invalid_value", "Must be 'm' or 'f'.")
        if "birthdate" in body:
            value = body["birthdate"]
            ok = isinstance(value, str) and bool(_DATE_RE.match(value))
            if ok:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    ok = False
            if not ok:
                errors.add("birthdate", "invalid_format", "Must be a date in the form YYYY-MM-DD.")
        if "createdAt" in body and _parse_datetime(body["createdAt"]) is None:
            errors.add("createdAt", "invalid_format", "Must be an ISO 8601 date-time.")
        if "customProperties" in body and not isinstance(body["customProperties"], dict):
            errors.add("customProperties", "invalid_type", "Must be an object.")
        if "tags" in body:
            self._validate_tags(body["tags"], "tags", errors, minimum=0)
        return errors

    def _validate_identifier(self, ident: Any, path: str, errors: _Errors) -> None:
        if not isinstance(ident, dict):
            errors.add(path, "invalid_type", "Must be an object.")
            return
        for key in ident:
            if key not in _IDENTIFIER_FIELDS:
                errors.add(f"{path}.{key}", "unknown_field", "Unknown field.")
        type_ = ident.get("type", _MISSING)
        if type_ is _MISSING:
            errors.add(f"{path}.type", "required", "Identifier type is required.")
        elif type_ not in _CHANNEL_FOR_TYPE:
            errors.add(f"{path}.type", "invalid_value", "Must be 'email' or 'phone'.")
        id_ = ident.get("id", _MISSING)
        if id_ is _MISSING:
            errors.add(f"{path}.id", "required", "Identifier id is required.")
        elif not isinstance(id_, str) or not id_.strip():
            errors.add(f"{path}.id", "invalid_type", "Must be a non-empty string.")
        elif type_ == "email" and not is_valid_email(id_):
            errors.add(f"{path}.id", "invalid_format", "Must be a valid email address.")
        elif type_ == "phone" and not _PHONE_RE.match(id_):
            errors.add(f"{path}.id", "invalid_format", "Must be a phone number in E.164 format.")
        channels = ident.get("channels", _MISSING)
        if channels is not _MISSING:
            if not isinstance(channels, dict):
                errors.add(f"{path}.channels", "invalid_type", "Must be an object.")
            else:
                for name, channel in channels.items():
                    cpath = f"{path}.channels.{name}"
                    if name not in ("email", "sms"):
                        errors.add(cpath, "unknown_field", "Unknown channel.")
                        continue
                    if type_ in _CHANNEL_FOR_TYPE and _CHANNEL_FOR_TYPE[type_] != name:
                        errors.add(cpath, "invalid_value", f"A {type_} identifier cannot carry the {name} channel.")
                    if not isinstance(channel, dict):
                        errors.add(cpath, "invalid_type", "Must be an object.")
                        continue
                    for key in channel:
                        if key not in _CHANNEL_FIELDS:
                            errors.add(f"{cpath}.{key}", "unknown_field", "Unknown field.")
                    if "status" not in channel:
                        errors.add(f"{cpath}.status", "required", "Channel status is required.")
                    elif channel["status"] not in CHANNEL_STATUSES:
                        errors.add(f"{cpath}.status", "invalid_value",
                                   "Must be one of subscribed, nonSubscribed, unsubscribed.")
                    if "statusChangedAt" in channel and _parse_datetime(channel["statusChangedAt"]) is None:
                        errors.add(f"{cpath}.statusChangedAt", "invalid_format", "Must be an ISO 8601 date-time.")
        if "sendWelcomeMessage" in ident and not isinstance(ident["sendWelcomeMessage"], bool):
            errors.add(f"{path}.sendWelcomeMessage", "invalid_type", "Must be a boolean.")
        if "source" in ident and not isinstance(ident["source"], str):
            errors.add(f"{path}.source", "invalid_type", "Must be a string.")
        consent = ident.get("consent", _MISSING)
        if consent is not _MISSING:
            if not isinstance(consent, dict):
                errors.add(f"{path}.consent", "invalid_type", "Must be an object.")
            else:
                for key, value in consent.items():
                    if key not in _CONSENT_FIELDS:
                        errors.add(f"{path}.consent.{key}", "unknown_field", "Unknown field.")
                    elif not isinstance(value, str):
                        errors.add(f"{path}.consent.{key}", "invalid_type", "Must be a string.")
                if "createdAt" in consent and isinstance(consent["createdAt"], str) \
                        and _parse_datetime(consent["createdAt"]) is None:
                    errors.add(f"{path}.consent.createdAt", "invalid_format", "Must be an ISO 8601 date-time.")

    def _validate_tags(self, tags: Any, path: str, errors: _Errors, minimum: int) -> None:
        if not isinstance(tags, list):
            errors.add(path, "invalid_type", "Must be an array of strings.")
            return
        if len(tags) < minimum:
            errors.add(path, "too_few", f"At least {minimum} tag(s) required.")
        if len(tags) > MAX_TAGS:
            errors.add(path, "too_many", f"At most {MAX_TAGS} tags are allowed.")
        for i, tag in enumerate(tags):
            if not isinstance(tag, str) or not tag.strip():
                errors.add(f"{path}[{i}]", "invalid_type", "Must be a non-empty string.")
            elif self.tag_re and not self.tag_re.match(tag):
                errors.add(f"{path}[{i}]", "invalid_format",
                           "Tags may hold only letters, digits, '_', '-' and spaces, at most 128 characters.")

    def write_contact(self, brand: str, body: Any) -> tuple[int, dict]:
        """Validate and upsert one contact exactly like ``POST /contacts``: (status, response body)."""
        errors = self._validate_contact(body)
        if errors:
            return 400, validation_problem(errors).body
        with self.lock:
            return self._upsert(self.brand(brand), body)

    def _post_contact(self, brand: str, payload: Any) -> Reply:
        status, body = self.write_contact(brand, payload)
        return Reply(status, body, content_type=PROBLEM_JSON if status >= 400 else "application/json")

    def _upsert(self, b: _Brand, body: dict) -> tuple[int, dict]:
        now = _now()
        idents = body["identifiers"]
        email = next((i["id"].strip().lower() for i in idents if i["type"] == "email"), None)
        phone = next((i["id"] for i in idents if i["type"] == "phone"), None)
        contact_id = b.by_email.get(email) if email else b.by_phone.get(phone)
        created = contact_id is None
        if created:
            contact = {
                "id": _object_id(), "_seq": next(self._seq), "createdAt": _iso(now),
                "identifiers": [], "tags": [], "customProperties": {}, "profile": {},
            }
            b.contacts[contact["id"]] = contact
        else:
            contact = b.contacts[contact_id]

        welcome = 0
        for ident in idents:
            self._merge_identifier(contact, ident, now)
            if ident.get("sendWelcomeMessage", True):  # default TRUE in 2026-03-15
                welcome += 1
        for ident in contact["identifiers"]:
            if ident["type"] == "email":
                b.by_email[ident["id"]] = contact["id"]
            else:
                b.by_phone[ident["id"]] = contact["id"]

        profile = contact["profile"]
        for name in _PROFILE_STRING_FIELDS:
            if name in body:
                profile[name] = body[name]
        for name in ("gender", "birthdate"):
            if name in body:
                profile[name] = body[name]
        if "countryCode" in body:
            profile["countryCode"] = body["countryCode"]
        elif "country" in body:
            derived = code_for_country_name(body["country"])
            if derived:
                profile["countryCode"] = derived
        if "customProperties" in body:
            # Sandbox assumption: custom properties merge key by key (each is a field of its own).
            contact["customProperties"].update(copy.deepcopy(body["customProperties"]))
        if "createdAt" in body:
            contact["customProperties"]["externalCreated"] = body["createdAt"]
        if "tags" in body:
            contact["tags"] = _dedupe(body["tags"])  # tags in a contact body REPLACE existing tags
        contact["updatedAt"] = _iso(now)

        b.stats["welcomeMessagesSent"] += welcome
        b.stats["contactsCreated" if created else "contactsUpdated"] += 1
        return (201 if created else 200), self._contact_view(contact)

    @staticmethod
    def _merge_identifier(contact: dict, ident: dict, now: datetime) -> None:
        type_ = ident["type"]
        id_ = ident["id"].strip().lower() if type_ == "email" else ident["id"]
        channel_name = _CHANNEL_FOR_TYPE[type_]
        stored = next((s for s in contact["identifiers"] if s["type"] == type_ and s["id"] == id_), None)
        if stored is None:
            if type_ == "email":  # one email per contact: a new email replaces the old one
                contact["identifiers"] = [s for s in contact["identifiers"] if s["type"] != "email"]
            stored = {"type": type_, "id": id_, "channels": {}}
            contact["identifiers"].append(stored)
        for name, channel in (ident.get("channels") or {}).items():
            current = stored["channels"].get(name)
            incoming_at = _parse_datetime(channel.get("statusChangedAt")) if "statusChangedAt" in channel else now
            if current is not None and "statusChangedAt" in channel:
                current_at = _parse_datetime(current.get("statusChangedAt"))
                if current_at is not None and incoming_at < current_at:
                    continue  # an older status change does not override a newer one
            stored["channels"][name] = {"status": channel["status"], "statusChangedAt": _iso(incoming_at)}
        if channel_name not in stored["channels"]:  # no status given yet: not consent to marketing
            stored["channels"][channel_name] = {"status": "nonSubscribed", "statusChangedAt": _iso(now)}
        if "consent" in ident:
            stored["consent"] = dict(ident["consent"])
        if "source" in ident:
            stored["source"] = ident["source"]

    @staticmethod
    def _contact_view(contact: dict) -> dict:
        idents = copy.deepcopy(contact["identifiers"])
        email = next((i for i in idents if i["type"] == "email"), None)
        phone = next((i for i in idents if i["type"] == "phone"), None)
        if email:
            status = email["channels"].get("email", {}).get("status", "nonSubscribed")
        elif phone:
            status = phone["channels"].get("sms", {}).get("status", "nonSubscribed")
        else:
            status = "nonSubscribed"
        view = {
            "id": contact["id"],
            "email": email["id"] if email else None,
            "phone": phone["id"] if phone else None,
            "status": status,
            "identifiers": idents,
            "tags": list(contact["tags"]),
            "segments": [],
        }
        view.update(copy.deepcopy(contact["profile"]))
        view["customProperties"] = copy.deepcopy(contact["customProperties"])
        view["createdAt"] = contact["createdAt"]
        view["updatedAt"] = contact["updatedAt"]
        return view

    def _list_contacts(self, brand: str, query: dict[str, str]) -> Reply:
        errors = _Errors()
        limit = DEFAULT_PAGE
        if "limit" in query:
            try:
                limit = int(query["limit"])
                if not 1 <= limit <= MAX_PAGE:
                    errors.add("limit", "out_of_range", f"Must be between 1 and {MAX_PAGE}.")
            except ValueError:
                errors.add("limit", "invalid_type", "Must be an integer.")
        if "tag" in query and "status" in query:
            errors.add("tag", "incompatible", "The tag and status filters cannot be combined.")
        if "status" in query and query["status"] not in CHANNEL_STATUSES:
            errors.add("status", "invalid_value", "Must be one of subscribed, nonSubscribed, unsubscribed.")
        if "after" in query and "before" in query:
            errors.add("before", "incompatible", "Use either after or before, not both.")
        after = before = None
        for name in ("after", "before"):
            if name in query:
                seq = _decode_cursor(query[name])
                if seq is None:
                    errors.add(name, "invalid_value", "Invalid cursor.")
                elif name == "after":
                    after = seq
                else:
                    before = seq
        updated_from = None
        if "updatedAtFrom" in query:
            updated_from = _parse_datetime(query["updatedAtFrom"])
            if updated_from is None:
                errors.add("updatedAtFrom", "invalid_format", "Must be an ISO 8601 date-time.")
        if errors:
            return validation_problem(errors)

        email = query.get("email", "").strip().lower() or None
        with self.lock:
            b = self.brand(brand)
            rows = sorted(b.contacts.values(), key=lambda c: c["_seq"])
            if email is not None:
                rows = [c for c in rows if b.by_email.get(email) == c["id"]]
            if "phone" in query:
                rows = [c for c in rows if b.by_phone.get(query["phone"]) == c["id"]]
            if "tag" in query:
                rows = [c for c in rows if query["tag"] in c["tags"]]
            if "segmentID" in query:
                rows = []  # the sandbox has no segments
            if "status" in query:
                rows = [c for c in rows if self._contact_view(c)["status"] == query["status"]]
            if updated_from is not None:
                rows = [c for c in rows if _parse_datetime(c["updatedAt"]) >= updated_from]
            if before is not None:
                earlier = [c for c in rows if c["_seq"] < before]
                page, has_more = earlier[-limit:], len(earlier) > limit
            else:
                later = [c for c in rows if after is None or c["_seq"] > after]
                page, has_more = later[:limit], len(later) > limit
            contacts = [self._contact_view(c) for c in page]
            cursors = {
                "after": _encode_cursor(page[-1]["_seq"]) if page else None,
                "before": _encode_cursor(page[0]["_seq"]) if page else None,
            }
        return Reply(200, {"contacts": contacts, "paging": {"cursors": cursors, "hasMore": has_more, "limit": limit}})

    # ---- tags ----

    def _tags(self, brand: str, body: Any, add: bool) -> Reply:
        errors = _Errors()
        if not isinstance(body, dict):
            errors.add("", "invalid_type", "The request body must be a JSON object.")
            return validation_problem(errors)
        for key in body:
            if key not in _TAGS_FIELDS:
                errors.add(key, "unknown_field", "Unknown field.")
        if "tags" not in body:
            errors.add("tags", "required", "At least one tag is required.")
        else:
            self._validate_tags(body["tags"], "tags", errors, minimum=1)
        selectors = [name for name in ("contactIDs", "emails", "phones", "segmentID") if name in body]
        if not selectors:
            errors.add("emails", "required", "One of contactIDs, emails, phones or segmentID is required.")
        for name in ("contactIDs", "emails", "phones"):
            if name not in body:
                continue
            values = body[name]
            if not isinstance(values, list):
                errors.add(name, "invalid_type", "Must be an array of strings.")
                continue
            if not values:
                errors.add(name, "too_few", "Must hold at least one value.")
            if len(values) > MAX_SELECTOR_VALUES:
                errors.add(name, "too_many", f"At most {MAX_SELECTOR_VALUES} values are allowed.")
            for i, value in enumerate(values):
                if not isinstance(value, str) or not value:
                    errors.add(f"{name}[{i}]", "invalid_type", "Must be a non-empty string.")
                elif name == "emails" and not is_valid_email(value):
                    errors.add(f"{name}[{i}]", "invalid_format", "Must be a valid email address.")
        if "segmentID" in body and not (isinstance(body["segmentID"], str) and body["segmentID"]):
            errors.add("segmentID", "invalid_type", "Must be a non-empty string.")
        if errors:
            return validation_problem(errors)

        job_body = copy.deepcopy(body)
        generation = self._generation
        self.scheduler.schedule(self.tags_delay_seconds, lambda: self._apply_tags(brand, job_body, add, generation))
        return Reply(202)

    def _apply_tags(self, brand: str, body: dict, add: bool, generation: int) -> None:
        with self.lock:
            if generation != self._generation:
                return
            b = self.brand(brand)
            ids: list[str] = []
            ids += [b.by_email[e.strip().lower()] for e in body.get("emails", []) if e.strip().lower() in b.by_email]
            ids += [i for i in body.get("contactIDs", []) if i in b.contacts]
            ids += [b.by_phone[p] for p in body.get("phones", []) if p in b.by_phone]
            # unknown emails / ids / phones are silently ignored; segmentID matches nobody here
            tags = _dedupe(body["tags"])
            now = _iso(_now())
            for contact_id in dict.fromkeys(ids):
                contact = b.contacts[contact_id]
                if add:
                    contact["tags"] = _dedupe(contact["tags"] + tags)
                else:
                    contact["tags"] = [t for t in contact["tags"] if t not in tags]
                contact["updatedAt"] = now

    # ---- batches ----

    def _create_batch(self, brand: str, body: Any) -> Reply:
        errors = _Errors()
        if not isinstance(body, dict):
            errors.add("", "invalid_type", "The request body must be a JSON object.")
            return validation_problem(errors)
        for key in body:
            if key not in _BATCH_FIELDS:
                errors.add(key, "unknown_field", "Unknown field.")
        endpoint = body.get("endpoint", _MISSING)
        if endpoint is _MISSING:
            errors.add("endpoint", "required", "endpoint is required.")
        elif endpoint not in BATCH_ENDPOINTS:
            errors.add("endpoint", "invalid_value", "Must be one of products, contacts, events, categories.")
        method = body.get("method", _MISSING)
        if method is _MISSING:
            errors.add("method", "required", "method is required.")
        elif method not in BATCH_METHODS:
            errors.add("method", "invalid_value", "Must be POST or PUT.")
        items = body.get("items", _MISSING)
        if items is _MISSING:
            errors.add("items", "required", "items is required.")
        elif not isinstance(items, list):
            errors.add("items", "invalid_type", "Must be an array.")
        elif not items:
            errors.add("items", "too_few", "A batch needs at least 1 item.")
        elif len(items) > MAX_BATCH_ITEMS:
            errors.add("items", "too_many", f"A batch holds at most {MAX_BATCH_ITEMS} items.")
        if "origin" in body and not isinstance(body["origin"], str):
            errors.add("origin", "invalid_type", "Must be a string.")
        if errors:
            return validation_problem(errors)
        if endpoint != "contacts":
            # Sandbox assumption: only contact batches are implemented; others are refused up front.
            return problem(422, "Unprocessable entity",
                           f"The Omnisend sandbox implements batches for endpoint 'contacts' only, not {endpoint!r}.")
        with self.lock:
            b = self.brand(brand)
            batch = {
                "batchID": _object_id(), "endpoint": endpoint, "method": method,
                "origin": body.get("origin"), "status": "pending", "totalCount": len(items),
                "finishedCount": 0, "errorsCount": 0, "createdAt": _iso(_now()), "startedAt": None,
                "endedAt": None, "_items": copy.deepcopy(items), "_results": [], "_next": 0,
            }
            b.batches[batch["batchID"]] = batch
            b.stats["batchesCreated"] += 1
            generation = self._generation
        self.scheduler.schedule(self.batch_delay_seconds, lambda: self._run_batch(brand, batch, generation))
        return Reply(201, {"batchID": batch["batchID"], "totalCount": batch["totalCount"]})

    def _run_batch(self, brand: str, batch: dict, generation: int) -> None:
        """Process items in order. With ``batch_item_delay_seconds`` > 0 one item per job."""
        stop_after = self.faults.stop_batch_after(batch) if self.faults else None
        while True:
            with self.lock:
                if generation != self._generation:
                    return
                if batch["status"] == "pending":
                    batch["status"] = "inProgress"
                    batch["startedAt"] = _iso(_now())
                index = batch["_next"]
                if stop_after is not None and index >= stop_after:
                    self._end_batch(batch, "stopped")
                    return
                if index >= batch["totalCount"]:
                    self._end_batch(batch, "finished")
                    return
                item = batch["_items"][index]
                refused = self.faults.item_errors(item) if self.faults else None
                if refused:
                    code, response = 400, validation_problem(refused).body
                else:
                    code, response = self.write_contact(brand, item)  # re-entrant lock
                ok = 200 <= code < 300
                batch["_results"].append({
                    "itemID": str(index), "request": copy.deepcopy(item), "response": response,
                    "responseCode": code, "status": "finished",
                })
                batch["_next"] = index + 1
                batch["finishedCount"] += 1
                self.brand(brand).stats["batchItemsProcessed"] += 1
                if not ok:
                    batch["errorsCount"] += 1
                    errors = batch["errorsCount"]
                    if errors >= self.batch_stop_min_errors and errors > self.batch_stop_error_share * batch["totalCount"]:
                        self._end_batch(batch, "stopped")  # "stopped for too many errors"
                        return
            if self.batch_item_delay_seconds > 0:
                self.scheduler.schedule(self.batch_item_delay_seconds, lambda: self._run_batch(brand, batch, generation))
                return

    @staticmethod
    def _end_batch(batch: dict, status: str) -> None:
        batch["status"] = status
        batch["endedAt"] = _iso(_now())

    def _get_batch(self, brand: str, batch_id: str, items: bool) -> Reply:
        with self.lock:
            batch = self.brand(brand).batches.get(batch_id)
            if batch is None:
                return problem(404, "Not found", f"Batch '{batch_id}' not found.")
            view = {k: v for k, v in batch.items() if not k.startswith("_")}
            if items:
                results = copy.deepcopy(batch["_results"])
                view["responses"] = [r for r in results if 200 <= r["responseCode"] < 300]
                view["errors"] = [r for r in results if not 200 <= r["responseCode"] < 300]
        return Reply(200, view)

    # ---- admin endpoints (not part of the real API; no auth, no rate limit, not counted) ----

    def _admin(self, method: str, path: str, body: bytes) -> Reply:
        parts = [unquote(p) for p in path[len(ADMIN_PREFIX):].split("/") if p]
        if len(parts) == 3 and parts[0] == "brands" and parts[2] in ("contacts", "stats"):
            if method != "GET":
                return problem(405, "Method not allowed", "Use GET.")
            if parts[2] == "contacts":
                return Reply(200, {"contacts": self.contacts(parts[1])})
            return Reply(200, self.stats(parts[1]))
        if parts == ["keys"] or parts == ["reset"]:
            if method != "POST":
                return problem(405, "Method not allowed", "Use POST.")
            if parts == ["reset"]:
                self.reset()
                return Reply(204)
            try:
                payload = json.loads(body or b"null")
                self.add_api_key(payload["key"], payload["brand"])
            except (ValueError, TypeError, KeyError):
                return problem(400, "Bad request", 'Send {"key": "...", "brand": "..."}.')
            return Reply(204)
        return problem(404, "Not found", "Unknown sandbox admin endpoint.")


# --------------------------------------------------------------------------------------------------
# routing, versions, cursors


_ROUTES: list[tuple[re.Pattern, str, frozenset[str]]] = [
    (re.compile(r"^/contacts$"), "/contacts", frozenset({"GET", "POST"})),
    (re.compile(r"^/contacts/tags$"), "/contacts/tags", frozenset({"POST", "DELETE"})),
    (re.compile(r"^/contacts/(?P<contactID>[^/]+)$"), "/contacts/{contactID}", frozenset()),
    (re.compile(r"^/batches$"), "/batches", frozenset({"POST"})),
    (re.compile(r"^/batches/(?P<batchID>[^/]+)$"), "/batches/{batchID}", frozenset({"GET"})),
    (re.compile(r"^/batches/(?P<batchID>[^/]+)/items$"), "/batches/{batchID}/items", frozenset({"GET"})),
]


def _route(path: str) -> tuple[str | None, dict[str, str], frozenset[str]]:
    for pattern, template, methods in _ROUTES:
        m = pattern.match(path)
        if m:
            return template, {k: unquote(v) for k, v in m.groupdict().items()}, methods
    return None, {}, frozenset()


def _check_version(value: str | None) -> Reply | None:
    if value is None or not value.strip():
        return problem(400, "Bad request", "The Omnisend-Version header is required, e.g. "
                       f"'Omnisend-Version: {OMNISEND_API_VERSION}'.", PROBLEM_BASE + "version-required")
    value = value.strip()
    if value == OMNISEND_API_VERSION:
        return None
    retired = value.lower() in RETIRED_VERSIONS
    if not retired and _DATE_RE.match(value):
        try:
            retired = date.fromisoformat(value) < date.fromisoformat(OMNISEND_API_VERSION)
        except ValueError:
            retired = False
    if retired:
        return problem(410, "Gone", "API version has been retired. "
                       f"Use Omnisend-Version: {OMNISEND_API_VERSION}.", PROBLEM_BASE + "version-retired")
    return problem(400, "Bad request", f"Unsupported API version. Use Omnisend-Version: {OMNISEND_API_VERSION}.",
                   PROBLEM_BASE + "unsupported-version")


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"c:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(value: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        kind, _, number = raw.partition(":")
        return int(number) if kind == "c" else None
    except (ValueError, UnicodeDecodeError):
        return None


def _dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


# --------------------------------------------------------------------------------------------------
# HTTP transport


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: requests.Session reuses connections
    server_version = "OmnisendSandbox/2026-03-15"
    server: "_HTTPServer"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        logger.debug("sandbox %s - %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            self._send(problem(411, "Length required", "Send a Content-Length; chunked bodies are not supported."))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(problem(400, "Bad request", "Invalid Content-Length."))
            return
        body = self.rfile.read(length) if length else b""
        try:
            reply = self.server.sandbox.handle(self.command, self.path, self.headers, body)
        except Exception:
            logger.exception("Omnisend sandbox failed on %s %s", self.command, self.path)
            reply = problem(500, "Internal server error", "The sandbox failed; see its log.")
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        data = b"" if reply.body is None else json.dumps(reply.body).encode("utf-8")
        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: OmnisendSandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            # The client gave up first (its timeout, or a fault that closed the connection): expected.
            logger.debug("sandbox client %s went away before its answer was sent", client_address)
            return
        super().handle_error(request, client_address)

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._conn_lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def close_all(self) -> None:
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SandboxServer:
    """A local Omnisend API 2026-03-15 over real HTTP, for tests and the demo.

    ``url`` is the base URL to give the production client (it ends with ``/api/``). Admin endpoints,
    not part of the real API and without auth: ``GET /_sandbox/brands/{brand}/contacts`` (``{"contacts":
    [...]}``), ``GET /_sandbox/brands/{brand}/stats``, ``POST /_sandbox/keys`` ``{key, brand}`` and
    ``POST /_sandbox/reset``.

    Order of checks for ``/api/`` requests (the gateway first, then the API): 401 unknown key ->
    429 rate limit (the request counts from here on) -> fault hook -> 400/410 ``Omnisend-Version`` ->
    404/405 route -> 400 malformed JSON -> validation and the operation.

    Sandbox assumptions, where omnisend-api.md is silent (the stricter reading is chosen):

    * A request answered 429 does not consume rate-limit budget; every other authenticated request
      does (including 4xx answers and polling). Tags requests count against both budgets.
      ``retryAfter`` is an integer, ceil'ed, at least 1, also sent as a ``Retry-After`` header.
    * Unknown fields are rejected with 400 (top level, identifiers, channels, consent, tags and batch
      bodies), so typos such as ``sendWelcomeMesage`` surface; JSON ``null`` is not accepted for a
      string field (omit the field instead).
    * Tags must match ``SAFE_TAG_PATTERN`` (the rule of Omnisend's own plugin); ``tag_pattern=None``
      relaxes this to any non-empty string.
    * An email identifier may carry only the ``email`` channel, a phone identifier only ``sms``;
      one identifier per type; emails are stored lower-cased and phones must be E.164.
    * ``welcomeMessagesSent`` counts every identifier written with ``sendWelcomeMessage`` true
      (explicit or by default), whatever its channel status, so a forgotten ``false`` always shows.
    * ``customProperties`` merge key by key on update; ``createdAt`` is stored as custom property
      ``externalCreated``. A status without ``statusChangedAt`` is stamped "now".
    * Batches: only ``endpoint: "contacts"`` is implemented; other endpoints are refused with 422.
      ``PUT`` behaves like ``POST`` (upsert). ``itemID`` is the item's 0-based position as a string.
      Items not processed because the batch was stopped appear in neither ``responses`` nor ``errors``.
      A batch is stopped as soon as its errors reach ``batch_stop_min_errors`` and exceed
      ``batch_stop_error_share`` of ``totalCount``.
    * ``GET /contacts`` lists in creation order; ``sort``/``direction`` are ignored; ``segmentID``
      matches nothing (the sandbox has no segments); ``after`` and ``before`` together are refused.
    * ``/contacts/{id}`` (GET/PATCH/DELETE in the real API) answers 501.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: dict[str, str] | None = None,
        rate_limit: int = 400,
        window_seconds: float = 60.0,
        tags_rate_limit: int = 60,
        batch_delay_seconds: float = 0.05,
        *,
        batch_item_delay_seconds: float = 0.0,
        tags_delay_seconds: float = 0.05,
        batch_stop_min_errors: int = 10,
        batch_stop_error_share: float = 0.5,
        tag_pattern: str | None = SAFE_TAG_PATTERN,
        faults: Faults | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.app = OmnisendSandbox(
            api_keys,
            rate_limit=rate_limit,
            window_seconds=window_seconds,
            tags_rate_limit=tags_rate_limit,
            batch_delay_seconds=batch_delay_seconds,
            batch_item_delay_seconds=batch_item_delay_seconds,
            tags_delay_seconds=tags_delay_seconds,
            batch_stop_min_errors=batch_stop_min_errors,
            batch_stop_error_share=batch_stop_error_share,
            tag_pattern=tag_pattern,
            faults=faults,
        )
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def faults(self) -> Faults:
        """The fault-injection hook consulted for every admitted API request (see ``Faults``)."""
        return self.app.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.app.faults = value

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("The sandbox is not started; call start() first.")
        return f"http://{self.host}:{self.port}/api/"

    @property
    def admin_url(self) -> str:
        return self.url[: -len(API_PREFIX)] + ADMIN_PREFIX

    def start(self) -> "SandboxServer":
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self.port), self.app)
        self.port = self._httpd.server_address[1]
        self.app.scheduler.start()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="omnisend-sandbox-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_all()
        self._httpd.server_close()
        self.app.scheduler.stop()
        if self._thread:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def add_api_key(self, key: str, brand: str) -> None:
        self.app.add_api_key(key, brand)

    def revoke_api_key(self, key: str) -> None:
        self.app.revoke_api_key(key)

    def contacts(self, brand: str) -> list[dict]:
        """Stored contacts of ``brand`` (deep copies, ContactResponse shape), in creation order."""
        return self.app.contacts(brand)

    def stats(self, brand: str) -> dict:
        """``requests`` (authenticated, incl. 429s), ``admitted``, ``rateLimited``, ``byPath``
        (``"POST /contacts"`` -> n), ``byStatus``, ``welcomeMessagesSent``, ``contactsCreated``,
        ``contactsUpdated``, ``batchesCreated``, ``batchItemsProcessed``, ``faultsInjected``."""
        return self.app.stats(brand)

    def reset(self) -> None:
        """Forget contacts, batches, stats, rate windows and pending background work; keep the keys."""
        self.app.reset()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until queued background work (batches, tag changes) is done. False on timeout."""
        return self.app.scheduler.wait_idle(timeout)
