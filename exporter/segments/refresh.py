"""Which refresh to export: the newest time folder of a segment, once the platform stopped writing it.

The platform writes one folder per refresh::

    <container>/<folder>/<Segment>/<yyyy>/<MM>/<dd>/<HHmm>/<Segment>_<n>.csv[.gz]
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from ..domain import Refresh, Source
from .cdm import MODEL_JSON
from .errors import SegmentSourceError, _storage_error


def _segment_prefix(folder: str | None, segment: str) -> str:
    if not segment or "/" in segment:
        raise SegmentSourceError(f"Segment name {segment!r} is not valid: it must be a non-empty name without '/'.")
    folder = (folder or "").strip("/")
    return f"{folder}/{segment}/" if folder else f"{segment}/"


def _model_json_name(folder: str | None) -> str:
    folder = (folder or "").strip("/")
    return f"{folder}/{MODEL_JSON}" if folder else MODEL_JSON


_TIME_FOLDER = r"(\d{4})/(\d{2})/(\d{2})/(\d{4})/"


def find_latest_refresh(container: ContainerClient, folder: str, segment: str) -> Refresh | None:
    """The newest refresh of ``segment`` (by its yyyy/MM/dd/HHmm path), or None when there is none.

    Blobs that do not fit the layout are ignored. The refresh's ``last_modified`` is the newest blob
    anywhere in its time folder, so a refresh still being written is seen as recent.
    """
    prefix = _segment_prefix(folder, segment)
    folder_re = re.compile(re.escape(prefix) + _TIME_FOLDER)
    partition_re = re.compile(r"(?s)" + re.escape(segment) + r"_(\d+)\.(?i:csv(?:\.gz)?)\Z")
    newest: dict[str, datetime] = {}
    parts: dict[str, list[tuple[int, str, str, int]]] = {}
    try:
        for blob in container.list_blobs(name_starts_with=prefix):
            m = folder_re.match(blob.name)
            if not m:
                continue
            key = m.group(0)
            lm = blob.last_modified
            if key not in newest or lm > newest[key]:
                newest[key] = lm
            p = partition_re.match(blob.name, m.end())
            if p:
                parts.setdefault(key, []).append((int(p.group(1)), blob.name, blob.etag or "", blob.size or 0))
    except HttpResponseError as exc:
        mapped = _storage_error(container, exc, f"listing the refreshes of segment '{segment}'")
        if mapped is None:
            raise
        raise mapped from None
    for key in sorted(parts, reverse=True):
        if not _valid_time_folder(folder_re.match(key)):
            continue
        entries = sorted(parts[key])
        digest = hashlib.sha256()
        for name, etag in sorted((name, etag) for _, name, etag, _ in entries):
            digest.update(name.encode("utf-8", "surrogatepass") + b"\x00" + etag.encode() + b"\n")
        return Refresh(
            folder=key,
            fingerprint=digest.hexdigest(),
            partitions=tuple(name for _, name, _, _ in entries),
            last_modified=_aware(newest[key]),
            size=sum(size for *_, size in entries),
        )
    return None


def _valid_time_folder(m: re.Match | None) -> bool:
    if not m:
        return False
    y, mo, d, hm = m.groups()
    try:
        datetime(int(y), int(mo), int(d), int(hm[:2]), int(hm[2:]))
    except ValueError:
        return False
    return True


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def is_settled(refresh: Refresh, now: datetime, settle_seconds: int) -> bool:
    """True when no blob of the refresh changed in the last ``settle_seconds`` (the platform is done)."""
    if settle_seconds <= 0:
        return True
    return (_aware(now) - _aware(refresh.last_modified)).total_seconds() >= settle_seconds


class NoRefreshError(SegmentSourceError):
    """The segment has no refresh yet: nothing to export."""


class RefreshNotSettledError(SegmentSourceError):
    """The newest refresh changed within the settle period: the platform may still be writing it."""

    def __init__(self, message: str, refresh: Refresh):
        super().__init__(message)
        self.refresh = refresh


def latest_settled_refresh(container: ContainerClient, source: Source, now: datetime, settle_seconds: int) -> Refresh:
    """The refresh a run of ``source`` exports now: the newest, once untouched for ``settle_seconds``.

    Raises NoRefreshError when there is none, RefreshNotSettledError while it is still being written,
    and SegmentSourceError when the container cannot be listed. The one copy of this check: the API,
    the timer and the planner all ask it.
    """
    refresh = find_latest_refresh(container, source.folder, source.segment)
    if refresh is None:
        raise NoRefreshError(
            f"Segment {source.segment!r} has no refresh under {source.container}/{source.folder}: nothing to export yet."
        )
    if not is_settled(refresh, now, settle_seconds):
        raise RefreshNotSettledError(
            f"The latest refresh {refresh.folder} is still being written (last change "
            f"{refresh.last_modified:%H:%M:%S} UTC; settle period {settle_seconds}s). Run again in a few minutes.",
            refresh,
        )
    return refresh
