"""One run per export at a time: a lock entity per export names the run that holds it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from .errors import ConcurrencyError

PARTITION = "~active"  # in the runs table: per export, the run that holds it
# A lock whose run does not exist counts as held this long after it was taken: its claimant writes the
# run right after the lock (two steps, in two partitions: no transaction can hold both). Taking such a
# lock over started a second run (20 triggers at once got two to five); a claimant that died between
# the two steps holds the export for this long at most.
GRACE = timedelta(seconds=60)


class RunLocks:
    def __init__(self, table: TableClient):
        self._table = table

    def claim(self, export_id: str, run_id: str, holds: Callable[[str], bool | None],
              now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> str | None:
        """Make ``run_id`` the export's one active run. Returns the id of the run holding it instead.

        ``holds(run_id)`` says whether the run named by the lock still holds it: True, False (it
        ended), or None (no such run). A lock whose run ended is taken over, and so is one whose run
        never appeared within GRACE, so a crash never leaves an export locked.
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
            holder = held["RunId"]
            verdict = holds(holder)
            if verdict is None:  # not written yet, or its claimant died before writing it
                taken = held.metadata.get("timestamp")
                verdict = taken is not None and now() - taken < GRACE
            if verdict:
                return holder
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
