"""A run's tally, in the run's partition of the batches table, beside its batch records.

The tally is split into shards: a head (``~tally``: the planned counts, the tag waves' cursor, and
counts added while planning and tagging) and SHARDS counter shards that batch commits add to,
chosen by batch. Workers finishing batches at the same time then rarely write the same entity (one
entity took about 3 commits a second on Azurite under 8 workers); a read sums them with one query.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from typing import Callable

from azure.core import MatchConditions
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from ..domain import TagPlanning, Tally
from ..domain import fields as counts
from ..domain.fields import COUNTER, CURSOR, PLAN
from .errors import ConcurrencyError

HEAD_KEY = "~tally"  # the run's upload counts, in the run's batch partition
SHARDS = 8  # counter shards of a run's tally (row keys ~tally~00 ...)
NEAR_END_BATCHES = 64  # batches left at which a commit reads the whole tally again

# tagsPlanned on storage: a count once planned, else one of these
_TAGS_PLANNED_CODES = {TagPlanning.NOT_PLANNED: -1, TagPlanning.PLANNING: -2}


def shard_key(batch_key: str) -> str:
    """The shard a batch counts into: always the same one (a retry takes its counts out of it)."""
    return f"{HEAD_KEY}~{zlib.crc32(batch_key.encode()) % SHARDS:02d}"


def _deserialize(e) -> Tally:
    data = json.loads(e.get("Counts") or "{}")
    tally = Tally(planned=e.get("Planned", -1), **counts.from_api(Tally, data))
    tags_planned = data.get("tagsPlanned", -1)
    if tags_planned >= 0:
        tally.plan_tags(tags_planned)
    else:
        tally.tag_planning = TagPlanning.PLANNING if tags_planned == -2 else TagPlanning.NOT_PLANNED
        tally.tags_planned = 0
    tally.updated_at = e.metadata.get("timestamp")
    return tally


def _serialize(run_id: str, t: Tally, key: str = HEAD_KEY) -> dict:
    if key != HEAD_KEY:  # a shard: only counters add up
        return {"PartitionKey": run_id, "RowKey": key, "Counts": json.dumps(counts.to_api(t, COUNTER))}
    data = counts.to_api(t, COUNTER, PLAN, CURSOR)
    data["tagsPlanned"] = t.tags_planned if t.tags_are_planned else _TAGS_PLANNED_CODES[t.tag_planning]
    return {"PartitionKey": run_id, "RowKey": key, "Planned": t.planned, "Counts": json.dumps(data)}


Parts = dict[str, tuple[Tally, str | None]]  # a tally's entities by row key, with their ETags


def _sum(parts: Parts) -> Tally:
    head = parts[HEAD_KEY][0] if HEAD_KEY in parts else Tally()
    total = head.plus(Tally())
    for key, (part, _) in parts.items():
        if key != HEAD_KEY:
            total = total.plus(part)
    return total


def _write_op(run_id: str, tally: Tally, etag: str | None, key: str = HEAD_KEY) -> tuple:
    entity = _serialize(run_id, tally, key)
    if etag is None:
        return ("create", entity)
    return ("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                               "match_condition": MatchConditions.IfNotModified})


def _near_end(total: Tally) -> bool:
    """Moving the run on depends on this tally being exact: read it again after a commit."""
    return (total.planned < 0 or total.tag_planning is TagPlanning.PLANNING
            or total.batches_left() <= NEAR_END_BATCHES or total.planned - total.batches_sent <= NEAR_END_BATCHES)


class TallyRepository:
    def __init__(self, table: TableClient):
        self._table = table

    def _parts(self, run_id: str) -> Parts:
        """Every part of the run's tally by row key, with its ETag: one query."""
        found = self._table.query_entities(
            "PartitionKey eq @p and RowKey ge @lo and RowKey lt @hi",
            parameters={"p": run_id, "lo": HEAD_KEY, "hi": HEAD_KEY[:-1] + chr(ord(HEAD_KEY[-1]) + 1)},
        )
        return {e["RowKey"]: (_deserialize(e), e.metadata["etag"]) for e in found}

    def get(self, run_id: str) -> Tally:
        """The run's whole tally (all shards summed)."""
        return _sum(self._parts(run_id))

    def update(self, run_id: str, mutate: Callable[[Tally], None], attempts: int = 100) -> Tally:
        """Change the tally's head (planned counts; counts added there add to the run's), return the sum."""
        for attempt in range(attempts):
            parts = self._parts(run_id)
            head, etag = parts.get(HEAD_KEY, (Tally(), None))
            mutate(head)
            try:
                self._table.submit_transaction([_write_op(run_id, head, etag)])
                return self.get(run_id)  # read after the write: see the note in commit
            except TableTransactionError as e:
                if e.status_code not in (409, 412):
                    raise
                time.sleep(min(0.005 * (attempt + 1), 0.1))
        raise ConcurrencyError(f"The tally of run {run_id} changed {attempts} times while being updated.")

    def commit(self, run_id: str, batch_op: tuple, batch_key: str, mutate: Callable[[Tally], None],
               attempts: int = 100) -> Tally | None:
        """Apply ``batch_op`` (the batch record's write) and ``mutate`` to the batch's shard, atomically.
        Returns the run's whole tally after it, or None when the batch record changed first.

        The whole tally returned is exact when the run is near its end (few batches left) or not
        planned yet, where moving the run on depends on it: then it is read again after the commit.
        Every write that may end a run (these commits, and ``update``) reads after writing, so of two
        writers racing to the end the later one sees both writes. Far from the end the tally returned
        may miss commits made meanwhile by other workers (never overstating them); should more than
        NEAR_END_BATCHES batches be counted between one commit's read and its write, the timer's
        reconcile moves the run on.
        """
        key = shard_key(batch_key)
        for attempt in range(attempts):
            parts = self._parts(run_id)
            shard, shard_etag = parts.get(key, (Tally(), None))
            mutate(shard)
            try:
                self._table.submit_transaction([batch_op, _write_op(run_id, shard, shard_etag, key)])
            except TableTransactionError as e:
                if e.index == 0 and e.status_code in (409, 412):
                    return None  # the batch changed under us
                if e.status_code not in (409, 412):
                    raise
                time.sleep(random.uniform(0, min(0.005 * (attempt + 1), 0.1)))  # only the shard moved: again
                continue
            parts[key] = (shard, "")
            total = _sum(parts)
            return self.get(run_id) if _near_end(total) else total
        raise ConcurrencyError(f"The tally of run {run_id} changed {attempts} times while being updated.")
