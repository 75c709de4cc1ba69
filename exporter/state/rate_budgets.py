"""The shared request budget of each Omnisend connection: one entity per budget in the rate-limits table.

Each entity holds the times reserved in the budget's last window (packed doubles). The pacer
(``omnisend/pacing.py``) decides; this only reads and writes, guarded by the entity's ETag.
"""

from __future__ import annotations

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

PARTITION = "omnisend"


class BudgetChanged(Exception):
    """Another worker wrote the budget since it was read: read it again."""


class RateBudgets:
    def __init__(self, table: TableClient):
        self._table = table

    def read(self, key: str) -> tuple[bytes, str | None]:
        """The budget's reserved times (packed) and its ETag; (b"", None) when it has none yet."""
        try:
            e = self._table.get_entity(PARTITION, key)
        except ResourceNotFoundError:
            return b"", None
        return e.get("Times") or b"", e.metadata["etag"]

    def write(self, key: str, times: bytes, etag: str | None) -> str | None:
        """Write the budget if unchanged since ``etag`` (None: it must not exist yet); returns the new ETag."""
        entity = {"PartitionKey": PARTITION, "RowKey": key, "Times": times}
        try:
            if etag is None:
                written = self._table.create_entity(entity)
            else:
                written = self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                                    match_condition=MatchConditions.IfNotModified)
        except ResourceExistsError:
            raise BudgetChanged(key) from None
        except (ResourceModifiedError, HttpResponseError) as e:
            if getattr(e, "status_code", None) != 412:
                raise
            raise BudgetChanged(key) from None
        return (written or {}).get("etag")
