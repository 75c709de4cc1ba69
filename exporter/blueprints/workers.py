"""Queue triggers: plan a run, upload its batches, and account for messages that reached a poison queue."""

from __future__ import annotations

import azure.functions as func

from .. import config, telemetry
from ..services import get_services
from ..workers import batches_queue, runs_queue

bp = func.Blueprint()


def _span(name: str, msg: func.QueueMessage):
    """The message's span: the router's ``log_context`` adds its run, export and batch."""
    return telemetry.invocation(name, "queue", **{"messaging.message.id": msg.id,
                                                  "messaging.azure.queue.dequeue_count": msg.dequeue_count})


@bp.queue_trigger(arg_name="msg", queue_name=config.QUEUE_RUNS, connection="AzureWebJobsStorage")
def plan_run(msg: func.QueueMessage) -> None:
    with _span("plan_run", msg):
        runs_queue.handle_run_message(get_services(), msg.get_body(), msg.dequeue_count or 1)


@bp.queue_trigger(arg_name="msg", queue_name=config.QUEUE_BATCHES, connection="AzureWebJobsStorage")
def upload_batch(msg: func.QueueMessage) -> None:
    with _span("upload_batch", msg):
        batches_queue.handle_batch_message(get_services(), msg.get_body().decode("utf-8"), msg.dequeue_count or 1)


@bp.queue_trigger(arg_name="msg", queue_name=config.QUEUE_RUNS + config.POISON_SUFFIX, connection="AzureWebJobsStorage")
def plan_run_poison(msg: func.QueueMessage) -> None:
    with _span("plan_run_poison", msg):
        runs_queue.handle_poison_message(get_services(), msg.get_body().decode("utf-8"))


@bp.queue_trigger(arg_name="msg", queue_name=config.QUEUE_BATCHES + config.POISON_SUFFIX, connection="AzureWebJobsStorage")
def upload_batch_poison(msg: func.QueueMessage) -> None:
    with _span("upload_batch_poison", msg):
        batches_queue.handle_poison_message(get_services(), msg.get_body().decode("utf-8"))
