"""The management API (JSON under /api), as plain functions of a request.

The Functions blueprint and the local runner both turn their HTTP request into an ``ApiRequest``
and call ``handle(endpoint, request)``; nothing here depends on the hosting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterable

from . import config, segments
from .access import AccessError, Caller, require_admin, require_member, require_use, resolve_caller
from .domain import MAPPABLE_FIELDS, TAG_PATTERN, Connection, Consent, Export, Mapping, Run, RunStatus, Source, iso, new_id
from .logs import get_logger
from .omnisend import OmnisendAuthError, OmnisendError, OmnisendUnavailable
from .runs import ACTIVE, RetryError, RunConflictError, retry_failed_batches, start_run, stuck_reason
from .services import Services
from .validation import BadRequest, Field, all_of, between, length, matches, parse_json, validate

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
    except Exception:  # noqa: BLE001 - never leak internals (or a key) to the caller
        log.exception("unexpected error in %s %s", req.method, req.url.split("?")[0])
        return problem(500, "Internal error", "The request failed unexpectedly; the error was logged.")


# --- connections --------------------------------------------------------------------------------

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
# and never reaches Table Storage (whose keys forbid some characters and lengths).
_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


def _known_id(value: str) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _flag(req: ApiRequest, name: str) -> bool:
    return req.query.get(name, "").lower() in ("true", "1", "yes")


def _connection_summary(c: Connection) -> dict:
    return {"id": c.id, "displayName": c.display_name}


def _get_connection(svc: Services, connection_id: str) -> Connection:
    conn = svc.storage.get_connection(connection_id) if _known_id(connection_id) else None
    if conn is None:
        raise NotFound(f"No connection with id {connection_id!r}.")
    return conn


def list_connections(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    require_member(caller)
    found = svc.storage.list_connections()
    if caller.is_admin:
        return ApiResponse(200, {"connections": [c.to_api() for c in found]})
    return ApiResponse(200, {"connections": [_connection_summary(c) for c in found if caller.may_use(c)]})


def create_connection(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """Check the key with Omnisend ("Connect"), then store it; with ``?dryRun=true`` only check: the same
    validation and the same key check, and nothing is stored."""
    require_admin(caller, "create connections")
    data = validate(req.json(), CONNECTION_SPEC)
    name = data["displayName"].strip()
    if any(c.display_name.casefold() == name.casefold() for c in svc.storage.list_connections()):
        raise BadRequest("The request has invalid fields.",
                         [{"field": "displayName", "code": "duplicate", "message": f"a connection named {name!r} exists"}])
    api_key = data["apiKey"].strip()
    try:  # "Connect": one cheap authenticated call before anything is saved
        with svc.omnisend_with_key(api_key) as client:
            client.check_key()
    except OmnisendAuthError:
        return problem(422, "API key rejected", "Omnisend rejected this API key; the connection was not saved. "
                       "Copy a valid key from Omnisend (Store settings > API keys).",
                       errors=[{"field": "apiKey", "code": "rejected", "message": "Omnisend rejected this API key"}])
    except OmnisendUnavailable as e:
        if e.status is None:
            return problem(502, "Omnisend unreachable", f"Omnisend could not be reached to check the key ({e}); "
                           "nothing was saved. Try again later.")
        return problem(502, "Omnisend unavailable", f"Omnisend failed while checking the key ({e}); nothing was "
                       "saved. Try again later.")
    except OmnisendError as e:
        return problem(502, "Omnisend error", f"Omnisend answered the key check with an error: {e} Nothing was saved.")
    if _flag(req, "dryRun"):  # "Connect" without saving: the same checks, nothing stored
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
    svc.storage.put_connection(conn)
    log.info("connection created", extra={"connection_id": conn.id})
    return ApiResponse(201, conn.to_api(), headers={"Location": f"{req.base_url()}/connections/{conn.id}"})


def get_connection(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    require_member(caller)
    conn = _get_connection(svc, req.route_params["id"])
    if caller.is_admin:
        return ApiResponse(200, conn.to_api())
    require_use(caller, conn, "see this connection")
    return ApiResponse(200, _connection_summary(conn))


def delete_connection(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """Remove a destination: its key leaves Key Vault, its exports are disabled (not deleted), and
    running runs stop sending (the uploader finds no connection)."""
    require_admin(caller, "remove connections")
    conn = _get_connection(svc, req.route_params["id"])
    svc.secrets.delete(conn.secret_name)  # first: if Key Vault refuses, nothing else has changed
    svc.storage.delete_connection(conn.id)
    now = svc.clock()
    removed = f"Connection {conn.display_name!r} was removed by {caller.name} at {now:%Y-%m-%d %H:%M} UTC"
    for export in svc.storage.list_exports():
        if export.connection_id == conn.id:
            export.enabled = False
            export.disabled_reason = removed + "."
            export.updated_at = now
            svc.storage.put_export(export)
        # Runs in progress stop sending by themselves (the uploader finds no connection); say why on them.
        for run in svc.storage.list_runs(export.id, limit=20):
            if run.connection_id == conn.id and run.status in ACTIVE:
                _note_on_active_run(svc, run.id, removed + "; batches not sent yet were not sent.")
    log.info("connection removed", extra={"connection_id": conn.id})
    return ApiResponse(204)


def _note_on_active_run(svc: Services, run_id: str, error: str) -> None:
    def mutate(r: Run):
        if r.status.is_final:
            return False
        r.error = error

    try:
        svc.storage.update_run(run_id, mutate)
    except KeyError:  # the run was deleted meanwhile
        pass


# --- exports ------------------------------------------------------------------------------------

_column = length(1, 256)
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


def _container_name(value: str) -> str | None:
    if _CONTAINER.fullmatch(value):
        return None
    return ("must be a blob container name: 3 to 63 lowercase letters, digits and single hyphens, starting and "
            "ending with a letter or digit")


def _segment_name(value: str) -> str | None:
    if "/" in value:
        return "must be the segment's name (its folder under the root folder), without '/'"
    return length(1, 256)(value)


def _values(values: list) -> str | None:
    if not values or not all(isinstance(v, str) and v.strip() for v in values) or len(values) > 20:
        return "must be a list of 1 to 20 non-empty strings"
    return None


EXPORT_SPEC = (
    Field("name", str, required=True, check=length(1, 100)),
    Field("connectionId", str, required=True, check=length(1, 64)),
    Field("source", dict, required=True, children=(
        Field("container", str, required=True, check=_container_name),
        Field("folder", str, check=length(0, 512)),
        Field("segment", str, required=True, check=_segment_name),
    )),
    Field("mapping", dict, required=True, children=tuple(
        Field(api, str, required=(api == "email"), check=_column) for api, _ in MAPPABLE_FIELDS
    )),
    Field("enabled", bool),
    Field("tag", str, check=lambda v: None if TAG_PATTERN.match(v) else
          "must be 1 to 128 letters, digits, spaces, '_' or '-' (what Omnisend accepts in a tag)"),
    Field("consent", dict, children=(
        Field("column", str, required=True, check=_column),
        Field("subscribedValues", list, check=_values),
        Field("unsubscribedValues", list, check=_values),
        Field("changedAtColumn", str, check=_column),
    )),
    Field("sendWelcomeMessage", bool),
)


def _usable_connection(svc: Services, caller: Caller, connection_id: str, action: str) -> Connection:
    conn = svc.storage.get_connection(connection_id) if _known_id(connection_id) else None
    if conn is None:
        raise BadRequest("The request has invalid fields.",
                         [{"field": "connectionId", "code": "unknown", "message": f"no connection with id {connection_id!r}"}])
    require_use(caller, conn, action)
    return conn


def _check_source(svc: Services, export: Export) -> list[str]:
    """Validate the mapping against the segment's schema; returns notices for the caller."""
    source = export.source
    container = svc.storage.segment_blobs.get_container_client(source.container)
    notices = []
    try:
        refresh = segments.find_latest_refresh(container, source.folder, source.segment)
        if refresh is None:
            notice = f"Segment {source.segment!r} has no refresh in {source.container}/{source.folder} yet"
            try:  # model.json may describe the segment before its first refresh: check against it then
                schema = segments.load_schema(container, source.folder, source.segment, None)
            except segments.SegmentSourceError:
                return [notice + "; the mapping will be checked against its columns when the first refresh is "
                                 "exported."]
            notices.append(notice + "; the mapping was checked against the segment's columns in model.json.")
        else:
            schema = segments.load_schema(container, source.folder, source.segment, refresh)
    except segments.SourceNotFoundError as e:
        raise BadRequest("The request has invalid fields.",
                         [{"field": "source.container", "code": "not_found", "message": str(e)}]) from None
    except segments.SegmentSourceError as e:
        raise BadRequest("The request has invalid fields.",
                         [{"field": "source", "code": "unreadable", "message": str(e)}]) from None
    errors = [
        {"field": api if api.startswith("consent.") else f"mapping.{api}", "code": "unknown_column",
         "message": f"column {column!r} is not in the segment; available columns: {', '.join(schema.columns)}"}
        for api, column in _mapped_columns(export).items() if column not in schema.columns
    ]
    if errors:
        raise BadRequest("The mapping names columns the segment does not have.", errors)
    return notices


def _mapped_columns(export: Export) -> dict[str, str]:
    """Every column the export reads, by the field that names it (as errors name it)."""
    columns = dict(export.mapping.columns())
    if export.consent:
        columns["consent.column"] = export.consent.column
        if export.consent.changed_at_column:
            columns["consent.changedAtColumn"] = export.consent.changed_at_column
    return columns


def _get_export(svc: Services, caller: Caller, export_id: str, action: str) -> Export:
    require_member(caller)
    export = svc.storage.get_export(export_id) if _known_id(export_id) else None
    if export is None:
        raise NotFound(f"No export with id {export_id!r}.")
    conn = svc.storage.get_connection(export.connection_id)
    if conn is not None:
        require_use(caller, conn, f"{action} exports that use it")
    else:
        require_admin(caller, f"{action} an export whose connection was removed")
    return export


def _export_from(data: dict, export_id: str, created_at, now) -> Export:
    return Export(
        id=export_id,
        name=data["name"].strip(),
        connection_id=data["connectionId"],
        source=Source.from_api(data["source"]),
        mapping=Mapping.from_api(data["mapping"]),
        enabled=data.get("enabled", True),
        created_at=created_at,
        updated_at=now,
        tag=data.get("tag"),
        consent=Consent.from_api(data.get("consent")),
        send_welcome_message=data.get("sendWelcomeMessage", False),
    )


def create_export(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    require_member(caller)
    data = validate(req.json(), EXPORT_SPEC)
    _usable_connection(svc, caller, data["connectionId"], "create exports with it")
    now = svc.clock()
    export = _export_from(data, new_id(), now, now)
    notices = _check_source(svc, export)
    svc.storage.put_export(export)  # saving never starts a run
    return ApiResponse(201, {**export.to_api(), "notices": notices},
                       headers={"Location": f"{req.base_url()}/exports/{export.id}"})


def list_exports(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    require_member(caller)
    usable = {c.id for c in svc.storage.list_connections() if caller.may_use(c)}
    found = [x for x in svc.storage.list_exports() if caller.is_admin or x.connection_id in usable]
    return ApiResponse(200, {"exports": [x.to_api() for x in found]})


def get_export(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    return ApiResponse(200, _get_export(svc, caller, req.route_params["id"], "see").to_api())


def update_export(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    current = _get_export(svc, caller, req.route_params["id"], "change")
    data = validate(req.json(), EXPORT_SPEC)
    _usable_connection(svc, caller, data["connectionId"], "move an export to it")
    export = _export_from(data, current.id, current.created_at, svc.clock())
    notices = _check_source(svc, export)
    svc.storage.put_export(export)
    return ApiResponse(200, {**export.to_api(), "notices": notices})


def delete_export(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    export = _get_export(svc, caller, req.route_params["id"], "delete")
    svc.storage.delete_export(export.id)
    svc.states.delete(export.id)  # its membership state describes nothing any more
    return ApiResponse(204)


# --- runs ---------------------------------------------------------------------------------------


def _run_body(req: ApiRequest, run: Run, now=None) -> dict:
    body = run.to_api(status_url=f"{req.base_url()}/runs/{run.id}")
    body["stuck"] = stuck_reason(run, now) if now is not None and not run.status.is_final else None
    return body


def start_export_run(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    export = _get_export(svc, caller, req.route_params["id"], "run")
    if not export.enabled:
        raise Conflict("Export disabled", f"Export {export.name!r} is disabled"
                       + (f": {export.disabled_reason}" if export.disabled_reason else ".") + " Enable it to run it.")
    if svc.storage.get_connection(export.connection_id) is None:
        raise Conflict("Connection removed", "The export's connection was removed; choose another connection.")
    src = export.source
    container = svc.storage.segment_blobs.get_container_client(src.container)
    try:
        refresh = segments.find_latest_refresh(container, src.folder, src.segment)
    except segments.SegmentSourceError as e:
        raise Conflict("Segment unreadable", str(e)) from None
    if refresh is None:
        raise Conflict("Nothing to export", f"Segment {src.segment!r} has no refresh in {src.container}/{src.folder} yet.")
    settle = svc.settings.refresh_settle_seconds
    if not segments.is_settled(refresh, svc.clock(), settle):
        raise Conflict("Refresh still being written",
                       f"The latest refresh {refresh.folder} changed at {refresh.last_modified:%H:%M:%S} UTC and is "
                       f"treated as still being written for {settle}s. Try again in a few minutes.")
    full = _flag(req, "full")
    try:
        run = start_run(svc, export, "manual", refresh, full=full)
    except RunConflictError as e:
        raise Conflict("Run in progress", str(e), {"activeRunId": e.active.id}) from None
    body = _run_body(req, run)
    return ApiResponse(202, body, headers={"Location": body["statusUrl"]})


def _get_run(svc: Services, caller: Caller, run_id: str) -> Run:
    require_member(caller)
    run = svc.storage.get_run(run_id) if _known_id(run_id) else None
    if run is None:
        raise NotFound(f"No run with id {run_id!r}.")
    conn = svc.storage.get_connection(run.connection_id)
    if conn is not None:
        require_use(caller, conn, "see or cancel runs that use it")
    else:
        require_admin(caller, "see or cancel runs of a removed connection")
    return run


def get_run(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    return ApiResponse(200, _run_body(req, _get_run(svc, caller, req.route_params["id"]), svc.clock()))


def list_export_runs(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    export = _get_export(svc, caller, req.route_params["id"], "see runs of")
    now = svc.clock()
    return ApiResponse(200, {"runs": [_run_body(req, r, now) for r in svc.storage.list_runs(export.id)]})


def get_run_rejects(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    run = _get_run(svc, caller, req.route_params["id"])
    chunks: Iterable[bytes] = svc.storage.read_report(run.id)
    return ApiResponse(200, b"".join(chunks), "text/csv; charset=utf-8",
                       {"Content-Disposition": f'attachment; filename="run-{run.id}-rejects.csv"'})


def cancel_run(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    run = _get_run(svc, caller, req.route_params["id"])
    cancelled = []

    def mutate(r: Run):
        cancelled.clear()  # called again when another writer got in first: only the last call counts
        if r.status.is_final:
            return False
        r.status = RunStatus.CANCELLED
        r.finished_at = svc.clock()
        r.error = f"Cancelled by {caller.name}."
        cancelled.append(True)

    run = svc.storage.update_run(run.id, mutate)
    if not cancelled:
        raise Conflict("Run already ended", f"Run {run.id} already ended as {run.status.value}.")
    log.info("run cancelled: no further batches are sent", extra={"run_id": run.id, "export_id": run.export_id})
    return ApiResponse(202, _run_body(req, run))


def retry_run(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    run = _get_run(svc, caller, req.route_params["id"])
    try:
        run, resent = retry_failed_batches(svc, run.id)
    except RetryError as e:
        raise Conflict("Cannot retry now", str(e)) from None
    return ApiResponse(202, {**_run_body(req, run, svc.clock()), "batchesResent": resent})


# A timer that has not run for this long is reported (the default schedule fires every 15 minutes).
TIMER_LATE_AFTER = timedelta(minutes=45)


def health(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """What an operator needs to know at a glance: is the schedule firing, is any run stuck,
    is anything waiting in a poison queue."""
    require_member(caller)
    now = svc.clock()
    problems: list[str] = []
    last_tick = svc.storage.last_tick()
    if last_tick is None or now - last_tick > TIMER_LATE_AFTER:
        problems.append("The schedule has not run " + ("yet" if last_tick is None else f"since {iso(last_tick)}")
                        + ": scheduled exports are not starting. Check that the function app is running.")
    stuck = []
    for export_id, run_id in svc.storage.locked_runs():
        run = svc.storage.get_run(run_id)
        reason = stuck_reason(run, now) if run is not None and not run.status.is_final else None
        if reason:
            stuck.append({"runId": run.id, "exportId": export_id, "status": run.status.value, "stuck": reason})
            problems.append(f"Run {run.id} of export {export_id} is stuck: {reason}.")
    poison = {q: svc.storage.queue_length(q) for q in (config.QUEUE_RUNS + config.POISON_SUFFIX,
                                                       config.QUEUE_BATCHES + config.POISON_SUFFIX)}
    for q, n in poison.items():
        if n:
            problems.append(f"{n} message(s) wait in {q}.")
    body = {"status": "degraded" if problems else "ok", "problems": problems, "lastTimerTick": iso(last_tick),
            "stuckRuns": stuck, "poisonMessages": poison}
    return ApiResponse(200, body)


# --- the caller and the segments (what the console needs to fill its forms) --------------------


def me(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """Who the API takes the caller for, and what that lets them do (the console hides what they may not)."""
    require_member(caller)
    return ApiResponse(200, {"name": caller.name, "roles": sorted(caller.roles), "isAdmin": caller.is_admin,
                             "isContributor": caller.is_contributor, "devMode": svc.settings.dev_mode})


SEGMENT_QUERY_SPEC = (
    Field("container", str, required=True, check=_container_name),
    Field("folder", str, check=length(0, 512)),
    Field("segment", str, required=True, check=_segment_name),
)


def segment_columns(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """The columns of a segment, as an export's mapping names them: from model.json, else from the CSV
    header of the latest refresh. 404 when the container or the segment is not there."""
    require_member(caller)
    data = validate(dict(req.query), SEGMENT_QUERY_SPEC)  # query parameters, named like fields
    source = Source.from_api(data)
    container = svc.storage.segment_blobs.get_container_client(source.container)
    where = f"{source.container}/{source.folder}" if source.folder else source.container
    try:
        refresh = segments.find_latest_refresh(container, source.folder, source.segment)
    except segments.SourceNotFoundError as e:
        raise NotFound(str(e)) from None
    except segments.SegmentSourceError as e:
        raise BadRequest("The segment cannot be read.",
                         [{"field": "container", "code": "unreadable", "message": str(e)}]) from None
    notices = [] if refresh else [f"Segment {source.segment!r} has no refresh in {where} yet; these are the columns "
                                  "model.json describes."]
    try:
        schema = segments.load_schema(container, source.folder, source.segment, refresh)
    except segments.SourceNotFoundError as e:
        raise NotFound(str(e)) from None
    except segments.SegmentSourceError as e:
        if refresh is None:  # no data, and no description of it either: the segment is not there
            raise NotFound(f"Segment {source.segment!r} has no refresh in {where}, and its columns cannot be read "
                           f"from model.json: {e}") from None
        raise BadRequest("The segment's columns cannot be read.",
                         [{"field": "segment", "code": "unreadable", "message": str(e)}]) from None
    return ApiResponse(200, {**source.to_api(), "columns": list(schema.columns), "origin": schema.origin,
                             "refresh": refresh.folder if refresh else None, "notices": notices})
