"""/api/exports: a segment, a connection and the mapping; saving one never runs it."""

from __future__ import annotations

import re

from .. import segments
from ..domain import MAPPABLE_FIELDS, TAG_PATTERN, Connection, Consent, Export, Mapping, Source, iso, new_id
from ..domain.exports import DEFAULT_MAX_REJECTED_PERCENT, DEFAULT_MAX_REMOVAL_PERCENT
from ..lifecycle.history import busy_run, delete_history
from ..lifecycle.schedule import next_check
from ..services import Services
from .access import Caller, require_member, require_use, require_use_of
from .http import ApiRequest, ApiResponse, Conflict, NotFound, known_id
from .validation import BadRequest, Field, between, length, validate

_column = length(1, 256)
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


def _container_name(value: str) -> str | None:
    if _CONTAINER.fullmatch(value):
        return None
    return ("must be a blob container name: 3 to 63 lowercase letters, digits and single hyphens, starting and "
            "ending with a letter or digit")


def _segment_name(value: str) -> str | None:
    if "/" in value or "\\" in value:
        return "must be the segment's name (its folder under the root folder), without '/' or '\\'"
    if value.strip() in (".", ".."):
        return "must be the segment's name, not '.' or '..'"
    return length(1, 256)(value)


def _folder_path(value: str) -> str | None:
    """A folder inside the container: it may never point out of it (with identity-based access the
    app can read other containers of the account)."""
    if value.startswith("/") or "\\" in value:
        return "must be a folder inside the container: no leading '/' and no '\\'"
    parts = value.removesuffix("/").split("/") if value else []
    if any(part in ("", ".", "..") for part in parts):
        return "must be a folder inside the container: no '.', '..' or empty parts (as in 'a//b')"
    return length(0, 512)(value)


def _values(values: list) -> str | None:
    if not values or not all(isinstance(v, str) and v.strip() for v in values) or len(values) > 20:
        return "must be a list of 1 to 20 non-empty strings"
    return None


SOURCE_FIELDS = (  # an export's source; also the query of /api/segments/columns
    Field("container", str, required=True, check=_container_name),
    Field("folder", str, check=_folder_path),
    Field("segment", str, required=True, check=_segment_name),
)

EXPORT_SPEC = (
    Field("name", str, required=True, check=length(1, 100)),
    Field("connectionId", str, required=True, check=length(1, 64)),
    Field("source", dict, required=True, children=SOURCE_FIELDS),
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
    Field("maxRemovalPercent", int, check=between(0, 100)),
    Field("maxRejectedPercent", int, check=between(0, 100)),
)


def _usable_connection(svc: Services, caller: Caller, connection_id: str, action: str) -> Connection:
    conn = svc.connections.get(connection_id) if known_id(connection_id) else None
    if conn is None:
        raise BadRequest("The request has invalid fields.",
                         [{"field": "connectionId", "code": "unknown", "message": f"no connection with id {connection_id!r}"}])
    require_use(caller, conn, action)
    return conn


def _check_source(svc: Services, export: Export) -> list[str]:
    """Validate the mapping against the segment's schema; returns notices for the caller."""
    source = export.source
    container = svc.clients.segment_container(source.container)
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


def _refuse_shared_tag(svc: Services, export: Export) -> None:
    """Two exports on one Omnisend account with the same membership tag would undo each other: a
    member leaving one segment would lose the tag it holds as a member of the other."""
    tag = export.effective_tag.casefold()
    for other in svc.exports.list():
        if other.id == export.id or other.connection_id != export.connection_id or other.effective_tag.casefold() != tag:
            continue
        used = f"{other.effective_tag!r} is the membership tag of export {other.name!r} ({other.id}) on the same connection"
        raise Conflict("Tag in use", f"{used}: a member leaving one segment would lose the tag it holds for the "
                       "other. Set another tag on this export.",
                       {"errors": [{"field": "tag", "code": "in_use", "message": used}], "exportId": other.id})


def get_export_for(svc: Services, caller: Caller, export_id: str, action: str) -> Export:
    require_member(caller)
    export = svc.exports.get(export_id) if known_id(export_id) else None
    if export is None:
        raise NotFound(f"No export with id {export_id!r}.")
    require_use_of(caller, svc.connections.get(export.connection_id), f"{action} exports that use it",
                   f"{action} an export whose connection was removed")
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
        max_removal_percent=data.get("maxRemovalPercent", DEFAULT_MAX_REMOVAL_PERCENT),
        max_rejected_percent=data.get("maxRejectedPercent", DEFAULT_MAX_REJECTED_PERCENT),
    )


def create_export(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    require_member(caller)
    data = validate(req.json(), EXPORT_SPEC)
    _usable_connection(svc, caller, data["connectionId"], "create exports with it")
    now = svc.clock()
    export = _export_from(data, new_id(), now, now)
    notices = _check_source(svc, export)
    _refuse_shared_tag(svc, export)
    svc.exports.put(export)  # saving never starts a run
    return ApiResponse(201, {**export.to_api(), "notices": notices},
                       headers={"Location": f"{req.base_url()}/exports/{export.id}"})


def list_exports(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    require_member(caller)
    usable = {c.id for c in svc.connections.list() if caller.may_use(c)}
    found = [x for x in svc.exports.list() if caller.is_admin or x.connection_id in usable]
    # the timer checks every enabled export at each tick: one time for the list, not one per export
    schedule = {"expression": svc.settings.export_schedule, "timer": svc.timer_enabled,
                "nextCheckAt": iso(next_check(svc))}
    return ApiResponse(200, {"exports": [x.to_api() for x in found], "schedule": schedule})


def get_export(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    return ApiResponse(200, get_export_for(svc, caller, req.route_params["id"], "see").to_api())


def update_export(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    current = get_export_for(svc, caller, req.route_params["id"], "change")
    data = validate(req.json(), EXPORT_SPEC)
    _usable_connection(svc, caller, data["connectionId"], "move an export to it")
    export = _export_from(data, current.id, current.created_at, svc.clock())
    notices = _check_source(svc, export)
    _refuse_shared_tag(svc, export)
    svc.exports.put(export)
    return ApiResponse(200, {**export.to_api(), "notices": notices})


def delete_export(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """Delete the export and its history: its runs, their batch records and reports (which hold the
    contacts sent and the emails of rejected rows) and its membership state. Not while anything of a
    run may still write (it runs, or its batches in flight are still counted): nothing may be left
    sending, or recording what it sent, for an export that is gone."""
    export = get_export_for(svc, caller, req.route_params["id"], "delete")
    busy = busy_run(svc, export.id)
    if busy is not None:
        doing = "in progress" if busy.status.is_active else f"{busy.status.value}, with batches still being counted"
        raise Conflict("Run in progress", f"Export {export.name!r} has run {busy.id} {doing}; cancel it if it is "
                       "running, and delete the export once its counts are final.", {"activeRunId": busy.id})
    delete_history(svc, export.id)
    svc.exports.delete(export.id)
    return ApiResponse(204)
