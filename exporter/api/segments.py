"""/api/segments/columns: a segment's columns, for the console's mapping form."""

from __future__ import annotations

from .. import segments
from ..domain import Source
from ..services import Services
from .access import Caller, require_member
from .exports import SOURCE_FIELDS
from .http import ApiRequest, ApiResponse, NotFound
from .validation import BadRequest, validate

SEGMENT_QUERY_SPEC = SOURCE_FIELDS  # query parameters, named like an export's source fields


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
