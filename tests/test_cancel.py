"""Cancelling a run: nothing new is sent, the run still accounts for every row, and the export can run again."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime, timedelta, timezone

import pytest

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter import config, segments
from exporter.devhost.local_runner import LocalHost
from tests.apphelpers import (
    call,
    create_connection,
    create_export,
    never_ended_with_open_counts,
    report_rows,
    start_run,
    wait_for_final,
    wait_for_run,
)
from tests.conftest import TEST_API_KEY, TEST_BRAND

ROWS = 5000  # 50 batches: plenty left to cancel
WORKERS = 4
NOT_SENT = "not sent: the run had ended"


@pytest.fixture
def app_env(app_env):
    return {**app_env, "OMNISEND_RATE_LIMIT": "100000"}  # the sandbox's latency sets the pace, not the budget


@pytest.fixture
def export(services, sandbox, segment_container) -> dict:
    write_segment_refresh(segment_container, folder="ci", segment="Seg",
                          profiles=generate_profiles(ROWS, seed=13, invalid_share=0),
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))
    conn = create_connection(TEST_API_KEY)
    return create_export(conn["id"], segment_container.container_name, "ci", "Seg")


def trigger(export_id: str):
    status, body, _ = call("export_runs", "POST", "", route_params={"id": export_id})
    return status, body


def cancel(run_id: str):
    status, body, _ = call("run_cancel", "POST", "", route_params={"id": run_id})
    return status, body


def created(sandbox) -> int:
    return sandbox.stats(TEST_BRAND)["batchesCreated"]


def local_host(services, app_env) -> LocalHost:
    return LocalHost(services.clients, port=0, batch_workers=WORKERS, run_workers=1, timer=False, idle_sleep=0.2,
                     env=app_env)


def start_uploading(export_id: str, sandbox, batches: int) -> str:
    """Start a run and wait until Omnisend has received ``batches`` of its batches; the run's id."""
    run_id = start_run(export_id)["runId"]
    deadline = time.monotonic() + 60
    while created(sandbox) < batches or call("run", "GET", "", route_params={"id": run_id})[1]["status"] != "uploading":
        assert time.monotonic() < deadline, "the run did not start uploading"
        time.sleep(0.05)
    return run_id


def test_cancel_during_uploading_stops_sending_and_accounts_for_every_row(services, sandbox, export, app_env,
                                                                           run_views):
    sandbox.faults.latency_seconds = 0.15  # each request takes a while: the run is cancelled half way
    with local_host(services, app_env):
        run_id = start_uploading(export["id"], sandbox, 5)

        status, body = trigger(export["id"])  # one run per export at a time
        assert status == 409 and body["activeRunId"] == run_id and run_id in body["detail"]

        status, body = cancel(run_id)
        at_cancel = created(sandbox)
        assert status == 202 and body["status"] == "cancelled" and body["error"].startswith("Cancelled by")

        run = wait_for_run(run_id, timeout=120)
        after_drain = created(sandbox)
        time.sleep(3)  # nothing is sent later either (a delayed retry, a redelivered message)
        assert created(sandbox) == after_drain
        assert after_drain - at_cancel <= WORKERS  # at most the batches a worker had already begun sending

        c = run["counts"]
        assert run["status"] == "cancelled" and run["finishedAt"]
        assert c["read"] == ROWS == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]
        assert 0 < c["failed"] and c["failedByReason"] == {NOT_SENT: c["failed"]}
        assert c["confirmed"] == c["sent"] == len(sandbox.contacts(TEST_BRAND)) > 0
        assert c["batchesDone"] == c["batches"] == ROWS // 100
        never_ended_with_open_counts(run_views)
        _, _, res = call("run_rejects", "GET", "", route_params={"id": run_id})
        not_sent = [r for r in csv.DictReader(io.StringIO(res.get_body().decode())) if r["reason"] == NOT_SENT]
        assert len(not_sent) == c["failed"] and all(r["email"] and "cancelled" in r["detail"] for r in not_sent)

        status, body = cancel(run_id)
        assert status == 409 and "already ended" in body["detail"]

        # the export is free again: a new run sends everything
        sandbox.faults.latency_seconds = 0
        again = wait_for_run(start_run(export["id"])["runId"], timeout=120)
    assert again["status"] == "succeeded" and again["counts"]["confirmed"] == ROWS
    assert len(sandbox.contacts(TEST_BRAND)) == ROWS


def test_a_run_cancelled_before_planning_sends_nothing(services, sandbox, export, app_env, run_views):
    run_id = start_run(export["id"])["runId"]  # no workers yet: it waits in the queue
    status, body = cancel(run_id)
    assert status == 202 and body["status"] == "cancelled"
    with local_host(services, app_env):
        deadline = time.monotonic() + 30
        while services.queue_length(config.QUEUE_RUNS):  # the planner takes the message, and drops it
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1)
    run = wait_for_run(run_id, timeout=5)
    c = run["counts"]
    assert run["status"] == "cancelled" and c["read"] == c["queued"] == c["batches"] == c["failed"] == 0
    assert created(sandbox) == 0
    never_ended_with_open_counts(run_views)
    status, body = trigger(export["id"])
    assert status == 202 and body["runId"] != run_id  # the export can run again


def test_a_cancelled_run_says_when_its_counts_are_final(services, sandbox, export, app_env):
    sandbox.faults.latency_seconds = 0.15  # batches are still in flight when the run is cancelled
    with local_host(services, app_env):
        run_id = start_uploading(export["id"], sandbox, 3)
        status, body = cancel(run_id)
        assert status == 202 and body["status"] == "cancelled" and body["countsFinal"] is False
        assert body["counts"]["batchesDone"] < body["counts"]["batches"]

        views = []
        deadline = time.monotonic() + 120
        while not views or not views[-1]["countsFinal"]:
            assert time.monotonic() < deadline, views[-1]
            views.append(call("run", "GET", "", route_params={"id": run_id})[1])
            time.sleep(0.1)
        assert all(v["status"] == "cancelled" for v in views)
        run = views[-1]
        c = run["counts"]
        assert c["batchesDone"] == c["batches"] == ROWS // 100
        assert c["read"] == ROWS == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]
        assert c["failedByReason"] == {NOT_SENT: c["failed"]} and c["failed"] > 0
        time.sleep(2)  # final means final: nothing changes afterwards
        assert call("run", "GET", "", route_params={"id": run_id})[1] == run


def test_a_run_cancelled_while_planning_lists_every_contact_as_not_sent(services, sandbox, export, app_env,
                                                                        monkeypatch, run_views):
    run_id = start_run(export["id"])["runId"]
    read_rows = segments.read_rows

    def cancelled_part_way(*args, **kwargs):  # the segment is being read when someone cancels the run
        for n, row in enumerate(read_rows(*args, **kwargs), 1):
            if n == ROWS // 3:
                status, body = cancel(run_id)
                assert status == 202 and body["status"] == "cancelled"
            yield row

    monkeypatch.setattr(segments, "read_rows", cancelled_part_way)
    with local_host(services, app_env):
        run = wait_for_final(run_id)
        deadline = time.monotonic() + 30
        while not run["countsFinal"]:
            assert time.monotonic() < deadline, run
            time.sleep(0.2)
            run = call("run", "GET", "", route_params={"id": run_id})[1]
        time.sleep(1)
    c = run["counts"]
    assert run["status"] == "cancelled" and run["error"].startswith("Cancelled by")
    assert c["read"] == c["queued"] == c["failed"] == ROWS and c["batches"] == 0
    assert c["failedByReason"] == {NOT_SENT: ROWS}
    assert created(sandbox) == 0 and services.queue_length(config.QUEUE_BATCHES) == 0
    never_ended_with_open_counts(run_views)

    not_sent = [r for r in report_rows(run_id) if r["reason"] == NOT_SENT]
    assert len(not_sent) == c["failed"]
    assert all(r["stage"] == "planning" and "cancelled" in r["detail"] for r in not_sent)
    profiles = generate_profiles(ROWS, seed=13, invalid_share=0)
    assert sorted(r["email"] for r in not_sent) == sorted(p["PrimaryEmail"].strip() for p in profiles)
    assert len({(r["partition"], r["row"]) for r in not_sent}) == ROWS
