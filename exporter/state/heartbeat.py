"""When the timer last ran (the health endpoint reports a schedule that stopped firing)."""

from __future__ import annotations

from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

PARTITION = "~heartbeat"  # in the runs table


class Heartbeat:
    def __init__(self, table: TableClient):
        self._table = table

    def record(self, when: datetime) -> None:
        self._table.upsert_entity({"PartitionKey": PARTITION, "RowKey": "timer", "LastTick": when})

    def last(self) -> datetime | None:
        try:
            return self._table.get_entity(PARTITION, "timer")["LastTick"]
        except ResourceNotFoundError:
            return None
