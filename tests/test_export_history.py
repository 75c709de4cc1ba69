"""Deleting an export deletes its history: runs, batch records, reports, spools and membership state."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter import config
from exporter.domain import RunStatus, utcnow
from exporter.lifecycle.history import DRAINED_AFTER
from tests.apphelpers import call, create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY
from tests.test_uploader import as_message, plan_handler, receive


def refresh(container, rows=300):
    profiles = generate_profiles(rows, seed=4, invalid_share=0.05)
    write_segment_refresh(container, folder="ci", segment="Seg", profiles=profiles,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))


def left_of(services, export_id: str, run_ids: list[str]) -> dict:
    """What storage still holds of the export and its runs."""
    batches = services.clients.table(config.TABLE_BATCHES)
    runs = services.clients.table(config.TABLE_RUNS)
    artifacts = services.clients.artifacts
    return {
        "runs": [r for r in run_ids if services.runs.get(r) is not None],
        "run entities": [e["RowKey"] for e in runs.list_entities() if e["RowKey"] in run_ids + [export_id]],
        "batch records": sum(1 for r in run_ids
                             for _ in batches.query_entities("PartitionKey eq @p", parameters={"p": r})),
        "blobs": [b.name for b in artifacts.list_blobs() if b.name.split("/")[0] in run_ids
                  or b.name.startswith(f"state/{export_id}/")],
        "state": services.states.load(export_id) is not None,
    }


def test_deleting_an_export_deletes_its_runs_and_everything_they_left(services, workers, sandbox, segment_container):
    refresh(segment_container)
    export = create_export(create_connection(TEST_API_KEY)["id"], segment_container.container_name, "ci", "Seg",
                           maxRemovalPercent=100)  # the second refresh is other profiles: most members leave
    first = wait_for_run(start_run(export["id"])["runId"])
    refresh(segment_container, rows=310)  # a second refresh, a second run
    second = wait_for_run(start_run(export["id"])["runId"])
    assert first["status"] == second["status"] == "partiallySucceeded"  # invalid emails: each has a report
    run_ids = [first["runId"], second["runId"]]
    before = left_of(services, export["id"], run_ids)
    assert before["runs"] == run_ids and before["batch records"] > 6 and before["state"]
    assert any(name.endswith("rejects.csv") for name in before["blobs"])

    status, _, _ = call("export", "DELETE", "", route_params={"id": export["id"]})
    assert status == 204
    assert left_of(services, export["id"], run_ids) == {
        "runs": [], "run entities": [], "batch records": 0, "blobs": [], "state": False}
    for run_id in run_ids:
        assert call("run", "GET", "", route_params={"id": run_id})[0] == 404
    assert call("export_runs", "GET", "", route_params={"id": export["id"]})[0] == 404


def test_an_export_with_a_run_in_progress_is_not_deleted(services, sandbox, segment_container):
    refresh(segment_container)
    export = create_export(create_connection(TEST_API_KEY)["id"], segment_container.container_name, "ci", "Seg")
    run_id = start_run(export["id"])["runId"]  # no workers: it stays queued
    status, body, _ = call("export", "DELETE", "", route_params={"id": export["id"]})
    assert status == 409 and body["activeRunId"] == run_id and "in progress" in body["detail"]
    assert services.exports.get(export["id"]) is not None and services.runs.get(run_id) is not None

    def cancelled_with_batches_out(run):  # as a run cancelled while it uploads: its batches still count
        run.status, run.started_at, run.finished_at = RunStatus.CANCELLED, utcnow(), utcnow()

    services.runs.update(run_id, cancelled_with_batches_out)
    status, body, _ = call("export", "DELETE", "", route_params={"id": export["id"]})
    assert status == 409 and "still being counted" in body["detail"]
    later = utcnow() + DRAINED_AFTER + timedelta(minutes=1)
    services.clock = lambda: later  # half an hour later nothing has moved: those batches never will
    assert call("export", "DELETE", "", route_params={"id": export["id"]})[0] == 204
    assert services.runs.get(run_id) is None and services.exports.get(export["id"]) is None


def test_a_run_cancelled_before_it_was_planned_leaves_nothing_in_flight(services, sandbox, segment_container):
    refresh(segment_container)
    export = create_export(create_connection(TEST_API_KEY)["id"], segment_container.container_name, "ci", "Seg")
    run_id = start_run(export["id"])["runId"]
    assert call("run_cancel", "POST", "", route_params={"id": run_id})[0] == 202
    assert call("export", "DELETE", "", route_params={"id": export["id"]})[0] == 204
    plan = receive(services.clients, config.QUEUE_RUNS)  # its plan message comes after all
    plan_handler(as_message(plan))  # and finds no run: nothing happens, nothing fails
    assert services.runs.get(run_id) is None and services.queue_length(config.QUEUE_RUNS + config.POISON_SUFFIX) == 0
