"""Timer trigger: start a run for every export whose segment has a new, complete refresh."""

from __future__ import annotations

import azure.functions as func

from .. import telemetry
from ..lifecycle import schedule
from ..logs import get_logger
from ..services import get_services

bp = func.Blueprint()
log = get_logger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%EXPORT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def export_schedule(timer: func.TimerRequest) -> None:
    with telemetry.invocation("export_schedule", "timer", **{"timer.past_due": bool(timer.past_due)}):
        if timer.past_due:
            log.warning("timer is past due: a tick was missed; checking every export now")
        schedule.run_schedule(get_services())
