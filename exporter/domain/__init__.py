"""The domain: connections, exports, runs, batches and their counts, as plain dataclasses and enums.

Nothing here touches storage, queues or HTTP; ``exporter.state`` converts these to entities and back.
"""

from .batches import Batch, BatchKind, BatchStatus, Failure
from .common import iso, new_id, parse_iso, utcnow
from .connections import Connection
from .exports import MAPPABLE_FIELDS, TAG_PATTERN, Consent, Export, Mapping, Source, safe_tag
from .members import (
    FP_MASK,
    MARKED_FIELDS,
    KeySet,
    changed_fields,
    email_key,
    field_mark,
    fingerprint,
    member_key,
    planned_fp,
)
from .refresh import Refresh
from .runs import Estimate, PreviewResult, Run, RunCounts, RunKind, RunStatus, Trigger
from .tally import TagPlanning, Tally

__all__ = [
    "Batch", "BatchKind", "BatchStatus", "Connection", "Consent", "Estimate", "Export", "FP_MASK", "Failure",
    "KeySet", "MAPPABLE_FIELDS", "MARKED_FIELDS", "Mapping", "PreviewResult", "Refresh", "Run", "RunCounts",
    "RunKind", "RunStatus", "Source", "TAG_PATTERN", "TagPlanning", "Tally", "Trigger", "changed_fields",
    "email_key", "field_mark", "fingerprint", "iso", "member_key", "new_id", "parse_iso", "planned_fp", "safe_tag",
    "utcnow",
]
