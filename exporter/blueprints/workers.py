"""Queue triggers: plan a run, upload its batches, and account for messages that reached a poison queue."""

from __future__ import annotations

import json

import azure.functions as func

from .. import config, finalizer, planner, uploader
from ..logs import log_context
from ..services import get_services

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=config.QUEUE_RUNS, connection="AzureWebJobsStorage")
def plan_run(msg: func.QueueMessage) -> None:
    body = json.loads(msg.get_body())
    if body.get("type") == "tags":  # a run's contacts are counted: plan its membership tags
        with log_context(run_id=body["runId"]):
            finalizer.plan_tags(get_services(), body["runId"])
    elif body.get("type") == "tagwave":  # a large run uploads: plan the tags of its counted batches
        with log_context(run_id=body["runId"]):
            finalizer.tag_wave_tick(get_services(), body["runId"], body["seq"])
    else:
        planner.plan_run(get_services(), body["runId"], redelivered=(msg.dequeue_count or 1) > 1)


@bp.queue_trigger(arg_name="msg", queue_name=config.QUEUE_BATCHES, connection="AzureWebJobsStorage")
def upload_batch(msg: func.QueueMessage) -> None:
    uploader.handle_batch_message(get_services(), msg.get_body().decode("utf-8"), msg.dequeue_count or 1)


@bp.queue_trigger(arg_name="msg", queue_name=config.QUEUE_RUNS + config.POISON_SUFFIX, connection="AzureWebJobsStorage")
def plan_run_poison(msg: func.QueueMessage) -> None:
    planner.handle_poison_message(get_services(), msg.get_body().decode("utf-8"))


@bp.queue_trigger(arg_name="msg", queue_name=config.QUEUE_BATCHES + config.POISON_SUFFIX, connection="AzureWebJobsStorage")
def upload_batch_poison(msg: func.QueueMessage) -> None:
    uploader.handle_poison_message(get_services(), msg.get_body().decode("utf-8"))
