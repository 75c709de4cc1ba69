"""Nothing ends silently: poison messages are accounted, half-finished runs are repaired, stuck runs are visible."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

import function_app
from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter import config
from exporter.devhost.local_runner import user_function
from exporter.domain import RunStatus, TagPlanning
from exporter.domain.reasons import REASON_INTERNAL
from exporter.lifecycle import stuck
from exporter.upload import accounting
from exporter.upload.outcomes import MAX_SEND_ATTEMPTS
from tests.apphelpers import create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY

plan = user_function(function_app.app, "plan_run")
plan_poison = user_function(function_app.app, "plan_run_poison")
upload_poison = user_function(function_app.app, "upload_batch_poison")
tick = user_function(function_app.app, "export_schedule")


def receive(storage, queue_name):
    q = storage.queue(queue_name)
    for m in q.receive_messages(messages_per_page=1):
        q.delete_message(m)
        return m
    return None


def queued_run(services, container, rows=120):
    write_segment_refresh(container, folder="ci", segment="Seg", profiles=generate_profiles(rows, seed=8, invalid_share=0),
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], container.container_name, "ci", "Seg")
    return start_run(export["id"])["runId"]


def test_a_poisoned_batch_message_is_counted_as_failed(services, sandbox, segment_container):
    run_id = queued_run(services, segment_container)
    m = receive(services.clients, config.QUEUE_RUNS)
    plan(QueueMessage(id=m.id, body=m.content.encode(), dequeue_count=1))
    sends = [receive(services.clients, config.QUEUE_BATCHES) for _ in range(2)]
    for m in sends:  # as if every delivery had failed and the host moved them to the poison queue
        upload_poison(QueueMessage(id=m.id, body=m.content.encode(), dequeue_count=1))
    run = services.runs.get(run_id)
    assert run.status is RunStatus.FAILED and run.counts_final
    assert run.counts.failed_by_reason == {REASON_INTERNAL: 120}
    assert run.counts.read == run.counts.accounted == 120


def test_a_poisoned_plan_message_fails_the_run_visibly(services, sandbox, segment_container):
    run_id = queued_run(services, segment_container)
    m = receive(services.clients, config.QUEUE_RUNS)
    plan_poison(QueueMessage(id=m.id, body=m.content.encode(), dequeue_count=1))
    run = services.runs.get(run_id)
    assert run.status is RunStatus.FAILED and "poison" in run.error and run.counts_final


def test_the_timer_repairs_a_run_whose_last_worker_died_before_ending_it(services, workers, sandbox, segment_container,
                                                                       monkeypatch):
    monkeypatch.setattr(accounting, "settle", lambda *a, **kw: None)  # workers count batches, then "die"
    run_id = queued_run(services, segment_container, rows=250)
    deadline = time.monotonic() + 60
    while not services.tallies.get(run_id).complete:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    stalled = services.runs.get(run_id)
    assert not stalled.status.is_final and services.tallies.get(run_id).tag_planning is TagPlanning.NOT_PLANNED  # nobody moved it on
    monkeypatch.undo()  # the workers that are left are healthy
    tick(TimerRequest(past_due=False))
    run = wait_for_run(run_id, timeout=30)
    assert run["status"] == "succeeded" and run["counts"]["confirmed"] == 250 and run["counts"]["tagged"] == 250


def test_a_failure_after_the_batches_went_out_is_no_planning_failure(services, workers, sandbox, segment_container,
                                                                     monkeypatch):
    """Seen in CI: moving the run on right after planning raised (two workers writing the same state),
    and the run was failed as "nothing was sent", its counts zeroed, while its batches were out."""
    from exporter.lifecycle import plan_status as planning

    def broken_settle(*a, **kw):
        raise RuntimeError("storage hiccup")

    monkeypatch.setattr(planning, "settle", broken_settle)
    run_id = queued_run(services, segment_container, rows=250)
    run = wait_for_run(run_id, timeout=60)  # the workers' settle moves it on
    assert run["status"] == "succeeded" and run["error"] is None
    assert run["counts"]["read"] == run["counts"]["confirmed"] == run["counts"]["tagged"] == 250


def test_a_run_nobody_plans_is_reported_stuck(services, sandbox, segment_container):
    run_id = queued_run(services, segment_container)  # no workers: the plan message waits forever
    run = services.runs.get(run_id)
    assert stuck.stuck_reason(run, datetime.now(timezone.utc)) is None
    later = run.progress_at + timedelta(minutes=20)
    assert "no planner picked it up" in stuck.stuck_reason(run, later)
    services.clock = lambda: later
    assert [r.id for r in stuck.reconcile(services)] == [run_id]
    tick(TimerRequest(past_due=False))
    assert services.heartbeat.last() is not None


def test_retry_sends_the_failed_batches_again(services, workers, sandbox, segment_container, monkeypatch):
    from tests.apphelpers import call

    services.backoff = lambda attempt: 0.1
    sandbox.faults.force_status(503, count=MAX_SEND_ATTEMPTS, route="POST /batches")
    run_id = queued_run(services, segment_container, rows=80)  # one batch, which exhausts its tries
    first = wait_for_run(run_id)
    assert first["status"] == "failed" and first["counts"]["failed"] == 80 and first["retryable"] is True
    assert call("run_retry", "POST", "", route_params={"id": "nope"})[0] == 404

    status, body, _ = call("run_retry", "POST", "", route_params={"id": run_id})
    assert status == 202 and body["batchesResent"] == 1 and body["status"] == "uploading"
    again = wait_for_run(run_id)
    c = again["counts"]
    assert again["status"] == "succeeded" and c["confirmed"] == 80 and c["failed"] == 0 and c["failedByReason"] == {}
    assert c["sent"] == 80 and c["batchesSent"] == c["batchesDone"] == c["batches"] == 1
    assert len(sandbox.contacts("brand-test")) == 80
    assert c["tagged"] == 80 and all("Seg" in x["tags"] for x in sandbox.contacts("brand-test"))
    assert again["retryable"] is False
    status, body, _ = call("run_retry", "POST", "", route_params={"id": run_id})
    assert status == 202 and body["batchesResent"] == 0  # nothing left to retry


def test_a_retry_tags_the_contacts_it_confirms_and_only_those(services, workers, sandbox, segment_container,
                                                             monkeypatch):
    from tests.apphelpers import call

    services.backoff = lambda attempt: 0.1
    # two batches share 11 forced 503s: exactly one of them meets its sixth and is given up
    sandbox.faults.force_status(503, count=2 * MAX_SEND_ATTEMPTS - 1, route="POST /batches")
    run_id = queued_run(services, segment_container, rows=180)
    first = wait_for_run(run_id)
    c = first["counts"]
    assert first["status"] == "partiallySucceeded" and c["failed"] in (80, 100)
    assert c["tagged"] == c["confirmed"] == 180 - c["failed"]
    tag_calls = sandbox.stats("brand-test")["byPath"]["POST /contacts/tags"]

    assert call("run_retry", "POST", "", route_params={"id": run_id})[1]["batchesResent"] == 1
    again = wait_for_run(run_id)
    c = again["counts"]
    assert again["status"] == "succeeded" and c["confirmed"] == c["tagged"] == 180 and c["failed"] == 0
    assert sandbox.stats("brand-test")["byPath"]["POST /contacts/tags"] == tag_calls + 1  # the newly confirmed only
    contacts = sandbox.contacts("brand-test")
    assert len(contacts) == 180 and all("Seg" in x["tags"] for x in contacts)
    members = services.states.load(again["exportId"])
    try:
        assert members.header.run_id == run_id and len(members.keys) == 180
    finally:
        members.close()


def test_health_reports_a_missing_timer_and_stuck_runs(services, sandbox, segment_container):
    from tests.apphelpers import call

    overdue = services.started_at + timedelta(minutes=46)  # no tick since the app started, though one was due
    services.clock = lambda: overdue
    status, body, _ = call("health", "GET", "health")
    assert status == 200 and body["status"] == "degraded" and "schedule has not run" in body["problems"][0]
    tick(TimerRequest(past_due=False))
    assert call("health", "GET", "health")[1]["status"] == "ok"
    run_id = queued_run(services, segment_container)
    later = services.runs.get(run_id).progress_at + timedelta(minutes=20)
    services.clock = lambda: later
    body = call("health", "GET", "health")[1]
    assert body["status"] == "degraded" and body["stuckRuns"][0]["runId"] == run_id
    assert call("run", "GET", "", route_params={"id": run_id})[1]["stuck"].startswith("queued for 20 minutes")


def test_a_poisoned_tags_message_leaves_an_uploaded_run_and_its_counts_alone(services, sandbox, segment_container):
    """Found while reading: the runs queue's poison handler knew only the tag wave tick; a poisoned
    "plan the tags" message took the planning-failure path, which ended a run whose contacts were all
    sent as failed, zeroed its counts and said "nothing was sent". The timer asks for the tags again."""
    from tests.test_uploader import as_message, plan_handler, upload_handler
    from tests.test_uploader import receive as receive_waiting

    run_id = queued_run(services, segment_container)
    plan_handler(as_message(receive_waiting(services.clients, config.QUEUE_RUNS)))
    while (m := receive_waiting(services.clients, config.QUEUE_BATCHES, wait=3)) is not None:  # sends and checks
        upload_handler(as_message(m))
    tags = receive_waiting(services.clients, config.QUEUE_RUNS)
    assert json.loads(tags.content)["type"] == "planTags"
    plan_poison(QueueMessage(id=tags.id, body=tags.content.encode(), dequeue_count=5))  # the host gave up on it

    run = services.runs.get(run_id)
    assert not run.status.is_final and run.error is None
    assert (run.counts.read, run.counts.confirmed, run.counts.failed) == (120, 120, 0)
    later = datetime.now(timezone.utc) + timedelta(minutes=3)
    services.clock = lambda: later
    stuck.reconcile(services)  # the tags were asked for minutes ago and never planned: ask again
    plan_handler(as_message(receive_waiting(services.clients, config.QUEUE_RUNS)))
    while (m := receive_waiting(services.clients, config.QUEUE_BATCHES, wait=3)) is not None:  # the tag batch
        upload_handler(as_message(m))
    run = services.runs.get(run_id)
    assert run.status is RunStatus.SUCCEEDED and run.counts_final
    assert (run.counts.confirmed, run.counts.tagged) == (120, 120)
