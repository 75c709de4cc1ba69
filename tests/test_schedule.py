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
