"""Connections, one entity each in the connections table; a removed connection whose runs still had
batches out is kept apart ("retired") until their results are read, so its key can read them."""

from __future__ import annotations

from datetime import datetime

from azure.data.tables import TableClient

from ..domain import Connection
from .entities import PartitionRepository

PARTITION = "connection"
RETIRED_PARTITION = "retired"  # removed: never used to send, only to read results of batches it sent


# Written out field by field, like every entity conversion here: the property names are the stored
# format (connections and exports look alike on purpose; see state/entities.py).
def _serialize(c: Connection) -> dict:
    return {
        "PartitionKey": PARTITION,
        "RowKey": c.id,
        "DisplayName": c.display_name,
        "AllowContributors": c.allow_contributors,
        "DataPrivacyConsent": c.data_privacy_consent,
        "ConsentedBy": c.consented_by,
        "ConsentedAt": c.consented_at,
        "CreatedAt": c.created_at,
        "MaxProfilesPerExport": c.max_profiles_per_export if c.max_profiles_per_export is not None else -1,
    }


def _deserialize(e: dict) -> Connection:
    limit = e.get("MaxProfilesPerExport", -1)
    return Connection(
        id=e["RowKey"],
        display_name=e["DisplayName"],
        allow_contributors=bool(e["AllowContributors"]),
        data_privacy_consent=bool(e["DataPrivacyConsent"]),
        consented_by=e["ConsentedBy"],
        consented_at=e["ConsentedAt"],
        created_at=e["CreatedAt"],
        max_profiles_per_export=None if limit is None or int(limit) < 0 else int(limit),
    )


class ConnectionRepository(PartitionRepository[Connection]):
    partition = PARTITION

    def __init__(self, table: TableClient):
        super().__init__(table, _serialize, _deserialize)
        self.retired = RetiredConnections(table)

    def list(self) -> list[Connection]:
        return sorted(self.all(), key=lambda c: c.display_name.casefold())


def _serialize_retired(retired: tuple[Connection, datetime]) -> dict:
    conn, at = retired
    return {**_serialize(conn), "PartitionKey": RETIRED_PARTITION, "RetiredAt": at}


def _deserialize_retired(e: dict) -> tuple[Connection, datetime]:
    return _deserialize(e), e["RetiredAt"]


class RetiredConnections(PartitionRepository[tuple[Connection, datetime]]):
    """Removed connections (and when) whose key is kept for reading the results of batches in flight."""

    partition = RETIRED_PARTITION

    def __init__(self, table: TableClient):
        super().__init__(table, _serialize_retired, _deserialize_retired)
