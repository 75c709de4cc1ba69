"""The runs queue: plan a run, plan its last tag batches, tick its tag waves.

A plan message the host gave up on ends its run visibly ("planning failed on every attempt") instead
of leaving it queued forever. A tag message is another matter: by then the run's batches are out
and counted, so failing it as "nothing was sent" would be false. A poisoned ``PlanTags`` is asked
again by the timer's reconcile (the tally says the tags are being planned), and a poisoned
``WaveTick`` needs nothing: the run's last tag planning covers its waves.
"""

from __future__ import annotations

from ..lifecycle.plan_status import fail_before_reading
from ..lifecycle.settle import plan_tags_and_settle
from ..lifecycle.tag_planning import tag_wave_tick
from ..logs import get_logger, log_context
from ..messages import PlanRun, PlanTags, WaveTick, decode_or_none, decode_run_message
from ..planning.planner import plan_run
from ..services import Services

log = get_logger(__name__)


def handle_run_message(svc: Services, text: str | bytes, dequeue_count: int = 1) -> None:
    message = decode_run_message(text)  # a MessageError goes to the host's retry, then the poison queue
    with log_context(run_id=message.run_id), log_context(export_id=_export_of(svc, message)):
        if isinstance(message, PlanTags):  # a run's contacts are counted: plan its membership tags
            plan_tags_and_settle(svc, message.run_id)
        elif isinstance(message, WaveTick):  # a large run uploads: plan the tags of its counted batches
            tag_wave_tick(svc, message.run_id, message.seq)
        else:
            plan_run(svc, message.run_id, redelivered=dequeue_count > 1)


def _export_of(svc: Services, message: PlanRun | PlanTags | WaveTick) -> str | None:
    """The run's export, for the lines and spans of its tag messages (the planner names it itself)."""
    if isinstance(message, PlanRun):
        return None
    run = svc.runs.get(message.run_id)
    return run.export_id if run is not None else None


def handle_poison_message(svc: Services, text: str) -> None:
    message = decode_or_none(decode_run_message, text, log)
    if message is None:
        return
    with log_context(run_id=message.run_id):
        if isinstance(message, WaveTick):  # waves only speed tagging up: the run's last tag planning covers them
            log.warning("a tag wave tick failed on every attempt; the run's tags are planned at its end")
            return
        if isinstance(message, PlanTags):
            log.error("planning the run's tags failed on every attempt; the timer's reconcile asks again")
            return
        assert isinstance(message, PlanRun)
        run = svc.runs.get(message.run_id)
        if run is not None and not run.status.is_final:
            with log_context(export_id=run.export_id):
                fail_before_reading(svc, message.run_id, "Planning failed on every attempt (the message reached the "
                                                         "poison queue); nothing was sent. The errors were logged "
                                                         "with this run's id.")
