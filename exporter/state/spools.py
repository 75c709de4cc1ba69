"""A planned run's batch messages, one JSON line each, as one block blob per run
(``exporter-runs/<run>/batches.jsonl``): staged block by block while the segment is read, made
whole at the end, read back in stretches by dispatch, deleted when the run's counts are final."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContainerClient


class SpoolBlob:
    def __init__(self, container: ContainerClient, run_id: str):
        self._blob = container.get_blob_client(f"{run_id}/batches.jsonl")

    def stage(self, block_id: str, data: bytes) -> None:
        """Upload one block; invisible until ``commit``."""
        self._blob.stage_block(block_id, data)

    def commit(self, block_ids: list[str]) -> None:
        self._blob.commit_block_list([BlobBlock(block_id) for block_id in block_ids])

    def read(self, start: int, end: int) -> list[str]:
        """The lines between bytes ``start`` and ``end``."""
        data = self._blob.download_blob(offset=start, length=end - start).readall()
        return [line for line in data.decode("utf-8").split("\n") if line]

    def delete(self) -> None:
        try:
            self._blob.delete_blob()
        except ResourceNotFoundError:
            pass


class Spools:
    def __init__(self, container: ContainerClient):
        self._container = container

    def of(self, run_id: str) -> SpoolBlob:
        return SpoolBlob(self._container, run_id)
