"""The timer's decision: which exports have a new, complete refresh to export.

A refresh is identified by its folder and the ETags of its blobs (``Refresh.fingerprint``). It is
exported once: an export whose last successful run had the same fingerprint is left alone, however
often the timer fires; so is one whose latest run of that refresh stopped for good (held by a safety
threshold, or without a valid row), until a person acts or a new refresh comes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .. import config, segments
from ..domain import Export, Run, RunStatus, Trigger
from ..logs import get_logger
from ..ncrontab import ScheduleError
from ..services import Services
from .connections import purge_retired
from .poison import report_poison
from .start import RunConflictError, active_run, last_succeeded_run, latest_run, start_run
from .stuck import reconcile

log = get_logger(__name__)


@dataclass
class TickResult:
    started: list[Run]
    waiting: list[str]  # export ids whose refresh is still being written
    up_to_date: list[str]
    errors: dict[str, str]  # export id -> why it could not be checked
    stuck: list[str]  # run ids that show no progress (see stuck.stuck_reason)
    held: list[str] = field(default_factory=list)  # export ids whose refresh stopped for good: a person acts


def next_check(svc: Services) -> datetime | None:
    """When the timer next looks for new refreshes (EXPORT_SCHEDULE, UTC); None when this app runs no
    timer (``serve --no-timer``). The settings were checked when they loaded; a schedule that fails
    here anyway gives None rather than an error in a list."""
    if not svc.timer_enabled:
        return None
    try:
        return config.check_schedule(svc.settings.export_schedule).next_after(svc.clock())
    except (config.ConfigurationError, ScheduleError):
        return None


def run_schedule(svc: Services) -> TickResult:
    svc.heartbeat.record(svc.clock())
    result = TickResult(started=[], waiting=[], up_to_date=[], errors={}, stuck=[r.id for r in reconcile(svc)])
    purge_retired(svc)  # keys of removed connections, once the results of their batches are read
    report_poison(svc)  # a warning per poison queue that holds messages (the poison alert reads it)
    for export in svc.exports.list():
        if not export.enabled:
            continue
        try:
            _consider(svc, export, result)
        except segments.SegmentSourceError as e:
            result.errors[export.id] = str(e)
            log.warning("export not checked: %s", e, extra={"export_id": export.id})
    log.info(
        "timer: %d started, %d waiting for a refresh to settle, %d up to date, %d errors",
        len(result.started), len(result.waiting), len(result.up_to_date), len(result.errors),
    )
    return result


def stopped_for_good(run: Run) -> bool:
    """A run that stopped before sending for a reason its refresh will always have: a safety threshold
    held it (a person confirms it, or raises the threshold), or not one of its rows was valid."""
    c = run.counts
    return run.status is RunStatus.FAILED and (run.held or (c.read > 0 and c.queued == 0 and c.skipped == 0))


def _consider(svc: Services, export: Export, result: TickResult) -> None:
    container = svc.clients.segment_container(export.source.container)
    try:
        refresh = segments.latest_settled_refresh(container, export.source, svc.clock(),
                                                  svc.settings.refresh_settle_seconds)
    except segments.NoRefreshError:
        result.up_to_date.append(export.id)
        return
    except segments.RefreshNotSettledError as e:
        result.waiting.append(export.id)
        log.info("refresh %s still being written; left for a later tick", e.refresh.folder,
                 extra={"export_id": export.id})
        return
    last = last_succeeded_run(svc, export.id)
    if last is not None and last.refresh_fingerprint == refresh.fingerprint:
        result.up_to_date.append(export.id)
        return
    latest = latest_run(svc, export.id)
    if latest is not None and latest.refresh_fingerprint == refresh.fingerprint and stopped_for_good(latest):
        result.held.append(export.id)  # running it again would stop the same way, at every tick
        return
    if active_run(svc, export.id) is not None:
        result.up_to_date.append(export.id)  # the running run will be compared on the next tick
        return
    try:
        result.started.append(start_run(svc, export, Trigger.SCHEDULE.value, refresh))
    except RunConflictError:
        result.up_to_date.append(export.id)
