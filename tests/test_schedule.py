"""The timer: each new, complete refresh is exported once, however often the timer fires."""

import dataclasses
from datetime import datetime, timedelta, timezone

from azure.functions.timer import TimerRequest

import function_app
from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.devhost.local_runner import user_function
from tests.apphelpers import call, create_connection, create_export, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND

tick = user_function(function_app.app, "export_schedule")


def runs_of(export_id):
    return call("export_runs", "GET", "", route_params={"id": export_id})[1]["runs"]


def refresh(container, minutes_ago, rows=150, seed=1):
    when = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    write_segment_refresh(container, folder="ci", segment="Loyal", profiles=generate_profiles(rows, seed=seed),
                          when=when, partitions=2)


def test_timer_exports_each_refresh_once(services, workers, sandbox, segment_container):
    refresh(segment_container, minutes_ago=30)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Loyal")

    tick(TimerRequest(past_due=False))
    tick(TimerRequest(past_due=True))  # fires again while the first run is active: no second run
    (first,) = runs_of(export["id"])
    assert first["trigger"] == "schedule"
    first = wait_for_run(first["runId"])
    assert first["status"] in ("succeeded", "partiallySucceeded")

    for _ in range(3):
        tick(TimerRequest(past_due=False))
    assert len(runs_of(export["id"])) == 1  # same refresh folder and ETags: nothing to do

    refresh(segment_container, minutes_ago=10, seed=2)  # a newer time folder
    tick(TimerRequest(past_due=False))
    second = runs_of(export["id"])[0]
    assert second["runId"] != first["runId"] and second["refresh"]["folder"] != first["refresh"]["folder"]
    assert wait_for_run(second["runId"])["counts"]["read"] == 150


def test_timer_leaves_a_refresh_that_is_still_being_written(services, workers, sandbox, segment_container):
    services.settings = dataclasses.replace(services.settings, refresh_settle_seconds=3600)
    refresh(segment_container, minutes_ago=5)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Loyal")
    tick(TimerRequest(past_due=False))
    assert runs_of(export["id"]) == []
    status, body, _ = call("export_runs", "POST", "", route_params={"id": export["id"]})
    assert status == 409 and "still being written" in body["detail"]  # an on-demand run says so

    services.settings = dataclasses.replace(services.settings, refresh_settle_seconds=0)
    tick(TimerRequest(past_due=False))
    assert len(runs_of(export["id"])) == 1


def test_timer_skips_disabled_exports(services, workers, sandbox, segment_container):
    refresh(segment_container, minutes_ago=30)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Loyal", enabled=False)
    tick(TimerRequest(past_due=False))
    assert runs_of(export["id"]) == [] and sandbox.contacts(TEST_BRAND) == []


def test_one_run_per_export_whatever_triggers_it_at_once(services, workers, sandbox, segment_container):
    """Found as a user would: 20 simultaneous POST /runs answered 202 two to five times, and each run
    sent the whole segment (the lock was taken before its run existed, and a lock whose run was not
    written yet counted as free). 20 triggers and a timer tick at once: one run."""
    import threading

    import requests

    from tests.apphelpers import ADMIN

    refresh(segment_container, minutes_ago=30, rows=300)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Loyal")
    start = threading.Barrier(21)
    answers: list[tuple[int, dict]] = []

    def trigger():  # over HTTP, as callers do: the local runner serves each request in a thread of its own
        start.wait()
        res = requests.post(f"{workers.url}/exports/{export['id']}/runs", headers=ADMIN, timeout=30)
        answers.append((res.status_code, res.json()))

    def timer():
        start.wait()
        tick(TimerRequest(past_due=False))

    threads = [threading.Thread(target=trigger) for _ in range(20)] + [threading.Thread(target=timer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = runs_of(export["id"])
    assert len(runs) == 1, [(r["runId"], r["trigger"]) for r in runs]
    (run,) = runs
    accepted = [body for status, body in answers if status == 202]
    assert len(accepted) == (1 if run["trigger"] == "manual" else 0)
    refused = [body for status, body in answers if status != 202]
    assert all(status == 409 for status, _ in answers if status != 202)
    assert all(body["activeRunId"] == run["runId"] for body in refused)
    done = wait_for_run(run["runId"])
    assert done["counts"]["confirmed"] == done["counts"]["queued"]
    assert len(sandbox.contacts(TEST_BRAND)) == done["counts"]["confirmed"]  # each contact once
    assert sandbox.stats(TEST_BRAND)["batchesCreated"] == done["counts"]["batches"]


def test_a_lock_whose_run_is_not_written_yet_is_held(services, sandbox, segment_container):
    """The race above, step by step: one trigger has taken the export's lock and not yet written its
    run when a second trigger looks. The second must see the lock as held, not take it over."""
    from exporter.lifecycle.start import RunConflictError, new_run_id, start_run

    refresh(segment_container, minutes_ago=30)
    conn = create_connection(TEST_API_KEY)
    export = services.exports.get(create_export(conn["id"], segment_container.container_name, "ci", "Loyal")["id"])
    first = new_run_id()
    assert services.locks.claim(export.id, first, lambda run_id: services.runs.get(run_id) is not None) is None
    try:  # the first trigger's run is not written yet
        start_run(services, export, "manual")
        raise AssertionError("a second run started while the first trigger was writing its own")
    except RunConflictError as e:
        assert e.active_run_id == first and e.active is None
    assert runs_of(export.id) == []
