"""/api/connections: an Omnisend account, its key in Key Vault, who may use it."""

from __future__ import annotations

import dataclasses

from ..domain import Connection, new_id
from ..lifecycle.connections import remove_connection
from ..omnisend import OmnisendAuthError, OmnisendError, OmnisendUnavailable
from ..services import Services
from .access import Caller, require_admin, require_member, require_use
from .http import ApiRequest, ApiResponse, NotFound, flag, known_id, log, problem
from .validation import BadRequest, Field, all_of, between, length, matches, validate

MAX_PROFILES_LIMIT = 1_000_000_000
CONNECTION_SPEC = (
    Field("displayName", str, required=True, check=length(1, 100)),
    # An HTTP header carries the key: visible ASCII only. The message never repeats the value.
    Field("apiKey", str, required=True, check=all_of(
        length(1, 500), matches(r"[\x21-\x7e]+", "must be the API key as Omnisend shows it: letters, digits and "
                                                   "punctuation, without spaces or other characters"))),
    Field("allowContributors", bool),
    Field("dataPrivacyConsent", bool, required=True,
          check=lambda v: None if v is True else "must be true: profile data, including personal data, leaves the "
                                                 "platform's compliance boundary for Omnisend"),
    Field("maxProfilesPerExport", int, check=between(1, MAX_PROFILES_LIMIT)),
)

# Ids the app hands out: hex (connections, exports) or digits and hex (runs). Anything else names nothing,


def _connection_summary(c: Connection) -> dict:
    return {"id": c.id, "displayName": c.display_name}


def _get_connection(svc: Services, connection_id: str) -> Connection:
    conn = svc.connections.get(connection_id) if known_id(connection_id) else None
    if conn is None:
        raise NotFound(f"No connection with id {connection_id!r}.")
    return conn


def list_connections(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    require_member(caller)
    found = svc.connections.list()
    if caller.is_admin:
        return ApiResponse(200, {"connections": [c.to_api() for c in found]})
    return ApiResponse(200, {"connections": [_connection_summary(c) for c in found if caller.may_use(c)]})


def _check_key(svc: Services, api_key: str, unsaved: str = "nothing was saved") -> ApiResponse | None:
    """"Connect": one cheap authenticated call with the key; a problem answer when it does not work."""
    try:
        with svc.omnisend_with_key(api_key) as client:
            client.check_key()
    except OmnisendAuthError:
        return problem(422, "API key rejected", f"Omnisend rejected this API key; {unsaved}. Copy a valid key "
                       "from Omnisend (Store settings > API keys).",
                       errors=[{"field": "apiKey", "code": "rejected", "message": "Omnisend rejected this API key"}])
    except OmnisendUnavailable as e:
        if e.status is None:
            return problem(502, "Omnisend unreachable", f"Omnisend could not be reached to check the key ({e}); "
                           "nothing was saved. Try again later.")
        return problem(502, "Omnisend unavailable", f"Omnisend failed while checking the key ({e}); nothing was "
                       "saved. Try again later.")
    except OmnisendError as e:
        return problem(502, "Omnisend error", f"Omnisend answered the key check with an error: {e} Nothing was saved.")
    return None


def _refuse_duplicate_name(svc: Services, name: str, connection_id: str | None = None) -> None:
    if any(c.display_name.casefold() == name.casefold() and c.id != connection_id for c in svc.connections.list()):
        raise BadRequest("The request has invalid fields.",
                         [{"field": "displayName", "code": "duplicate", "message": f"a connection named {name!r} exists"}])


def create_connection(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """Check the key with Omnisend ("Connect"), then store it; with ``?dryRun=true`` only check: the same
    validation and the same key check, and nothing is stored."""
    require_admin(caller, "create connections")
    data = validate(req.json(), CONNECTION_SPEC)
    name = data["displayName"].strip()
    _refuse_duplicate_name(svc, name)
    api_key = data["apiKey"].strip()
    rejected = _check_key(svc, api_key, "the connection was not saved")
    if rejected is not None:
        return rejected
    if flag(req, "dryRun"):  # "Connect" without saving: the same checks, nothing stored
        return ApiResponse(200, {"dryRun": True, "displayName": name, "keyAccepted": True,
                                 "detail": "Omnisend accepted the API key. Nothing was saved."})
    now = svc.clock()
    conn = Connection(
        id=new_id(),
        display_name=name,
        allow_contributors=bool(data.get("allowContributors", False)),
        data_privacy_consent=True,
        consented_by=caller.name,
        consented_at=now,
        created_at=now,
        max_profiles_per_export=data.get("maxProfilesPerExport"),
    )
    svc.secrets.set(conn.secret_name, api_key)
    svc.connections.put(conn)
    log.info("connection created", extra={"connection_id": conn.id})
    return ApiResponse(201, conn.to_api(), headers={"Location": f"{req.base_url()}/connections/{conn.id}"})


# PATCH: any of these, each validated as when creating; consent is given once, at creation.
UPDATE_SPEC = tuple(dataclasses.replace(f, required=False) for f in CONNECTION_SPEC if f.name != "dataPrivacyConsent")


def update_connection(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """Change a connection: its name, who may use it, its contract limit, or its key. A new key is
    checked with Omnisend first and stored as a new version of the same secret; workers read it
    within SECRET_CACHE_SECONDS, or at once when Omnisend refuses the old one. Turning contributors
    off stops them from running its exports from the next request on (access is checked each time)."""
    require_admin(caller, "change connections")
    conn = _get_connection(svc, req.route_params["id"])
    data = validate(req.json(), UPDATE_SPEC)
    if not data:
        raise BadRequest("Nothing to change.", [{"field": "(body)", "code": "empty", "message":
                         "give at least one of displayName, allowContributors, apiKey, maxProfilesPerExport"}])
    if "displayName" in data:
        conn.display_name = data["displayName"].strip()
        _refuse_duplicate_name(svc, conn.display_name, conn.id)
    if "allowContributors" in data:
        conn.allow_contributors = data["allowContributors"]
    if "maxProfilesPerExport" in data:
        conn.max_profiles_per_export = data["maxProfilesPerExport"]
    if "apiKey" in data:
        api_key = data["apiKey"].strip()
        rejected = _check_key(svc, api_key, "nothing was changed and the old key stays")
        if rejected is not None:
            return rejected
        svc.secrets.set(conn.secret_name, api_key)  # a new version of the same Key Vault secret
    svc.connections.put(conn)
    changed = sorted(k for k in data if k != "apiKey") + (["apiKey (rotated)"] if "apiKey" in data else [])
    log.info("connection changed: %s", ", ".join(changed), extra={"connection_id": conn.id})
    return ApiResponse(200, conn.to_api())


def get_connection(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    require_member(caller)
    conn = _get_connection(svc, req.route_params["id"])
    if caller.is_admin:
        return ApiResponse(200, conn.to_api())
    require_use(caller, conn, "see this connection")
    return ApiResponse(200, _connection_summary(conn))


def delete_connection(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """Remove a destination: its key leaves Key Vault (once results of batches in flight are read),
    its exports are disabled (not deleted), and running runs stop sending."""
    require_admin(caller, "remove connections")
    remove_connection(svc, _get_connection(svc, req.route_params["id"]), caller.name)
    return ApiResponse(204)
