"""All state the app keeps, through the one ``AzureWebJobsStorage`` account.

Tables hold connections, exports, runs and batch outcomes; queues carry the work; an append blob per
run holds its report of rejected and failed rows. Identity-based in Azure, Azurite locally.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
import zlib
from datetime import datetime
from typing import Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, TableTransactionError, UpdateMode
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from . import config
from .config import Settings
from .domain import (
    Batch,
    BatchStatus,
    Connection,
    Consent,
    Export,
    Failure,
    Mapping,
    Refresh,
    Run,
    RunCounts,
    RunStatus,
    Source,
    Tally,
    parse_iso,
)
from .logs import get_logger

log = get_logger(__name__)

RUN_INDEX_PARTITION = "~runs"  # pointer entities: run id -> export id
LOCK_PARTITION = "~active"  # per export: the run that holds it
HEARTBEAT_PARTITION = "~heartbeat"  # when the timer last ran
TALLY_KEY = "~tally"  # the run's upload counts, in the run's batch partition
TALLY_SHARDS = 8  # counter shards of a run's tally (row keys ~tally~00 ...)
NEAR_END_BATCHES = 64  # batches left at which a commit reads the whole tally again
REPORT_COLUMNS = ("stage", "partition", "row", "email", "reason", "detail")
REPORT_HEADER = (",".join(REPORT_COLUMNS) + "\r\n").encode()


class ConcurrencyError(RuntimeError):
    """An entity kept changing under us; the caller may retry the whole operation."""


def _credential(settings: Settings):
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)


def _delay(seconds: float) -> int | None:
    """A message's initial invisibility in whole seconds; None (visible at once) for none."""
    return int(max(0, round(seconds))) or None


class Storage:
    def __init__(self, settings: Settings, credential=None):
        self.settings = settings
        if settings.storage_connection_string:
            conn = settings.storage_connection_string
            self.blobs = BlobServiceClient.from_connection_string(conn)
            self.tables = TableServiceClient.from_connection_string(conn)
            queues = QueueServiceClient.from_connection_string(conn)
        else:
            cred = credential or _credential(settings)
            account = settings.blob_service_uri.split("//", 1)[1].split(".", 1)[0]
            self.blobs = BlobServiceClient(settings.blob_service_uri, credential=cred)
            self.tables = TableServiceClient(
                settings.table_service_uri or f"https://{account}.table.core.windows.net", credential=cred
            )
            queues = QueueServiceClient(
                settings.queue_service_uri or f"https://{account}.queue.core.windows.net", credential=cred
            )
        self._queues = queues
        if settings.segments_blob_service_uri:
            self.segment_blobs = BlobServiceClient(
                settings.segments_blob_service_uri, credential=credential or _credential(settings)
            )
        else:
            self.segment_blobs = self.blobs
        # The Functions host reads base64 messages by default (host.json messageEncoding).
        self.run_queue = queues.get_queue_client(
            config.QUEUE_RUNS, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
        )
        self.batch_queue = queues.get_queue_client(
            config.QUEUE_BATCHES, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
        )
        self.connections = self.tables.get_table_client(config.TABLE_CONNECTIONS)
        self.exports = self.tables.get_table_client(config.TABLE_EXPORTS)
        self.runs = self.tables.get_table_client(config.TABLE_RUNS)
        self.batches = self.tables.get_table_client(config.TABLE_BATCHES)
        self.rate_limits = self.tables.get_table_client(config.TABLE_RATE_LIMITS)
        self.artifacts = self.blobs.get_container_client(config.CONTAINER_RUN_ARTIFACTS)
        self._run_exports: dict[str, str] = {}  # run id -> export id

    def queue_client(self, name: str):
        return self._queues.get_queue_client(
            name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
        )

    def ensure_resources(self) -> None:
        """Create the tables, queues and container the app uses (Bicep does this in Azure)."""
        for table in (config.TABLE_CONNECTIONS, config.TABLE_EXPORTS, config.TABLE_RUNS, config.TABLE_BATCHES,
                      config.TABLE_RATE_LIMITS):
            self.tables.create_table_if_not_exists(table)
        for name in (config.QUEUE_RUNS, config.QUEUE_BATCHES):
            for q in (name, name + config.POISON_SUFFIX):
                try:
                    self._queues.create_queue(q)
                except ResourceExistsError:
                    pass
        try:
            self.artifacts.create_container()
        except ResourceExistsError:
            pass

    # --- connections -------------------------------------------------------------------------

    def put_connection(self, c: Connection) -> None:
        self.connections.upsert_entity(
            {
                "PartitionKey": "connection",
                "RowKey": c.id,
                "DisplayName": c.display_name,
                "AllowContributors": c.allow_contributors,
                "DataPrivacyConsent": c.data_privacy_consent,
                "ConsentedBy": c.consented_by,
                "ConsentedAt": c.consented_at,
                "CreatedAt": c.created_at,
                "MaxProfilesPerExport": c.max_profiles_per_export if c.max_profiles_per_export is not None else -1,
            },
            mode=UpdateMode.REPLACE,
        )

    @staticmethod
    def _connection(e) -> Connection:
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

    def get_connection(self, connection_id: str) -> Connection | None:
        try:
            return self._connection(self.connections.get_entity("connection", connection_id))
        except ResourceNotFoundError:
            return None

    def list_connections(self) -> list[Connection]:
        found = self.connections.query_entities("PartitionKey eq 'connection'")
        return sorted((self._connection(e) for e in found), key=lambda c: c.display_name.casefold())

    def delete_connection(self, connection_id: str) -> None:
        self.connections.delete_entity("connection", connection_id)

    # --- exports -----------------------------------------------------------------------------

    def put_export(self, x: Export) -> None:
        self.exports.upsert_entity(
            {
                "PartitionKey": "export",
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
                "CreatedAt": x.created_at,
                "UpdatedAt": x.updated_at,
            },
            mode=UpdateMode.REPLACE,
        )

    @staticmethod
    def _export(e) -> Export:
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
            created_at=e["CreatedAt"],
            updated_at=e["UpdatedAt"],
        )

    def get_export(self, export_id: str) -> Export | None:
        try:
            return self._export(self.exports.get_entity("export", export_id))
        except ResourceNotFoundError:
            return None

    def list_exports(self) -> list[Export]:
        found = self.exports.query_entities("PartitionKey eq 'export'")
        return sorted((self._export(e) for e in found), key=lambda x: x.created_at)

    def delete_export(self, export_id: str) -> None:
        self.exports.delete_entity("export", export_id)

    # --- runs --------------------------------------------------------------------------------

    @staticmethod
    def _run_entity(r: Run) -> dict:
        return {
            "PartitionKey": r.export_id,
            "RowKey": r.id,
            "ConnectionId": r.connection_id,
            "Trigger": r.trigger,
            "Status": r.status.value,
            "Counts": json.dumps(r.counts.to_api()),
            "CreatedAt": r.created_at,
            "StartedAt": r.started_at.isoformat() if r.started_at else "",
            "FinishedAt": r.finished_at.isoformat() if r.finished_at else "",
            "Error": r.error or "",
            "RefreshFolder": r.refresh_folder or "",
            "RefreshFingerprint": r.refresh_fingerprint or "",
            "CountsFinal": r.counts_final,
            "Full": r.full,
        }

    @staticmethod
    def _run(e) -> Run:
        return Run(
            id=e["RowKey"],
            export_id=e["PartitionKey"],
            connection_id=e["ConnectionId"],
            trigger=e["Trigger"],
            status=RunStatus(e["Status"]),
            counts=RunCounts.from_api(json.loads(e["Counts"])),
            created_at=e["CreatedAt"],
            started_at=parse_iso(e.get("StartedAt")),
            finished_at=parse_iso(e.get("FinishedAt")),
            error=e.get("Error") or None,
            refresh_folder=e.get("RefreshFolder") or None,
            refresh_fingerprint=e.get("RefreshFingerprint") or None,
            counts_final=bool(e.get("CountsFinal", False)),
            full=bool(e.get("Full", False)),
            progress_at=e.metadata.get("timestamp"),
        )

    def create_run(self, r: Run) -> None:
        self.runs.create_entity({"PartitionKey": RUN_INDEX_PARTITION, "RowKey": r.id, "ExportId": r.export_id})
        self.runs.create_entity(self._run_entity(r))

    def _with_tally(self, run: Run) -> Run:
        """A run's counts: planning counts from its entity, upload counts from its live tally."""
        if not run.counts_final:
            tally, _ = self.get_tally(run.id)
            tally.apply_to(run.counts)
            if tally.updated_at and (run.progress_at is None or tally.updated_at > run.progress_at):
                run.progress_at = tally.updated_at
        return run

    def get_run(self, run_id: str) -> Run | None:
        found = self._get_run_entity(run_id)
        return self._with_tally(self._run(found)) if found is not None else None

    def _get_run_entity(self, run_id: str, export_id: str | None = None):
        try:
            export_id = export_id or self._export_of_run(run_id)
            return self.runs.get_entity(export_id, run_id) if export_id else None
        except ResourceNotFoundError:
            return None

    def _export_of_run(self, run_id: str) -> str | None:
        """The export a run belongs to (never changes, so remembered)."""
        export_id = self._run_exports.get(run_id)
        if export_id is None:
            try:
                export_id = self.runs.get_entity(RUN_INDEX_PARTITION, run_id)["ExportId"]
            except ResourceNotFoundError:
                return None
            if len(self._run_exports) > 10_000:
                self._run_exports.clear()
            self._run_exports[run_id] = export_id
        return export_id

    def get_run_status(self, run_id: str, export_id: str | None = None) -> RunStatus | None:
        """Only the run's status (one read: what a worker checks before each request)."""
        found = self._get_run_entity(run_id, export_id)
        if found is None and export_id is not None:
            found = self._get_run_entity(run_id)
        return RunStatus(found["Status"]) if found is not None else None

    def list_runs(self, export_id: str, limit: int = 50) -> list[Run]:
        """Newest first: run ids sort by creation time, inverted."""
        found = self.runs.query_entities("PartitionKey eq @p", parameters={"p": export_id}, results_per_page=limit)
        runs = []
        for e in found:
            runs.append(self._with_tally(self._run(e)))
            if len(runs) >= limit:
                break
        return runs

    def update_run(self, run_id: str, mutate: Callable[[Run], bool | None], attempts: int = 50) -> Run:
        """Read-modify-write with the entity's ETag, so concurrent workers never lose an update.

        ``mutate`` changes the run in place (its counts include the live tally); returning False
        means "nothing to write".
        """
        for attempt in range(attempts):
            entity = self._get_run_entity(run_id)
            if entity is None:
                raise KeyError(run_id)
            run = self._with_tally(self._run(entity))
            if mutate(run) is False:
                return run
            try:
                self.runs.update_entity(
                    self._run_entity(run),
                    mode=UpdateMode.REPLACE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return run
            except (ResourceModifiedError, HttpResponseError) as e:
                if getattr(e, "status_code", None) != 412:
                    raise
                time.sleep(min(0.005 * (attempt + 1), 0.1))
        raise ConcurrencyError(f"Run {run_id} changed {attempts} times while being updated.")

    def delete_runs_of_export(self, export_id: str) -> None:
        for e in self.runs.query_entities("PartitionKey eq @p", parameters={"p": export_id}, select=["RowKey"]):
            self.runs.delete_entity(export_id, e["RowKey"])
            self.runs.delete_entity(RUN_INDEX_PARTITION, e["RowKey"])

    # --- the timer's heartbeat --------------------------------------------------------------

    def record_tick(self, when: datetime) -> None:
        self.runs.upsert_entity({"PartitionKey": HEARTBEAT_PARTITION, "RowKey": "timer", "LastTick": when})

    def last_tick(self) -> datetime | None:
        try:
            return self.runs.get_entity(HEARTBEAT_PARTITION, "timer")["LastTick"]
        except ResourceNotFoundError:
            return None

    # --- run locks: one run per export at a time ------------------------------------------------

    def claim_export(self, export_id: str, run_id: str, is_active: Callable[[str], bool]) -> str | None:
        """Make ``run_id`` the export's one active run. Returns the id of the run holding it instead.

        The lock names a run; a lock whose run has ended (or vanished) is taken over, so a crash
        never leaves an export locked.
        """
        entity = {"PartitionKey": LOCK_PARTITION, "RowKey": export_id, "RunId": run_id}
        for _ in range(10):
            try:
                self.runs.create_entity(entity)
                return None
            except ResourceExistsError:
                pass
            try:
                held = self.runs.get_entity(LOCK_PARTITION, export_id)
            except ResourceNotFoundError:
                continue
            if is_active(held["RunId"]):
                return held["RunId"]
            try:
                self.runs.update_entity(entity, mode=UpdateMode.REPLACE, etag=held.metadata["etag"],
                                        match_condition=MatchConditions.IfNotModified)
                return None
            except (ResourceModifiedError, HttpResponseError) as e:
                if getattr(e, "status_code", None) != 412:
                    raise
        raise ConcurrencyError(f"The run lock of export {export_id} kept changing.")

    def locked_runs(self) -> list[tuple[str, str]]:
        """(export id, run id) of every export's latest claimed run: where active runs are found."""
        return [(e["RowKey"], e["RunId"]) for e in self.runs.query_entities(
            "PartitionKey eq @p", parameters={"p": LOCK_PARTITION})]

    # --- batches and the tally ---------------------------------------------------------------
    # A run's batch entities and its tally share one partition (the run id), so that finishing a
    # batch and counting it is one entity-group transaction: a worker killed at any point leaves
    # either both changes or neither.

    # row keys: contacts "0000001" (digits sort first), tags "t0000001", untags "u0000001"
    _PREFIX = {"contacts": "", "tags": "t", "untags": "u"}
    _RANGE = {"contacts": ("0", "a"), "tags": ("t", "u"), "untags": ("u", "v")}

    @classmethod
    def _batch_key(cls, number: int, kind: str = "contacts") -> str:
        return f"{cls._PREFIX[kind]}{number:07d}"

    @staticmethod
    def _pack(value) -> bytes:
        return zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 6)

    @staticmethod
    def _unpack(value):
        return json.loads(zlib.decompress(value)) if value else None

    def _batch(self, run_id: str, e) -> Batch:
        failures = self._unpack(e.get("Failures")) or []
        key = e["RowKey"]
        kind = {"t": "tags", "u": "untags"}.get(key[0], "contacts")
        return Batch(
            run_id=run_id,
            kind=kind,
            number=int(key.lstrip("tu")),
            size=e["Size"],
            status=BatchStatus(e["Status"]),
            omnisend_batch_id=e.get("OmnisendBatchId") or None,
            attempts=e.get("Attempts", 0),
            confirmed=e.get("Confirmed", 0),
            failed=e.get("Failed", 0),
            error=e.get("Error") or None,
            payload=self._unpack(e.get("Payload")),
            failures=[Failure(*f) for f in failures],
        )

    def _batch_entity(self, batch: Batch) -> dict:
        return {
            "PartitionKey": batch.run_id,
            "RowKey": self._batch_key(batch.number, batch.kind),
            "Size": batch.size,
            "Status": batch.status.value,
            "OmnisendBatchId": batch.omnisend_batch_id or "",
            "Attempts": batch.attempts,
            "Confirmed": batch.confirmed,
            "Failed": batch.failed,
            "Error": (batch.error or "")[:2000],
            "Payload": self._pack(batch.payload) if batch.payload is not None else b"",
            "Failures": self._pack([[f.index, f.reason, f.detail[:500]] for f in batch.failures]),
        }

    def get_batch(self, run_id: str, number: int, kind: str = "contacts") -> tuple[Batch, str] | None:
        """The batch and its ETag, or None when no worker has recorded it yet."""
        try:
            e = self.batches.get_entity(run_id, self._batch_key(number, kind))
        except ResourceNotFoundError:
            return None
        return self._batch(run_id, e), e.metadata["etag"]

    def list_batch_range(self, run_id: str, first: int, last: int, kind: str = "contacts") -> Iterator[Batch]:
        """Batches numbered ``first`` to ``last`` that have a record, in number order."""
        query = "PartitionKey eq @p and RowKey ge @lo and RowKey le @hi"
        for e in self.batches.query_entities(query, parameters={
                "p": run_id, "lo": self._batch_key(first, kind), "hi": self._batch_key(last, kind)}):
            yield self._batch(run_id, e)

    def list_batches(self, run_id: str, failed_only: bool = False, kind: str = "contacts") -> Iterator[Batch]:
        lo, hi = self._RANGE[kind]
        query = "PartitionKey eq @p and RowKey ge @lo and RowKey lt @hi" + (" and Failed gt 0" if failed_only else "")
        for e in self.batches.query_entities(query, parameters={"p": run_id, "lo": lo, "hi": hi}):
            yield self._batch(run_id, e)

    # The tally is split into shards: a head (``~tally``: the planned counts, and counts added by the
    # planner and the finalizer) and TALLY_SHARDS counter shards that batch commits add to, chosen by
    # batch. Workers finishing batches at the same time then rarely write the same entity (one entity
    # took about 3 commits a second on Azurite under 8 workers); a read sums them with one query.

    @staticmethod
    def _tally(e) -> Tally:
        data = json.loads(e.get("Counts") or "{}")
        return Tally(
            planned=e.get("Planned", -1),
            untags_planned=data.get("untagsPlanned", 0),
            untags_done=data.get("untagsDone", 0),
            tags_planned=data.get("tagsPlanned", -1),
            tags_done=data.get("tagsDone", 0),
            tagged=data.get("tagged", 0),
            untagged=data.get("untagged", 0),
            tag_failures=data.get("tagFailures", 0),
            waves=data.get("waves", 0),
            tags_numbered=data.get("tagsNumbered", 0),
            wave_tick=data.get("waveTick", 0),
            tag_retry=data.get("tagRetry", False),
            sent=data.get("sent", 0),
            batches_sent=data.get("batchesSent", 0),
            confirmed=data.get("confirmed", 0),
            failed=data.get("failed", 0),
            failed_by_reason=data.get("failedByReason", {}),
            batches_done=data.get("batchesDone", 0),
            updated_at=e.metadata.get("timestamp"),
        )

    @staticmethod
    def _tally_entity(run_id: str, t: Tally, key: str = TALLY_KEY) -> dict:
        counts = {"sent": t.sent, "batchesSent": t.batches_sent, "confirmed": t.confirmed, "failed": t.failed,
                  "failedByReason": t.failed_by_reason, "batchesDone": t.batches_done,
                  "untagsPlanned": t.untags_planned, "untagsDone": t.untags_done, "tagsPlanned": t.tags_planned,
                  "tagsDone": t.tags_done, "tagged": t.tagged, "untagged": t.untagged, "tagFailures": t.tag_failures}
        if key == TALLY_KEY:  # the waves' cursor is the head's, as the planned counts
            counts.update(waves=t.waves, tagsNumbered=t.tags_numbered, waveTick=t.wave_tick, tagRetry=t.tag_retry)
        return {"PartitionKey": run_id, "RowKey": key, "Planned": t.planned, "Counts": json.dumps(counts)}

    @classmethod
    def _shard_key(cls, batch: Batch) -> str:
        """The shard a batch counts into: always the same one (a retry takes its counts out of it)."""
        return f"{TALLY_KEY}~{zlib.crc32(cls._batch_key(batch.number, batch.kind).encode()) % TALLY_SHARDS:02d}"

    def _tally_parts(self, run_id: str) -> dict[str, tuple[Tally, str]]:
        """Every part of the run's tally by row key, with its ETag: one query."""
        found = self.batches.query_entities(
            "PartitionKey eq @p and RowKey ge @lo and RowKey lt @hi",
            parameters={"p": run_id, "lo": TALLY_KEY, "hi": TALLY_KEY[:-1] + chr(ord(TALLY_KEY[-1]) + 1)},
        )
        return {e["RowKey"]: (self._tally(e), e.metadata["etag"]) for e in found}

    @staticmethod
    def _sum(parts: dict[str, tuple[Tally, str]]) -> Tally:
        head = parts[TALLY_KEY][0] if TALLY_KEY in parts else Tally()
        total = head.plus(Tally())
        for key, (part, _) in parts.items():
            if key != TALLY_KEY:
                total = total.plus(part)
        return total

    def get_tally(self, run_id: str) -> tuple[Tally, str | None]:
        """The run's whole tally (all shards summed), and the head's ETag."""
        parts = self._tally_parts(run_id)
        return self._sum(parts), parts[TALLY_KEY][1] if TALLY_KEY in parts else None

    def _write_tally_op(self, run_id: str, tally: Tally, etag: str | None, key: str = TALLY_KEY) -> tuple:
        entity = self._tally_entity(run_id, tally, key)
        if etag is None:
            return ("create", entity)
        return ("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                                   "match_condition": MatchConditions.IfNotModified})

    def update_tally(self, run_id: str, mutate: Callable[[Tally], None], attempts: int = 100) -> Tally:
        """Change the tally's head (planned counts; counts added there add to the run's), return the sum."""
        for attempt in range(attempts):
            parts = self._tally_parts(run_id)
            head, etag = parts.get(TALLY_KEY, (Tally(), None))
            mutate(head)
            try:
                self.batches.submit_transaction([self._write_tally_op(run_id, head, etag)])
                return self.get_tally(run_id)[0]  # read after the write: see the note in commit_batch
            except TableTransactionError as e:
                if e.status_code not in (409, 412):
                    raise
                time.sleep(min(0.005 * (attempt + 1), 0.1))
        raise ConcurrencyError(f"The tally of run {run_id} changed {attempts} times while being updated.")

    def commit_batch(self, batch: Batch, etag: str | None, mutate: Callable[[Tally], None],
                     attempts: int = 100) -> Tally | None:
        """Write ``batch`` (new when ``etag`` is None, else only if unchanged since ``etag``) and apply
        ``mutate`` to one shard of the run's tally, atomically. Returns the run's whole tally after it,
        or None when another worker changed the batch first: the caller lost the race and must not act
        on it again.

        The whole tally returned is exact when the run is near its end (few batches left) or not
        planned yet, where moving the run on depends on it: then it is read again after the commit.
        Every write that may end a run (these commits, and ``update_tally``) reads after writing, so
        of two writers racing to the end the later one sees both writes. Far from the end the tally
        returned may miss commits made meanwhile by other workers (never overstating them); should
        more than NEAR_END_BATCHES batches be counted between one commit's read and its write, the
        timer's reconcile moves the run on.
        """
        if etag is None:
            batch_op: tuple = ("create", self._batch_entity(batch))
        else:
            batch_op = ("update", self._batch_entity(batch),
                        {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified})
        key = self._shard_key(batch)
        for attempt in range(attempts):
            parts = self._tally_parts(batch.run_id)
            shard, shard_etag = parts.get(key, (Tally(), None))
            mutate(shard)
            try:
                self.batches.submit_transaction([batch_op, self._write_tally_op(batch.run_id, shard, shard_etag, key)])
            except TableTransactionError as e:
                if e.index == 0 and e.status_code in (409, 412):
                    return None  # the batch changed under us
                if e.status_code not in (409, 412):
                    raise
                time.sleep(random.uniform(0, min(0.005 * (attempt + 1), 0.1)))  # only the shard moved: again
                continue
            parts[key] = (shard, "")
            total = self._sum(parts)
            if (total.planned < 0 or total.tags_planned == -2 or total.batches_left() <= NEAR_END_BATCHES
                    or total.planned - total.batches_sent <= NEAR_END_BATCHES):
                total, _ = self.get_tally(batch.run_id)
            return total
        raise ConcurrencyError(f"The tally of run {batch.run_id} changed {attempts} times while being updated.")

    # --- queues ------------------------------------------------------------------------------

    def queue_length(self, name: str) -> int:
        """Approximate number of messages in a queue (0 when it does not exist)."""
        try:
            return self.queue_client(name).get_queue_properties().approximate_message_count or 0
        except ResourceNotFoundError:
            return 0

    def send_run_message(self, body: dict, delay_seconds: float = 0) -> None:
        self.run_queue.send_message(json.dumps(body, separators=(",", ":")), visibility_timeout=_delay(delay_seconds))

    def send_batch_message(self, text: str, delay_seconds: float = 0) -> None:
        self.batch_queue.send_message(text, visibility_timeout=_delay(delay_seconds))

    # --- a planned run's batch messages, waiting to be fanned out ---------------------------------

    def spool_blob(self, run_id: str):
        """The run's batch messages, one JSON line each (deleted when the run's counts are final)."""
        return self.artifacts.get_blob_client(f"{run_id}/batches.jsonl")

    def read_spool(self, run_id: str, start: int, end: int) -> list[str]:
        data = self.spool_blob(run_id).download_blob(offset=start, length=end - start).readall()
        return [line for line in data.decode("utf-8").split("\n") if line]

    def delete_spool(self, run_id: str) -> None:
        try:
            self.spool_blob(run_id).delete_blob()
        except ResourceNotFoundError:
            pass

    # --- reports of rejected and failed rows -------------------------------------------------

    def _report_blob(self, run_id: str):
        return self.artifacts.get_blob_client(f"{run_id}/rejects.csv")

    def create_report(self, run_id: str) -> None:
        """Start the run's report with its header; done once, before any batch can append to it."""
        blob = self._report_blob(run_id)
        blob.create_append_blob()
        blob.append_block(REPORT_HEADER)

    def open_report(self, run_id: str) -> "ReportWriter":
        return ReportWriter(self._report_blob(run_id))

    def read_report(self, run_id: str) -> Iterator[bytes]:
        """The run's report as CSV, streamed: the planner's rejections, then every contact that did
        not land at Omnisend, from the batch entities (their outcome and their report are one record)."""
        try:
            yield from self._report_blob(run_id).download_blob().chunks()
        except ResourceNotFoundError:
            yield REPORT_HEADER
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\r\n")
        for batch in self.list_batches(run_id, failed_only=True):
            payload = batch.payload or {}
            parts, refs = payload.get("parts", []), payload.get("refs", [])
            contacts = payload.get("contacts", [])
            for f in batch.failures:
                part, row = (parts[refs[f.index][0]], refs[f.index][1]) if f.index < len(refs) else ("", "")
                email = contacts[f.index]["identifiers"][0]["id"] if f.index < len(contacts) else ""
                out.writerow(("upload", part, row, email, f.reason, f.detail))
            if buf.tell() > 1 << 16:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
        if buf.tell():
            yield buf.getvalue().encode()


class ReportWriter:
    """Appends report lines to the run's append blob in blocks (append blobs take concurrent writers)."""

    FLUSH_BYTES = 1 << 20

    def __init__(self, blob):
        self._blob = blob
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\r\n")

    def add(self, stage: str, partition: str, row: int | str, email: str, reason: str, detail: str = "") -> None:
        self._csv.writerow((stage, partition, row, email, reason, detail))
        if self._buf.tell() >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        data = self._buf.getvalue()
        if not data:
            return
        raw = data.encode("utf-8")
        for start in range(0, len(raw), 4 << 20):  # an append block holds at most 4 MiB
            block = raw[start : start + (4 << 20)]
            try:
                self._blob.append_block(block)
            except ResourceNotFoundError:  # the run's report was never started (an old run): start it
                self._blob.create_append_blob()
                self._blob.append_block(REPORT_HEADER)
                self._blob.append_block(block)
        self._buf.seek(0)
        self._buf.truncate()

    def close(self) -> None:
        self.flush()
