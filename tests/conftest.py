"""Shared fixtures: a real Azurite for storage, unique resource names per test."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools import azurite  # noqa: E402

DEV_STORAGE = "UseDevelopmentStorage=true"


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
