"""Operating connections for months (#15): changing one (PATCH), rotating its key, and secrets that
fail clearly: a key missing from the store, Key Vault denying the app (a role assignment still
propagating), Key Vault unreachable. Real Azurite, the sandbox over HTTP, the real SecretClient
against the fake Key Vault service."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import requests

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter import config
from exporter.domain import RunStatus
from exporter.domain.reasons import REASON_NOT_SENT_KEY_MISSING
from tests.apphelpers import CONTRIBUTOR, call, create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND
from tests.keyvault_fake import make_keyvault_store
from tests.test_dispatch import drain
from tests.test_uploader import as_message, plan_handler, receive, upload_handler

NEW_KEY = "sandbox-rotated-key-9876543210"


def patch(conn_id: str, body, headers=None):
    status, answer, _ = call("connection", "PATCH", f"connections/{conn_id}", body, route_params={"id": conn_id},
                             **({"headers": headers} if headers else {}))
    return status, answer


def refresh(container, rows: int = 250, minutes_ago: int = 5, seed: int = 7) -> None:
    write_segment_refresh(container, folder="ci", segment="Seg", profiles=generate_profiles(rows, seed=seed),
                          when=datetime.now(timezone.utc) - timedelta(minutes=minutes_ago))


def health() -> dict:
    status, body, _ = call("health", "GET", "health")
    assert status == 200
    return body


def test_patch_changes_what_it_names_and_validates_like_create(services, sandbox):
    conn = create_connection(TEST_API_KEY, name="Store")
    create_connection(TEST_API_KEY, name="Other store")
    status, body = patch(conn["id"], {"displayName": "Main store", "allowContributors": True,
                                      "maxProfilesPerExport": 5000})
    assert status == 200 and body["displayName"] == "Main store" and body["allowContributors"] is True
    assert body["maxProfilesPerExport"] == 5000 and body["consentedBy"] == conn["consentedBy"]
    stored = services.connections.get(conn["id"])
    assert (stored.display_name, stored.allow_contributors, stored.max_profiles_per_export) == ("Main store", True, 5000)

    for bad, field in (({"displayName": ""}, "displayName"), ({"dataPrivacyConsent": False}, "dataPrivacyConsent"),
                       ({"color": "red"}, "color"), ({"maxProfilesPerExport": 0}, "maxProfilesPerExport"),
                       ({"apiKey": "two words"}, "apiKey"), ({"displayName": "other STORE"}, "displayName"),
                       ({}, "(body)")):
        status, body = patch(conn["id"], bad)
        assert status == 400 and [e["field"] for e in body["errors"]] == [field], (bad, body)
    assert patch(conn["id"], {"displayName": "X"}, headers=CONTRIBUTOR)[0] == 403
    assert patch("0" * 32, {"displayName": "X"})[0] == 404

    # a key Omnisend refuses is not stored: the old one stays
    status, body = patch(conn["id"], {"apiKey": "not-a-valid-key-123"})
    assert status == 422 and body["errors"][0]["field"] == "apiKey"
    assert services.secrets.get(stored.secret_name) == TEST_API_KEY


def test_turning_contributors_off_stops_them_at_once(services, sandbox, segment_container):
    refresh(segment_container)
    conn = create_connection(TEST_API_KEY, allowContributors=True)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    runs = f"exports/{export['id']}/runs"
    assert call("export", "GET", "", route_params={"id": export["id"]}, headers=CONTRIBUTOR)[0] == 200
    assert patch(conn["id"], {"allowContributors": False})[0] == 200
    assert call("export_runs", "POST", runs, route_params={"id": export["id"]}, headers=CONTRIBUTOR)[0] == 403
    assert call("export", "GET", "", route_params={"id": export["id"]}, headers=CONTRIBUTOR)[0] == 403


def test_a_rotated_key_is_a_new_version_and_workers_switch_at_once_on_a_401(services, workers, sandbox,
                                                                            segment_container):
    store, vault = make_keyvault_store(cache_seconds=300)  # workers keep the key 5 minutes
    services.secrets = store
    sandbox.add_api_key(NEW_KEY, TEST_BRAND)
    refresh(segment_container, minutes_ago=20)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    first = wait_for_run(start_run(export["id"])["runId"])
    assert first["status"] in ("succeeded", "partiallySucceeded") and first["counts"]["confirmed"] > 0

    name = services.connections.get(conn["id"]).secret_name
    other_instance, _ = make_keyvault_store(cache_seconds=300, fake=vault)  # a worker elsewhere, its cache warm
    assert other_instance.get(name) == TEST_API_KEY

    status, body = patch(conn["id"], {"apiKey": NEW_KEY})
    assert status == 200 and "apiKey" not in body and NEW_KEY not in str(body)
    assert [v.value for v in vault.secrets[name]] == [TEST_API_KEY, NEW_KEY]  # a new version of the same secret
    # the old key is deleted in Omnisend; the workers (now the other instance's) still hold it in their cache
    sandbox.revoke_api_key(TEST_API_KEY)
    services.secrets = other_instance
    reads = len(vault.requests_to("GET", f"/secrets/{name}", authorized=True))
    refresh(segment_container, rows=300)  # the same members and 50 more
    second = wait_for_run(start_run(export["id"])["runId"])
    c = second["counts"]
    assert second["status"] in ("succeeded", "partiallySucceeded") and c["failed"] == 0, second
    assert "rejected the API key" not in (second["error"] or "") and c["confirmed"] == c["queued"] > 0
    assert len(vault.requests_to("GET", f"/secrets/{name}", authorized=True)) > reads  # read afresh after the 401
    assert other_instance.get(name) == NEW_KEY


def test_a_key_missing_from_the_store_fails_the_run_saying_how_to_fix_it(services, workers, sandbox,
                                                                         segment_container):
    refresh(segment_container)
    conn = create_connection(TEST_API_KEY, name="Keyless")
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    services.secrets.delete(services.connections.get(conn["id"]).secret_name)  # lost, e.g. deleted by hand
    keys = {k["connectionId"]: k for k in health()["connectionKeys"]}
    assert keys[conn["id"]]["key"] == "missing" and "store it again" in keys[conn["id"]]["detail"]

    run = wait_for_run(start_run(export["id"])["runId"])
    c = run["counts"]
    assert run["status"] == "failed" and c["confirmed"] == 0
    assert c["failedByReason"] == {"not sent: the connection's API key is missing": c["queued"]}
    assert "'Keyless'" in run["error"] and "missing from the key store" in run["error"]
    assert f"PATCH /api/connections/{conn['id']}" in run["error"] and "removed" not in run["error"]

    assert patch(conn["id"], {"apiKey": TEST_API_KEY})[0] == 200
    assert {k["connectionId"]: k["key"] for k in health()["connectionKeys"]}[conn["id"]] == "ok"
    again = wait_for_run(start_run(export["id"])["runId"])
    assert again["counts"]["confirmed"] == c["queued"]


def test_batches_handled_after_the_key_was_found_missing_count_under_that_reason(services, sandbox,
                                                                                segment_container):
    """The first batch finds the key missing and fails the run; the batches behind it (one at a time
    here, in any order on the host) are counted under the same reason, not a vague "the run had ended"."""
    refresh(segment_container, rows=250)
    conn = create_connection(TEST_API_KEY, name="Keyless")
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    services.secrets.delete(services.connections.get(conn["id"]).secret_name)
    run_id = start_run(export["id"])["runId"]
    plan_handler(as_message(receive(services.clients, config.QUEUE_RUNS)))
    handled = drain(services, lambda m: upload_handler(as_message(m)))
    assert sum(1 for b in handled if b["type"] == "send") == 3

    run = services.runs.require(run_id)
    assert run.status is RunStatus.FAILED and run.counts.queued == 245  # 5 of the sample rows are invalid
    assert run.counts.failed_by_reason == {REASON_NOT_SENT_KEY_MISSING: 245}
    assert sandbox.stats(TEST_BRAND)["batchesCreated"] == 0


def test_key_vault_denying_access_for_a_while_is_waited_out(services, workers, sandbox, segment_container):
    services.backoff = lambda attempt: 0.1
    store, vault = make_keyvault_store(cache_seconds=0)
    services.secrets = store
    refresh(segment_container)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    vault.fail_next(4, status=403)  # the role assignment is still propagating
    run = wait_for_run(start_run(export["id"])["runId"])
    assert run["status"] in ("succeeded", "partiallySucceeded") and run["counts"]["failed"] == 0, run


def test_key_vault_denying_access_for_good_fails_the_run_naming_the_role(services, workers, sandbox,
                                                                         segment_container):
    services.backoff = lambda attempt: 0.02
    store, vault = make_keyvault_store(cache_seconds=0)
    services.secrets = store
    refresh(segment_container, rows=120)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    vault.fail_next(10_000, status=403)
    assert {k["connectionId"]: k["key"] for k in health()["connectionKeys"]}[conn["id"]] == "denied"
    run = wait_for_run(start_run(export["id"])["runId"], timeout=90)
    c = run["counts"]
    assert run["status"] == "failed" and c["confirmed"] == 0 and "not sent: Key Vault denied access" in c["failedByReason"]
    assert "Key Vault Secrets User" in run["error"] and "removed" not in run["error"]


def test_key_vault_unreachable_is_transient(services, workers, sandbox, segment_container):
    services.backoff = lambda attempt: 0.1
    store, vault = make_keyvault_store(cache_seconds=0)
    services.secrets = store
    refresh(segment_container)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    vault.fail_next(8, exc=requests.ConnectionError)  # more than the SDK's own retries
    run = wait_for_run(start_run(export["id"])["runId"])
    assert run["status"] in ("succeeded", "partiallySucceeded") and run["counts"]["failed"] == 0, run


@pytest.mark.parametrize("stdin,expect", [(f"{NEW_KEY}\n", 0), ("\n", 1)])
def test_connections_update_from_the_command_line(services, workers, sandbox, stdin, expect):
    import subprocess
    import sys

    from tests.conftest import ROOT

    sandbox.add_api_key(NEW_KEY, TEST_BRAND)
    conn = create_connection(TEST_API_KEY, name="CLI store")
    done = subprocess.run([sys.executable, "-m", "exporter", "connections", "update", conn["id"], "--url",
                           workers.url, "--name", "Renamed", "--contributors", "--key-stdin"], cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=60)
    assert done.returncode == expect, done.stderr
    assert NEW_KEY not in done.stdout + done.stderr
    stored = services.connections.get(conn["id"])
    if expect == 0:
        assert stored.display_name == "Renamed" and stored.allow_contributors
        assert services.secrets.get(stored.secret_name) == NEW_KEY and "accepted the new API key" in done.stderr
    else:
        assert "no API key on standard input" in done.stderr and stored.display_name == "CLI store"
