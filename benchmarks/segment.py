"""The synthetic segment: seeded, in the Customer Insights layout, a base refresh and a churned one.

Profiles come from ``devtools.sample_segment.generate_profiles`` (realistic columns: ids, names with
commas, quotes and non-ASCII letters, multi-line addresses, mixed country values) with a small share
of bad rows: invalid emails (``INVALID_SHARE``) and case-only duplicates (``DUPLICATE_SHARE``). Every
refresh is written in ``PARTITIONS`` partitions plus model.json (no header rows), as the platform does.

The churned refresh is the base after 1% churn: the first 1% of members left, the next 1% changed
their last name, and 1% new members were added (the rows that follow the base in the same seeded
stream). Both are streamed: a million profiles never sit in memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient

from devtools import azurite
from devtools.sample_segment import CountedProfiles, generate_profiles, write_segment_refresh

CONTAINER = "benchmarks"
FOLDER = "customer-insights"
PARTITIONS = 4
SEED = 20260315
INVALID_SHARE = 0.01
DUPLICATE_SHARE = 0.005
CHURN = 0.01
MAPPING = {"email": "PrimaryEmail", "firstName": "FirstName", "lastName": "LastName", "address": "StreetAddress",
           "city": "City", "state": "State", "postalCode": "PostCode", "country": "Country"}


def churn_count(rows: int) -> int:
    return int(rows * CHURN)


def _stream(rows: int) -> Iterator[dict]:
    return generate_profiles(rows + churn_count(rows), seed=SEED, invalid_share=INVALID_SHARE,
                             duplicate_share=DUPLICATE_SHARE)


def base_profiles(rows: int) -> Iterator[dict]:
    def gen():
        for i, p in enumerate(_stream(rows)):
            if i >= rows:
                return
            yield p

    return CountedProfiles(gen(), rows)


def churned_profiles(rows: int) -> Iterator[dict]:
    k = churn_count(rows)

    def gen():
        for i, p in enumerate(_stream(rows)):
            if i < k:
                continue  # left the segment
            if i < 2 * k:
                p["LastName"] += "-Married"  # changed a field
            yield p  # i >= rows: new members

    return CountedProfiles(gen(), rows)


def container() -> ContainerClient:
    service = BlobServiceClient.from_connection_string(azurite.connection_string())
    try:
        service.create_container(CONTAINER)
    except ResourceExistsError:
        pass
    return service.get_container_client(CONTAINER)


@dataclass
class Written:
    segment: str
    rows: int
    seconds: float
    partitions: list[str]
    bytes: int


def write(segment: str, rows: int, churned: bool, minutes_ago: int) -> Written:
    """Write one refresh of ``segment`` (its time folder ``minutes_ago`` minutes back)."""
    c = container()
    when = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    profiles = churned_profiles(rows) if churned else base_profiles(rows)
    t0 = time.perf_counter()
    names = write_segment_refresh(c, folder=FOLDER, segment=segment, profiles=profiles, when=when,
                                  partitions=PARTITIONS)
    size = sum(c.get_blob_client(n).get_blob_properties().size for n in names)
    return Written(segment, rows, time.perf_counter() - t0, names, size)


def delete(segment: str) -> None:
    """Remove every refresh of a benchmark segment (they would linger in Azurite)."""
    c = container()
    for blob in c.list_blobs(name_starts_with=f"{FOLDER}/{segment}/"):
        c.delete_blob(blob.name)
