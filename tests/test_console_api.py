"""The API the console needs besides the export API: a segment's columns, the "Connect" check without
saving (``POST /connections?dryRun=true``), who the caller is (``GET /me``), the schedule's next check
(``GET /exports``), the request budget (``GET /exports/{id}/runs``) and which runs a retry applies to.

Through the app's own HTTP functions, against Azurite and the Omnisend sandbox.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from devtools.sample_segment import COLUMNS, generate_profiles, write_segment_refresh
from tests.apphelpers import ANONYMOUS, CONTRIBUTOR, NO_ROLE, call, create_export, table_rows
from tests.conftest import TEST_API_KEY, TEST_BRAND

HEADER_COLUMNS = ("Id", "Email", "Given", "Family")


pytestmark = pytest.mark.usefixtures("module_services")  # installed for the whole module


@pytest.fixture(scope="module")
def container(azurite_storage):
    """ci/VIP (model.json), hdr/Plain (CSV header only), pre/Soon (model.json, no refresh yet) and
    bad/Broken (model.json is not JSON)."""
    from azure.storage.blob import BlobServiceClient

    blobs = BlobServiceClient.from_connection_string(azurite_storage)
    c = blobs.create_container(f"columns{uuid.uuid4().hex[:10]}")
    when = datetime.now(timezone.utc) - timedelta(minutes=5)
    write_segment_refresh(c, folder="ci", segment="VIP", profiles=list(generate_profiles(5)), when=when)
    rows = [{"Id": "1", "Email": "a@example.com", "Given": "Ann", "Family": "Lee"}]
    write_segment_refresh(c, folder="hdr", segment="Plain", profiles=rows, when=when, header=True, model_json=False,
                          columns=HEADER_COLUMNS)
    for name in write_segment_refresh(c, folder="pre", segment="Soon", profiles=list(generate_profiles(2)), when=when):
        c.delete_blob(name)
    write_segment_refresh(c, folder="bad", segment="Broken", profiles=list(generate_profiles(2)), when=when)
    c.upload_blob("bad/model.json", b"{ not json", overwrite=True)
    yield c.container_name
    c.delete_container()


def columns(headers=None, **params):
    return call("segment_columns", "GET", "segments/columns", params=params,
                **({"headers": headers} if headers is not None else {}))


def error_fields(body) -> dict[str, str]:
    return {e["field"]: e["code"] for e in body.get("errors", [])}


# --- GET /segments/columns ---------------------------------------------------------------------


def test_columns_come_from_model_json(container):
    status, body, _ = columns(container=container, folder="ci", segment="VIP")
    assert status == 200, body
    assert body["columns"] == list(COLUMNS) and body["origin"] == "model.json"
    assert body["refresh"].startswith("ci/VIP/") and body["notices"] == []
    assert (body["container"], body["folder"], body["segment"]) == (container, "ci", "VIP")


def test_columns_come_from_the_csv_header_without_model_json(container):
    status, body, _ = columns(container=container, folder="hdr", segment="Plain")
    assert status == 200, body
    assert body["columns"] == list(HEADER_COLUMNS) and body["origin"] == "header"


def test_a_segment_described_before_its_first_refresh_says_so(container):
    status, body, _ = columns(container=container, folder="pre", segment="Soon")
    assert status == 200, body
    assert body["columns"] == list(COLUMNS) and body["refresh"] is None
    assert len(body["notices"]) == 1 and "no refresh" in body["notices"][0]


def test_contributors_may_read_columns_too(container):
    assert columns(CONTRIBUTOR, container=container, folder="ci", segment="VIP")[0] == 200


@pytest.mark.parametrize("headers, status", [(ANONYMOUS, 401), (NO_ROLE, 403)])
def test_columns_need_a_member(container, headers, status):
    got, body, _ = columns(headers, container=container, folder="ci", segment="VIP")
    assert got == status and "columns" not in body


def test_a_missing_container_is_404_naming_it():
    missing = f"nosuch{uuid.uuid4().hex[:8]}"
    status, body, res = columns(container=missing, folder="ci", segment="VIP")
    assert status == 404 and res.mimetype == "application/problem+json"
    assert body["title"] == "Not found" and missing in body["detail"] and "does not exist" in body["detail"]


def test_a_missing_segment_is_404_naming_it(container):
    status, body, _ = columns(container=container, folder="ci", segment="Nobody")
    assert status == 404 and "'Nobody'" in body["detail"]
    status, body, _ = columns(container=container, folder="elsewhere", segment="VIP")
    assert status == 404 and "'VIP'" in body["detail"]


def test_an_unreadable_model_json_is_400_naming_the_segment(container):
    status, body, _ = columns(container=container, folder="bad", segment="Broken")
    assert status == 400 and error_fields(body) == {"segment": "unreadable"}
    assert "model.json" in body["errors"][0]["message"]


@pytest.mark.parametrize("params, fields", [
    ({}, {"container": "required", "segment": "required"}),
    ({"container": "Bad_Name", "segment": "VIP"}, {"container": "invalid"}),
    ({"container": "abc", "segment": "a/b"}, {"segment": "invalid"}),
    ({"container": "abc", "segment": "VIP", "extra": "1"}, {"extra": "unknown"}),
])
def test_bad_query_parameters_are_400_naming_each(params, fields):
    status, body, _ = columns(**params)
    assert status == 400 and body["title"] == "Bad request", body
    assert error_fields(body) == fields
    assert all(e["message"] for e in body["errors"])


# --- POST /connections?dryRun=true ("Connect") ---------------------------------------------------


def dry_run(body, headers=None):
    return call("connections", "POST", "connections", body, params={"dryRun": "true"},
                **({"headers": headers} if headers is not None else {}))


def connection_body(**changes):
    body = {"displayName": f"Dry {uuid.uuid4().hex[:6]}", "apiKey": TEST_API_KEY, "allowContributors": True,
            "dataPrivacyConsent": True}
    body.update(changes)
    return body


def test_connect_checks_the_key_and_saves_nothing(module_services, module_sandbox):
    before = table_rows(module_services.clients)
    checks = module_sandbox.stats(TEST_BRAND)
    body = connection_body()
    status, res, _ = dry_run(body)
    assert status == 200, res
    assert res["keyAccepted"] is True and res["dryRun"] is True and "Nothing was saved" in res["detail"]
    assert TEST_API_KEY not in str(res)
    assert table_rows(module_services.clients) == before
    assert module_sandbox.stats(TEST_BRAND) != checks  # Omnisend was really asked
    # ... and the same body then saves
    status, created, _ = call("connections", "POST", "connections", body)
    assert status == 201 and created["displayName"] == body["displayName"]


def test_connect_with_a_rejected_key_is_the_same_422_as_saving(module_services):
    before = table_rows(module_services.clients)
    status, body, _ = dry_run(connection_body(apiKey="not-a-valid-key"))
    assert status == 422 and body["title"] == "API key rejected"
    assert error_fields(body) == {"apiKey": "rejected"}
    assert "not-a-valid-key" not in str(body)
    assert table_rows(module_services.clients) == before


def test_connect_validates_the_whole_body_like_saving():
    status, body, _ = dry_run(connection_body(dataPrivacyConsent=False, displayName=""))
    assert status == 400 and error_fields(body) == {"dataPrivacyConsent": "invalid", "displayName": "invalid"}
    assert any("compliance boundary" in e["message"] for e in body["errors"])


def test_connect_is_for_admins_only(module_services):
    before = table_rows(module_services.clients)
    status, body, _ = dry_run(connection_body(), headers=CONTRIBUTOR)
    assert status == 403 and body["detail"] == "Only an Admin may create connections."
    assert table_rows(module_services.clients) == before


# --- GET /me -------------------------------------------------------------------------------------


def test_me_tells_the_caller_and_roles():
    status, body, _ = call("me", "GET", "me")
    assert status == 200 and body == {"name": "local-admin@dev", "roles": ["Admin"], "isAdmin": True,
                                      "isContributor": False, "devMode": True}
    status, body, _ = call("me", "GET", "me", headers=CONTRIBUTOR)
    assert status == 200 and body["isAdmin"] is False and body["isContributor"] is True
    assert call("me", "GET", "me", headers=ANONYMOUS)[0] == 401
    status, body, _ = call("me", "GET", "me", headers=NO_ROLE)
    assert status == 403 and "neither the Admin nor the Contributor role" in body["detail"]


# --- what the console's exports list and runs view draw from ------------------------------------


def test_the_exports_list_says_when_the_schedule_checks_next(module_services, container):
    from exporter.domain import parse_iso

    conn = call("connections", "POST", "connections", connection_body())[1]
    create_export(conn["id"], container, "ci", "VIP", name=f"Listed {uuid.uuid4().hex[:6]}",
                  tag=uuid.uuid4().hex[:8])
    noon = datetime(2026, 5, 4, 12, 7, 30, tzinfo=timezone.utc)
    clock = module_services.clock
    module_services.clock = lambda: noon
    try:
        status, body, _ = call("exports", "GET", "exports")
        assert status == 200 and body["exports"]
        schedule = body["schedule"]
        assert schedule["expression"] == "0 */15 * * * *" and schedule["timer"] is True
        assert parse_iso(schedule["nextCheckAt"]) == datetime(2026, 5, 4, 12, 15, tzinfo=timezone.utc)
        assert call("exports", "GET", "exports", headers=CONTRIBUTOR)[1]["schedule"] == schedule
        module_services.timer_enabled = False  # serve --no-timer: nothing is checked on a schedule
        assert call("exports", "GET", "exports")[1]["schedule"]["nextCheckAt"] is None
    finally:
        module_services.clock, module_services.timer_enabled = clock, True


def test_the_runs_list_carries_the_request_budget_an_estimate_uses(module_services, container):
    conn = call("connections", "POST", "connections", connection_body())[1]
    export = create_export(conn["id"], container, "ci", "VIP", name=f"Budget {uuid.uuid4().hex[:6]}",
                           tag=uuid.uuid4().hex[:8])
    status, body, _ = call("export_runs", "GET", "", route_params={"id": export["id"]})
    assert status == 200 and body["runs"] == []
    # Omnisend's 400 and 60 a minute, aimed at 97% (388, 58) of a window taken 0.5 s longer
    assert body["requestBudget"] == {"requestsPerMinute": 384.8, "tagRequestsPerMinute": 57.5,
                                     "contactsPerRequest": 100, "emailsPerTagRequest": 250}


@pytest.mark.parametrize(("status", "batches", "failed", "expected"), [
    ("cancelled", 40, {"not sent: the run had ended": 3000}, True),
    ("failed", 1, {"not sent: Omnisend unavailable": 80}, True),
    ("partiallySucceeded", 5, {"outcome unknown": 100, "rejected by Omnisend (400)": 2}, True),
    ("partiallySucceeded", 5, {"rejected by Omnisend (400)": 2, "batch stopped by Omnisend": 40}, False),
    ("failed", 0, {"not sent: over the contract limit": 900}, False),  # the planner's: never in a batch
    ("cancelled", 0, {"not sent: the run had ended": 500}, False),  # cancelled while planning, nothing batched
    ("uploading", 5, {"outcome unknown": 100}, False),  # still going: cancel applies, not retry
    ("succeeded", 5, {}, False),
])
def test_a_run_is_retryable_when_a_retry_would_send_something_again(status, batches, failed, expected):
    from exporter.api.runs import retryable
    from exporter.domain import Run, RunCounts, RunStatus

    counts = RunCounts(batches=batches, failed=sum(failed.values()), failed_by_reason=failed)
    run = Run(id="r", export_id="x", connection_id="c", trigger="manual", status=RunStatus(status), counts=counts,
              created_at=datetime.now(timezone.utc))
    assert retryable(run) is expected
