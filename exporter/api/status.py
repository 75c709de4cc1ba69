"""/api/health and /api/me: is the app working, and who does it take the caller for."""

from __future__ import annotations

from datetime import datetime, timedelta

from .. import config
from ..config import ConfigurationError
from ..domain import iso
from ..lifecycle.poison import POISON_QUEUES
from ..lifecycle.stuck import stuck_reason
from ..ncrontab import ScheduleError
from ..services import Services
from ..state.secrets import SecretAccessDeniedError, SecretNotFoundError, SecretStoreError, SecretStoreUnavailableError
from .access import Caller, require_member
from .http import ApiRequest, ApiResponse
from .runs import visible_runs

# A tick is reported missing once it is this much later than the schedule said (with the default schedule,
# every 15 minutes, a timer silent for 45 minutes).
TIMER_GRACE = timedelta(minutes=30)


def health(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """What an operator needs to know at a glance: is the schedule firing, is any run stuck,
    is anything waiting in a poison queue."""
    require_member(caller)
    now = svc.clock()
    problems: list[str] = []
    last_tick = svc.heartbeat.last()
    late = _schedule_problem(svc, now, last_tick)
    if late:
        problems.append(late)
    stuck = []
    active = [r for r in (svc.runs.get(run_id) for _, run_id in svc.locks.held()) if r is not None and r.status.is_active]
    for run in visible_runs(svc, caller, active):  # a contributor sees runs of the connections they may use
        export_id = run.export_id
        reason = stuck_reason(run, now)
        if reason:
            stuck.append({"runId": run.id, "exportId": export_id, "status": run.status.value, "stuck": reason})
            problems.append(f"Run {run.id} of export {export_id} is stuck: {reason}.")
    poison = {q: svc.queue_length(q) for q in POISON_QUEUES}
    for q, n in poison.items():
        if n:
            problems.append(f"{n} message(s) wait in {q}.")
    keys = _connection_keys(svc, caller)
    problems += [k["detail"] for k in keys if k["key"] != "ok"]
    body = {"status": "degraded" if problems else "ok", "problems": problems, "lastTimerTick": iso(last_tick),
            "stuckRuns": stuck, "poisonMessages": poison, "connectionKeys": keys}
    return ApiResponse(200, body)


def _connection_keys(svc: Services, caller: Caller) -> list[dict]:
    """Whether each connection the caller may use can read its API key: "ok", "missing" (store it
    again), "denied" (the app's identity lacks the Key Vault role; after a deployment, wait minutes)
    or "unavailable" (Key Vault unreachable or failing: transient). Never the key itself."""
    out = []
    for conn in svc.connections.list():
        if not caller.may_use(conn):
            continue
        state, detail = "ok", ""
        try:
            svc.secrets.get(conn.secret_name)
        except SecretNotFoundError:
            state, detail = "missing", (f"Connection {conn.display_name!r} has no API key in the key store: store it "
                                        f"again (PATCH /api/connections/{conn.id} with apiKey; console: Edit).")
        except SecretAccessDeniedError as e:
            state, detail = "denied", f"Connection {conn.display_name!r}: {e}"
        except SecretStoreUnavailableError as e:
            state, detail = "unavailable", f"Connection {conn.display_name!r}: {e}"
        except SecretStoreError as e:
            state, detail = "error", f"Connection {conn.display_name!r}: {e}"
        out.append({"connectionId": conn.id, "displayName": conn.display_name, "key": state, "detail": detail})
    return out


def _schedule_problem(svc: Services, now: datetime, last_tick: datetime | None) -> str | None:
    """Why the schedule looks stopped, or None: its next tick after the last one (or after this app
    started, when that is later: a tick of this app cannot be due before it) is overdue by more than
    TIMER_GRACE. An app without a timer (``serve --no-timer``) waits for no tick."""
    if not svc.timer_enabled:
        return None
    try:
        schedule = config.check_schedule(svc.settings.export_schedule)
        since = max(t for t in (last_tick, svc.started_at) if t is not None)
        due = schedule.next_after(since)
    except (ConfigurationError, ScheduleError) as e:
        return f"The schedule cannot run: {e}"
    if now - due <= TIMER_GRACE:
        return None
    return ("The schedule has not run " + ("yet" if last_tick is None else f"since {iso(last_tick)}")
            + f" (a tick was due at {iso(due)}): scheduled exports are not starting."
            + " Check that the function app is running.")


# --- the caller and the segments (what the console needs to fill its forms) --------------------


def me(svc: Services, caller: Caller, req: ApiRequest) -> ApiResponse:
    """Who the API takes the caller for, and what that lets them do (the console hides what they may not)."""
    require_member(caller)
    return ApiResponse(200, {"name": caller.name, "roles": sorted(caller.roles), "isAdmin": caller.is_admin,
                             "isContributor": caller.is_contributor, "devMode": svc.settings.dev_mode})
