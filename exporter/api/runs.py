"""/api/exports/{id}/runs and /api/runs/{id}: start, follow, cancel and retry runs, and their reports."""

from __future__ import annotations

import itertools
from typing import Iterable

from azure.core.exceptions import ResourceNotFoundError

from .. import segments
from ..domain import Connection, Run, Trigger
from ..domain.reasons import sent_again_by_retry
from ..lifecycle.cancel import AlreadyEndedError
from ..lifecycle.cancel import cancel_run as cancel
from ..lifecycle.retry import RetryError, retry_failed_batches
from ..lifecycle.start import RunConflictError, start_preview, start_run
from ..lifecycle.stuck import stuck_reason
from ..omnisend.limits import MAX_BATCH_ITEMS, MAX_EMAILS_PER_TAG_REQUEST
from ..omnisend.pacing import Budget
from ..services import Services
from .access import Caller, require_member, require_use_of
from .exports import get_export_for
from .http import ApiRequest, ApiResponse, Conflict, NotFound, flag, known_id


def _run_body(req: ApiRequest, run: Run, now=None) -> dict:
    body = run.to_api(status_url=f"{req.base_url()}/runs/{run.id}")
    body["stuck"] = stuck_reason(run, now) if now is not None and not run.status.is_final else None
    if run.changes_kept:
        body["changesUrl"] = f"{req.base_url()}/runs/{run.id}/changes"
    body["retryable"] = retryable(run)
    return body


def retryable(run: Run) -> bool:
    """Whether POST /runs/{id}/retry would send something again: the run ended after planning batches,
    and some of its contacts failed for a reason a retry resends. (A batch counted unsent while
    planning was cancelled is not resent: the retry may then answer that it resent none.)"""
    c = run.counts
    return run.status.is_final and c.batches > 0 and any(n > 0 and sent_again_by_retry(r)
                                                         for r, n in c.failed_by_reason.items())


def request_budget(svc: Services) -> dict:
    """The pace each connection's requests to Omnisend are held to (omnisend/pacing.py), and what one
    request carries: what the console's estimate of a run's time left is computed from."""
    s = svc.settings
    general = svc.limiter.general if svc.limiter else Budget(s.omnisend_rate_limit, s.omnisend_rate_window_seconds)
    tags = svc.limiter.tags if svc.limiter else Budget(s.omnisend_tags_rate_limit, s.omnisend_rate_window_seconds)
    return {"requestsPerMinute": round(general.per_minute, 1), "tagRequestsPerMinute": round(tags.per_minute, 1),
            "contactsPerRequest": MAX_BATCH_ITEMS, "emailsPerTagRequest": MAX_EMAILS_PER_TAG_REQUEST}


def start_export_run(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    export = get_export_for(svc, caller, req.route_params["id"], "run")
    if not export.enabled:
        raise Conflict("Export disabled", f"Export {export.name!r} is disabled"
                       + (f": {export.disabled_reason}" if export.disabled_reason else ".") + " Enable it to run it.")
    if svc.connections.get(export.connection_id) is None:
        raise Conflict("Connection removed", "The export's connection was removed; choose another connection.")
    container = svc.clients.segment_container(export.source.container)
    try:
        refresh = segments.latest_settled_refresh(container, export.source, svc.clock(),
                                                  svc.settings.refresh_settle_seconds)
    except segments.NoRefreshError as e:
        raise Conflict("Nothing to export", str(e)) from None
    except segments.RefreshNotSettledError as e:
        raise Conflict("Refresh still being written", str(e)) from None
    except segments.SegmentSourceError as e:
        raise Conflict("Segment unreadable", str(e)) from None
    if flag(req, "dryRun"):
        run = start_preview(svc, export, refresh, full=flag(req, "full"))
    else:
        try:
            run = start_run(svc, export, Trigger.MANUAL.value, refresh, full=flag(req, "full"),
                            confirm=flag(req, "confirm"))
        except RunConflictError as e:
            raise Conflict("Run in progress", str(e), {"activeRunId": e.active_run_id}) from None
    body = _run_body(req, run)
    return ApiResponse(202, body, headers={"Location": body["statusUrl"]})


def _get_run(svc: Services, caller: Caller, run_id: str) -> Run:
    require_member(caller)
    run = svc.runs.get(run_id) if known_id(run_id) else None
    if run is None:
        raise NotFound(f"No run with id {run_id!r}.")
    require_use_of(caller, svc.connections.get(run.connection_id), "see or cancel runs that use it",
                   "see or cancel runs of a removed connection")
    return run


def get_run(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    run = _get_run(svc, caller, req.route_params["id"])
    body = _run_body(req, run, svc.clock())
    if run.is_preview and run.preview is not None:  # who may see the run may see its report, and its sample
        body["preview"]["sample"] = svc.samples.read(run.id) or []
    return ApiResponse(200, body)


def list_export_runs(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """The export's runs the caller may see: as GET /runs/{id}, by the connection each run was made
    with (an export moved to another connection keeps runs of the one before)."""
    export = get_export_for(svc, caller, req.route_params["id"], "see runs of")
    now = svc.clock()
    seen = visible_runs(svc, caller, svc.runs.list(export.id))
    return ApiResponse(200, {"runs": [_run_body(req, r, now) for r in seen], "requestBudget": request_budget(svc)})


def visible_runs(svc: Services, caller: Caller, runs: Iterable[Run]) -> list[Run]:
    connections: dict[str, Connection | None] = {}
    out = []
    for run in runs:
        if run.connection_id not in connections:
            connections[run.connection_id] = svc.connections.get(run.connection_id)
        if caller.may_see_work_of(connections[run.connection_id]):
            out.append(run)
    return out


def get_run_rejects(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    run = _get_run(svc, caller, req.route_params["id"])
    chunks: Iterable[bytes] = svc.reports.read(run.id)
    return ApiResponse(200, b"".join(chunks), "text/csv; charset=utf-8",
                       {"Content-Disposition": f'attachment; filename="run-{run.id}-rejects.csv"'})


def get_run_changes(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """The run's membership changes as planned (``state/changes.py``), as CSV."""
    run = _get_run(svc, caller, req.route_params["id"])
    if not run.changes_kept:
        raise NotFound(f"Run {run.id} has no changes report: it ended before its refresh was read, or it was "
                       "planned before the exporter kept one.")
    try:
        chunks = svc.changes.read(run.id)
        first = next(chunks, b"")  # a missing blob raises here, before the answer starts
    except ResourceNotFoundError:
        raise NotFound(f"The changes report of run {run.id} is gone (deleted with its files).") from None
    return ApiResponse(200, itertools.chain([first], chunks), "text/csv; charset=utf-8",
                       {"Content-Disposition": f'attachment; filename="run-{run.id}-changes.csv"'})


def cancel_run(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    run = _get_run(svc, caller, req.route_params["id"])
    try:
        run = cancel(svc, run.id, by=caller.name)
    except AlreadyEndedError as e:
        raise Conflict("Run already ended", str(e)) from None
    return ApiResponse(202, _run_body(req, run))


def retry_run(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    run = _get_run(svc, caller, req.route_params["id"])
    try:
        run, resent = retry_failed_batches(svc, run.id)
    except RetryError as e:
        raise Conflict("Cannot retry now", str(e)) from None
    return ApiResponse(202, {**_run_body(req, run, svc.clock()), "batchesResent": resent})
