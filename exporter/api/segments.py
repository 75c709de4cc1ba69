"""/api/segments: what storage holds, for the console's export form: the containers, the folders and
segments under a folder (to choose the source from), and a segment's columns (to map them)."""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError

from .. import config, segments
from ..domain import Source
from ..segments import listing
from ..services import Services
from .access import AccessError, Caller, require_member
from .exports import SOURCE_FIELDS
from .http import ApiRequest, ApiResponse, NotFound
from .validation import BadRequest, Field, matches, validate

SEGMENT_QUERY_SPEC = SOURCE_FIELDS  # query parameters, named like an export's source fields
FOLDER_QUERY_SPEC = tuple(f for f in SOURCE_FIELDS if f.name != "segment")
CONTAINERS_QUERY_SPEC = (Field("prefix", str, check=matches(r"[a-z0-9-]{0,63}", "must be the start of a container "
                                                            "name: lowercase letters, digits and hyphens")),)
# the Functions host's and the app's own containers, when segments are read from the app's account
_APP_CONTAINERS = frozenset({config.CONTAINER_RUN_ARTIFACTS, "azure-webjobs-hosts", "azure-webjobs-secrets"})


def require_export_author(svc: Services, caller: Caller) -> None:
    """Listing storage is for who may create an export: an Admin, or a Contributor while a connection
    is open to contributors (without one, a Contributor can create no export)."""
    require_member(caller)
    if not caller.is_admin and not any(caller.may_use(c) for c in svc.connections.list()):
        raise AccessError(403, "Forbidden", "No connection is open to contributors, so a Contributor may not create "
                          "exports or list what the storage holds. An Admin can allow contributors on a connection.")


def segment_containers(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """The containers of the platform's storage account (the first 100 starting with ``prefix``).
    An identity allowed to read one container but not to list the account gets an empty list and a
    notice: the name can still be typed."""
    require_export_author(svc, caller)
    prefix = validate(dict(req.query), CONTAINERS_QUERY_SPEC).get("prefix", "")
    shared = svc.clients.segment_blobs is svc.clients.blobs
    try:
        found = listing.list_containers(svc.clients.segment_blobs, prefix, _APP_CONTAINERS if shared else frozenset(),
                                        limit=listing.MAX_ENTRIES)
    except HttpResponseError as e:
        if e.status_code != 403:
            raise
        return ApiResponse(200, {"containers": [], "truncated": False, "notices": [
            "The app's identity may not list the storage account's containers (it needs the 'Storage Blob Data "
            "Reader' role on the account for that); type the container's name."]})
    notices = [f"More than {listing.MAX_ENTRIES} containers: type the start of the name to narrow the list."] \
        if found.truncated else []
    return ApiResponse(200, {"containers": list(found.names), "truncated": found.truncated, "notices": notices})


def list_segments(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """The segments and the folders directly under ``folder`` of ``container`` (one level, at most 100
    folders). 404 when the container is not there."""
    require_export_author(svc, caller)
    data = validate(dict(req.query), FOLDER_QUERY_SPEC)
    container, folder = data["container"], data.get("folder", "").strip("/")
    try:
        found = listing.list_folder(svc.clients.segment_container(container), folder, limit=listing.MAX_ENTRIES)
    except segments.SourceNotFoundError as e:
        raise NotFound(str(e)) from None
    except segments.SegmentSourceError as e:
        raise BadRequest("The folder cannot be listed.",
                         [{"field": "container", "code": "unreadable", "message": str(e)}]) from None
    notices = [f"The folder holds more than {listing.MAX_ENTRIES} folders or too many files to list them all: type "
               "the name."] if found.truncated else []
    return ApiResponse(200, {"container": container, "folder": folder, "folders": list(found.folders),
                             "segments": list(found.segments), "truncated": found.truncated, "notices": notices})


def segment_columns(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """The columns of a segment, as an export's mapping names them: from model.json, else from the CSV
    header of the latest refresh. 404 when the container or the segment is not there."""
    require_member(caller)
    data = validate(dict(req.query), SEGMENT_QUERY_SPEC)  # query parameters, named like fields
    source = Source.from_api(data)
    container = svc.clients.segment_container(source.container)
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
