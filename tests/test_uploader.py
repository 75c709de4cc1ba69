"""The uploader: at-least-once delivery made safe, and every contact's outcome learned from Omnisend."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from azure.functions.queue import QueueMessage

import function_app
from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter import config
from exporter.devhost.local_runner import user_function
from exporter.domain import RunStatus
from exporter.upload.outcomes import MAX_SEND_ATTEMPTS
from exporter.workers import batches_queue
from tests.apphelpers import create_connection, create_export, report_rows, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND

plan_handler = user_function(function_app.app, "plan_run")
upload_handler = user_function(function_app.app, "upload_batch")


def segment(container, rows, invalid_share=0.0, seed=3):
    when = datetime.now(timezone.utc) - timedelta(minutes=5)
    write_segment_refresh(container, folder="ci", segment="Seg", profiles=generate_profiles(rows, seed=seed, invalid_share=invalid_share),
                          when=when, partitions=1)


def setup_export(container) -> dict:
    conn = create_connection(TEST_API_KEY)
    return create_export(conn["id"], container.container_name, "ci", "Seg")


def receive(storage, queue_name, wait=6.0):
    """Take the next visible message off a queue (waiting for delayed ones), as the host would."""
    q = storage.queue(queue_name)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for m in q.receive_messages(messages_per_page=1, visibility_timeout=60):
            q.delete_message(m)
            return m
        time.sleep(0.2)
    return None


def as_message(m, dequeue_count=None):
    return QueueMessage(id=m.id, body=m.content.encode(), dequeue_count=dequeue_count or m.dequeue_count)


def test_redelivered_messages_neither_send_nor_count_twice(services, sandbox, segment_container):
    segment(segment_container, 150)
    export = setup_export(segment_container)
    run_id = start_run(export["id"])["runId"]
    plan = receive(services.clients, config.QUEUE_RUNS)
    plan_handler(as_message(plan))
    plan_handler(as_message(plan, dequeue_count=1))  # a duplicate delivery of a plan message is ignored
    assert services.runs.get(run_id).counts.batches == 2

    sends = [receive(services.clients, config.QUEUE_BATCHES) for _ in range(2)]
    for m in sends:
        upload_handler(as_message(m))
        upload_handler(as_message(m, dequeue_count=2))  # redelivered after it was accepted
    assert sandbox.stats(TEST_BRAND)["batchesCreated"] == 2

    while True:
        m = receive(services.clients, config.QUEUE_BATCHES)
        if m is None:
            break
        upload_handler(as_message(m))
        upload_handler(as_message(m, dequeue_count=2))
    tags = receive(services.clients, config.QUEUE_RUNS)  # contacts counted: plan the membership tags
    plan_handler(as_message(tags))
    plan_handler(as_message(tags, dequeue_count=2))
    while (m := receive(services.clients, config.QUEUE_BATCHES, wait=1)) is not None:
        upload_handler(as_message(m))
        upload_handler(as_message(m, dequeue_count=2))
    run = wait_for_run(run_id, timeout=5)
    assert run["counts"]["tagged"] == 150
    assert run["status"] == "succeeded"
    assert run["counts"]["confirmed"] == 150 == run["counts"]["sent"] and run["counts"]["batchesDone"] == 2
    assert len(sandbox.contacts(TEST_BRAND)) == 150


def test_batches_stopped_by_omnisend_count_their_unprocessed_contacts_as_failed(services, workers, sandbox, segment_container):
    sandbox.faults.stop_batches_after = 60
    segment(segment_container, 250)  # batches of 100, 100, 50: the first two stop after 60 items
    run = wait_for_run(start_run(setup_export(segment_container)["id"])["runId"])
    c = run["counts"]
    assert run["status"] == "partiallySucceeded"
    assert c["confirmed"] == 170 and c["failed"] == 80 and c["failedByReason"] == {"batch stopped by Omnisend": 80}
    assert c["read"] == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]
    stopped = [r for r in report_rows(run["runId"]) if r["reason"] == "batch stopped by Omnisend"]
    assert len(stopped) == 80 and all(r["stage"] == "upload" and r["email"] for r in stopped)
    assert len(sandbox.contacts(TEST_BRAND)) == 170


def test_items_omnisend_rejects_are_reported_with_its_reason(services, sandbox, segment_container):
    segment(segment_container, 2)
    export = setup_export(segment_container)
    run_id = start_run(export["id"])["runId"]
    services.clients.queue(config.QUEUE_RUNS).clear_messages()

    def as_planned(run):  # what the planner would have recorded for two valid rows
        run.status = RunStatus.UPLOADING
        run.counts.read = run.counts.queued = 2
        run.counts.batches = 1

    services.runs.update(run_id, as_planned)
    services.tallies.update(run_id, lambda t: setattr(t, "planned", 1))
    services.reports.create(run_id)
    good = {"identifiers": [{"type": "email", "id": "good@example.com", "channels": {"email": {"status": "nonSubscribed"}},
                             "sendWelcomeMessage": False}]}
    bad = {"identifiers": [{"type": "email", "id": "bad@example.com", "channels": {"email": {"status": "nonSubscribed"}},
                            "sendWelcomeMessage": False}], "countryCode": "ZZ"}
    msg = {"type": "send", "runId": run_id, "exportId": export["id"], "connectionId": export["connectionId"],
           "batch": 1, "parts": ["Seg_1.csv"], "refs": [[0, 1], [0, 2]], "contacts": [good, bad]}
    batches_queue.handle_batch_message(services, json.dumps(msg))
    check = receive(services.clients, config.QUEUE_BATCHES)
    upload_handler(as_message(check))
    plan_handler(as_message(receive(services.clients, config.QUEUE_RUNS)))  # plan the membership tags
    upload_handler(as_message(receive(services.clients, config.QUEUE_BATCHES)))  # tag the stored contact
    run = services.runs.get(run_id)
    assert run.status is RunStatus.PARTIALLY_SUCCEEDED and run.counts.tagged == 1
    assert run.counts.confirmed == 1 and run.counts.failed_by_reason == {"rejected by Omnisend (400)": 1}
    (row,) = [r for r in report_rows(run_id) if r["stage"] == "upload"]
    assert row["email"] == "bad@example.com" and row["row"] == "2" and "countryCode" in row["detail"]


def test_rate_limited_batches_are_resent_and_never_count_as_failures(services, workers, sandbox, segment_container):
    sandbox.faults.force_status(429, count=3, route="POST /batches")
    segment(segment_container, 300)
    run = wait_for_run(start_run(setup_export(segment_container)["id"])["runId"])
    assert run["status"] == "succeeded" and run["counts"]["confirmed"] == 300 and run["counts"]["failed"] == 0
    assert sandbox.stats(TEST_BRAND)["faultsInjected"] == 3


def test_transient_errors_are_retried_with_backoff(services, workers, sandbox, segment_container, monkeypatch):
    services.backoff = lambda attempt: 0.1
    sandbox.faults.force_status(503, count=2, route="POST /batches")
    sandbox.faults.force_status(500, count=2, route="GET /batches/{batchID}")
    segment(segment_container, 200)
    run = wait_for_run(start_run(setup_export(segment_container)["id"])["runId"])
    assert run["status"] == "succeeded" and run["counts"]["confirmed"] == 200


def test_a_batch_that_exhausts_its_retries_is_failed_with_the_last_error(services, workers, sandbox, segment_container,
                                                                          monkeypatch):
    services.backoff = lambda attempt: 0.1
    sandbox.faults.force_status(503, count=MAX_SEND_ATTEMPTS, route="POST /batches")
    segment(segment_container, 40)
    run = wait_for_run(start_run(setup_export(segment_container)["id"])["runId"])
    assert run["status"] == "failed" and run["counts"]["failed"] == 40
    assert run["counts"]["failedByReason"] == {"not sent: Omnisend unavailable": 40}
    assert all("503" in r["detail"] for r in report_rows(run["runId"]))


def test_a_rejected_key_fails_the_run_fast_and_stops_sending(services, workers, sandbox, segment_container):
    sandbox.faults.force_status(401, count=1, route="POST /batches")
    sandbox.faults.latency_seconds = 0.05
    segment(segment_container, 2000)  # 20 batches
    run = wait_for_run(start_run(setup_export(segment_container)["id"])["runId"])
    c = run["counts"]
    assert run["status"] == "failed" and "Omnisend rejected the API key of connection" in run["error"]
    assert sandbox.stats(TEST_BRAND)["batchesCreated"] < 20
    assert c["read"] == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]
    # the batches handled after it count under the same reason (the run's stop_reason)
    assert set(c["failedByReason"]) == {"not sent: Omnisend rejected the API key"}


@pytest.mark.parametrize("dequeue_count,raises", [(1, True), (config.queue_rules().max_dequeue_count, False)])
def test_the_last_delivery_of_a_failing_message_accounts_for_its_batch(services, sandbox, segment_container, monkeypatch,
                                                                        dequeue_count, raises):
    segment(segment_container, 30)
    run_id = start_run(setup_export(segment_container)["id"])["runId"]
    plan_handler(as_message(receive(services.clients, config.QUEUE_RUNS)))
    send = receive(services.clients, config.QUEUE_BATCHES)

    def broken(*a, **kw):
        raise RuntimeError("storage outage")

    monkeypatch.setattr(batches_queue, "send_contacts", broken)
    if raises:  # an early delivery fails loudly: the host retries it
        with pytest.raises(RuntimeError):
            upload_handler(as_message(send, dequeue_count=dequeue_count))
    else:  # the last one, before the poison queue, counts the batch as failed instead
        upload_handler(as_message(send, dequeue_count=dequeue_count))
        run = services.runs.get(run_id)
        assert run.counts.failed_by_reason == {"not sent: internal error": 30} and run.status is RunStatus.FAILED
