"""A fake Azure Key Vault *service*, served to the real SDK through a ``requests`` transport adapter.

No Key Vault emulator installs here (see /work/shared/azure-notes.md), and ``SecretClient`` refuses
bearer auth over plain http. So the real ``SecretClient`` talks https to
``https://fake-vault.vault.azure.net`` through ``RequestsTransport(session=s)``, and ``s`` has
``FakeKeyVault`` mounted for ``https://``. Everything above the socket is the real SDK: challenge
auth, retries, error mapping, the delete poller.

Implemented (paths as azure-keyvault-secrets 4.12 sends them; it sends ``api-version=2026-04-01``):

- any request without ``Authorization`` -> 401 + ``WWW-Authenticate: Bearer authorization=..., resource=...``
- ``PUT /secrets/{name}`` -> SecretBundle (409 while the name is deleted-but-recoverable)
- ``GET /secrets/{name}/`` (latest) and ``GET /secrets/{name}/{version}`` -> SecretBundle, or 404 SecretNotFound
- ``DELETE /secrets/{name}`` -> DeletedSecretBundle (no value), or 404 SecretNotFound
- ``GET /deletedsecrets/{name}`` -> DeletedSecretBundle once the deletion "finished" (404 before)
- ``DELETE /deletedsecrets/{name}`` (purge) -> 204, or 403 with purge protection
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPResponse

from exporter.state.secrets import KeyVaultSecretStore

VAULT_URL = "https://fake-vault.vault.azure.net"
TENANT_ID = "72f988bf-0000-4000-8000-00000000fake"
TOKEN = "fake-kv-access-token"
KV_SCOPE = "https://vault.azure.net/.default"
RETENTION_DAYS = 90


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    auth_present: bool  # an Authorization header was sent
    authorized: bool  # it was "Bearer <the expected token>"
    api_version: str | None


@dataclass
class _Failure:
    status: int | None = None
    exc: type[BaseException] | BaseException | None = None
    code: str | None = None
    message: str | None = None


@dataclass
class _Version:
    name: str  # as first created (Key Vault keeps the original casing)
    value: str
    version: str
    created: int
    content_type: str | None
    tags: dict[str, str] | None


_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}
_DEFAULT_ERRORS = {
    400: ("BadParameter", "The request is invalid."),
    401: ("Unauthorized", "AKV10022: Invalid audience."),
    403: ("Forbidden", "Caller is not authorized to perform action on resource. Action: "
          "'Microsoft.KeyVault/vaults/secrets/getSecret/action'. Inner error: ForbiddenByRbac"),
    429: ("Throttled", "Rate limit exceeded. Try again later."),
    500: ("InternalServerError", "Internal server error."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable."),
}


class FakeKeyVault(BaseAdapter):
    """In-memory Key Vault (secrets only) behind a ``requests`` adapter. Thread-safe (the SDK's delete
    poller runs in its own thread).

    ``soft_delete``: deleted secrets go to the deleted collection (with a recoveryId), as in every
    vault created today; ``purge_protection``: purging is refused with 403.
    ``deletion_polls``: how many ``GET /deletedsecrets/{name}`` answer 404 ("deletion in progress")
    after each delete before the deleted secret shows up.
    """

    def __init__(
        self,
        vault_url: str = VAULT_URL,
        *,
        token: str = TOKEN,
        tenant_id: str = TENANT_ID,
        soft_delete: bool = True,
        purge_protection: bool = True,
        deletion_polls: int = 0,
    ) -> None:
        super().__init__()
        self.vault_url = vault_url.rstrip("/")
        self.host = urlsplit(self.vault_url).hostname
        self.token = token
        self.tenant_id = tenant_id
        self.soft_delete = soft_delete
        self.purge_protection = purge_protection
        self.deletion_polls = deletion_polls
        self.secrets: dict[str, list[_Version]] = {}  # lower-case name -> versions, newest last
        self.deleted: dict[str, dict[str, Any]] = {}  # lower-case name -> DeletedSecretBundle
        self._pending_polls: dict[str, int] = {}
        self.log: list[LoggedRequest] = []
        self.sleeps: list[float] = []  # filled by the no-sleep transport of make_keyvault_store
        self._failures: deque[_Failure] = deque()
        self._lock = threading.RLock()

    # -- test controls -----------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int | None = None,
        exc: type[BaseException] | BaseException | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Make the next ``count`` calls fail.

        ``status``: answer that HTTP status with a Key Vault error body; applies to requests that pass
        the auth check (a real 403 needs a valid token), so the challenge round is not consumed.
        ``exc``: raise it from the adapter (e.g. ``requests.ConnectionError``); applies to any request.
        """
        if (status is None) == (exc is None):
            raise ValueError("give exactly one of status= or exc=")
        with self._lock:
            for _ in range(count):
                self._failures.append(_Failure(status=status, exc=exc, code=code, message=message))

    def requests_to(self, method: str | None = None, path_prefix: str = "", *,
                    authorized: bool | None = None) -> list[LoggedRequest]:
        """Logged requests by method and path prefix; ``authorized=True`` leaves out challenge rounds."""
        with self._lock:
            return [r for r in self.log
                    if (method is None or r.method == method) and r.path.startswith(path_prefix)
                    and (authorized is None or r.authorized == authorized)]

    def current_value(self, name: str) -> str | None:
        with self._lock:
            versions = self.secrets.get(name.lower())
            return versions[-1].value if versions else None

    # -- requests adapter --------------------------------------------------------------------

    def close(self) -> None:
        pass

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        url = urlsplit(request.url)
        path = unquote(url.path)
        auth = request.headers.get("Authorization")
        authorized = auth == f"Bearer {self.token}"
        api_version = (parse_qs(url.query).get("api-version") or [None])[0]
        with self._lock:
            self.log.append(LoggedRequest(request.method, path, auth is not None, authorized, api_version))
            failure = self._failures[0] if self._failures else None
            if failure is not None and failure.exc is not None:
                self._failures.popleft()
                exc = failure.exc
                raise exc(f"FakeKeyVault: injected {exc.__name__}") if isinstance(exc, type) else exc
        if url.hostname != self.host:
            raise requests.ConnectionError(f"FakeKeyVault: unknown host {url.hostname}")
        if url.scheme != "https":
            raise AssertionError("Key Vault is https only")

        if not authorized:
            # First request of the challenge protocol (no Authorization), or a wrong token.
            challenge = (f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
                         f'resource="https://vault.azure.net"')
            if auth is not None:
                challenge += ', error="invalid_token"'
            return self._response(request, 401, {"error": {"code": "Unauthorized", "message": (
                "AKV10000: Request is missing a Bearer or PoP token." if auth is None
                else "AKV10032: Invalid issuer or token.")}}, {"WWW-Authenticate": challenge})
        if not api_version:
            return self._error(request, 400, "BadParameter", "The api-version query parameter is missing.")

        with self._lock:
            if self._failures:
                failure = self._failures.popleft()
                code, message = _DEFAULT_ERRORS.get(failure.status, ("Error", "Injected failure."))
                return self._error(request, failure.status, failure.code or code, failure.message or message)
            return self._route(request, path)

    # -- the service -------------------------------------------------------------------------

    def _route(self, request: requests.PreparedRequest, path: str) -> requests.Response:
        parts = [p for p in path.split("/")]
        method = request.method
        # "/secrets/name/" splits to ["", "secrets", "name", ""]
        if len(parts) >= 3 and parts[1] == "secrets" and parts[2]:
            name = parts[2]
            rest = parts[3:]
            if method == "PUT" and not rest:
                return self._set(request, name)
            if method == "GET" and len(rest) <= 1:
                return self._get(request, name, rest[0] if rest else "")
            if method == "DELETE" and not rest:
                return self._delete(request, name)
        if len(parts) == 3 and parts[1] == "deletedsecrets" and parts[2]:
            name = parts[2]
            if method == "GET":
                return self._get_deleted(request, name)
            if method == "DELETE":
                return self._purge(request, name)
        raise AssertionError(f"FakeKeyVault does not implement {method} {path}")

    def _bundle(self, v: _Version) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "value": v.value,
            "id": f"{self.vault_url}/secrets/{v.name}/{v.version}",
            "attributes": {
                "enabled": True,
                "created": v.created,
                "updated": v.created,
                "recoveryLevel": self._recovery_level(),
                "recoverableDays": RETENTION_DAYS if self.soft_delete else 0,
            },
        }
        if v.content_type:
            bundle["contentType"] = v.content_type
        if v.tags:
            bundle["tags"] = v.tags
        return bundle

    def _recovery_level(self) -> str:
        if not self.soft_delete:
            return "Purgeable"
        return "Recoverable" if self.purge_protection else "Recoverable+Purgeable"

    def _set(self, request: requests.PreparedRequest, name: str) -> requests.Response:
        if not _valid_name(name):
            return self._error(request, 400, "BadParameter", "The secret name is invalid.")
        key = name.lower()
        if key in self.deleted:
            return self._error(
                request, 409, "Conflict",
                f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be "
                "reused; in this state, the secret can only be recovered or purged.",
                inner="ObjectIsDeletedButRecoverable")
        body = json.loads(request.body or b"{}")
        if not isinstance(body.get("value"), str):
            return self._error(request, 400, "BadParameter", "Property 'value' is required.")
        versions = self.secrets.setdefault(key, [])
        v = _Version(
            name=versions[0].name if versions else name,
            value=body["value"],
            version=uuid.uuid4().hex,
            created=int(time.time()),
            content_type=body.get("contentType"),
            tags=body.get("tags"),
        )
        versions.append(v)
        return self._response(request, 200, self._bundle(v))

    def _get(self, request: requests.PreparedRequest, name: str, version: str) -> requests.Response:
        versions = self.secrets.get(name.lower())
        if versions:
            if not version:
                return self._response(request, 200, self._bundle(versions[-1]))
            for v in versions:
                if v.version == version:
                    return self._response(request, 200, self._bundle(v))
            return self._error(request, 404, "SecretNotFound",
                               f"A secret with (name/id) {name}/{version} was not found in this key vault. If "
                               "you recently deleted this secret you may be able to recover it using the "
                               "correct recovery command.")
        return self._not_found(request, name)

    def _delete(self, request: requests.PreparedRequest, name: str) -> requests.Response:
        key = name.lower()
        versions = self.secrets.pop(key, None)
        if not versions:
            return self._not_found(request, name)
        latest = versions[-1]
        bundle = self._bundle(latest)
        del bundle["value"]  # Key Vault does not return the value of a deleted secret
        now = int(time.time())
        if self.soft_delete:
            bundle.update({
                "recoveryId": f"{self.vault_url}/deletedsecrets/{latest.name}",
                "deletedDate": now,
                "scheduledPurgeDate": now + RETENTION_DAYS * 86400,
            })
            self.deleted[key] = bundle
            self._pending_polls[key] = self.deletion_polls
        return self._response(request, 200, bundle)

    def _get_deleted(self, request: requests.PreparedRequest, name: str) -> requests.Response:
        key = name.lower()
        if key in self.deleted:
            if self._pending_polls.get(key, 0) > 0:
                self._pending_polls[key] -= 1
            else:
                return self._response(request, 200, self.deleted[key])
        return self._error(request, 404, "SecretNotFound",
                           f"Deleted Secret not found: {name}")

    def _purge(self, request: requests.PreparedRequest, name: str) -> requests.Response:
        key = name.lower()
        if key not in self.deleted:
            return self._error(request, 404, "SecretNotFound", f"Deleted Secret not found: {name}")
        if self.purge_protection:
            return self._error(request, 403, "Forbidden",
                               "Operation \"purge\" is not allowed because purge protection is enabled for "
                               "this vault.")
        del self.deleted[key]
        return self._response(request, 204, None)

    # -- responses ---------------------------------------------------------------------------

    def _not_found(self, request: requests.PreparedRequest, name: str) -> requests.Response:
        return self._error(request, 404, "SecretNotFound",
                           f"A secret with (name/id) {name} was not found in this key vault. If you recently "
                           "deleted this secret you may be able to recover it using the correct recovery "
                           "command.")

    def _error(self, request: requests.PreparedRequest, status: int, code: str, message: str,
               inner: str | None = None) -> requests.Response:
        error: dict[str, Any] = {"code": code, "message": message}
        if inner:
            error["innererror"] = {"code": inner}
        return self._response(request, status, {"error": error})

    def _response(self, request: requests.PreparedRequest, status: int, body: Any,
                  headers: dict[str, str] | None = None) -> requests.Response:
        content = b"" if body is None else json.dumps(body).encode()
        all_headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Length": str(len(content)),
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-keyvault-service-version": "1.9.0.0",
            **(headers or {}),
        }
        raw = HTTPResponse(body=io.BytesIO(content), headers=all_headers, status=status,
                           reason=_REASONS.get(status, ""), preload_content=False, decode_content=False)
        response = requests.Response()
        response.status_code = status
        response.reason = _REASONS.get(status, "")
        response.headers = CaseInsensitiveDict(all_headers)
        response.raw = raw
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        response.connection = self
        return response


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 127 and all(c.isascii() and (c.isalnum() or c == "-") for c in name)


class FakeCredential:
    """A TokenCredential / SupportsTokenInfo that hands out a fixed token and records what was asked."""

    def __init__(self, token: str = TOKEN, expires_in: int = 3600) -> None:
        self.token = token
        self.expires_in = expires_in
        self.requests: list[tuple[tuple[str, ...], str | None]] = []  # (scopes, tenant_id)

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        self.requests.append((scopes, tenant_id))
        return AccessToken(self.token, int(time.time()) + self.expires_in)

    def get_token_info(self, *scopes: str, options: dict | None = None) -> AccessTokenInfo:
        self.requests.append((scopes, (options or {}).get("tenant_id")))
        return AccessTokenInfo(self.token, int(time.time()) + self.expires_in)


class _NoSleepTransport(RequestsTransport):
    """The real RequestsTransport, except retry back-off and poller sleeps are recorded, not slept."""

    def __init__(self, fake: FakeKeyVault, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fake = fake

    def sleep(self, duration: float) -> None:
        self._fake.sleeps.append(duration)


def make_keyvault_session(fake: FakeKeyVault) -> requests.Session:
    session = requests.Session()
    session.mount("https://", fake)
    session.mount("http://", fake)
    return session


def make_secret_client(fake: FakeKeyVault, credential: Any = None):
    """The real SecretClient, wired to ``fake``. Clears the SDK's process-wide challenge cache first so
    the client goes through the challenge round like a fresh process."""
    from azure.keyvault.secrets import SecretClient
    from azure.keyvault.secrets._shared import http_challenge_cache

    http_challenge_cache.clear()
    transport = _NoSleepTransport(fake, session=make_keyvault_session(fake), session_owner=False)
    return SecretClient(fake.vault_url, credential or FakeCredential(fake.token), transport=transport)


def make_keyvault_store(
    cache_seconds: float = 300,
    clock: Callable[[], float] = time.monotonic,
    *,
    fake: FakeKeyVault | None = None,
    credential: Any = None,
) -> tuple[KeyVaultSecretStore, FakeKeyVault]:
    """A KeyVaultSecretStore whose real SecretClient talks to a fresh FakeKeyVault."""
    fake = fake or FakeKeyVault()
    credential = credential or FakeCredential(fake.token)
    client = make_secret_client(fake, credential)
    store = KeyVaultSecretStore(fake.vault_url, credential, cache_seconds=cache_seconds, client=client, clock=clock)
    return store, fake
