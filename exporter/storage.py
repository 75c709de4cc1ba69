"""All state the app keeps, through the one ``AzureWebJobsStorage`` account.

Tables hold connections, exports, runs and batch outcomes; queues carry the work; an append blob per
run holds its report of rejected and failed rows. Identity-based in Azure, Azurite locally.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from datetime import datetime
from typing import Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from . import config
from .config import Settings
from .domain import (
    Batch,
    BatchStatus,
    Connection,
    Export,
    Mapping,
    Refresh,
    Run,
    RunCounts,
    RunStatus,
    Source,
    parse_iso,
)

log = logging.getLogger(__name__)

RUN_INDEX_PARTITION = "~runs"  # pointer entities: run id -> export id
REPORT_COLUMNS = ("stage", "partition", "row", "email", "reason", "detail")
REPORT_HEADER = (",".join(REPORT_COLUMNS) + "\r\n").encode()


class ConcurrencyError(RuntimeError):
    """An entity kept changing under us; the caller may retry the whole operation."""


def _credential(settings: Settings):
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)


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
        self.artifacts = self.blobs.get_container_client(config.CONTAINER_RUN_ARTIFACTS)

    def queue_client(self, name: str):
        return self._queues.get_queue_client(
            name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
        )

    def ensure_resources(self) -> None:
        """Create the tables, queues and container the app uses (Bicep does this in Azure)."""
        for table in (config.TABLE_CONNECTIONS, config.TABLE_EXPORTS, config.TABLE_RUNS, config.TABLE_BATCHES):
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
        )

    def create_run(self, r: Run) -> None:
        self.runs.create_entity({"PartitionKey": RUN_INDEX_PARTITION, "RowKey": r.id, "ExportId": r.export_id})
        self.runs.create_entity(self._run_entity(r))

    def get_run(self, run_id: str) -> Run | None:
        found = self._get_run_entity(run_id)
        return self._run(found) if found is not None else None

    def _get_run_entity(self, run_id: str):
        try:
            pointer = self.runs.get_entity(RUN_INDEX_PARTITION, run_id)
            return self.runs.get_entity(pointer["ExportId"], run_id)
        except ResourceNotFoundError:
            return None

    def list_runs(self, export_id: str, limit: int = 50) -> list[Run]:
        """Newest first: run ids sort by creation time, inverted."""
        found = self.runs.query_entities("PartitionKey eq @p", parameters={"p": export_id}, results_per_page=limit)
        runs = []
        for e in found:
            runs.append(self._run(e))
            if len(runs) >= limit:
                break
        return runs

    def update_run(self, run_id: str, mutate: Callable[[Run], bool | None], attempts: int = 50) -> Run:
        """Read-modify-write with the entity's ETag, so concurrent workers never lose an update.

        ``mutate`` changes the run in place; returning False means "nothing to write".
        """
        for attempt in range(attempts):
            entity = self._get_run_entity(run_id)
            if entity is None:
                raise KeyError(run_id)
            run = self._run(entity)
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

    # --- batches -----------------------------------------------------------------------------

    @staticmethod
    def _batch_key(number: int) -> str:
        return f"{number:07d}"

    def get_batch(self, run_id: str, number: int) -> tuple[Batch, str] | None:
        """The batch and its ETag, or None when no worker has touched it yet."""
        try:
            e = self.batches.get_entity(run_id, self._batch_key(number))
        except ResourceNotFoundError:
            return None
        batch = Batch(
            run_id=run_id,
            number=number,
            size=e["Size"],
            status=BatchStatus(e["Status"]),
            omnisend_batch_id=e.get("OmnisendBatchId") or None,
            attempts=e.get("Attempts", 0),
            confirmed=e.get("Confirmed", 0),
            failed=e.get("Failed", 0),
            error=e.get("Error") or None,
        )
        return batch, e.metadata["etag"]

    def save_batch(self, batch: Batch, etag: str | None) -> bool:
        """Write a batch only if nobody else changed it since ``etag`` (None: only if it is new).

        Returns False when another worker got there first: the caller lost the race and must not
        act on the batch again.
        """
        entity = {
            "PartitionKey": batch.run_id,
            "RowKey": self._batch_key(batch.number),
            "Size": batch.size,
            "Status": batch.status.value,
            "OmnisendBatchId": batch.omnisend_batch_id or "",
            "Attempts": batch.attempts,
            "Confirmed": batch.confirmed,
            "Failed": batch.failed,
            "Error": (batch.error or "")[:2000],
        }
        try:
            if etag is None:
                self.batches.create_entity(entity)
            else:
                self.batches.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            return True
        except ResourceExistsError:
            return False
        except (ResourceModifiedError, HttpResponseError) as e:
            if getattr(e, "status_code", None) in (409, 412):
                return False
            raise

    def list_batches(self, run_id: str) -> list[Batch]:
        out = []
        for e in self.batches.query_entities("PartitionKey eq @p", parameters={"p": run_id}):
            out.append(
                Batch(
                    run_id=run_id,
                    number=int(e["RowKey"]),
                    size=e["Size"],
                    status=BatchStatus(e["Status"]),
                    omnisend_batch_id=e.get("OmnisendBatchId") or None,
                    attempts=e.get("Attempts", 0),
                    confirmed=e.get("Confirmed", 0),
                    failed=e.get("Failed", 0),
                    error=e.get("Error") or None,
                )
            )
        return out

    # --- queues ------------------------------------------------------------------------------

    def send_run_message(self, body: dict) -> None:
        self.run_queue.send_message(json.dumps(body, separators=(",", ":")))

    def send_batch_message(self, text: str, delay_seconds: float = 0) -> None:
        self.batch_queue.send_message(text, visibility_timeout=int(max(0, round(delay_seconds))) or None)

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
        """The run's report as CSV bytes, streamed; only the header when nothing was rejected."""
        try:
            stream = self._report_blob(run_id).download_blob()
        except ResourceNotFoundError:
            yield REPORT_HEADER
            return
        yield from stream.chunks()


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
