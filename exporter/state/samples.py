"""A preview's sample: the first contacts exactly as a run would send them (``<run>/sample.json``).

Kept beside the run's reports, not on its record: a sample holds personal data, which is shown to
whoever may see the run's report, and a table entity is no place for twenty contact bodies.
"""

from __future__ import annotations

import json

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient


class SampleRepository:
    def __init__(self, container: ContainerClient):
        self._container = container

    def _blob(self, run_id: str) -> BlobClient:
        return self._container.get_blob_client(f"{run_id}/sample.json")

    def write(self, run_id: str, contacts: list[dict]) -> None:
        self._blob(run_id).upload_blob(json.dumps(contacts), overwrite=True)

    def read(self, run_id: str) -> list[dict] | None:
        try:
            return json.loads(self._blob(run_id).download_blob().readall())
        except ResourceNotFoundError:
            return None

    def delete(self, run_id: str) -> None:
        try:
            self._blob(run_id).delete_blob()
        except ResourceNotFoundError:
            pass
