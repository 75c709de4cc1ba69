"""What Omnisend answers about a batch: its status and the outcome of each item."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_BATCH_DONE = frozenset({"finished", "stopped"})


@dataclass(frozen=True)
class BatchInfo:
    batch_id: str
    status: str
    total_count: int
    finished_count: int
    errors_count: int

    @property
    def is_done(self) -> bool:
        """True once Omnisend will not process the batch further (``finished`` or ``stopped``)."""
        return self.status in _BATCH_DONE

    @classmethod
    def from_api(cls, data: dict) -> "BatchInfo":
        return cls(
            batch_id=str(data.get("batchID") or ""),
            status=str(data.get("status") or ""),
            total_count=_as_int(data.get("totalCount")),
            finished_count=_as_int(data.get("finishedCount")),
            errors_count=_as_int(data.get("errorsCount")),
        )


@dataclass(frozen=True)
class BatchItemResult:
    item_id: str | None
    request: dict | None
    response: dict | None
    response_code: int | None
    status: str | None

    @property
    def ok(self) -> bool:
        """True when the item landed (2xx). Any other code means the row did NOT land."""
        return self.response_code is not None and 200 <= self.response_code < 300

    @property
    def email(self) -> str | None:
        """The email identifier of the item's request, or None."""
        identifiers = (self.request or {}).get("identifiers") if isinstance(self.request, dict) else None
        for ident in identifiers or []:
            if isinstance(ident, dict) and ident.get("type") == "email" and isinstance(ident.get("id"), str):
                return ident["id"]
        return None

    @classmethod
    def from_api(cls, data: dict) -> "BatchItemResult":
        code = data.get("responseCode")
        try:
            code = int(code) if code is not None else None
        except (TypeError, ValueError):
            code = None
        item_id = data.get("itemID")
        return cls(
            item_id=str(item_id) if item_id is not None else None,
            request=data.get("request") if isinstance(data.get("request"), dict) else None,
            response=data.get("response") if isinstance(data.get("response"), dict) else None,
            response_code=code,
            status=data.get("status") if isinstance(data.get("status"), str) else None,
        )


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _looks_like_batch_item(value: Any) -> bool:
    return isinstance(value, dict) and ("itemID" in value or "responseCode" in value)


def _item_sort_key(item: BatchItemResult) -> tuple:
    item_id = item.item_id or ""
    return (0, int(item_id), "") if item_id.isdigit() else (1, 0, item_id)

