"""The management API (JSON under /api), as plain functions of a request.

The Functions blueprint and the local runner both turn their HTTP request into an ``ApiRequest``
and call ``handle(endpoint, request)``; nothing here depends on the hosting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterable

from . import config, segments
from .access import AccessError, Caller, require_admin, require_member, require_use, resolve_caller
from .domain import MAPPABLE_FIELDS, Connection, Export, Mapping, Run, RunStatus, Source, iso, new_id
from .logs import get_logger
from .omnisend import OmnisendAuthError, OmnisendError, OmnisendUnavailable
from .runs import RetryError, RunConflictError, retry_failed_batches, start_run, stuck_reason
from .services import Services
from .validation import BadRequest, Field, length, parse_json, positive, validate

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

CONNECTION_SPEC = (
    Field("displayName", str, required=True, check=length(1, 100)),
    Field("apiKey", str, required=True, check=length(1, 500)),
    Field("allowContributors", bool),
    Field("dataPrivacyConsent", bool, required=True,
          check=lambda v: None if v is True else "must be true: profile data, including personal data, leaves the "
                                                 "platform's compliance boundary for Omnisend"),
    Field("maxProfilesPerExport", int, check=positive),
)


def _connection_summary(c: Connection) -> dict:
    return {"id": c.id, "displayName": c.display_name}


def _get_connection(svc: Services, connection_id: str) -> Connection:
    conn = svc.storage.get_connection(connection_id)
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
                       "Copy a valid key from Omnisend (Store settings > API keys).")
    except OmnisendUnavailable as e:
        return problem(502, "Omnisend unreachable", f"Omnisend could not be reached to check the key ({e}); "
                       "nothing was saved. Try again later.")
    except OmnisendError as e:
        return problem(502, "Omnisend error", f"Omnisend answered the key check with an error ({e.status}); nothing was saved.")
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
    require_use(caller, conn, "see")
    return ApiResponse(200, _connection_summary(conn))


def delete_connection(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """Remove a destination: its key leaves Key Vault, its exports are disabled (not deleted), and
    running runs stop sending (the uploader finds no connection)."""
    require_admin(caller, "remove connections")
    conn = _get_connection(svc, req.route_params["id"])
    svc.secrets.delete(conn.secret_name)  # first: if Key Vault refuses, nothing else has changed
    svc.storage.delete_connection(conn.id)
    now = svc.clock()
    for export in svc.storage.list_exports():
        if export.connection_id == conn.id:
            export.enabled = False
            export.disabled_reason = (
                f"Connection {conn.display_name!r} was removed by {caller.name} at {now:%Y-%m-%d %H:%M} UTC."
            )
            export.updated_at = now
            svc.storage.put_export(export)
    log.info("connection removed", extra={"connection_id": conn.id})
    return ApiResponse(204)


# --- exports ------------------------------------------------------------------------------------

_column = length(1, 256)
EXPORT_SPEC = (
    Field("name", str, required=True, check=length(1, 100)),
    Field("connectionId", str, required=True, check=length(1, 64)),
    Field("source", dict, required=True, children=(
        Field("container", str, required=True, check=length(3, 63)),
        Field("folder", str, check=length(0, 512)),
        Field("segment", str, required=True, check=length(1, 256)),
    )),
    Field("mapping", dict, required=True, children=tuple(
        Field(api, str, required=(api == "email"), check=_column) for api, _ in MAPPABLE_FIELDS
    )),
    Field("enabled", bool),
)


def _usable_connection(svc: Services, caller: Caller, connection_id: str, action: str) -> Connection:
    conn = svc.storage.get_connection(connection_id)
    if conn is None:
        raise BadRequest("The request has invalid fields.",
                         [{"field": "connectionId", "code": "unknown", "message": f"no connection with id {connection_id!r}"}])
    require_use(caller, conn, action)
    return conn


def _check_source(svc: Services, source: Source, mapping: Mapping) -> list[str]:
    """Validate the mapping against the segment's schema; returns notices for the caller."""
    container = svc.storage.segment_blobs.get_container_client(source.container)
    try:
        refresh = segments.find_latest_refresh(container, source.folder, source.segment)
        if refresh is None:
            return [f"Segment {source.segment!r} has no refresh in {source.container}/{source.folder} yet; "
                    "the mapping will be checked against its columns when the first refresh is exported."]
        schema = segments.load_schema(container, source.folder, source.segment, refresh)
    except segments.SourceNotFoundError as e:
        raise BadRequest("The request has invalid fields.",
                         [{"field": "source.container", "code": "not_found", "message": str(e)}]) from None
    except segments.SegmentSourceError as e:
        raise BadRequest("The request has invalid fields.",
                         [{"field": "source", "code": "unreadable", "message": str(e)}]) from None
    errors = [
        {"field": f"mapping.{api}", "code": "unknown_column",
         "message": f"column {column!r} is not in the segment; available columns: {', '.join(schema.columns)}"}
        for api, column in mapping.columns().items() if column not in schema.columns
    ]
    if errors:
        raise BadRequest("The mapping names columns the segment does not have.", errors)
    return []


def _get_export(svc: Services, caller: Caller, export_id: str, action: str) -> Export:
    require_member(caller)
    export = svc.storage.get_export(export_id)
    if export is None:
        raise NotFound(f"No export with id {export_id!r}.")
    conn = svc.storage.get_connection(export.connection_id)
    if conn is not None:
        require_use(caller, conn, action)
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
    )


def create_export(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    require_member(caller)
    data = validate(req.json(), EXPORT_SPEC)
    _usable_connection(svc, caller, data["connectionId"], "create exports")
    now = svc.clock()
    export = _export_from(data, new_id(), now, now)
    notices = _check_source(svc, export.source, export.mapping)
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
    _usable_connection(svc, caller, data["connectionId"], "use")
    export = _export_from(data, current.id, current.created_at, svc.clock())
    notices = _check_source(svc, export.source, export.mapping)
    svc.storage.put_export(export)
    return ApiResponse(200, {**export.to_api(), "notices": notices})


def delete_export(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    export = _get_export(svc, caller, req.route_params["id"], "delete")
    svc.storage.delete_export(export.id)
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
    try:
        run = start_run(svc, export, "manual", refresh)
    except RunConflictError as e:
        raise Conflict("Run in progress", str(e), {"activeRunId": e.active.id}) from None
    body = _run_body(req, run)
    return ApiResponse(202, body, headers={"Location": body["statusUrl"]})


def _get_run(svc: Services, caller: Caller, run_id: str) -> Run:
    require_member(caller)
    run = svc.storage.get_run(run_id)
    if run is None:
        raise NotFound(f"No run with id {run_id!r}.")
    conn = svc.storage.get_connection(run.connection_id)
    if conn is not None:
        require_use(caller, conn, "see runs")
    else:
        require_admin(caller, "see runs of a removed connection")
    return run


def get_run(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    return ApiResponse(200, _run_body(req, _get_run(svc, caller, req.route_params["id"]), svc.clock()))


def list_export_runs(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    export = _get_export(svc, caller, req.route_params["id"], "see runs")
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
