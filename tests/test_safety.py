"""A bad refresh never empties a segment in Omnisend (#14 item 2), end to end.

A refresh whose rows are all rejected, one that would remove most members, or one with mostly
invalid rows stops before its first request; a failed run never removes a tag and never rewrites
the membership state. ``?confirm=true`` (or a raised threshold) lets a refresh that is right through.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.apphelpers import call, create_export, report_rows, wait_for_run
from tests.conftest import TEST_BRAND
from tests.test_bad_input import FOLDER, MAPPING, SEG, adds_up, conn, model_json, part, people, put, rows, stored

__all__ = ["conn"]  # the fixture, used by name


def minutes_ago(n: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=n)).strftime("%Y/%m/%d/%H%M")


def run(export: dict, **params) -> dict:
    status, body, _ = call("export_runs", "POST", f"exports/{export['id']}/runs", route_params={"id": export["id"]},
                           params={k: str(v).lower() for k, v in params.items()})
    assert status == 202, body
    return wait_for_run(body["runId"], timeout=60)


def export_of(conn: str, container) -> dict:
    return create_export(conn, container.container_name, FOLDER, SEG, mapping=MAPPING)


def tagged(sandbox) -> set[str]:
    return {email for email, c in stored(sandbox).items() if SEG in c["tags"]}


def tag_removals(sandbox) -> int:
    return sandbox.stats(TEST_BRAND)["byPath"].get("DELETE /contacts/tags", 0)


def set_export(export: dict, **fields) -> dict:
    body = {k: export[k] for k in ("name", "connectionId", "source", "mapping", "enabled")}
    status, updated, _ = call("export", "PUT", f"exports/{export['id']}", {**body, **fields},
                              route_params={"id": export["id"]})
    assert status == 200, updated
    return updated


def first_run(conn, segment_container, sandbox, members: int) -> dict:
    model_json(segment_container)
    put(segment_container, part(time=minutes_ago(40)), rows(*people(1, members)))
    export = export_of(conn, segment_container)
    assert export["maxRemovalPercent"] == 50 and export["maxRejectedPercent"] == 50
    assert run(export)["status"] == "succeeded"
    assert len(tagged(sandbox)) == members
    return export


def test_a_refresh_whose_rows_are_all_rejected_removes_no_tag_and_keeps_the_state(services, workers, sandbox, conn,
                                                                                  segment_container):
    export = first_run(conn, segment_container, sandbox, 5)
    batches = sandbox.stats(TEST_BRAND)["batchesCreated"]
    # columns swapped in the platform's export: the email column holds names; even with the thresholds off
    export = set_export(export, maxRejectedPercent=100, maxRemovalPercent=100)
    swapped = [(i, email, name, c) for i, name, email, c in people(1, 5)]
    put(segment_container, part(time=minutes_ago(30)), rows(*swapped))
    bad = run(export)
    c = bad["counts"]
    assert bad["status"] == "failed" and c["read"] == c["rejected"] == 5 and c["untagged"] == 0
    assert bad["error"].startswith("All 5 rows of the refresh were rejected (5 invalid email)")
    assert "no member lost the tag" in bad["error"] and bad["heldByThreshold"] is False  # confirm would not help
    adds_up(bad)
    assert tag_removals(sandbox) == 0 and len(tagged(sandbox)) == 5
    assert sandbox.stats(TEST_BRAND)["batchesCreated"] == batches
    # the membership state is as the good run left it: the same good refresh again sends nothing
    put(segment_container, part(time=minutes_ago(20)), rows(*people(1, 5)))
    again = run(export)
    assert again["status"] == "succeeded" and again["counts"]["skipped"] == 5 and again["counts"]["batches"] == 0


def test_a_refresh_that_would_remove_most_members_stops_until_confirmed(services, workers, sandbox, conn,
                                                                        segment_container):
    export = first_run(conn, segment_container, sandbox, 10)
    put(segment_container, part(time=minutes_ago(30)), rows(*people(1, 4)))  # 6 of 10 members left
    stopped = run(export)
    c = stopped["counts"]
    assert stopped["status"] == "failed" and stopped["heldByThreshold"] is True
    assert c["batches"] == 0 and c["untagged"] == 0 and c["skipped"] == 4
    assert c["failedByReason"] == {}  # the 4 remaining members were unchanged: nothing was to be sent
    error = stopped["error"]
    assert "6 of the 10 members (60%) would leave the segment" in error and "maxRemovalPercent (50%)" in error
    assert f"POST /api/exports/{export['id']}/runs?confirm=true" in error and "Nothing was sent" in error
    assert tag_removals(sandbox) == 0 and len(tagged(sandbox)) == 10

    confirmed = run(export, confirm=True)
    c = confirmed["counts"]
    assert confirmed["status"] == "succeeded" and confirmed["confirm"] is True
    assert c["left"] == c["untagged"] == 6 and c["skipped"] == 4
    assert tagged(sandbox) == {f"person{i}@example.com" for i in range(1, 5)}

    # a threshold raised on the export lets as large a removal through without confirm
    put(segment_container, part(time=minutes_ago(20)), rows(*people(1, 1)))  # 3 of 4 left: 75%
    export = set_export(export, maxRemovalPercent=75)
    assert run(export)["status"] == "succeeded" and tagged(sandbox) == {"person1@example.com"}


def test_an_empty_refresh_counts_as_every_member_leaving(services, workers, sandbox, conn, segment_container):
    export = first_run(conn, segment_container, sandbox, 3)
    put(segment_container, part(time=minutes_ago(30)), b"")
    stopped = run(export)
    assert stopped["status"] == "failed" and "3 of the 3 members (100%) would leave" in stopped["error"]
    assert len(tagged(sandbox)) == 3


def test_a_refresh_with_mostly_invalid_rows_stops_before_sending(services, workers, sandbox, conn, segment_container):
    model_json(segment_container)
    good = people(1, 4)
    bad = [(str(i), f"Name{i}", f"not-an-email-{i}", "LT") for i in range(5, 11)]
    put(segment_container, part(time=minutes_ago(30)), rows(*good, *bad))
    export = export_of(conn, segment_container)
    stopped = run(export)
    c = stopped["counts"]
    assert stopped["status"] == "failed" and c["rejected"] == 6 and c["failed"] == 4
    assert c["failedByReason"] == {"not sent: over a safety threshold": 4}
    assert "6 of 10 rows (60%) were rejected (6 invalid email)" in stopped["error"]
    assert "maxRejectedPercent (50%)" in stopped["error"]
    adds_up(stopped)
    assert sandbox.stats(TEST_BRAND)["batchesCreated"] == 0
    reasons = sorted(r["reason"] for r in report_rows(stopped["runId"]))
    assert reasons == ["invalid email"] * 6 + ["not sent: over a safety threshold"] * 4

    export = set_export(export, maxRejectedPercent=60)  # 60% is not more than 60%
    through = run(export)
    assert through["status"] == "partiallySucceeded" and through["counts"]["confirmed"] == 4


def test_a_run_whose_contacts_all_fail_at_omnisend_removes_no_tag_and_keeps_the_state(services, workers, sandbox,
                                                                                     conn, segment_container):
    export = first_run(conn, segment_container, sandbox, 4)
    # two leave, two change, and Omnisend refuses every contact of this run
    put(segment_container, part(time=minutes_ago(30)), rows(*[(i, f"New{i}", e, c) for i, _, e, c in people(1, 2)]))
    export = set_export(export, maxRemovalPercent=100)
    sandbox.faults.item_error_rate = 1.0
    failed = run(export)
    c = failed["counts"]
    assert failed["status"] == "failed" and c["confirmed"] == 0 and c["failed"] == 2
    assert c["untagged"] == 0 and c["tagFailures"] == 2
    assert tag_removals(sandbox) == 0 and len(tagged(sandbox)) == 4
    sandbox.faults.item_error_rate = 0.0
    # nothing was recorded: the next run sends the two changed members and removes the two leavers' tag
    again = run(export)
    c = again["counts"]
    assert again["status"] == "succeeded" and c["confirmed"] == 2 and c["left"] == c["untagged"] == 2
    assert tagged(sandbox) == {"person1@example.com", "person2@example.com"}
    assert stored(sandbox)["person1@example.com"]["firstName"] == "New1"


@pytest.mark.parametrize("value", [101, -1, "50", 12.5, True])
def test_thresholds_are_whole_percentages(services, conn, segment_container, value):
    model_json(segment_container)
    put(segment_container, part(), rows(*people(1, 2)))
    for name in ("maxRemovalPercent", "maxRejectedPercent"):
        status, body, _ = call("exports", "POST", "exports", {
            "name": "x", "connectionId": conn, "mapping": MAPPING, name: value,
            "source": {"container": segment_container.container_name, "folder": "ci", "segment": SEG}})
        assert status == 400 and [e["field"] for e in body["errors"]] == [name], body


def test_the_timer_does_not_start_a_held_refresh_again_at_every_tick(services, workers, sandbox, conn,
                                                                     segment_container):
    from exporter.lifecycle.schedule import run_schedule

    export = first_run(conn, segment_container, sandbox, 10)
    put(segment_container, part(time=minutes_ago(30)), rows(*people(1, 3)))  # 7 of 10 leave
    (started,) = run_schedule(services).started
    held = wait_for_run(started.id, timeout=60)
    assert held["status"] == "failed" and held["heldByThreshold"] and held["trigger"] == "schedule"
    for _ in range(2):  # the same refresh would stop the same way: left for a person to confirm
        tick = run_schedule(services)
        assert tick.started == [] and tick.held == [export["id"]]
    assert len(services.runs.list(export["id"])) == 2
    confirmed = run(export, confirm=True)
    assert confirmed["status"] == "succeeded" and confirmed["counts"]["untagged"] == 7
    assert run_schedule(services).started == []  # exported now: up to date
