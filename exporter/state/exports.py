"""Exports, one entity each in the exports table (source, mapping and consent as JSON)."""

from __future__ import annotations

import json

from azure.data.tables import TableClient

from ..domain import Consent, Export, Mapping, Source
from ..domain.exports import DEFAULT_MAX_REJECTED_PERCENT, DEFAULT_MAX_REMOVAL_PERCENT
from .entities import PartitionRepository

PARTITION = "export"


# Written out field by field, like every entity conversion here: the property names are the stored
# format (connections and exports look alike on purpose; see state/entities.py).
def _serialize(x: Export) -> dict:
    return {
        "PartitionKey": PARTITION,
        "RowKey": x.id,
        "Name": x.name,
        "ConnectionId": x.connection_id,
        "Source": json.dumps(x.source.to_api()),
        "Mapping": json.dumps(x.mapping.to_api()),
        "Enabled": x.enabled,
        "DisabledReason": x.disabled_reason or "",
        "Tag": x.tag or "",
        "Consent": json.dumps(x.consent.to_api()) if x.consent else "",
        "SendWelcomeMessage": x.send_welcome_message,
        "MaxRemovalPercent": x.max_removal_percent,
        "MaxRejectedPercent": x.max_rejected_percent,
        "CreatedAt": x.created_at,
        "UpdatedAt": x.updated_at,
    }


def _deserialize(e: dict) -> Export:
    return Export(
        id=e["RowKey"],
        name=e["Name"],
        connection_id=e["ConnectionId"],
        source=Source.from_api(json.loads(e["Source"])),
        mapping=Mapping.from_api(json.loads(e["Mapping"])),
        enabled=bool(e["Enabled"]),
        disabled_reason=e.get("DisabledReason") or None,
        tag=e.get("Tag") or None,
        consent=Consent.from_api(json.loads(e["Consent"])) if e.get("Consent") else None,
        send_welcome_message=bool(e.get("SendWelcomeMessage", False)),
        max_removal_percent=int(e.get("MaxRemovalPercent", DEFAULT_MAX_REMOVAL_PERCENT)),
        max_rejected_percent=int(e.get("MaxRejectedPercent", DEFAULT_MAX_REJECTED_PERCENT)),
        created_at=e["CreatedAt"],
        updated_at=e["UpdatedAt"],
    )


class ExportRepository(PartitionRepository[Export]):
    partition = PARTITION

    def __init__(self, table: TableClient):
        super().__init__(table, _serialize, _deserialize)

    def list(self) -> list[Export]:
        return sorted(self.all(), key=lambda x: x.created_at)
