"""Connections, one entity each in the connections table."""

from __future__ import annotations

from azure.data.tables import TableClient

from ..domain import Connection
from .entities import PartitionRepository

PARTITION = "connection"


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

    def list(self) -> list[Connection]:
        return sorted(self.all(), key=lambda c: c.display_name.casefold())
