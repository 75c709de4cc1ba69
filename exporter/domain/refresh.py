"""A refresh: one write of a segment by the platform."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class Refresh:
    """One refresh of a segment as written by the platform: a time folder and its partition blobs."""

    folder: str  # blob prefix of the time folder, e.g. "ci/Seg/2026/11/28/1200/"
    fingerprint: str  # stable digest of the partition names and ETags; equal means the same data
    partitions: tuple[str, ...]  # blob names, in partition order
    last_modified: datetime  # newest blob in the folder
    size: int = 0  # bytes of the partition blobs as stored (compressed, for .csv.gz)
