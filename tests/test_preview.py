"""Preview (?dryRun=true): planning for real, nothing sent, nothing written; and the changes report of
every run."""

from __future__ import annotations

import csv
import functools
import io
import json

import pytest

from devtools.sample_segment import generate_profiles
from exporter.lifecycle.schedule import run_schedule
from tests.apphelpers import call, create_connection, create_export, start_run, wait_for_run, write_refresh
from tests.conftest import TEST_API_KEY, TEST_BRAND

SEGMENT = "Preview Me"
# what a run starts with, and what a preview must predict exactly
PLANNED = ("read", "rejected", "rejectedByReason", "duplicates", "queued", "joined", "changed", "changedFields",
           "skipped", "left", "alreadyTagged")


def people(n: int, **kw) -> list[dict]:
    return list(generate_profiles(n, seed=41, **kw))


write = functools.partial(write_refresh, segment=SEGMENT)
start = start_run


def preview(export_id: str) -> dict:
    body = start(export_id, dryRun="true")
    assert body["kind"] == "preview"
    return wait_for_run(body["runId"])


def changes(run: dict) -> list[dict]:
    status, _, res = call("run_changes", "GET", "", route_params={"id": run["runId"]})
    assert status == 200, res.get_body()
    return list(csv.DictReader(io.StringIO(res.get_body().decode())))


def planned(run: dict) -> dict:
    return {k: run["counts"][k] for k in PLANNED}


@pytest.fixture
def export(services, workers, sandbox, segment_container):
    conn = create_connection(TEST_API_KEY)
    return create_export(conn["id"], segment_container.container_name, "ci", SEGMENT)


def test_a_preview_plans_for_real_sends_nothing_and_the_run_after_it_does_what_it_said(
        services, export, sandbox, segment_container):
    profiles = people(1200, invalid_share=0.03, duplicate_share=0.02)
    write(segment_container, profiles, minutes_ago=30)
    before = sandbox.stats(TEST_BRAND)["requests"]  # the connection's key check when it was created

    seen = preview(export["id"])
    assert seen["status"] == "succeeded" and seen["kind"] == "preview" and seen["countsFinal"]
    c = seen["counts"]
    assert c["read"] == 1200 and c["rejected"] > 0 and c["duplicates"] > 0
    assert c["joined"] == c["queued"] > 0 and c["changed"] == 0 and c["skipped"] == 0 and c["left"] == 0
    assert c["confirmed"] == 0 and c["failed"] == 0  # nothing sent, nothing counted as not sent
    assert c["read"] == c["rejected"] + c["duplicates"] + c["queued"]
    # nothing reached Omnisend, and no membership state was written
    assert sandbox.stats(TEST_BRAND)["requests"] == before
    assert sandbox.contacts(TEST_BRAND) == []
    assert services.states.current_name(export["id"]) is None
    p = seen["preview"]
    assert p["tag"] == export["tag"] and p["tagAdditions"] == c["queued"] and p["tagRemovals"] == 0
    assert p["wouldStop"] is None
    est = p["estimate"]
    assert c["batches"] == 0 and est["contactRequests"] == 2 * est["contactBatches"]
    assert est["tagCalls"] == -(-c["queued"] // 250)
    assert est["seconds"] >= est["planningSeconds"] > 0
    # the sample: the first 20 contacts exactly as POST /batches would carry them
    assert len(p["sample"]) == 20
    assert p["sample"][0]["identifiers"][0]["type"] == "email"
    first_valid = next(x["PrimaryEmail"].strip() for x in profiles if "@" in x["PrimaryEmail"] and
                       x["PrimaryEmail"].strip() and " " not in x["PrimaryEmail"].strip())
    assert p["sample"][0]["identifiers"][0]["id"] == first_valid
    rows = changes(seen)
    assert len(rows) == c["joined"] and {r["change"] for r in rows} == {"joined"}

    # the timer does not take the preview for the refresh's run: it starts the real one
    tick = run_schedule(services)
    assert [r.id for r in tick.started] and tick.started[0].id != seen["runId"]
    real = wait_for_run(tick.started[0].id)
    assert real["kind"] == "run" and real["counts"]["confirmed"] == c["queued"]
    assert planned(real) == planned(seen) and real["counts"]["batches"] == est["contactBatches"]
    assert {r["email"] for r in changes(real)} == {r["email"] for r in rows}
    # the sample is the run's first batch as it was sent, contact for contact
    first_batch, _ = services.batches.get(real["runId"], 1)
    assert first_batch.payload.contacts[:20] == p["sample"]


def test_a_preview_of_a_refresh_with_churn_names_who_joins_changes_and_leaves(services, export, sandbox,
                                                                              segment_container):
    everyone = people(700, invalid_share=0, duplicate_share=0)
    first = everyone[:600]
    write(segment_container, first, minutes_ago=30)
    start(export["id"])
    wait_for_run(services.runs.list(export["id"])[0].id)
    leavers = first[:10]
    renamed = [{**x, "FirstName": x["FirstName"] + "x"} for x in first[10:15]]
    moved = [{**x, "City": x["City"] + " Town", "LastName": x["LastName"] + "-M"} for x in first[15:18]]
    newcomers = everyone[600:607]
    write(segment_container, renamed + moved + first[18:] + newcomers, minutes_ago=20)
    requests_before = sandbox.stats(TEST_BRAND)["requests"]
    state_before = services.states.current_name(export["id"])

    seen = preview(export["id"])
    c = seen["counts"]
    assert (c["joined"], c["changed"], c["left"], c["skipped"]) == (7, 8, 10, 600 - 10 - 8)
    assert c["changedFields"] == {"firstName": 5, "city": 3, "lastName": 3}
    assert seen["preview"]["tagRemovals"] == 10 and seen["preview"]["tagAdditions"] == 7  # the changed hold it
    assert sandbox.stats(TEST_BRAND)["requests"] == requests_before
    assert services.states.current_name(export["id"]) == state_before
    rows = {r["email"]: (r["change"], r["fields"]) for r in changes(seen)}
    assert rows == {
        **{x["PrimaryEmail"]: ("left", "") for x in leavers},
        **{x["PrimaryEmail"]: ("changed", "firstName") for x in renamed},
        **{x["PrimaryEmail"]: ("changed", "lastName;city") for x in moved},
        **{x["PrimaryEmail"]: ("joined", "") for x in newcomers},
    }

    real = wait_for_run(start(export["id"])["runId"])
    assert planned(real) == planned(seen) and real["counts"]["untagged"] == 10
    assert {r["email"]: (r["change"], r["fields"]) for r in changes(real)} == rows


def test_a_preview_takes_no_lock_cannot_be_retried_and_reports_what_would_stop_a_run(
        services, export, sandbox, segment_container):
    write(segment_container, people(300, invalid_share=0, duplicate_share=0), minutes_ago=30)
    wait_for_run(start(export["id"])["runId"])
    write(segment_container, people(300, invalid_share=0, duplicate_share=0)[:100], minutes_ago=20)  # 2/3 leave

    seen = preview(export["id"])
    assert seen["status"] == "succeeded" and seen["counts"]["left"] == 200
    assert "maxRemovalPercent" in seen["preview"]["wouldStop"]
    status, body, _ = call("run_retry", "POST", "", route_params={"id": seen["runId"]})
    assert status == 409 and "preview" in body["detail"]
    # the preview held no lock, and the timer still sees the refresh as not exported
    held = wait_for_run(start(export["id"])["runId"])
    assert held["status"] == "failed" and held["heldByThreshold"]
    listed = call("export_runs", "GET", "", route_params={"id": export["id"]})[1]["runs"]
    assert [r["kind"] for r in listed] == ["run", "preview", "run"]


def test_changed_members_of_a_state_without_field_marks_are_listed_with_unknown_fields(
        services, export, sandbox, segment_container):
    """A state written before field marks were kept (format 1): a change is still found by its
    fingerprint, but which fields changed is not known, and the report says so."""
    from exporter.state.membership import RECORDS, StateHeader

    profiles = people(50, invalid_share=0, duplicate_share=0)
    write(segment_container, profiles, minutes_ago=30)
    wait_for_run(start(export["id"])["runId"])
    state = services.states.load(export["id"])
    records = list(state.records())
    old = StateHeader(**{**state.header.__dict__, "version": 1})
    state.close()
    body = json.loads(old.to_json())
    body["version"] = 1
    data = json.dumps(body).encode() + b"\n" + b"".join(
        RECORDS[1].pack(k, fp & (2**64 - 1), len(e.encode())) + e.encode() for k, fp, e in records)
    name = services.states.current_name(export["id"])
    services.clients.artifacts.get_blob_client(name).upload_blob(data, overwrite=True)
    write(segment_container, [{**profiles[0], "City": "Elsewhere"}] + profiles[1:], minutes_ago=20)

    seen = preview(export["id"])
    assert (seen["counts"]["changed"], seen["counts"]["skipped"]) == (1, 49)
    assert seen["counts"]["changedFields"] == {"unknown": 1}
    assert changes(seen) == [{"email": profiles[0]["PrimaryEmail"], "change": "changed", "fields": "unknown"}]
