"""Batch records, in the batches table: one partition per run, shared with the run's tally, so that
finishing a batch and counting it is one entity-group transaction (``BatchRepository.commit``): a
worker killed at any point leaves either both changes or neither."""

from __future__ import annotations

import json
import zlib
from typing import Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from ..domain import Batch, BatchKind, BatchStatus, Failure, Tally
from ..messages import SendBatch, TagBatch
from .tally import TallyRepository

# row keys: contacts "0000001" (digits sort first), tags "t0000001", untags "u0000001"
_PREFIX = {BatchKind.CONTACTS: "", BatchKind.TAGS: "t", BatchKind.UNTAGS: "u"}
_KIND_OF_PREFIX = {"t": BatchKind.TAGS, "u": BatchKind.UNTAGS}
_RANGE = {BatchKind.CONTACTS: ("0", "a"), BatchKind.TAGS: ("t", "u"), BatchKind.UNTAGS: ("u", "v")}


def batch_key(number: int, kind: BatchKind = BatchKind.CONTACTS) -> str:
    return f"{_PREFIX[kind]}{number:07d}"


def _pack(value) -> bytes:
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 6)


def _unpack(value):
    return json.loads(zlib.decompress(value)) if value else None


def _payload(kind: BatchKind, run_id: str, number: int, data: dict | None):
    if data is None:
        return None
    if kind is BatchKind.CONTACTS:
        return SendBatch.from_payload(data)
    return TagBatch.from_payload(kind, data, run_id=run_id, number=number)


def _deserialize(run_id: str, e) -> Batch:
    key = e["RowKey"]
    kind = _KIND_OF_PREFIX.get(key[0], BatchKind.CONTACTS)
    number = int(key.lstrip("tu"))
    return Batch(
        run_id=run_id,
        kind=kind,
        number=number,
        size=e["Size"],
        status=BatchStatus(e["Status"]),
        omnisend_batch_id=e.get("OmnisendBatchId") or None,
        attempts=e.get("Attempts", 0),
        confirmed=e.get("Confirmed", 0),
        failed=e.get("Failed", 0),
        error=e.get("Error") or None,
        payload=_payload(kind, run_id, number, _unpack(e.get("Payload"))),
        failures=[Failure(*f) for f in _unpack(e.get("Failures")) or []],
    )


def _serialize(batch: Batch) -> dict:
    return {
        "PartitionKey": batch.run_id,
        "RowKey": batch_key(batch.number, batch.kind),
        "Size": batch.size,
        "Status": batch.status.value,
        "OmnisendBatchId": batch.omnisend_batch_id or "",
        "Attempts": batch.attempts,
        "Confirmed": batch.confirmed,
        "Failed": batch.failed,
        "Error": (batch.error or "")[:2000],
        "Payload": _pack(batch.payload.payload()) if batch.payload is not None else b"",
        "Failures": _pack([[f.index, f.reason, f.detail[:500]] for f in batch.failures]),
    }


class BatchRepository:
    def __init__(self, table: TableClient, tallies: TallyRepository):
        self._table = table
        self._tallies = tallies

    def get(self, run_id: str, number: int, kind: BatchKind = BatchKind.CONTACTS) -> tuple[Batch, str | None] | None:
        """The batch and its ETag, or None when no worker has recorded it yet."""
        try:
            e = self._table.get_entity(run_id, batch_key(number, kind))
        except ResourceNotFoundError:
            return None
        return _deserialize(run_id, e), e.metadata["etag"]

    def range(self, run_id: str, first: int, last: int, kind: BatchKind = BatchKind.CONTACTS) -> Iterator[Batch]:
        """Batches numbered ``first`` to ``last`` that have a record, in number order."""
        query = "PartitionKey eq @p and RowKey ge @lo and RowKey le @hi"
        for e in self._table.query_entities(query, parameters={
                "p": run_id, "lo": batch_key(first, kind), "hi": batch_key(last, kind)}):
            yield _deserialize(run_id, e)

    def list(self, run_id: str, kind: BatchKind = BatchKind.CONTACTS, failed_only: bool = False) -> Iterator[Batch]:
        lo, hi = _RANGE[kind]
        query = "PartitionKey eq @p and RowKey ge @lo and RowKey lt @hi" + (" and Failed gt 0" if failed_only else "")
        for e in self._table.query_entities(query, parameters={"p": run_id, "lo": lo, "hi": hi}):
            yield _deserialize(run_id, e)

    def commit(self, batch: Batch, etag: str | None, mutate: Callable[[Tally], None]) -> Tally | None:
        """Write ``batch`` (new when ``etag`` is None, else only if unchanged since ``etag``) and apply
        ``mutate`` to its shard of the run's tally, atomically. Returns the run's whole tally after it,
        or None when another worker changed the batch first: the caller lost the race and must not act
        on it again (see ``TallyRepository.commit`` for when the tally returned is exact)."""
        if etag is None:
            op: tuple = ("create", _serialize(batch))
        else:
            op = ("update", _serialize(batch),
                  {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified})
        return self._tallies.commit(batch.run_id, op, batch_key(batch.number, batch.kind), mutate)

    def delete_run(self, run_id: str) -> int:
        """Every batch record and tally part of the run (100 to a transaction); returns how many."""
        keys = [e["RowKey"] for e in self._table.query_entities(
            "PartitionKey eq @p", parameters={"p": run_id}, select=["RowKey"])]
        for i in range(0, len(keys), 100):
            self._table.submit_transaction(
                [("delete", {"PartitionKey": run_id, "RowKey": k}) for k in keys[i:i + 100]])
        return len(keys)
