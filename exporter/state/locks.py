"""One run per export at a time: a lock entity per export names the run that holds it."""

from __future__ import annotations

from typing import Callable

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from .errors import ConcurrencyError

PARTITION = "~active"  # in the runs table: per export, the run that holds it


class RunLocks:
    def __init__(self, table: TableClient):
        self._table = table

    def claim(self, export_id: str, run_id: str, is_active: Callable[[str], bool]) -> str | None:
        """Make ``run_id`` the export's one active run. Returns the id of the run holding it instead.

        The lock names a run; a lock whose run has ended (or vanished) is taken over, so a crash
        never leaves an export locked.
        """
        entity = {"PartitionKey": PARTITION, "RowKey": export_id, "RunId": run_id}
        for _ in range(10):
            try:
                self._table.create_entity(entity)
                return None
            except ResourceExistsError:
                pass
            try:
                held = self._table.get_entity(PARTITION, export_id)
            except ResourceNotFoundError:
                continue
            if is_active(held["RunId"]):
                return held["RunId"]
            try:
                self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=held.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
                return None
            except (ResourceModifiedError, HttpResponseError) as e:
                if getattr(e, "status_code", None) != 412:
                    raise
        raise ConcurrencyError(f"The run lock of export {export_id} kept changing.")

    def held(self) -> list[tuple[str, str]]:
        """(export id, run id) of every export's latest claimed run: where active runs are found."""
        return [(e["RowKey"], e["RunId"]) for e in self._table.query_entities(
            "PartitionKey eq @p", parameters={"p": PARTITION})]

    def holder(self, export_id: str) -> str | None:
        """The run that last claimed the export, if any (it may have ended)."""
        try:
            return self._table.get_entity(PARTITION, export_id)["RunId"]
        except ResourceNotFoundError:
            return None

    def release(self, export_id: str) -> None:
        """Forget the export's lock (the export is deleted)."""
        try:
            self._table.delete_entity(PARTITION, export_id)
        except ResourceNotFoundError:
            pass
