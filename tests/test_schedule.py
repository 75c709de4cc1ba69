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


# --- /api/health and the schedule: a tick is missing only once it is overdue ---------------------


def schedule_problems(services):
    from tests.apphelpers import call

    status, body, _ = call("health", "GET", "health")
    assert status == 200
    return [p for p in body["problems"] if "schedule" in p.lower()]


def test_a_fresh_stack_is_healthy_until_its_first_tick_is_overdue(services):
    """Found on a fresh stack: health said 'the schedule has not run yet' the moment the app started,
    15 minutes before its first tick was due. The first tick is due after the app's start."""
    started = services.started_at
    assert schedule_problems(services) == []
    services.clock = lambda: started + timedelta(minutes=15)  # at most when the first tick is due
    assert schedule_problems(services) == []
    services.clock = lambda: started + timedelta(minutes=46)  # over 30 minutes late, whenever it was due
    (problem,) = schedule_problems(services)
    assert problem.startswith("The schedule has not run yet") and "scheduled exports are not starting" in problem


def test_a_tick_overdue_by_more_than_the_grace_is_reported(services):
    from exporter import config, ncrontab

    tick(TimerRequest(past_due=False))
    last = services.heartbeat.last()
    due = ncrontab.parse(config.DEFAULT_SCHEDULE).next_after(last)  # the next tick: within 15 minutes
    services.clock = lambda: due + timedelta(minutes=29)
    assert schedule_problems(services) == []
    services.clock = lambda: due + timedelta(minutes=31)
    (problem,) = schedule_problems(services)
    assert problem.startswith("The schedule has not run since ") and "scheduled exports are not starting" in problem


def test_a_tick_that_came_before_the_app_started_is_not_late(services):
    """A restarted app waits for its own first tick: the last one, from before it started, is old."""
    services.heartbeat.record(services.started_at - timedelta(days=1))
    assert schedule_problems(services) == []


def test_lateness_follows_the_schedule(services):
    """A daily schedule is not late 23 hours after its tick (a fixed 45 minutes said it was)."""
    services.settings = dataclasses.replace(services.settings, export_schedule="0 30 9 * * *")
    morning = datetime(2026, 11, 27, 9, 30, tzinfo=timezone.utc)
    services.started_at = morning - timedelta(days=1)
    services.heartbeat.record(morning)
    services.clock = lambda: morning + timedelta(hours=23)
    assert schedule_problems(services) == []
    services.clock = lambda: morning + timedelta(days=1, minutes=31)
    (problem,) = schedule_problems(services)
    assert "has not run since 2026-11-27T09:30:00" in problem and "due at 2026-11-28T09:30:00" in problem


def test_no_tick_is_waited_for_when_the_timer_is_off(services):
    """``serve --no-timer`` runs no timer: health never reports the schedule."""
    services.timer_enabled = False
    services.clock = lambda: services.started_at + timedelta(days=3)
    assert schedule_problems(services) == []


def test_serve_is_healthy_at_start_with_and_without_its_timer(services, app_env, tmp_path):
    """The stack as people start it: ``python -m exporter serve`` (and ``--no-timer``), then /api/health."""
    import os
    import signal
    import subprocess
    import sys

    import requests

    from tests.apphelpers import ADMIN
    from tests.conftest import ROOT
    from tests.test_app_crash import free_port

    for flags in ([], ["--no-timer"]):
        port = free_port()
        env = {**os.environ, **app_env, "EXPORTER_DEV_SECRETS_FILE": str(tmp_path / "keys.json")}
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--port", str(port), *flags], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("Serving the exporter API on"), line + proc.stderr.read()
            body = requests.get(f"http://127.0.0.1:{port}/api/health", headers=ADMIN, timeout=10).json()
            assert body["status"] == "ok" and body["problems"] == [], (flags, body)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    services.clock = lambda: services.started_at + timedelta(hours=1)  # no tick was recorded all along
    assert schedule_problems(services)  # so a stack that stayed up an hour would say so
