"""Segment membership in Omnisend: incremental runs, the membership tag, and consent done right."""

from __future__ import annotations

import functools

import pytest
import requests

from devtools.sample_segment import generate_profiles
from tests.apphelpers import (
    SAMPLE_MAPPING,
    call,
    create_connection,
    create_export,
    start_run,
    wait_for_run,
    write_refresh,
)
from tests.conftest import TEST_API_KEY, TEST_BRAND

SEGMENT = "Loyal Customers"
TAG = "Loyal Customers"
OTHER_TAG = "Newsletter"


def people(n: int = 2060) -> list[dict]:
    return list(generate_profiles(n, seed=31, invalid_share=0, duplicate_share=0))


write = functools.partial(write_refresh, segment=SEGMENT)


def run_now(export_id: str, **params) -> dict:
    return wait_for_run(start_run(export_id, **params)["runId"])


def omnisend(sandbox) -> dict[str, dict]:
    sandbox.wait_idle()
    return {c["email"]: c for c in sandbox.contacts(TEST_BRAND)}


def api(sandbox, method, path, body):
    res = requests.request(method, sandbox.url + path, json=body, timeout=10, headers={
        "Authorization": f"Omnisend-API-Key {TEST_API_KEY}", "Omnisend-Version": "2026-03-15"})
    assert res.status_code in (200, 201, 202), res.text


def expected_state(profiles: list[dict]) -> dict[str, dict]:
    return {p["PrimaryEmail"].lower(): {"lastName": p["LastName"], "city": p["City"]} for p in profiles}


def assert_omnisend_holds(sandbox, members: list[dict], leavers: list[dict]):
    stored = omnisend(sandbox)
    for email, want in expected_state(members).items():
        c = stored[email]
        assert {"lastName": c.get("lastName"), "city": c.get("city")} == want, email
        assert TAG in c["tags"], email
    for p in leavers:
        c = stored[p["PrimaryEmail"].lower()]  # contacts are never deleted
        assert TAG not in c["tags"]


@pytest.fixture
def export(services, workers, sandbox, segment_container):
    conn = create_connection(TEST_API_KEY)
    return create_export(conn["id"], segment_container.container_name, "ci", SEGMENT)


def churn(everyone: list[dict]):
    """Run 1's 2,000 members; then 1% leave, 1% change a field, 1% are new."""
    first = everyone[:2000]
    leavers = first[:20]
    changed = [{**p, "LastName": p["LastName"] + "-Married"} for p in first[20:40]]
    second = changed + first[40:] + everyone[2000:2020]
    return first, second, leavers


def test_a_second_run_sends_only_what_changed_and_untags_the_leavers(services, export, sandbox, segment_container):
    first, second, leavers = churn(people())
    write(segment_container, first, minutes_ago=30)
    run1 = run_now(export["id"])
    assert export["tag"] == TAG
    assert run1["status"] == "succeeded" and run1["counts"]["confirmed"] == 2000 and run1["counts"]["tagged"] == 2000
    api(sandbox, "POST", "contacts/tags", {"tags": [OTHER_TAG], "emails": [leavers[0]["PrimaryEmail"], first[100]["PrimaryEmail"]]})
    batches_before = sandbox.stats(TEST_BRAND)["batchesCreated"]

    write(segment_container, second, minutes_ago=10)
    run2 = run_now(export["id"])
    c = run2["counts"]
    assert run2["status"] == "succeeded"
    assert c["read"] == 2000 and c["queued"] == 40 and c["confirmed"] == 40 and c["skipped"] == 1960
    assert c["left"] == 20 and c["untagged"] == 20
    # only the 20 new members are tagged; the 20 changed ones hold the tag from run 1 and keep it
    assert c["tagged"] == 20 and c["alreadyTagged"] == 20
    tag_calls = [e for b in services.batches.list(run2["runId"], kind="tags") for e in b.payload.emails]
    assert sorted(e.lower() for e in tag_calls) == sorted(p["PrimaryEmail"].lower() for p in second[-20:])
    assert c["read"] == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]
    assert sandbox.stats(TEST_BRAND)["batchesCreated"] - batches_before == 1  # 40 contacts: one batch
    assert_omnisend_holds(sandbox, second, leavers)
    stored = omnisend(sandbox)
    assert OTHER_TAG in stored[leavers[0]["PrimaryEmail"].lower()]["tags"]  # other tags are never touched
    assert OTHER_TAG in stored[first[100]["PrimaryEmail"].lower()]["tags"]

    run3 = run_now(export["id"])  # the same refresh again: nothing to send
    assert run3["counts"]["queued"] == 0 and run3["counts"]["skipped"] == 2000 and run3["counts"]["left"] == 0


def test_changed_members_are_tagged_again_when_the_tag_changed(services, export, sandbox, segment_container):
    first, second, _ = churn(people())
    write(segment_container, first, minutes_ago=30)
    assert run_now(export["id"])["counts"]["tagged"] == 2000
    body = {"name": export["name"], "connectionId": export["connectionId"], "source": export["source"],
            "mapping": export["mapping"], "enabled": True, "tag": OTHER_TAG}
    status, body, _ = call("export", "PUT", "", body=body, route_params={"id": export["id"]})
    assert status == 200, body

    write(segment_container, second, minutes_ago=10)
    run2 = run_now(export["id"])
    c = run2["counts"]
    # a new tag changes the export's sync key: everyone is sent and tagged again, nobody counts as tagged
    assert c["queued"] == c["tagged"] == 2000 and c["alreadyTagged"] == 0 and c["skipped"] == 0
    stored = omnisend(sandbox)
    assert all(OTHER_TAG in stored[p["PrimaryEmail"].lower()]["tags"] for p in second)


def test_a_run_that_fails_halfway_is_made_up_by_the_next(export, sandbox, segment_container, monkeypatch):
    first, second, leavers = churn(people())
    write(segment_container, first, minutes_ago=30)
    run_now(export["id"])
    write(segment_container, second, minutes_ago=10)
    sandbox.faults.stop_batches_after = 15  # Omnisend stops the one batch of 40 after 15 items
    run2 = run_now(export["id"])
    assert run2["status"] == "partiallySucceeded" and run2["counts"]["failed"] == 25
    sandbox.faults.reset()
    run3 = run_now(export["id"])
    assert run3["status"] == "succeeded" and run3["counts"]["queued"] == 25 and run3["counts"]["skipped"] == 1975
    assert_omnisend_holds(sandbox, second, leavers)


def test_a_cancelled_run_leaves_the_state_for_the_next_run(export, services, sandbox, segment_container):
    first, second, leavers = churn(people())
    write(segment_container, first, minutes_ago=30)
    services.backoff = lambda attempt: 0.1
    sandbox.faults.force_status(503, count=10_000, route="POST /batches")  # Omnisend down for this run
    run1 = run_now(export["id"])
    assert run1["status"] == "failed" and run1["counts"]["confirmed"] == 0
    sandbox.faults.reset()
    write(segment_container, second, minutes_ago=10)
    run2 = run_now(export["id"])
    assert run2["counts"]["queued"] == 2000 and run2["counts"]["left"] == 0  # nothing was confirmed before
    assert run2["status"] == "succeeded"
    assert_omnisend_holds(sandbox, second, [])


def test_a_changed_mapping_or_full_run_sends_everyone(export, sandbox, segment_container):
    first = people()[:2000]
    write(segment_container, first, minutes_ago=30)
    run_now(export["id"])
    assert run_now(export["id"], full="true")["counts"]["queued"] == 2000
    assert run_now(export["id"])["counts"]["queued"] == 0
    body = {"name": export["name"], "connectionId": export["connectionId"], "source": export["source"],
            "mapping": {**SAMPLE_MAPPING, "state": "State"}, "enabled": True}
    del body["mapping"]["state"]
    body["mapping"]["state"] = "State"
    status, _, _ = call("export", "PUT", "", body={**body, "mapping": {k: v for k, v in SAMPLE_MAPPING.items() if k != "city"}},
                        route_params={"id": export["id"]})
    assert status == 200
    run = run_now(export["id"])
    assert run["counts"]["queued"] == 2000 and run["counts"]["skipped"] == 0


CONSENT_COLUMNS = ("Email", "FirstName", "Consent", "ConsentDate")


def test_consent_follows_omnisends_newer_date_rule(services, workers, sandbox, segment_container):
    api(sandbox, "POST", "contacts", {"identifiers": [{"type": "email", "id": "old-optout@example.com", "channels": {
        "email": {"status": "unsubscribed", "statusChangedAt": "2026-06-01T00:00:00Z"}}}]})
    api(sandbox, "POST", "contacts", {"identifiers": [{"type": "email", "id": "new-optout@example.com", "channels": {
        "email": {"status": "unsubscribed", "statusChangedAt": "2026-06-01T00:00:00Z"}}}]})
    api(sandbox, "POST", "contacts", {"identifiers": [{"type": "email", "id": "subscriber@example.com", "channels": {
        "email": {"status": "subscribed", "statusChangedAt": "2026-06-01T00:00:00Z"}}}]})
    rows = [
        {"Email": "old-optout@example.com", "FirstName": "A", "Consent": "yes", "ConsentDate": "2026-01-01"},  # older
        {"Email": "new-optout@example.com", "FirstName": "B", "Consent": "yes", "ConsentDate": "2026-07-01"},  # newer
        {"Email": "subscriber@example.com", "FirstName": "C", "Consent": "", "ConsentDate": ""},  # unknown
        {"Email": "fresh@example.com", "FirstName": "D", "Consent": "no", "ConsentDate": "2026-07-01"},
        {"Email": "unknown@example.com", "FirstName": "E", "Consent": "", "ConsentDate": ""},
    ]
    write(segment_container, rows, minutes_ago=10, columns=CONSENT_COLUMNS)
    welcomes_before = sandbox.stats(TEST_BRAND)["welcomeMessagesSent"]  # the setup above used Omnisend's default
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", SEGMENT,
                           mapping={"email": "Email", "firstName": "FirstName"},
                           consent={"column": "Consent", "subscribedValues": ["yes"], "unsubscribedValues": ["no"],
                                    "changedAtColumn": "ConsentDate"})
    assert run_now(export["id"])["status"] == "succeeded"
    status = {e: c["identifiers"][0]["channels"]["email"]["status"] for e, c in omnisend(sandbox).items()}
    assert status == {"old-optout@example.com": "unsubscribed",  # an older consent never re-subscribes
                      "new-optout@example.com": "subscribed",  # the profile's consent is newer
                      "subscriber@example.com": "subscribed",  # unknown consent changes nothing
                      "fresh@example.com": "unsubscribed",
                      "unknown@example.com": "nonSubscribed"}
    assert sandbox.stats(TEST_BRAND)["welcomeMessagesSent"] == welcomes_before  # the export sent none


def test_exporting_without_a_consent_mapping_never_changes_an_existing_status(export, sandbox, segment_container):
    first = people()[:50]
    api(sandbox, "POST", "contacts", {"identifiers": [{"type": "email", "id": first[0]["PrimaryEmail"], "channels": {
        "email": {"status": "subscribed", "statusChangedAt": "2025-01-01T00:00:00Z"}}}]})
    write(segment_container, first, minutes_ago=10)
    run_now(export["id"])
    stored = omnisend(sandbox)
    statuses = {c["identifiers"][0]["channels"]["email"]["status"] for e, c in stored.items()
                if e != first[0]["PrimaryEmail"].lower()}
    assert stored[first[0]["PrimaryEmail"].lower()]["identifiers"][0]["channels"]["email"]["status"] == "subscribed"
    assert statuses == {"nonSubscribed"}


def test_tag_and_consent_are_validated_on_save(services, sandbox, segment_container):
    write(segment_container, people()[:5], minutes_ago=10)
    conn = create_connection(TEST_API_KEY)
    base = {"name": "x", "connectionId": conn["id"], "mapping": SAMPLE_MAPPING,
            "source": {"container": segment_container.container_name, "folder": "ci", "segment": SEGMENT}}
    status, body, _ = call("exports", "POST", "exports", {**base, "tag": "VIP: EU"})
    assert status == 400 and body["errors"][0]["field"] == "tag"
    status, body, _ = call("exports", "POST", "exports", {**base, "consent": {"column": "Opt In"}})
    assert status == 400 and body["errors"][0]["field"] == "consent.column" and "Opt In" in body["errors"][0]["message"]
    status, body, _ = call("exports", "POST", "exports", {**base, "tag": "VIP EU"})
    assert status == 201 and body["tag"] == "VIP EU" and body["sendWelcomeMessage"] is False
