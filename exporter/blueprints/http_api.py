"""HTTP trigger: the management API under /api. Each route hands its methods to plain endpoints.

One decorated function per route, alike on purpose: the host binds a route to a function by its
decorator, and each function only names the endpoints (in ``exporter/api/``) of its methods."""

from __future__ import annotations

import azure.functions as func

from .. import api, telemetry
from ..config import ConfigurationError
from ..redaction import scrub
from ..services import get_services

bp = func.Blueprint()
ANON = func.AuthLevel.ANONYMOUS  # callers are authenticated by App Service Authentication (see access.py)


def to_api_request(req: func.HttpRequest) -> api.ApiRequest:
    return api.ApiRequest(
        method=req.method.upper(),
        url=req.url,
        route_params=dict(req.route_params),
        query=dict(req.params),
        headers={k.lower(): v for k, v in req.headers.items()},
        body=req.get_body() or b"",
    )


def to_http_response(res: api.ApiResponse) -> func.HttpResponse:
    import json

    if res.body is None:
        body = b""
    elif isinstance(res.body, (bytes, bytearray)):
        body = bytes(res.body)
    elif not isinstance(res.body, (dict, list)):
        # a streamed file (a report): the v2 model's HttpResponse takes one body, so it is joined here
        body = b"".join(res.body)
    else:
        body = scrub(json.dumps(res.body)).encode()  # an error quoting someone's words never shows a key
    return func.HttpResponse(body=body, status_code=res.status, headers=res.headers, mimetype=res.content_type.split(";")[0],
                             charset="utf-8")


def serve(req: func.HttpRequest, **by_method: api.Endpoint) -> func.HttpResponse:
    endpoint = by_method.get(req.method.upper())
    name = getattr(endpoint, "__name__", "method_not_allowed")  # the request's span: list_connections, get_run, ...
    with telemetry.http_invocation(name, req.method.upper(), req.url) as answered:
        if endpoint is None:
            return to_http_response(api.problem(405, "Method not allowed", f"Use one of: {', '.join(by_method)}."))
        try:
            services = get_services()
        except ConfigurationError as e:  # say what to fix; a bare 500 would hide it
            return to_http_response(api.problem(500, "Configuration error", str(e)))
        res = api.handle(endpoint, to_api_request(req), services)
        answered(res.body)
        return to_http_response(res)


@bp.route(route="connections", methods=["GET", "POST"], auth_level=ANON)
def connections(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.list_connections, POST=api.create_connection)


@bp.route(route="connections/{id}", methods=["GET", "PATCH", "DELETE"], auth_level=ANON)
def connection(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.get_connection, PATCH=api.update_connection, DELETE=api.delete_connection)


@bp.route(route="exports", methods=["GET", "POST"], auth_level=ANON)
def exports(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.list_exports, POST=api.create_export)


@bp.route(route="exports/{id}", methods=["GET", "PUT", "DELETE"], auth_level=ANON)
def export(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.get_export, PUT=api.update_export, DELETE=api.delete_export)


@bp.route(route="exports/{id}/runs", methods=["GET", "POST"], auth_level=ANON)
def export_runs(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.list_export_runs, POST=api.start_export_run)


@bp.route(route="runs/{id}", methods=["GET"], auth_level=ANON)
def run(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.get_run)


@bp.route(route="runs/{id}/rejects", methods=["GET"], auth_level=ANON)
def run_rejects(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.get_run_rejects)


@bp.route(route="runs/{id}/changes", methods=["GET"], auth_level=ANON)
def run_changes(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.get_run_changes)


@bp.route(route="runs/{id}/cancel", methods=["POST"], auth_level=ANON)
def run_cancel(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, POST=api.cancel_run)


@bp.route(route="runs/{id}/retry", methods=["POST"], auth_level=ANON)
def run_retry(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, POST=api.retry_run)


@bp.route(route="health", methods=["GET"], auth_level=ANON)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.health)


@bp.route(route="me", methods=["GET"], auth_level=ANON)
def me(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.me)


@bp.route(route="segments/columns", methods=["GET"], auth_level=ANON)
def segment_columns(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.segment_columns)


@bp.route(route="segments", methods=["GET"], auth_level=ANON)
def segments(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.list_segments)


@bp.route(route="segments/containers", methods=["GET"], auth_level=ANON)
def segment_containers(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req, GET=api.segment_containers)
