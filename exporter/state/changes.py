"""A run's membership changes as planned: one CSV line per member who joins, changes (with the
fields that changed) or leaves (``exporter-runs/<run>/changes.csv``). The planner writes it while it
reads the refresh, for previews and real runs alike; unchanged members are counted, not listed.

It says what the run set out to do. What reached Omnisend is the run's counts and its report of
rejected and failed rows: a member listed as joined whose contact then failed is in both.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterator

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from .reports import CsvAppender

COLUMNS = ("email", "change", "fields")
HEADER = (",".join(COLUMNS) + "\r\n").encode()
UNKNOWN_FIELDS = "unknown"  # the previous state predates field marks
RESENT = ""  # sent again with no field changed: a full run, or the export's mapping or tag changed


class Change(str, Enum):
    JOINED = "joined"
    CHANGED = "changed"
    LEFT = "left"


class ChangesWriter(CsvAppender):
    def joined(self, email: str) -> None:
        self.write_row(email, Change.JOINED.value, "")

    def changed(self, email: str, fields: tuple[str, ...] | None) -> None:
        self.write_row(email, Change.CHANGED.value, UNKNOWN_FIELDS if fields is None else ";".join(fields) or RESENT)

    def left(self, email: str) -> None:
        self.write_row(email, Change.LEFT.value, "")


class ChangesRepository:
    def __init__(self, container: ContainerClient):
        self._container = container

    def _blob(self, run_id: str) -> BlobClient:
        return self._container.get_blob_client(f"{run_id}/changes.csv")

    def create(self, run_id: str) -> ChangesWriter:
        """A new, empty report (a re-planned run starts it again)."""
        blob = self._blob(run_id)
        blob.create_append_blob()  # replaces any earlier one
        blob.append_block(HEADER)
        return ChangesWriter(blob, HEADER)

    def read(self, run_id: str) -> Iterator[bytes]:
        """The report as CSV, in the blob's chunks; raises ResourceNotFoundError when the run has none."""
        yield from self._blob(run_id).download_blob().chunks()

    def delete(self, run_id: str) -> None:
        try:
            self._blob(run_id).delete_blob()
        except ResourceNotFoundError:
            pass
