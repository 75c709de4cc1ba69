"""The Azure SDK clients of the app's one storage account (``AzureWebJobsStorage``), and the
platform's, where segments are read. The only place that builds them: identity-based in Azure,
a connection string (Azurite) locally."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from .. import config
from ..config import Settings

TABLES = (config.TABLE_CONNECTIONS, config.TABLE_EXPORTS, config.TABLE_RUNS, config.TABLE_BATCHES,
          config.TABLE_RATE_LIMITS)
QUEUES = (config.QUEUE_RUNS, config.QUEUE_BATCHES)


def _credential(settings: Settings) -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)


class StorageClients:
    def __init__(self, settings: Settings, credential: Any = None):
        self.settings = settings
        if settings.storage_connection_string:
            conn = settings.storage_connection_string
            self.blobs = BlobServiceClient.from_connection_string(conn)
            self.tables = TableServiceClient.from_connection_string(conn)
            self.queues = QueueServiceClient.from_connection_string(conn)
        else:
            cred = credential or _credential(settings)
            blob_uri = settings.blob_service_uri or ""
            account = blob_uri.split("//", 1)[1].split(".", 1)[0]
            self.blobs = BlobServiceClient(blob_uri, credential=cred)
            self.tables = TableServiceClient(
                settings.table_service_uri or f"https://{account}.table.core.windows.net", credential=cred
            )
            self.queues = QueueServiceClient(
                settings.queue_service_uri or f"https://{account}.queue.core.windows.net", credential=cred
            )
        if settings.segments_blob_service_uri:
            self.segment_blobs = BlobServiceClient(
                settings.segments_blob_service_uri, credential=credential or _credential(settings)
            )
        else:
            self.segment_blobs = self.blobs
        self.artifacts = self.blobs.get_container_client(config.CONTAINER_RUN_ARTIFACTS)

    def table(self, name: str) -> TableClient:
        return self.tables.get_table_client(name)

    def queue(self, name: str) -> QueueClient:
        # The Functions host reads base64 messages by default (host.json messageEncoding).
        return self.queues.get_queue_client(
            name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
        )

    def app_tables(self) -> dict[str, TableClient]:
        """The app's own tables by name (the rate-limits table aside)."""
        return {name: self.table(name) for name in TABLES if name != config.TABLE_RATE_LIMITS}

    def segment_container(self, name: str) -> ContainerClient:
        """A container of the platform's segment exports (read by ``exporter.segments``)."""
        return self.segment_blobs.get_container_client(name)

    def ensure_resources(self) -> None:
        """Create the tables, queues and container the app uses (Bicep does this in Azure)."""
        for table in TABLES:
            self.tables.create_table_if_not_exists(table)
        for name in QUEUES:
            for q in (name, name + config.POISON_SUFFIX):
                try:
                    self.queues.create_queue(q)
                except ResourceExistsError:
                    pass
        try:
            self.artifacts.create_container()
        except ResourceExistsError:
            pass
