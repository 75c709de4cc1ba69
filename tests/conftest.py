"""Shared fixtures: a real Azurite for storage, unique resource names per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from devtools import azurite

os.environ.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)  # tests never export telemetry (exporter/telemetry.py)

ROOT = Path(__file__).resolve().parent.parent

DEV_STORAGE = azurite.connection_string()


@pytest.fixture(scope="session")
def azurite_storage():
    """Connection string of a running Azurite; started here when the caller did not start one."""
    started = azurite.start()
    yield DEV_STORAGE
    if started:
        azurite.stop()


@pytest.fixture
def unique():
    """A short unique suffix for container, queue and table names (lowercase letters and digits)."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def blob_service(azurite_storage):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azurite_storage)


@pytest.fixture
def segment_container(blob_service, unique):
    """A fresh blob container for one test's segment files; deleted afterwards."""
    container = blob_service.create_container(f"segments{unique}")
    yield container
    container.delete_container()


# --- the app on the local stack ------------------------------------------------------------------

TEST_API_KEY = "sandbox-test-key-0123456789"
TEST_BRAND = "brand-test"


@pytest.fixture
def sandbox():
    """The local Omnisend sandbox over real HTTP, with one valid API key."""
    from devtools.omnisend_sandbox import SandboxServer

    # Omnisend's limits, except the tags endpoints' 60 a minute: most tests are not about pacing tags
    server = SandboxServer(api_keys={TEST_API_KEY: TEST_BRAND}, batch_delay_seconds=0.02, tags_rate_limit=6000,
                           tags_delay_seconds=0.01)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_sandbox():
    """One sandbox for a whole test module, at Omnisend's own limits (for modules of many small tests)."""
    from devtools.omnisend_sandbox import SandboxServer

    server = SandboxServer(api_keys={TEST_API_KEY: TEST_BRAND}, batch_delay_seconds=0.02)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_services(azurite_storage, module_sandbox):
    """The app's services in development mode for a whole module of small API tests, pointed at the
    module's sandbox, on a clean app state, and installed for the handlers until the module ends.
    Not autouse: a module asks for it (``pytestmark = pytest.mark.usefixtures("module_services")``)."""
    from exporter.config import load_settings
    from exporter.services import build_services
    from tests.apphelpers import use_services

    svc = build_services(load_settings({
        "AzureWebJobsStorage": DEV_STORAGE, "EXPORTER_DEV_MODE": "1", "OMNISEND_API_URL": module_sandbox.url,
        "REFRESH_SETTLE_SECONDS": "0", "OMNISEND_TIMEOUT_SECONDS": "5"}))
    clear_app_state(svc.clients)
    restore = use_services(svc)
    yield svc
    restore()


def clear_app_state(storage) -> None:
    """Empty the app's tables and queues: app resources have fixed names, so tests share them."""
    from exporter import config

    storage.ensure_resources()
    for table in storage.app_tables().values():
        by_partition: dict[str, list] = {}
        for e in table.list_entities(select=["PartitionKey", "RowKey"]):
            by_partition.setdefault(e["PartitionKey"], []).append(e)
        for entities in by_partition.values():  # one transaction per 100 entities of a partition
            for i in range(0, len(entities), 100):
                table.submit_transaction([("delete", e) for e in entities[i:i + 100]])
    for name in (config.QUEUE_RUNS, config.QUEUE_BATCHES):
        for q in (name, name + config.POISON_SUFFIX):
            storage.queue(q).clear_messages()


@pytest.fixture
def app_env(sandbox):
    """Settings of the local development mode, pointed at the sandbox."""
    return {
        "AzureWebJobsStorage": DEV_STORAGE,
        "EXPORTER_DEV_MODE": "1",
        "OMNISEND_API_URL": sandbox.url,
        "REFRESH_SETTLE_SECONDS": "0",
        "BATCH_CHECK_DELAY_SECONDS": "1",
        "OMNISEND_TIMEOUT_SECONDS": "5",
        "OMNISEND_TAGS_RATE_LIMIT": "6000",
    }


@pytest.fixture
def services(azurite_storage, app_env):
    """The app's services in development mode, installed for the handlers, on a clean app state."""
    from exporter.config import load_settings
    from exporter.services import build_services, set_services

    svc = build_services(load_settings(app_env))
    clear_app_state(svc.clients)
    set_services(svc)
    yield svc
    set_services(None)


@pytest.fixture
def workers(services, app_env):
    """Queue workers and HTTP server of the local runner (no timer), on the test's services."""
    from exporter.devhost.local_runner import LocalHost

    host = LocalHost(services.clients, port=0, batch_workers=4, run_workers=1, timer=False, idle_sleep=0.2,
                     env=app_env)
    host.start()
    yield host
    host.stop()


@pytest.fixture
def run_views(services, monkeypatch) -> list:
    """The run as GET /runs/{id} shows it after each change of its record (see never_ended_with_open_counts)."""
    from exporter.state.runs import RunRepository

    views = []
    update_run = RunRepository.update

    def spy(self, run_id, mutate, *args, **kwargs):
        run = update_run(self, run_id, mutate, *args, **kwargs)
        views.append(self.get(run_id))
        return run

    monkeypatch.setattr(RunRepository, "update", spy)
    return views
