"""Large runs: the planner uploads its spool once and uploaders fan it out through dispatch messages."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
from azure.core.exceptions import ResourceNotFoundError

from exporter import config
from exporter.domain.reasons import REASON_INTERNAL
from exporter.planning import enqueue, spool
from exporter.workers import batches_queue
from tests.apphelpers import start_run, wait_for_run
from tests.conftest import TEST_BRAND
from tests.test_uploader import as_message, plan_handler, receive, report_rows, segment, setup_export, upload_handler


@pytest.fixture
def small_dispatch(monkeypatch):
    """Dispatch from 5 messages on, 5 lines a dispatch message, and spool blocks of 20 kB (staged while
    the segment is read, several at once): a few hundred rows take the large-run path."""
    monkeypatch.setattr(enqueue, "DIRECT_ENQUEUE_LINES", 5)
    monkeypatch.setattr(spool, "DISPATCH_LINES", 5)
    monkeypatch.setattr(spool, "SPOOL_BLOCK_BYTES", 20_000)
    monkeypatch.setattr(enqueue, "dispatch_stagger", lambda settings: 0)


def drain(services, handle) -> list[dict]:
    """Handle batch-queue messages until none is left (delayed checks included); returns their bodies."""
    seen = []
    while (m := receive(services.clients, config.QUEUE_BATCHES, wait=3)) is not None:
        seen.append(json.loads(m.content))
        handle(m)
    return seen


def spool_exists(services, run_id) -> bool:
    try:
        services.clients.artifacts.get_blob_client(f"{run_id}/batches.jsonl").get_blob_properties()
        return True
    except ResourceNotFoundError:
        return False


def test_a_large_plan_is_enqueued_as_dispatch_messages_that_fan_out_every_batch_once(
        small_dispatch, services, sandbox, segment_container):
    segment(segment_container, 1_150)  # 12 batches: dispatch messages of 5, 5 and 2
    run_id = start_run(setup_export(segment_container)["id"])["runId"]
    plan_handler(as_message(receive(services.clients, config.QUEUE_RUNS)))

    queued = services.clients.queue(config.QUEUE_BATCHES)
    # enqueued from several threads: in no particular order
    dispatches = sorted((json.loads(m.content) for m in queued.peek_messages(max_messages=32)), key=lambda d: d["first"])
    assert [(d["type"], d["first"], d["lines"]) for d in dispatches] == [
        ("dispatch", 1, 5), ("dispatch", 6, 5), ("dispatch", 11, 2)]
    assert spool_exists(services, run_id)
    blocks = services.clients.artifacts.get_blob_client(f"{run_id}/batches.jsonl").get_block_list("committed")[0]
    assert len(blocks) >= 6  # staged a block at a time, in order
    lines = services.spools.of(run_id).read(0, dispatches[-1]["end"])
    assert [json.loads(line)["batch"] for line in lines] == list(range(1, 13))

    def every_message_twice(m):  # at-least-once delivery: each one comes again
        upload_handler(as_message(m))
        upload_handler(as_message(m, dequeue_count=2))

    bodies = drain(services, every_message_twice)
    sends = Counter(b["batch"] for b in bodies if b["type"] == "send")
    assert sorted(sends) == list(range(1, 13)) and set(sends.values()) == {2}  # fanned out twice each...
    assert sandbox.stats(TEST_BRAND)["batchesCreated"] == 12  # ...but sent once each

    # plan the membership tags: 12 batches are more than a tag wave (10), so the wave planner's tick
    # is on the runs queue too, before the run's last tag planning; handle both, as the host would
    handled = []
    while "planTags" not in handled:
        m = receive(services.clients, config.QUEUE_RUNS)
        assert m is not None, handled
        handled.append(json.loads(m.content)["type"])
        plan_handler(as_message(m))
    drain(services, every_message_twice)
    run = wait_for_run(run_id, timeout=10)
    c = run["counts"]
    assert run["status"] == "succeeded" and c["confirmed"] == 1_150 == c["read"] and c["batchesDone"] == 12
    assert len(sandbox.contacts(TEST_BRAND)) == 1_150
    assert not spool_exists(services, run_id)  # the plan's copy of the contacts goes when the run ends


def test_dispatch_messages_become_visible_one_after_another(small_dispatch, services, sandbox, segment_container,
                                                            monkeypatch):
    """Batches go out roughly in number order, so that tag waves (by batch number) can start early."""
    monkeypatch.setattr(enqueue, "dispatch_stagger", lambda settings: 30)
    monkeypatch.setattr(enqueue, "HEAD_START_DISPATCHES", 2)
    segment(segment_container, 1_650)  # dispatch messages of 5, 5, 5 and 2 batches
    start_run(setup_export(segment_container)["id"])
    plan_handler(as_message(receive(services.clients, config.QUEUE_RUNS)))
    queued = services.clients.queue(config.QUEUE_BATCHES)
    visible = sorted((d["type"], d["first"]) for d in map(lambda m: json.loads(m.content),
                                                             queued.peek_messages(max_messages=32)))
    assert visible == [("dispatch", 1), ("dispatch", 6)]  # the head start: the first two at once
    assert services.queue_length(config.QUEUE_BATCHES) == 4  # the other two wait 30 and 60 s


def test_dispatch_keeps_pace_with_the_request_budget(services):
    """Dispatch messages come a little slower than the budget sends their batches (a send and a check
    each, at the share the pacer leaves the contacts while tags are sent: 330 of 400 per 60.5 s), so
    the queue does not grow, and faster than the tags endpoint tags them (58 calls of 250 per 60.5 s)."""
    at_omnisends_limits = dataclasses.replace(services.settings, omnisend_rate_limit=400, omnisend_tags_rate_limit=60,
                                              omnisend_rate_window_seconds=60)
    seconds_of_budget = spool.DISPATCH_LINES * 2 * 60.5 / (388 - 58)  # 18.3 s for 50 batches
    seconds_of_tags = spool.DISPATCH_LINES * 100 / 250 * 60.5 / 58  # 20.9 s to tag 50 batches
    assert seconds_of_budget < enqueue.dispatch_stagger(at_omnisends_limits) < seconds_of_tags
    unlimited = dataclasses.replace(at_omnisends_limits, omnisend_rate_limit=1_000_000, omnisend_rate_window_seconds=1)
    assert enqueue.dispatch_stagger(unlimited) < 0.001  # nothing to pace: every dispatch message at once


def test_a_dispatch_message_that_fails_on_every_delivery_accounts_for_its_batches(
        small_dispatch, services, sandbox, segment_container):
    segment(segment_container, 700)  # 7 batches: dispatch messages of 5 and 2
    run_id = start_run(setup_export(segment_container)["id"])["runId"]
    plan_handler(as_message(receive(services.clients, config.QUEUE_RUNS)))
    # both dispatch messages are visible at once here (no stagger), enqueued by parallel threads in no
    # fixed order: the one of 5 batches is the poisoned one, the other goes back on the queue
    dispatches = [receive(services.clients, config.QUEUE_BATCHES) for _ in range(2)]
    assert sorted(json.loads(m.content)["lines"] for m in dispatches) == [2, 5]
    first = next(m for m in dispatches if json.loads(m.content)["lines"] == 5)
    services.batch_queue.send_text(next(m for m in dispatches if m is not first).content)
    batches_queue.handle_poison_message(services, first.content)  # the host gave up on it

    drain(services, lambda m: upload_handler(as_message(m)))
    plan_handler(as_message(receive(services.clients, config.QUEUE_RUNS)))  # plan the membership tags
    drain(services, lambda m: upload_handler(as_message(m)))
    run = wait_for_run(run_id, timeout=10)
    c = run["counts"]
    assert run["status"] == "partiallySucceeded"
    assert c["confirmed"] == 200 and c["failed"] == 500
    assert c["failedByReason"] == {REASON_INTERNAL: 500}
    assert c["read"] == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]
    failed = [r for r in report_rows(run_id) if r["reason"] == REASON_INTERNAL]
    assert len(failed) == 500 and all(r["email"] and r["row"] for r in failed)
    assert len(sandbox.contacts(TEST_BRAND)) == 200


def test_small_plans_go_straight_onto_the_queue(services, sandbox, segment_container):
    segment(segment_container, 250)  # 3 batches: no spool blob, no dispatch
    run_id = start_run(setup_export(segment_container)["id"])["runId"]
    plan_handler(as_message(receive(services.clients, config.QUEUE_RUNS)))
    queued = services.clients.queue(config.QUEUE_BATCHES).peek_messages(max_messages=32)
    assert [json.loads(m.content)["type"] for m in queued] == ["send"] * 3
    assert not spool_exists(services, run_id)


def test_the_first_dispatch_messages_are_visible_at_once_and_the_rest_a_stagger_apart():
    """A head start of HEAD_START_DISPATCHES: the tags endpoint's first window gets its calls' contacts
    without waiting a stagger for the second message (docs/benchmarks.md, seventh round)."""
    stagger = 20.2
    delays = [enqueue.dispatch_delay(i, stagger) for i in range(5)]
    head = enqueue.HEAD_START_DISPATCHES
    assert delays[:head] == [0] * head
    assert delays[head:] == [pytest.approx(stagger * k) for k in range(1, 5 - head + 1)]
