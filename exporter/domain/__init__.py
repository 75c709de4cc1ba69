"""The domain: connections, exports, runs, batches and their counts, as plain dataclasses and enums.

Nothing here touches storage, queues or HTTP; ``exporter.state`` converts these to entities and back.
"""

from .batches import Batch, BatchKind, BatchStatus, Failure
from .common import iso, new_id, parse_iso, utcnow
from .connections import Connection
from .exports import MAPPABLE_FIELDS, TAG_PATTERN, Consent, Export, Mapping, Source, safe_tag
from .members import KeySet, email_key, fingerprint, member_key
from .refresh import Refresh
from .runs import Run, RunCounts, RunStatus, Trigger
from .tally import TagPlanning, Tally

__all__ = [
    "MAPPABLE_FIELDS", "TAG_PATTERN", "Batch", "BatchKind", "BatchStatus", "Connection", "Consent", "Export",
    "Failure", "KeySet", "Mapping", "Refresh", "Run", "RunCounts", "RunStatus", "Source", "TagPlanning", "Tally",
    "Trigger", "email_key", "fingerprint", "iso", "member_key", "new_id", "parse_iso", "safe_tag", "utcnow",
]
