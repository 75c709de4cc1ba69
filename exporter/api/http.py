"""The management API's plumbing (JSON under /api), as plain functions of a request.

The Functions blueprint and the local runner both turn their HTTP request into an ``ApiRequest``
and call ``handle(endpoint, request)``; nothing here depends on the hosting. One module per
resource holds its endpoints: connections, exports, runs, status, segments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..logs import get_logger
from ..services import Services
from .access import AccessError, Caller, resolve_caller
from .validation import BadRequest, parse_json

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


@dataclass
class ApiRequest:
    method: str
    url: str
    route_params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return parse_json(self.body)

    def base_url(self) -> str:
        """Scheme, host and the /api prefix of this request's URL."""
        head, sep, _ = self.url.partition("/api/")
        return head + "/api" if sep else ""


@dataclass
class ApiResponse:
    status: int
    body: Any = None  # dict/list -> JSON; bytes or an iterable of bytes -> sent as is
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class NotFound(Exception):
    pass


class Conflict(Exception):
    def __init__(self, title: str, detail: str, extra: dict | None = None):
        self.title, self.detail, self.extra = title, detail, extra or {}
        super().__init__(detail)


def problem(status: int, title: str, detail: str, **extra) -> ApiResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return ApiResponse(status, body, PROBLEM_JSON)


Endpoint = Callable[[Services, Caller, ApiRequest], ApiResponse]


def handle(endpoint: Endpoint, req: ApiRequest, svc: Services) -> ApiResponse:
    """Run an endpoint with the caller resolved and every expected failure turned into problem+json."""
    try:
        caller = resolve_caller(req.headers, svc.settings)
        return endpoint(svc, caller, req)
    except AccessError as e:
        return problem(e.status, e.title, e.detail)
    except BadRequest as e:
        return problem(400, "Bad request", e.detail, **({"errors": e.errors} if e.errors else {}))
    except NotFound as e:
        return problem(404, "Not found", str(e))
    except Conflict as e:
        return problem(409, e.title, e.detail, **e.extra)
    except Exception:  # never leak internals (or a key) to the caller
        log.exception("unexpected error in %s %s", req.method, req.url.split("?")[0])
        return problem(500, "Internal error", "The request failed unexpectedly; the error was logged.")


# Ids the app hands out: hex (connections, exports) or digits and hex (runs). Anything else names nothing,
# and never reaches Table Storage (whose keys forbid some characters and lengths).
_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


def known_id(value: str) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def flag(req: ApiRequest, name: str) -> bool:
    return req.query.get(name, "").lower() in ("true", "1", "yes")
