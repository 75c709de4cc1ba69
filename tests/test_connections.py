"""Connections: what creating one requires (consent, a key Omnisend accepts), where the key lives and
that it never shows up anywhere else, the contract limit, and what removing a connection does, down to
a run that is uploading at that moment.

Through the app's own HTTP functions, against Azurite, the Omnisend sandbox over real HTTP, the local
runner's queue workers, and (for Key Vault) the real SecretClient talking to tests/keyvault_fake.py.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import socket
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.domain import parse_iso
from exporter.domain.reasons import REASON_NOT_SENT_OVER_LIMIT
from exporter.lifecycle.schedule import run_schedule
from exporter.services import Services
from exporter.state.secrets import SecretNotFoundError
from tests.apphelpers import (
    CONTRIBUTOR,
    SAMPLE_MAPPING,
    call,
    create_connection,
    create_export,
    report_rows,
    start_run,
    stored_texts,
    table_rows,
    use_services,
    wait_for_final,
    wait_for_run,
)
from tests.conftest import TEST_API_KEY, TEST_BRAND
from tests.keyvault_fake import make_keyvault_store

FIVE_MINUTES_AGO = datetime.now(timezone.utc) - timedelta(minutes=5)


def body(**changes) -> dict:
    data = {"displayName": "Omnisend EU", "apiKey": TEST_API_KEY, "dataPrivacyConsent": True}
    data.update(changes)
    return data


def dev_secrets(services) -> dict:
    """What the development secret store holds (it is the only place a key may be in dev mode)."""
    return dict(services.secrets._values)


def nothing_saved(services) -> None:
    assert services.connections.list() == []
    assert dev_secrets(services) == {}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- create ---------------------------------------------------------------------------------------


def test_create_records_consent_and_keeps_the_key_only_in_the_secret_store(services):
    before = datetime.now(timezone.utc)
    status, created, res = call("connections", "POST", "connections", body(displayName="  Omnisend EU  "))
    after = datetime.now(timezone.utc)
    assert status == 201, created
    assert set(created) == {"id", "displayName", "allowContributors", "dataPrivacyConsent", "consentedBy",
                            "consentedAt", "createdAt", "maxProfilesPerExport"}
    assert created["displayName"] == "Omnisend EU"
    assert created["allowContributors"] is False  # default: admins only
    assert created["dataPrivacyConsent"] is True
    assert created["consentedBy"] == "local-admin@dev"  # the caller
    assert before <= parse_iso(created["consentedAt"]) <= after
    assert created["maxProfilesPerExport"] is None
    assert res.headers["Location"].endswith(f"/api/connections/{created['id']}")

    conn = services.connections.get(created["id"])
    assert conn.consented_by == "local-admin@dev" and before <= conn.consented_at <= after
    assert dev_secrets(services) == {conn.secret_name: TEST_API_KEY}
    assert services.secrets.get(conn.secret_name) == TEST_API_KEY
    # shown again, never with the key
    status, shown, _ = call("connection", "GET", "", route_params={"id": created["id"]})
    assert status == 200 and shown == created
    assert call("connections", "GET", "connections")[1]["connections"] == [created]


def test_allow_contributors_and_limit_are_recorded(services):
    created = create_connection(TEST_API_KEY, name="Shared", allowContributors=True, maxProfilesPerExport=25000)
    assert created["allowContributors"] is True and created["maxProfilesPerExport"] == 25000
    conn = services.connections.get(created["id"])
    assert conn.allow_contributors is True and conn.max_profiles_per_export == 25000
    listed = call("connections", "GET", "connections", headers=CONTRIBUTOR)[1]["connections"]
    assert listed == [{"id": created["id"], "displayName": "Shared"}]  # no details for a contributor


def _refused(services, payload: dict, field: str, code: str) -> dict:
    status, problem, res = call("connections", "POST", "connections", payload)
    assert status == 400, (payload, problem)
    assert [(e["field"], e["code"]) for e in problem["errors"]] == [(field, code)], (payload, problem)
    nothing_saved(services)
    return problem


def _without(payload: dict, field: str, value):
    """``payload`` with ``field`` set to ``value``, or without it when ``value`` is None."""
    payload = dict(payload)
    payload.pop(field) if value is None else payload.update({field: value})
    return payload


# Each case runs against the same clean state (a refused create saves nothing, which each case checks).
DISPLAY_NAMES = [(None, "required"), ("", "invalid"), ("   ", "invalid"), ("x" * 101, "invalid"), (5, "type"),
                 (["a"], "type")]
API_KEYS = [(None, "required"), ("", "invalid"), ("   ", "invalid"), ("key with spaces", "invalid"),
            ("line\nbreak", "invalid"), ("kläüt-key", "invalid"), ("x" * 501, "invalid"), (12345, "type"),
            ({"key": "x"}, "type")]
CONSENTS = [(None, "required"), (False, "invalid"), ("true", "type"), (1, "type")]
LIMITS = [(0, "invalid"), (-5, "invalid"), (10**12, "invalid"), (2**63, "invalid"), (True, "type"), (1.5, "type"),
          ("100", "type")]


def test_display_name_is_required_and_1_to_100_characters(services):
    for name, code in DISPLAY_NAMES:
        _refused(services, _without(body(), "displayName", name), "displayName", code)


def test_display_name_boundaries_are_accepted(services):
    assert create_connection(TEST_API_KEY, name="x")["displayName"] == "x"
    assert create_connection(TEST_API_KEY, name="y" * 100)["displayName"] == "y" * 100


def test_display_name_is_unique_ignoring_case(services):
    first = create_connection(TEST_API_KEY, name="Omnisend EU")
    for name in ("omnisend eu", "OMNISEND EU", "  Omnisend EU "):
        status, problem, _ = call("connections", "POST", "connections", body(displayName=name))
        assert status == 400, problem
        assert problem["errors"] == [{"field": "displayName", "code": "duplicate",
                                      "message": f"a connection named {name.strip()!r} exists"}]
    assert [c.id for c in services.connections.list()] == [first["id"]]
    assert len(dev_secrets(services)) == 1


def test_api_key_is_required_and_never_echoed(services):
    for key, code in API_KEYS:
        problem = _refused(services, _without(body(), "apiKey", key), "apiKey", code)
        if isinstance(key, str) and key.strip():
            assert key not in json.dumps(problem) and key.strip() not in json.dumps(problem)


def test_data_privacy_consent_must_be_true(services):
    for consent, code in CONSENTS:
        problem = _refused(services, _without(body(), "dataPrivacyConsent", consent), "dataPrivacyConsent", code)
        if code == "invalid":
            message = problem["errors"][0]["message"]
            assert "personal data" in message and "Omnisend" in message


def test_max_profiles_per_export_must_be_a_positive_whole_number(services):
    for limit, code in LIMITS:
        _refused(services, body(maxProfilesPerExport=limit), "maxProfilesPerExport", code)


def test_max_profiles_per_export_is_optional(services):
    assert create_connection(TEST_API_KEY, name="A", maxProfilesPerExport=None)["maxProfilesPerExport"] is None
    assert create_connection(TEST_API_KEY, name="B", maxProfilesPerExport=1)["maxProfilesPerExport"] == 1


# --- Connect: the key is checked with Omnisend before anything is saved ----------------------------


def test_a_key_omnisend_rejects_is_422_and_nothing_is_saved(services, sandbox):
    bad_key = "revoked-key-" + uuid.uuid4().hex
    status, problem, res = call("connections", "POST", "connections", body(apiKey=bad_key))
    assert status == 422, problem
    assert res.mimetype == "application/problem+json" and problem["title"] == "API key rejected"
    assert "not saved" in problem["detail"] and "Omnisend rejected this API key" in problem["detail"]
    assert [(e["field"], e["code"]) for e in problem["errors"]] == [("apiKey", "rejected")]
    assert bad_key not in res.get_body().decode()
    nothing_saved(services)


def test_unreachable_omnisend_is_502_a_different_error_and_nothing_is_saved(services):
    url = f"http://127.0.0.1:{closed_port()}/api/"
    unreachable = Services(dataclasses.replace(services.settings, omnisend_api_url=url), services.clients,
                           services.secrets)
    restore = use_services(unreachable)
    try:
        status, problem, res = call("connections", "POST", "connections", body())
    finally:
        restore()
    assert status == 502, problem
    assert problem["title"] == "Omnisend unreachable" and "nothing was saved" in problem["detail"]
    assert TEST_API_KEY not in res.get_body().decode()
    nothing_saved(services)


def test_omnisend_failing_the_check_is_502_and_nothing_is_saved(services, sandbox):
    for forced, title in ((503, "Omnisend unavailable"), (404, "Omnisend error")):
        sandbox.faults.force_status(forced, route="GET /contacts")
        status, problem, res = call("connections", "POST", "connections", body())
        assert status == 502 and problem["title"] == title, problem
        assert "othing was saved" in problem["detail"] and TEST_API_KEY not in res.get_body().decode()
        nothing_saved(services)


def test_the_check_happens_before_the_duplicate_name_is_stored(services, sandbox):
    """A rejected key leaves the name free."""
    assert call("connections", "POST", "connections", body(apiKey="wrong-key"))[0] == 422
    assert create_connection(TEST_API_KEY, name="Omnisend EU")["displayName"] == "Omnisend EU"


# --- the key never appears anywhere but the secret store -------------------------------------------


def _log_texts(records: list[logging.LogRecord]) -> list[str]:
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    out = []
    for r in records:
        out.append(fmt.format(r))  # message, args and any traceback
        out.append(repr({k: v for k, v in vars(r).items() if k not in ("msg", "args", "exc_info")}))  # extras
    return out


def test_the_key_never_appears_in_responses_logs_tables_or_reports(services, workers, sandbox, segment_container,
                                                                   caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    other_key = "second-key-" + uuid.uuid4().hex
    sandbox.add_api_key(other_key, "brand-two")
    responses = []

    def api(*args, **kwargs):
        status, parsed, res = call(*args, **kwargs)
        responses.append(res.get_body().decode("utf-8", "replace") + repr(dict(res.headers)))
        return status, parsed, res

    profiles = list(generate_profiles(300, seed=5, invalid_share=0.05))
    write_segment_refresh(segment_container, folder="ci", segment="Keys", profiles=profiles, when=FIVE_MINUTES_AGO)
    container = segment_container.container_name

    assert api("connections", "POST", "connections", body(apiKey=TEST_API_KEY, displayName="Main"))[0] == 201
    conn_id = services.connections.list()[0].id
    assert api("connections", "POST", "connections", body(apiKey=TEST_API_KEY + "-wrong", displayName="Bad"))[0] == 422
    assert api("connections", "POST", "connections", body(apiKey=f" {TEST_API_KEY} x"))[0] == 400
    assert api("connections", "POST", "connections", body(apiKey=TEST_API_KEY, displayName="main"))[0] == 400
    assert api("connections", "POST", "connections", body(apiKey=TEST_API_KEY, unknown=TEST_API_KEY[:3]))[0] == 400
    assert api("connections", "POST", "connections", body(apiKey=other_key, displayName="Two"))[0] == 201
    status, export, _ = api("exports", "POST", "exports", {
        "name": "Keys", "connectionId": conn_id, "source": {"container": container, "folder": "ci", "segment": "Keys"},
        "mapping": SAMPLE_MAPPING, "enabled": True})
    assert status == 201
    status, run, _ = api("export_runs", "POST", "", route_params={"id": export["id"]})
    assert status == 202
    run = wait_for_run(run["runId"])
    assert run["status"] == "partiallySucceeded" and run["counts"]["confirmed"] > 0
    api("connections", "GET", "connections")
    api("connection", "GET", "", route_params={"id": conn_id})
    api("exports", "GET", "exports")
    api("export", "GET", "", route_params={"id": export["id"]})
    api("export_runs", "GET", "", route_params={"id": export["id"]})
    api("run", "GET", "", route_params={"id": run["runId"]})
    api("run_rejects", "GET", "", route_params={"id": run["runId"]})
    stored = stored_texts(services.clients)  # before the delete: the run, its batches and its report exist
    assert any(where.startswith("table batches") for where, _ in stored)
    assert any(where.endswith("/rejects.csv") for where, _ in stored)
    assert api("connection", "DELETE", "", route_params={"id": conn_id})[0] == 204
    stored += stored_texts(services.clients)

    assert caplog.records, "the scan must have seen log records"
    for key in (TEST_API_KEY, other_key):
        for text in responses:
            assert key not in text
        for text in _log_texts(caplog.records):
            assert key not in text, text[:500]
        for where, text in stored:
            assert key not in text, where
    # ... and the secret store is the one place it is
    assert list(dev_secrets(services).values()) == [other_key]


def test_keys_go_to_key_vault_and_are_deleted_from_it(services, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    store, vault = make_keyvault_store()
    kv_settings = dataclasses.replace(services.settings, key_vault_url=vault.vault_url, dev_mode=False,
                                      platform_auth_enabled=True)
    restore = use_services(Services(kv_settings, services.clients, store))
    try:
        status, created, res = call("connections", "POST", "connections", body())
        assert status == 201, created
        secret_name = f"omnisend-connection-{created['id']}"
        assert vault.current_value(secret_name) == TEST_API_KEY
        assert vault.requests_to("PUT", f"/secrets/{secret_name}", authorized=True)

        rejected = call("connections", "POST", "connections", body(apiKey="nope-" + uuid.uuid4().hex, displayName="X"))
        assert rejected[0] == 422 and len(vault.secrets) == 1  # a rejected key never reaches the vault

        assert call("connection", "DELETE", "", route_params={"id": created["id"]})[0] == 204
        assert vault.current_value(secret_name) is None
        assert secret_name.lower() in vault.deleted  # soft-deleted, as Key Vault does (not purged)
        assert vault.requests_to("DELETE", f"/secrets/{secret_name}", authorized=True)
        assert vault.requests_to("DELETE", "/deletedsecrets/") == []
        with pytest.raises(SecretNotFoundError):
            store.get(secret_name)
        assert call("connection", "GET", "", route_params={"id": created["id"]})[0] == 404
    finally:
        restore()
    for text in _log_texts(caplog.records) + [t for _, t in stored_texts(services.clients)]:
        assert TEST_API_KEY not in text


# --- the contract limit -------------------------------------------------------------------------


def test_a_run_over_the_contract_limit_fails_before_sending_anything(services, workers, sandbox, segment_container):
    profiles = list(generate_profiles(250, seed=9, invalid_share=0.04))  # 240 valid, unique emails
    write_segment_refresh(segment_container, folder="ci", segment="Limited", profiles=profiles, when=FIVE_MINUTES_AGO)
    container = segment_container.container_name
    small = create_connection(TEST_API_KEY, name="Small contract", maxProfilesPerExport=239)
    exact = create_connection(TEST_API_KEY, name="Exact contract", maxProfilesPerExport=240)
    over = create_export(small["id"], container, "ci", "Limited")
    fits = create_export(exact["id"], container, "ci", "Limited")

    run = wait_for_final(start_run(over["id"])["runId"])
    assert run["status"] == "failed"
    assert "240 valid profiles" in run["error"] and "239 allowed" in run["error"] and "Small contract" in run["error"]
    assert "Nothing was sent" in run["error"]
    assert run["counts"]["sent"] == 0 and run["counts"]["batchesSent"] == 0 and run["counts"]["queued"] == 240
    assert sandbox.contacts(TEST_BRAND) == [] and sandbox.stats(TEST_BRAND)["batchesCreated"] == 0

    run = wait_for_run(start_run(fits["id"])["runId"])  # exactly at the limit is allowed
    assert run["status"] == "partiallySucceeded" and run["counts"]["confirmed"] == 240, run
    assert len(sandbox.contacts(TEST_BRAND)) == 240


def test_a_run_over_the_contract_limit_reports_each_contact_it_did_not_send(services, workers, sandbox,
                                                                          segment_container):
    container = segment_container.container_name
    people = list(generate_profiles(400, seed=23, invalid_share=0, duplicate_share=0))
    write_segment_refresh(segment_container, folder="ci", segment="Grows", profiles=people[:150],
                          when=FIVE_MINUTES_AGO - timedelta(minutes=10), partitions=2)
    conn = create_connection(TEST_API_KEY, name="Contract", maxProfilesPerExport=300)
    export = create_export(conn["id"], container, "ci", "Grows")
    first = wait_for_run(start_run(export["id"])["runId"])
    assert first["status"] == "succeeded" and first["counts"]["confirmed"] == 150, first
    # the segment grows past the limit; 20 members left it (their tag removal is spooled as well)
    write_segment_refresh(segment_container, folder="ci", segment="Grows", profiles=people[20:],
                          when=FIVE_MINUTES_AGO, partitions=2)
    requests_before = sandbox.stats(TEST_BRAND)["requests"]
    run = wait_for_final(start_run(export["id"])["runId"])
    c = run["counts"]
    assert run["status"] == "failed" and "380 valid profiles" in run["error"] and run["countsFinal"] is True
    assert c["skipped"] == 130 and c["queued"] == 250 and c["failedByReason"] == {REASON_NOT_SENT_OVER_LIMIT: 250}
    assert c["read"] == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]

    not_sent = [r for r in report_rows(run["runId"]) if r["reason"] == REASON_NOT_SENT_OVER_LIMIT]
    assert len(not_sent) == c["failed"]
    assert all(r["stage"] == "planning" and "380 valid profiles" in r["detail"] for r in not_sent)
    assert sorted(r["email"] for r in not_sent) == sorted(p["PrimaryEmail"].strip() for p in people[150:])
    assert len({(r["partition"], r["row"]) for r in not_sent}) == 250  # each names its own row
    assert sandbox.stats(TEST_BRAND)["requests"] == requests_before  # nothing sent, no tag removed
    stored = {c["email"]: c for c in sandbox.contacts(TEST_BRAND)}
    assert len(stored) == 150 and all("Grows" in stored[p["PrimaryEmail"].lower()]["tags"] for p in people[:20])


# --- delete --------------------------------------------------------------------------------------


def test_delete_removes_the_secret_and_disables_its_exports_keeping_everything_else(services, segment_container):
    write_segment_refresh(segment_container, folder="ci", segment="Del", profiles=list(generate_profiles(20)),
                          when=FIVE_MINUTES_AGO)
    container = segment_container.container_name
    doomed = create_connection(TEST_API_KEY, name="Doomed")
    kept = create_connection(TEST_API_KEY, name="Kept")
    a = create_export(doomed["id"], container, "ci", "Del")
    b = create_export(doomed["id"], container, "ci", "Del", mapping={"email": "PrimaryEmail"}, enabled=False,
                      tag="Del b")  # one tag per connection
    c = create_export(kept["id"], container, "ci", "Del", tag="Del c")  # a moves here later: one tag per connection
    secret = services.connections.get(doomed["id"]).secret_name
    kept_rows = table_rows(services.clients)["exports"]

    status, problem, _ = call("connection", "DELETE", "", headers=CONTRIBUTOR, route_params={"id": doomed["id"]})
    assert status == 403 and services.secrets.get(secret) == TEST_API_KEY
    status, _, _ = call("connection", "DELETE", "", route_params={"id": doomed["id"]})
    assert status == 204

    with pytest.raises(SecretNotFoundError):
        services.secrets.get(secret)
    assert services.connections.get(doomed["id"]) is None
    assert call("connection", "GET", "", route_params={"id": doomed["id"]})[0] == 404
    assert call("connection", "DELETE", "", route_params={"id": doomed["id"]})[0] == 404
    for before in (a, b):
        after = call("export", "GET", "", route_params={"id": before["id"]})[1]
        assert after["enabled"] is False
        assert after["disabledReason"].startswith("Connection 'Doomed' was removed by local-admin@dev at ")
        unchanged = {k: v for k, v in before.items() if k not in ("enabled", "disabledReason", "updatedAt", "notices")}
        assert {k: after[k] for k in unchanged} == unchanged  # nothing else about the export is lost
    assert call("export", "GET", "", route_params={"id": c["id"]})[1] == {
        k: v for k, v in c.items() if k != "notices"}
    assert [r for r in table_rows(services.clients)["exports"] if r["RowKey"] == c["id"]] == \
        [r for r in kept_rows if r["RowKey"] == c["id"]]
    assert services.secrets.get(services.connections.get(kept["id"]).secret_name) == TEST_API_KEY

    status, problem, _ = call("export_runs", "POST", "", route_params={"id": a["id"]})
    assert status == 409 and problem["title"] == "Export disabled" and "'Doomed' was removed" in problem["detail"]
    # choosing another connection brings the export back
    payload = {k: a[k] for k in ("name", "source", "mapping")} | {"connectionId": kept["id"], "enabled": True}
    status, moved, _ = call("export", "PUT", "", payload, route_params={"id": a["id"]})
    assert status == 200 and moved["enabled"] is True and moved["disabledReason"] is None
    payload["connectionId"] = doomed["id"]
    status, problem, _ = call("export", "PUT", "", payload, route_params={"id": b["id"]})
    assert status == 400 and problem["errors"][0]["field"] == "connectionId"


def test_delete_during_a_run_stops_it_from_sending(services, workers, sandbox, segment_container):
    rows = 15_000  # 149 batches; giving up each unsent one costs a few storage calls
    profiles = generate_profiles(rows, seed=21, invalid_share=0.01)
    write_segment_refresh(segment_container, folder="ci", segment="Big", profiles=profiles, when=FIVE_MINUTES_AGO,
                          partitions=3)
    conn = create_connection(TEST_API_KEY, name="Big")
    secret = services.connections.get(conn["id"]).secret_name
    export = create_export(conn["id"], segment_container.container_name, "ci", "Big")
    run_id = start_run(export["id"])["runId"]

    deadline = time.monotonic() + 60
    while True:  # wait until Omnisend has accepted the first batches, then remove the destination
        run = services.runs.get(run_id)
        if run.counts.batches_sent > 0:
            break
        assert not run.status.is_final and time.monotonic() < deadline, run
        time.sleep(0.02)
    assert call("connection", "DELETE", "", route_params={"id": conn["id"]})[0] == 204

    run = wait_for_run(run_id, timeout=90)
    c = run["counts"]
    assert c["read"] == rows and c["batches"] == -(-c["queued"] // 100) and c["batchesDone"] == c["batchesSent"] == c["batches"]
    assert c["read"] == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]  # adds up
    assert c["failed"] == sum(c["failedByReason"].values())
    not_sent = c["failedByReason"].get("not sent: connection removed", 0)
    assert not_sent > c["queued"] // 2, c  # most batches were never sent
    assert c["sent"] + not_sent == c["queued"]
    stored = sandbox.contacts(TEST_BRAND)
    assert len(stored) < c["queued"]
    assert len(stored) <= c["sent"]  # only what Omnisend had accepted before the removal landed
    assert sandbox.stats(TEST_BRAND)["batchItemsProcessed"] <= c["sent"]
    assert run["status"] in ("failed", "partiallySucceeded")
    assert "'Big' was removed" in run["error"] and "not sent" in run["error"], run["error"]

    status, _, res = call("run_rejects", "GET", "", route_params={"id": run_id})
    report = list(csv.DictReader(io.StringIO(res.get_body().decode())))
    assert sum(1 for r in report if r["reason"] == "not sent: connection removed") == not_sent
    assert sum(1 for r in report if r["stage"] == "upload") == c["failed"]

    # the batches Omnisend had accepted were read with the key kept for it (#14 item 4): what landed is
    # confirmed, not "outcome unknown"
    assert not any(reason.startswith("outcome unknown") for reason in c["failedByReason"]), c
    assert c["confirmed"] == len(stored)
    # a retry cannot send with a removed connection: 409, and why
    status, body, _ = call("run_retry", "POST", "", route_params={"id": run_id})
    assert status == 409 and "was removed" in body["detail"] and "cannot be sent again" in body["detail"], body
    # the key stays only while results are read: once the counts are final, the timer's tick deletes it
    deadline = time.monotonic() + 30
    while not services.runs.get(run_id).counts_final:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert services.secrets.get(secret) == TEST_API_KEY and services.connections.retired.get(conn["id"])
    run_schedule(services)
    with pytest.raises(SecretNotFoundError):
        services.secrets.get(secret)
    assert services.connections.retired.get(conn["id"]) is None
