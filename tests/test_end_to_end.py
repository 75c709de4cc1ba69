"""A segment from Blob Storage to Omnisend, through the app's own handlers, queues and the sandbox."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.planning.countries import ISO_ALPHA2
from tests.apphelpers import (
    call,
    create_connection,
    create_export,
    first_valid_rows,
    start_run,
    wait_for_run,
)
from tests.conftest import TEST_API_KEY, TEST_BRAND

FIELDS = {"firstName": "FirstName", "lastName": "LastName", "address": "StreetAddress", "city": "City",
          "state": "State", "postalCode": "PostCode"}


def expected_fields(p: dict) -> dict:
    """The mapped fields of a profile's contact as Omnisend should hold them."""
    fields = {api: p[col].strip() for api, col in FIELDS.items() if p[col].strip()}
    country = p["Country"].strip()
    if len(country) == 2 and country.upper() in ISO_ALPHA2:
        fields["countryCode"] = country.upper()
    elif country:
        fields["country"] = country
    return fields


def expected_contacts(profiles) -> dict[str, dict]:
    """What Omnisend should hold, by email key: the mapped fields of each email's first valid row."""
    return {key: expected_fields(p) for key, p in first_valid_rows(profiles).items()}


@pytest.fixture(params=["off", "on"], ids=["one process", "reader process"])
def app_env(app_env, request):
    """The planner reads and maps the segment in its own process, or in a second one (large segments)."""
    return {**app_env, "PLANNER_READER_PROCESS": request.param}


def test_segment_of_5000_rows_lands_in_omnisend_exactly_as_mapped(services, workers, sandbox, segment_container):
    profiles = list(generate_profiles(5000, seed=11, invalid_share=0.02, duplicate_share=0.01))
    write_segment_refresh(segment_container, folder="ci", segment="VIPCustomers", profiles=profiles,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5), partitions=3)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "VIPCustomers")
    assert call("export_runs", "GET", "", route_params={"id": export["id"]})[1]["runs"] == []  # saving ran nothing

    run = wait_for_run(start_run(export["id"])["runId"])

    expected = expected_contacts(profiles)
    counts = run["counts"]
    stored = {c["email"]: c for c in sandbox.contacts(TEST_BRAND)}
    assert counts["read"] == 5000
    assert counts["rejected"] == 100  # the generator makes exactly 2% invalid
    assert set(counts["rejectedByReason"]) <= {"invalid email", "missing email"}
    assert sum(counts["rejectedByReason"].values()) == counts["rejected"]
    assert counts["duplicates"] > 0
    assert counts["confirmed"] == len(expected) == len(stored)
    assert counts["read"] == counts["rejected"] + counts["duplicates"] + counts["confirmed"] + counts["failed"] + counts["skipped"]
    assert counts["failed"] == 0 and counts["skipped"] == 0
    assert run["status"] == "partiallySucceeded"  # the invalid rows did not reach Omnisend
    assert set(stored) == set(expected)
    for email, contact in stored.items():
        want = expected[email]
        got = {k: contact.get(k) for k in (*FIELDS, "country", "countryCode") if contact.get(k) not in (None, "")}
        if "country" in want and "countryCode" not in want:
            got.pop("countryCode", None)  # Omnisend derives a code from a country name; we sent the name
        assert got == want, email
        assert contact["identifiers"][0]["channels"]["email"]["status"] == "nonSubscribed"
    assert sandbox.stats(TEST_BRAND)["welcomeMessagesSent"] == 0

    status, _, res = call("run_rejects", "GET", "", route_params={"id": run["runId"]})
    assert status == 200 and res.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(res.get_body().decode())))
    for reason, n in counts["rejectedByReason"].items():
        assert sum(1 for r in rows if r["reason"] == reason) == n
    assert sum(1 for r in rows if r["reason"] == "duplicate email") == counts["duplicates"]
    assert all(r["partition"].endswith(".csv") and int(r["row"]) >= 1 for r in rows)
