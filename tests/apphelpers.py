"""Calling the app's HTTP functions the way the Functions host does, for tests."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, timedelta, timezone

import azure.functions as func

from devtools.sample_segment import COLUMNS, write_segment_refresh
from exporter.api.access import DEV_ADMIN_PRINCIPAL, encode_principal
from exporter.domain import email_key
from exporter.planning.mapping import is_valid_email

ADMIN = {"x-ms-client-principal": DEV_ADMIN_PRINCIPAL}
CONTRIBUTOR = {"x-ms-client-principal": encode_principal("marketer@dev", ["Contributor"])}

SAMPLE_MAPPING = {
    "email": "PrimaryEmail",
    "firstName": "FirstName",
    "lastName": "LastName",
    "address": "StreetAddress",
    "city": "City",
    "state": "State",
    "postalCode": "PostCode",
    "country": "Country",
}


def _function(name: str):
    import function_app
    from exporter.devhost.local_runner import user_function

    return user_function(function_app.app, name)


def call(name: str, method: str, path: str, body=None, headers=None, route_params=None, params=None):
    """Invoke HTTP function ``name`` with a real func.HttpRequest; returns (status, parsed body, response)."""
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    req = func.HttpRequest(
        method=method,
        url=f"http://localhost:7071/api/{path}",
        headers=headers if headers is not None else ADMIN,
        params=params or {},
        route_params=route_params or {},
        body=raw,
    )
    res = _function(name)(req)
    text = res.get_body()
    parsed = None
    if text and res.mimetype in ("application/json", "application/problem+json"):
        parsed = json.loads(text)
    return res.status_code, parsed, res


def create_connection(api_key: str, name: str = "Omnisend (test)", **extra) -> dict:
    status, body, _ = call("connections", "POST", "connections", {
        "displayName": name, "apiKey": api_key, "allowContributors": False, "dataPrivacyConsent": True, **extra})
    assert status == 201, body
    return body


def create_export(connection_id: str, container: str, folder: str, segment: str, mapping=None, **extra) -> dict:
    status, body, _ = call("exports", "POST", "exports", {
        "name": f"{segment} to Omnisend", "connectionId": connection_id,
        "source": {"container": container, "folder": folder, "segment": segment},
        "mapping": mapping or SAMPLE_MAPPING, "enabled": True, **extra})
    assert status == 201, body
    return body


def start_run(export_id: str, **params) -> dict:
    """POST /exports/{id}/runs (params: the query string, e.g. dryRun="true"); the 202's body."""
    status, body, _ = call("export_runs", "POST", f"exports/{export_id}/runs", route_params={"id": export_id},
                           params=params or None)
    assert status == 202, body
    return body


def write_refresh(container, profiles, minutes_ago: float, *, segment: str, columns=COLUMNS) -> None:
    """A refresh of `segment` in folder ci, in two partitions, written `minutes_ago` (on the minute)."""
    when = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    write_segment_refresh(container, folder="ci", segment=segment, profiles=profiles, when=when, partitions=2,
                          columns=columns)


def wait_for_run(run_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = call("run", "GET", f"runs/{run_id}", route_params={"id": run_id})
        assert status == 200, body
        if body["status"] in ("succeeded", "partiallySucceeded", "failed", "cancelled") and \
                body["counts"]["batchesDone"] >= body["counts"]["batches"]:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not end in {timeout}s: {body}")
        time.sleep(0.3)


def first_valid_rows(profiles, email_column: str = "PrimaryEmail") -> dict[str, dict]:
    """The profiles whose contacts Omnisend should hold, by email key: valid emails only, and the first
    row of each email (compared case-insensitively, as the app does)."""
    out: dict[str, dict] = {}
    for p in profiles:
        email = p[email_column].strip()
        if is_valid_email(email) and email_key(email) not in out:
            out[email_key(email)] = p
    return out


def report_rows(run_id: str) -> list[dict]:
    """GET /runs/{id}/rejects, parsed: one dict per CSV row (stage, partition, row, email, reason, detail)."""
    status, _, res = call("run_rejects", "GET", "", route_params={"id": run_id})
    assert status == 200
    return list(csv.DictReader(io.StringIO(res.get_body().decode())))


# --- callers, installed services and stored state (helpers for the access and validation tests) ---

ANONYMOUS: dict = {}  # no X-MS-CLIENT-PRINCIPAL header at all


def as_user(name: str, *roles: str) -> dict:
    """Headers of a signed-in user with the given app roles (as App Service Authentication sends them)."""
    return {"x-ms-client-principal": encode_principal(name, list(roles))}


NO_ROLE = as_user("visitor@dev", "Reader")  # signed in, but neither Admin nor Contributor


def use_services(svc):
    """Install ``svc`` for the handlers; returns a callable that puts the previous services back."""
    from exporter import services as services_module

    previous = services_module._services
    services_module.set_services(svc)
    return lambda: services_module.set_services(previous)


def table_rows(storage) -> dict[str, list[dict]]:
    """Every entity of the app's tables (without ETags and timestamps), by table name."""
    out = {}
    for table in storage.app_tables().values():
        out[table.table_name] = sorted((dict(e) for e in table.list_entities()),
                                       key=lambda e: (e["PartitionKey"], e["RowKey"]))
    return out


def stored_texts(storage) -> list[tuple[str, str]]:
    """(where, text) of everything the app stores: each table entity and each run report blob."""
    found = []
    for table, rows in table_rows(storage).items():
        for e in rows:
            found.append((f"table {table} {e['PartitionKey']}/{e['RowKey']}", json.dumps(e, default=str)))
    for blob in storage.artifacts.list_blobs():
        data = storage.artifacts.download_blob(blob.name).readall()
        found.append((f"blob {storage.artifacts.container_name}/{blob.name}", data.decode("utf-8", "replace")))
    return found


def wait_for_final(run_id: str, timeout: float = 60) -> dict:
    """The run once its status is final, whether or not batches are still being accounted for (a run that
    fails while planning never has batches done)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = call("run", "GET", f"runs/{run_id}", route_params={"id": run_id})
        assert status == 200, body
        if body["status"] in ("succeeded", "partiallySucceeded", "failed", "cancelled"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not end in {timeout}s: {body}")
        time.sleep(0.2)


def never_ended_with_open_counts(views) -> None:
    """A run that shows as ended with all its batches counted has counts that add up, at every moment."""
    assert views
    for run in views:
        c = run.counts
        if run.status.is_final and c.batches_done >= c.batches:
            assert c.read == c.accounted, (run.status, c)
