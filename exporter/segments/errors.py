"""Why a segment cannot be read. Messages say what is wrong and what to do; they name blobs,
columns and settings, never other file contents (segment rows hold personal data)."""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContainerClient


class SegmentSourceError(Exception):
    """The segment cannot be read; the message says what is wrong and what to do."""


class SourceNotFoundError(SegmentSourceError):
    """The container, a partition or the segment's data does not exist."""


class SegmentFormatError(SegmentSourceError):
    """model.json or a partition is not in a format the exporter can read."""


def _where(container: ContainerClient) -> str:
    return f"container '{container.container_name}' of storage account '{container.account_name}'"


def _storage_error(container: ContainerClient, exc: HttpResponseError, doing: str) -> SegmentSourceError:
    """Map an Azure error to a SegmentSourceError; transient errors are not mapped (caller re-raises)."""
    code = str(getattr(exc, "error_code", "") or "")
    if isinstance(exc, ResourceNotFoundError) and "ContainerNotFound" in code:
        return SourceNotFoundError(
            f"The {_where(container)} does not exist (while {doing}). Check the export's source container "
            "name, or wait until the platform has written its first export."
        )
    if isinstance(exc, ResourceNotFoundError):
        return SourceNotFoundError(
            f"A blob disappeared in the {_where(container)} while {doing}: the platform probably replaced "
            "the refresh. Run the export again."
        )
    if exc.status_code == 403:
        return SegmentSourceError(
            f"Access to the {_where(container)} was denied while {doing}. Grant the app's identity the "
            "'Storage Blob Data Reader' role on the storage account or container."
        )
    return None  # type: ignore[return-value]
