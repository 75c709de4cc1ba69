"""Who may do what: the permission table of issue 3, cell by cell, through the app's own HTTP functions.

Rows are caller kinds, columns are endpoints. Every cell runs against a fresh world in Azurite (two
connections, one that allows contributors and one for admins only, each with exports and runs) and
checks the status, the problem+json body of a refusal, that a refused call changed nothing, and that
an allowed call did what it says.

The trusted rows run in two configurations: the local runner's development mode, and the production
configuration (App Service Authentication on, ``WEBSITE_AUTH_ENABLED=true``, keys in Key Vault through
the real SecretClient against tests/keyvault_fake.py). The forged-header row runs with neither.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from devtools.sample_segment import COLUMNS, generate_profiles, write_segment_refresh
from exporter import config
from exporter.api.access import ROLE_ADMIN, ROLE_CONTRIBUTOR
from exporter.config import ConfigurationError, load_settings
from exporter.domain import Connection, Export, Mapping, Run, RunCounts, RunStatus, Source, new_id, utcnow
from exporter.lifecycle.start import new_run_id
from exporter.services import Services, build_services
from exporter.state.clients import StorageClients
from exporter.state.secrets import SecretNotFoundError
from tests.apphelpers import ADMIN, ANONYMOUS, CONTRIBUTOR, NO_ROLE, as_user, call, table_rows, use_services
from tests.conftest import DEV_STORAGE, TEST_API_KEY
from tests.keyvault_fake import make_keyvault_store

SEGMENT = "AccessSeg"
MAPPING = {"email": "PrimaryEmail", "firstName": "FirstName"}


# --- the three configurations --------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(azurite_storage):
    """A small settled segment refresh (model.json layout) that exports can point at."""
    from azure.storage.blob import BlobServiceClient

    blobs = BlobServiceClient.from_connection_string(azurite_storage)
    container = blobs.create_container(f"access{uuid.uuid4().hex[:10]}")
    write_segment_refresh(container, folder="ci", segment=SEGMENT, profiles=list(generate_profiles(20, seed=3)),
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))
    yield Source(container=container.container_name, folder="ci", segment=SEGMENT)
    container.delete_container()


@pytest.fixture(scope="module")
def modes(azurite_storage, module_sandbox):
    """Services per configuration: dev (local runner), platform (production) and off (auth not configured)."""
    env = {"AzureWebJobsStorage": DEV_STORAGE, "OMNISEND_API_URL": module_sandbox.url, "REFRESH_SETTLE_SECONDS": "0",
           "BATCH_CHECK_DELAY_SECONDS": "1", "OMNISEND_TIMEOUT_SECONDS": "5"}
    dev = build_services(load_settings({**env, "EXPORTER_DEV_MODE": "1"}))
    dev.clients.ensure_resources()
    store, vault = make_keyvault_store()
    platform_settings = load_settings({**env, "WEBSITE_AUTH_ENABLED": "true", "KEY_VAULT_URL": vault.vault_url})
    assert platform_settings.platform_auth_enabled and not platform_settings.dev_mode
    platform = Services(platform_settings, StorageClients(platform_settings), store)
    off_settings = load_settings(env)
    assert not off_settings.platform_auth_enabled and not off_settings.dev_mode
    off = Services(off_settings, StorageClients(off_settings), store)
    return {"dev": dev, "platform": platform, "off": off}


# --- the world every cell starts from ------------------------------------------------------------


@dataclass
class Side:
    """One connection with an export that has a finished run, and an export with a run in progress."""

    connection: Connection
    export: Export  # has a finished run (runs can be started, listed, read)
    busy_export: Export  # has a run uploading (can be cancelled)
    done_run: Run
    busy_run: Run


def reset_state(storage) -> None:
    """Empty the app's tables and queues (the resources exist already: cheaper than clear_app_state)."""
    for table in storage.app_tables().values():
        for e in table.list_entities(select=["PartitionKey", "RowKey"]):
            table.delete_entity(e["PartitionKey"], e["RowKey"])
    for q in (storage.queue(config.QUEUE_RUNS), storage.queue(config.QUEUE_BATCHES)):
        q.clear_messages()


def build_world(modes: dict[str, Services], source: Source) -> dict[str, Side]:
    """The same world for every configuration: one set of tables, the key in every configuration's store."""
    svc = modes["dev"]
    reset_state(svc.clients)
    now = utcnow()
    sides = {}
    for key, allow in (("open", True), ("closed", False)):
        conn = Connection(id=new_id(), display_name=f"{key.title()} connection", allow_contributors=allow,
                          data_privacy_consent=True, consented_by="admin@contoso", consented_at=now, created_at=now)
        for store in {id(m.secrets): m.secrets for m in modes.values()}.values():
            store.set(conn.secret_name, TEST_API_KEY)
        svc.connections.put(conn)
        exports = []
        for name in ("main", "busy"):
            x = Export(id=new_id(), name=f"{key} {name}", connection_id=conn.id, source=source,
                       mapping=Mapping.from_api(MAPPING), enabled=True, created_at=now, updated_at=now)
            svc.exports.put(x)
            exports.append(x)
        runs = []
        for x, status in ((exports[0], RunStatus.SUCCEEDED), (exports[1], RunStatus.UPLOADING)):
            r = Run(id=new_run_id(), export_id=x.id, connection_id=conn.id, trigger="manual", status=status,
                    counts=RunCounts(), created_at=now, started_at=now,
                    finished_at=now if status.is_final else None)
            svc.runs.create(r)
            runs.append(r)
        sides[key] = Side(conn, exports[0], exports[1], runs[0], runs[1])
    return sides


def export_body(side: Side, source: Source, name: str = "Changed") -> dict:
    """An export body with a tag of its own: the world has several exports of one segment per connection."""
    return {"name": name, "connectionId": side.connection.id, "source": source.to_api(), "mapping": MAPPING,
            "enabled": True, "tag": f"{name} {uuid.uuid4().hex[:8]}"}


# --- endpoints -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    label: str
    function: str
    method: str
    target: str | None = None  # which object of the side the route id names
    query: dict | None = None  # query parameters; "{container}" stands for the source's container

    def route(self, side: Side) -> dict:
        ids = {"connection": side.connection.id, "export": side.export.id, "done_run": side.done_run.id,
               "busy_run": side.busy_run.id}
        return {"id": ids[self.target]} if self.target else {}

    def params(self, source: Source) -> dict:
        return {k: v.replace("{container}", source.container) for k, v in (self.query or {}).items()}

    def body(self, side: Side, source: Source):
        if self.label == "POST /connections":
            return {"displayName": f"New {uuid.uuid4().hex[:6]}", "apiKey": TEST_API_KEY, "dataPrivacyConsent": True}
        if self.label in ("POST /exports", "PUT /exports/{id}"):
            return export_body(side, source)
        return None


ENDPOINTS = [
    Endpoint("GET /connections", "connections", "GET"),
    Endpoint("POST /connections", "connections", "POST"),
    Endpoint("GET /connections/{id}", "connection", "GET", "connection"),
    Endpoint("DELETE /connections/{id}", "connection", "DELETE", "connection"),
    Endpoint("GET /exports", "exports", "GET"),
    Endpoint("POST /exports", "exports", "POST"),
    Endpoint("GET /exports/{id}", "export", "GET", "export"),
    Endpoint("PUT /exports/{id}", "export", "PUT", "export"),
    Endpoint("DELETE /exports/{id}", "export", "DELETE", "export"),
    Endpoint("POST /exports/{id}/runs", "export_runs", "POST", "export"),
    Endpoint("GET /exports/{id}/runs", "export_runs", "GET", "export"),
    Endpoint("GET /runs/{id}", "run", "GET", "done_run"),
    Endpoint("GET /runs/{id}/rejects", "run_rejects", "GET", "done_run"),
    Endpoint("POST /runs/{id}/cancel", "run_cancel", "POST", "busy_run"),
    Endpoint("GET /health", "health", "GET"),
    Endpoint("GET /me", "me", "GET"),
    Endpoint("GET /segments/columns", "segment_columns", "GET",
             query={"container": "{container}", "folder": "ci", "segment": SEGMENT}),
    Endpoint("GET /segments", "segments", "GET", query={"container": "{container}", "folder": "ci"}),
    Endpoint("GET /segments/containers", "segment_containers", "GET", query={"prefix": "{container}"}),
]
BY_LABEL = {e.label: e for e in ENDPOINTS}


@dataclass(frozen=True)
class CallerKind:
    key: str
    headers: dict
    side: str  # which connection's objects the calls name
    modes: tuple[str, ...]


CALLERS = [
    CallerKind("admin", as_user("alice@contoso", ROLE_ADMIN), "closed", ("dev", "platform")),
    CallerKind("contributor, connection allows contributors", CONTRIBUTOR, "open", ("dev", "platform")),
    CallerKind("contributor, admins-only connection", CONTRIBUTOR, "closed", ("dev", "platform")),
    CallerKind("no principal", ANONYMOUS, "open", ("dev", "platform")),
    CallerKind("neither role", NO_ROLE, "open", ("dev", "platform")),
    CallerKind("forged admin header, platform auth off", ADMIN, "open", ("off",)),
]

# The permission table. Columns, in order: the CALLERS above.
#                                 admin c-open c-closed anon  none forged
PERMISSIONS = {
    "GET /connections":            (200, 200, 200, 401, 403, 500),
    "POST /connections":           (201, 403, 403, 401, 403, 500),
    "GET /connections/{id}":       (200, 200, 403, 401, 403, 500),
    "DELETE /connections/{id}":    (204, 403, 403, 401, 403, 500),
    "GET /exports":                (200, 200, 200, 401, 403, 500),
    "POST /exports":               (201, 201, 403, 401, 403, 500),
    "GET /exports/{id}":           (200, 200, 403, 401, 403, 500),
    "PUT /exports/{id}":           (200, 200, 403, 401, 403, 500),
    "DELETE /exports/{id}":        (204, 204, 403, 401, 403, 500),
    "POST /exports/{id}/runs":     (202, 202, 403, 401, 403, 500),
    "GET /exports/{id}/runs":      (200, 200, 403, 401, 403, 500),
    "GET /runs/{id}":              (200, 200, 403, 401, 403, 500),
    "GET /runs/{id}/rejects":      (200, 200, 403, 401, 403, 500),
    "POST /runs/{id}/cancel":      (202, 202, 403, 401, 403, 500),
    "GET /health":                 (200, 200, 200, 401, 403, 500),
    "GET /me":                     (200, 200, 200, 401, 403, 500),
    "GET /segments/columns":       (200, 200, 200, 401, 403, 500),
    "GET /segments":               (200, 200, 200, 401, 403, 500),  # c-closed: the world's open connection
    "GET /segments/containers":    (200, 200, 200, 401, 403, 500),
}
assert set(PERMISSIONS) == set(BY_LABEL)

# What a 403 tells a contributor they may not do with an admins-only connection.
REFUSED_ACTION = {
    "GET /connections/{id}": "see this connection",
    "POST /exports": "create exports with it",
    "GET /exports/{id}": "see exports that use it",
    "PUT /exports/{id}": "change exports that use it",
    "DELETE /exports/{id}": "delete exports that use it",
    "POST /exports/{id}/runs": "run exports that use it",
    "GET /exports/{id}/runs": "see runs of exports that use it",
    "GET /runs/{id}": "see or cancel runs that use it",
    "GET /runs/{id}/rejects": "see or cancel runs that use it",
    "POST /runs/{id}/cancel": "see or cancel runs that use it",
}

CELLS = [
    pytest.param(label, caller, mode, PERMISSIONS[label][i], id=f"{label} | {caller.key} | {mode}")
    for label in PERMISSIONS
    for i, caller in enumerate(CALLERS)
    for mode in caller.modes
]


@pytest.fixture
def installed(modes):
    restores = []

    def install(mode: str) -> Services:
        restores.append(use_services(modes[mode]))
        return modes[mode]

    yield install
    for restore in reversed(restores):
        restore()


@pytest.fixture(scope="module")
def world_cache():
    return {}


@pytest.fixture
def world(modes, source, world_cache):
    """The pristine world; rebuilt only after a cell that may have changed it (reads change nothing)."""
    if world_cache.get("world") is None:
        world_cache["world"] = build_world(modes, source)
    return world_cache["world"]


@pytest.fixture
def fresh_world(modes, source, world_cache):
    world_cache["world"] = None
    yield build_world(modes, source)
    world_cache["world"] = None


def secret_exists(svc: Services, conn: Connection) -> bool:
    try:
        svc.secrets.get(conn.secret_name)
        return True
    except SecretNotFoundError:
        return False


@pytest.mark.parametrize("label, caller, mode, expected", CELLS)
def test_permission_table(label, caller, mode, expected, installed, source, world, world_cache):
    svc = installed(mode)
    side = world[caller.side]
    other = world["open" if caller.side == "closed" else "closed"]
    endpoint = BY_LABEL[label]
    before = table_rows(svc.clients)
    if endpoint.method != "GET":
        world_cache["world"] = None  # rebuilt for the next cell unless this call is shown to change nothing

    status, body, res = call(endpoint.function, endpoint.method, label.split(" ", 1)[1].lstrip("/"),
                             endpoint.body(side, source), headers=caller.headers, route_params=endpoint.route(side),
                             params=endpoint.params(source))

    assert status == expected, body
    if status >= 400:
        assert res.mimetype == "application/problem+json"
        assert body["status"] == status and body["title"] and body["detail"]
        if status == 401:
            assert body["title"] == "Not signed in"
        elif status == 403:
            assert body["title"] == "Forbidden"
            if label in ("POST /connections", "DELETE /connections/{id}"):
                assert body["detail"].startswith("Only an Admin may")
            elif caller.headers is NO_ROLE:
                assert "neither the Admin nor the Contributor role" in body["detail"]
            else:  # a contributor and an admins-only connection: the reason names the connection and the action
                assert body["detail"].startswith(f"Connection {side.connection.display_name!r} is for admins only; "
                                                  f"a Contributor may not {REFUSED_ACTION[label]}."), body["detail"]
        elif status == 500:
            assert body["title"] == "Authentication is not configured"
            assert "WEBSITE_AUTH_ENABLED" in body["detail"]
        # a refused call changed nothing
        assert table_rows(svc.clients) == before
        for s in world.values():
            assert secret_exists(svc, s.connection)
        world_cache["world"] = world
        return

    # allowed: the call did what it says, and a contributor sees only what they may use
    is_admin = caller.key == "admin"
    storage = svc
    if label == "GET /connections":
        listed = {c["id"]: c for c in body["connections"]}
        if is_admin:
            assert set(listed) == {side.connection.id, other.connection.id}
            assert all(c["consentedBy"] == "admin@contoso" and c["dataPrivacyConsent"] for c in listed.values())
        else:
            open_conn = world["open"].connection
            assert listed == {open_conn.id: {"id": open_conn.id, "displayName": open_conn.display_name}}
    elif label == "POST /connections":
        assert "apiKey" not in body and body["consentedBy"] == "alice@contoso"
        created = storage.connections.get(body["id"])
        assert created is not None and svc.secrets.get(created.secret_name) == TEST_API_KEY
    elif label == "GET /connections/{id}":
        if is_admin:
            assert body == side.connection.to_api()
        else:
            assert body == {"id": side.connection.id, "displayName": side.connection.display_name}
    elif label == "DELETE /connections/{id}":
        assert storage.connections.get(side.connection.id) is None
        assert not secret_exists(svc, side.connection)
        assert secret_exists(svc, other.connection)
        assert storage.exports.get(side.export.id).enabled is False
    elif label == "GET /exports":
        listed = {x["id"] for x in body["exports"]}
        usable = {world["open"].export.id, world["open"].busy_export.id}
        assert listed == (usable | {world["closed"].export.id, world["closed"].busy_export.id} if is_admin else usable)
    elif label == "POST /exports":
        assert storage.exports.get(body["id"]).connection_id == side.connection.id
    elif label == "GET /exports/{id}":
        assert body["id"] == side.export.id and body["mapping"] == MAPPING
    elif label == "PUT /exports/{id}":
        assert storage.exports.get(side.export.id).name == "Changed"
    elif label == "DELETE /exports/{id}":
        assert storage.exports.get(side.export.id) is None
    elif label == "POST /exports/{id}/runs":
        assert body["status"] == "queued" and storage.runs.get(body["runId"]).export_id == side.export.id
    elif label == "GET /exports/{id}/runs":
        assert [r["runId"] for r in body["runs"]] == [side.done_run.id]
    elif label == "GET /runs/{id}":
        assert body["runId"] == side.done_run.id and body["status"] == "succeeded"
    elif label == "GET /runs/{id}/rejects":
        assert res.mimetype == "text/csv" and res.get_body().startswith(b"stage,partition,row,email,reason,detail")
    elif label == "POST /runs/{id}/cancel":
        run = storage.runs.get(side.busy_run.id)
        assert run.status is RunStatus.CANCELLED and run.error == f"Cancelled by {'alice@contoso' if is_admin else 'marketer@dev'}."
    elif label == "GET /health":
        assert set(body) == {"status", "problems", "lastTimerTick", "stuckRuns", "poisonMessages", "connectionKeys"}
        assert body["status"] == ("degraded" if body["problems"] else "ok")
        usable = {c.id for c in storage.connections.list() if is_admin or c.allow_contributors}
        assert {k["connectionId"] for k in body["connectionKeys"]} == usable  # only connections the caller may use
    elif label == "GET /me":
        role = ROLE_ADMIN if is_admin else ROLE_CONTRIBUTOR
        assert body == {"name": "alice@contoso" if is_admin else "marketer@dev", "roles": [role], "isAdmin": is_admin,
                        "isContributor": not is_admin, "devMode": mode == "dev"}
    elif label == "GET /segments/columns":
        assert body["columns"] == list(COLUMNS) and body["origin"] == "model.json" and body["segment"] == SEGMENT
    elif label == "GET /segments":
        assert body["segments"] == [SEGMENT] and body["folder"] == "ci"
    elif label == "GET /segments/containers":
        assert body["containers"] == [source.container]


# --- the rules around the table ------------------------------------------------------------------


def test_contributor_cannot_move_an_export_to_an_admins_only_connection(installed, source, fresh_world):
    svc = installed("platform")
    world = fresh_world
    before = table_rows(svc.clients)
    status, body, _ = call("export", "PUT", "exports/x", export_body(world["closed"], source), headers=CONTRIBUTOR,
                           route_params={"id": world["open"].export.id})
    assert status == 403 and "a Contributor may not move an export to it." in body["detail"]
    status, body, _ = call("exports", "POST", "exports", export_body(world["closed"], source), headers=CONTRIBUTOR)
    assert status == 403 and "'Closed connection' is for admins only" in body["detail"]
    assert table_rows(svc.clients) == before
    # ... while an admin may
    status, body, _ = call("export", "PUT", "exports/x", export_body(world["closed"], source),
                           headers=as_user("alice@contoso", ROLE_ADMIN), route_params={"id": world["open"].export.id})
    assert status == 200 and body["connectionId"] == world["closed"].connection.id


def test_exports_of_a_removed_connection_are_for_admins_only(installed, source, fresh_world):
    installed("dev")
    world = fresh_world
    open_side = world["open"]
    assert call("connection", "DELETE", "", route_params={"id": open_side.connection.id})[0] == 204
    for function, method, rid in (("export", "GET", open_side.export.id), ("export_runs", "GET", open_side.export.id),
                                  ("run", "GET", open_side.done_run.id)):
        status, body, _ = call(function, method, "", headers=CONTRIBUTOR, route_params={"id": rid})
        assert status == 403, (function, body)
        assert call(function, method, "", route_params={"id": rid})[0] == 200
    listed = call("exports", "GET", "exports", headers=CONTRIBUTOR)[1]["exports"]
    assert open_side.export.id not in {x["id"] for x in listed}


def _entra_principal(name: str, roles: list[str]) -> str:
    """A principal as App Service Authentication builds it for Microsoft Entra ID (long claim types)."""
    role_typ = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    claims = [{"typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "val": name},
              {"typ": "aud", "val": "api://exporter"}] + [{"typ": role_typ, "val": r} for r in roles]
    body = {"auth_typ": "aad", "claims": claims,
            "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "role_typ": role_typ}
    return base64.b64encode(json.dumps(body).encode()).decode()


@pytest.mark.parametrize("roles, expected", [([ROLE_ADMIN], 201), ([ROLE_CONTRIBUTOR], 403), ([], 403)])
def test_platform_principal_with_entra_claim_types(installed, roles, expected, fresh_world):
    installed("platform")
    headers = {"X-MS-CLIENT-PRINCIPAL": _entra_principal("bob@contoso.com", roles)}
    status, body, _ = call("connections", "POST", "connections", {
        "displayName": "Entra", "apiKey": TEST_API_KEY, "dataPrivacyConsent": True}, headers=headers)
    assert status == expected, body
    if status == 201:
        assert body["consentedBy"] == "bob@contoso.com"


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"not json").decode(),
                                   base64.b64encode(b"[1, 2]").decode(), base64.b64encode(b'{"claims": 5}').decode(),
                                   base64.b64encode(b'{"claims": [{"typ": "roles"}]}').decode()])
def test_unreadable_principal_header_is_401_not_500(installed, value):
    installed("platform")
    status, body, _ = call("health", "GET", "health", headers={"x-ms-client-principal": value})
    assert status in (401, 403), body
    if status == 401:
        assert body["title"] == "Not signed in"


@pytest.mark.parametrize("auth", ["false", "0", "", "yes"])
def test_header_is_refused_unless_the_platform_says_auth_is_on(modes, installed, auth):
    env = {"AzureWebJobsStorage": DEV_STORAGE, "WEBSITE_AUTH_ENABLED": auth}
    off = modes["off"]
    svc = Services(load_settings(env), off.clients, off.secrets)
    restore = use_services(svc)
    try:
        for headers in (ADMIN, ANONYMOUS, CONTRIBUTOR):
            status, body, _ = call("connections", "GET", "connections", headers=headers)
            assert status == 500 and body["title"] == "Authentication is not configured", body
    finally:
        restore()


def test_dev_mode_is_refused_on_an_app_running_in_azure():
    with pytest.raises(ConfigurationError, match="EXPORTER_DEV_MODE"):
        load_settings({"EXPORTER_DEV_MODE": "1", "WEBSITE_SITE_NAME": "exporter-prod"})


def test_contributors_see_only_the_runs_of_connections_they_may_use(installed, source, fresh_world):
    """Found as a user would: the run list checked the export's current connection, while GET /runs/{id}
    checks the run's own, and /health listed every stuck run. An export moved from an admins-only
    connection to an open one keeps runs made with the admins-only one."""
    svc = installed("platform")
    world = fresh_world
    closed, opened = world["closed"], world["open"]
    admin = as_user("alice@contoso", ROLE_ADMIN)
    status, _, _ = call("export", "PUT", "exports/x", export_body(opened, source), headers=admin,
                        route_params={"id": closed.busy_export.id})  # its busy run was made with 'closed'
    assert status == 200
    status, body, _ = call("export_runs", "GET", "", headers=CONTRIBUTOR, route_params={"id": closed.busy_export.id})
    assert status == 200 and body["runs"] == []
    status, body, _ = call("export_runs", "GET", "", headers=admin, route_params={"id": closed.busy_export.id})
    assert [r["runId"] for r in body["runs"]] == [closed.busy_run.id]

    for side in (closed, opened):  # the world's runs were written without their exports' locks
        assert svc.locks.claim(side.busy_export.id, side.busy_run.id, lambda run_id: False) is None
    later = utcnow() + timedelta(hours=2)  # every run in progress looks stuck by then
    svc.clock = lambda: later
    try:
        as_admin = {r["runId"] for r in call("health", "GET", "health", headers=admin)[1]["stuckRuns"]}
        as_contributor = call("health", "GET", "health", headers=CONTRIBUTOR)[1]
    finally:
        svc.clock = utcnow
    assert as_admin == {closed.busy_run.id, opened.busy_run.id}
    assert {r["runId"] for r in as_contributor["stuckRuns"]} == {opened.busy_run.id}
    assert all(closed.busy_run.id not in p for p in as_contributor["problems"])
