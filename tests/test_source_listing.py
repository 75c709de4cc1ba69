"""Choosing an export's source from what storage holds: ``GET /segments/containers`` and
``GET /segments?container=&folder=`` (the folders and segments under a folder), through the app's own
HTTP functions against Azurite; and that the listing reads one level, never the whole container."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ContainerClient

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.segments import listing
from tests.apphelpers import ANONYMOUS, CONTRIBUTOR, NO_ROLE, call, create_connection
from tests.conftest import TEST_API_KEY

pytestmark = pytest.mark.usefixtures("module_services")


@pytest.fixture(scope="module")
def prefix():
    return f"pick{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def container(azurite_storage, prefix):
    """ci/ (model.json: VIP and Soon; VIP has two refreshes, Soon none yet), ci/archive/Old (no
    model.json), ci/notes/ (a folder of loose files), hdr/Plain (CSV header only), a loose file at the root."""
    blobs = BlobServiceClient.from_connection_string(azurite_storage)
    c = blobs.create_container(f"{prefix}a")
    blobs.create_container(f"{prefix}b")
    now = datetime.now(timezone.utc)
    for minutes in (60, 5):
        write_segment_refresh(c, folder="ci", segment="VIP", profiles=list(generate_profiles(5)),
                              when=now - timedelta(minutes=minutes), partitions=2)
    for name in write_segment_refresh(c, folder="ci", segment="Soon", profiles=list(generate_profiles(2)), when=now):
        c.delete_blob(name)
    write_segment_refresh(c, folder="ci/archive", segment="Old", profiles=list(generate_profiles(2)), when=now,
                          model_json=False, header=True)
    write_segment_refresh(c, folder="hdr", segment="Plain", profiles=list(generate_profiles(2)), when=now,
                          model_json=False, header=True)
    c.upload_blob("ci/notes/readme.txt", b"not a segment")
    c.upload_blob("readme.txt", b"a loose file")
    yield c.container_name
    c.delete_container()
    blobs.delete_container(f"{prefix}b")


def browse(headers=None, **params):
    return call("segments", "GET", "segments", params=params, **({"headers": headers} if headers is not None else {}))


def containers(headers=None, **params):
    return call("segment_containers", "GET", "segments/containers", params=params,
                **({"headers": headers} if headers is not None else {}))


def test_the_containers_are_listed_by_prefix_without_the_apps_own(container, prefix):
    status, body, _ = containers(prefix=prefix)
    assert status == 200, body
    assert body == {"containers": [f"{prefix}a", f"{prefix}b"], "truncated": False, "notices": []}
    status, body, _ = containers()
    assert status == 200 and (container in body["containers"] or body["truncated"])
    status, body, _ = containers(prefix="exporter-r")
    assert status == 200 and body["containers"] == []  # the app's reports never show as a source


def test_a_folder_lists_its_segments_and_its_other_folders(container):
    status, body, _ = browse(container=container)
    assert status == 200, body
    assert body == {"container": container, "folder": "", "folders": ["ci", "hdr"], "segments": [],
                    "truncated": False, "notices": []}
    status, body, _ = browse(container=container, folder="ci")
    assert status == 200, body
    assert body["segments"] == ["Soon", "VIP"]  # Soon: described by model.json before its first refresh
    assert body["folders"] == ["ci/archive", "ci/notes"]
    assert browse(container=container, folder="ci/archive/")[1]["segments"] == ["Old"]
    assert browse(container=container, folder="hdr")[1]["segments"] == ["Plain"]
    assert browse(container=container, folder="nothing/here")[1] | {"folder": ""} == {
        "container": container, "folder": "", "folders": [], "segments": [], "truncated": False, "notices": []}


def test_a_listed_segment_is_one_the_columns_endpoint_reads(container):
    status, body, _ = browse(container=container, folder="ci/archive")
    (segment,) = body["segments"]
    status, cols, _ = call("segment_columns", "GET", "segments/columns",
                           params={"container": container, "folder": "ci/archive", "segment": segment})
    assert status == 200 and cols["origin"] == "header" and "PrimaryEmail" in cols["columns"]


class CountRequests(RequestsTransport):
    """The storage client's transport, noting each request's URL."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def send(self, request, **kwargs):
        self.urls.append(request.url)
        return super().send(request, **kwargs)


def test_listing_reads_one_level_and_one_name_per_child_never_the_whole_container(azurite_storage, container):
    counter = CountRequests()
    client = ContainerClient.from_connection_string(azurite_storage, container, transport=counter)
    found = listing.list_folder(client, "ci")
    assert found.segments == ("Soon", "VIP")
    # one page of the level, model.json, and one single-name probe per child folder (VIP, archive, notes)
    assert len(counter.urls) == 1 + 1 + 3, counter.urls
    probes = [u for u in counter.urls if "maxresults=1&" in u or u.endswith("maxresults=1")]
    assert len(probes) == 3 and all("delimiter" not in u for u in probes)
    assert "delimiter=%2F" in counter.urls[0] or "delimiter=/" in counter.urls[0]


def test_listings_are_capped_and_say_so(azurite_storage, container, prefix, monkeypatch):
    client = ContainerClient.from_connection_string(azurite_storage, container)
    capped = listing.list_folder(client, "ci", limit=2)
    assert capped.truncated and len(capped.folders) + len(capped.segments) <= 3  # 2 folders read (+ Soon, described)
    service = BlobServiceClient.from_connection_string(azurite_storage)
    assert listing.list_containers(service, prefix, limit=1) == listing.ContainerListing((f"{prefix}a",), True)
    monkeypatch.setattr(listing, "MAX_ENTRIES", 1)
    status, body, _ = containers(prefix=prefix)
    assert status == 200 and body["containers"] == [f"{prefix}a"] and body["truncated"] is True
    assert "More than 1 containers" in body["notices"][0]
    status, body, _ = browse(container=container, folder="ci")
    assert status == 200 and body["truncated"] is True and body["notices"]


def test_a_missing_container_is_404_naming_it():
    missing = f"nosuch{uuid.uuid4().hex[:8]}"
    status, body, _ = browse(container=missing)
    assert status == 404 and missing in body["detail"] and "does not exist" in body["detail"]


@pytest.mark.parametrize("params, fields", [
    ({}, {"container": "required"}),
    ({"container": "Bad_Name"}, {"container": "invalid"}),
    ({"container": "abc", "folder": "../other"}, {"folder": "invalid"}),
    ({"container": "abc", "segment": "VIP"}, {"segment": "unknown"}),
])
def test_bad_query_parameters_are_400_naming_each(params, fields):
    status, body, _ = browse(**params)
    assert status == 400 and {e["field"]: e["code"] for e in body["errors"]} == fields
    status, body, _ = containers(prefix="Not A Prefix")
    assert status == 400 and {e["field"]: e["code"] for e in body["errors"]} == {"prefix": "invalid"}


@pytest.mark.parametrize("headers, status", [(ANONYMOUS, 401), (NO_ROLE, 403)])
def test_listing_needs_a_member(container, headers, status):
    assert browse(headers, container=container)[0] == status
    assert containers(headers)[0] == status


def test_a_contributor_lists_only_while_a_connection_is_open_to_contributors(container, module_services):
    for c in module_services.connections.list():
        call("connection", "DELETE", "", route_params={"id": c.id})
    create_connection(TEST_API_KEY, name="Admins only")
    status, body, _ = browse(CONTRIBUTOR, container=container)
    assert status == 403 and "No connection is open to contributors" in body["detail"]
    assert containers(CONTRIBUTOR)[0] == 403
    create_connection(TEST_API_KEY, name="Shared", allowContributors=True)
    status, body, _ = browse(CONTRIBUTOR, container=container, folder="ci")
    assert status == 200 and body["segments"] == ["Soon", "VIP"]
    assert containers(CONTRIBUTOR)[0] == 200
