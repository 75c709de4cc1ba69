"""HTTP trigger: the operator console, static files under exporter/console/ served by the app itself.

``GET /api/console`` redirects to ``/api/console/`` (so the page's relative links resolve under it),
which serves index.html; ``GET /api/console/<file>`` serves the other files. Only the files that are
in exporter/console/ when the app starts can be served: any other path, ``..`` included, is a 404.
The page talks to the app through the public JSON API only, with the caller's own identity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import azure.functions as func

from .. import telemetry
from ..config import ConfigurationError
from ..services import get_services

bp = func.Blueprint()
ANON = func.AuthLevel.ANONYMOUS  # App Service Authentication signs browsers in before they get here

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
CONTENT_TYPES = {
    ".html": ("text/html", "utf-8"),
    ".js": ("text/javascript", "utf-8"),
    ".css": ("text/css", "utf-8"),
    ".svg": ("image/svg+xml", "utf-8"),
    ".json": ("application/json", "utf-8"),
    ".png": ("image/png", None),
}
MODE_PLACEHOLDER = b"__CONSOLE_MODE__"  # in index.html: replaced by "development" or "platform"

# The page loads nothing from elsewhere; a blob: URL is how it hands a downloaded CSV to the browser.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    charset: str | None


def _scan(folder: Path) -> dict[str, Asset]:
    """Every servable file by its path under the folder ("css/x.css"); nothing else can be asked for."""
    found = {}
    for path in sorted(folder.rglob("*")):
        kind = CONTENT_TYPES.get(path.suffix.lower())
        if path.is_file() and kind and not path.name.startswith("."):
            found[path.relative_to(folder).as_posix()] = Asset(path.read_bytes(), *kind)
    return found


ASSETS = _scan(CONSOLE_DIR)


def _dev_mode() -> bool:
    try:
        return get_services().settings.dev_mode
    except ConfigurationError:  # the page still loads; its API calls then show the configuration error
        return False


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _response(req: func.HttpRequest, asset: Asset, body: bytes) -> func.HttpResponse:
    # Small files that change with each deployment: the browser keeps them but asks every time (304).
    etag = _etag(body)
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": etag}
    if etag in [t.strip() for t in (req.headers.get("If-None-Match") or "").split(",")]:
        return func.HttpResponse(b"", status_code=304, headers=headers, mimetype=asset.content_type,
                                 charset=asset.charset)
    return func.HttpResponse(body, status_code=200, headers=headers, mimetype=asset.content_type,
                             charset=asset.charset)


def _not_found(detail: str) -> func.HttpResponse:
    import json

    body = json.dumps({"type": "about:blank", "title": "Not found", "status": 404, "detail": detail}).encode()
    return func.HttpResponse(body, status_code=404, mimetype="application/problem+json", charset="utf-8",
                             headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


@bp.route(route="console/{*path}", methods=["GET"], auth_level=ANON)
def console(req: func.HttpRequest) -> func.HttpResponse:
    with telemetry.invocation("console", "http", **{"http.request.method": req.method.upper()}):
        return _console(req)


def _console(req: func.HttpRequest) -> func.HttpResponse:
    path = unquote(req.route_params.get("path") or "")
    if not path:
        url_path = urlsplit(req.url).path
        if not url_path.endswith("/"):  # /api/console -> /api/console/: the page's links are relative to it
            return func.HttpResponse(b"", status_code=308, headers={"Location": url_path + "/",
                                                                     "Cache-Control": "no-store"})
        path = "index.html"
    asset = ASSETS.get(path)
    if asset is None:
        return _not_found(f"The console has no file {path!r}.")
    body = asset.body
    if path == "index.html":
        body = body.replace(MODE_PLACEHOLDER, b"development" if _dev_mode() else b"platform")
    return _response(req, asset, body)
