"""Batches: what a run hands Omnisend, a hundred contacts (or 250 emails to tag) at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # the payload is the batch's queue message (exporter.messages imports this module)
    from ..messages import SendBatch, TagBatch


class BatchKind(str, Enum):
    CONTACTS = "contacts"  # contacts to write (POST /batches)
    TAGS = "tags"  # the membership tag to add to members (POST /contacts/tags)
    UNTAGS = "untags"  # the membership tag to remove from leavers (DELETE /contacts/tags)


class BatchStatus(str, Enum):
    QUEUED = "queued"  # enqueued by the planner, not yet sent
    ACCEPTED = "accepted"  # Omnisend answered 201 with a batch id; outcome not known yet
    FINISHED = "finished"  # Omnisend finished it; per-item outcome recorded
    FAILED = "failed"  # could not be sent, or Omnisend stopped it

    @property
    def is_final(self) -> bool:
        return self in (BatchStatus.FINISHED, BatchStatus.FAILED)


@dataclass
class Failure:
    """One contact of a batch that did not land at Omnisend."""

    index: int  # position in the batch's contacts
    reason: str  # low-cardinality key, counted in failedByReason
    detail: str  # what Omnisend (or the uploader) said


@dataclass
class Batch:
    run_id: str
    number: int  # 1-based, in planning order (each kind numbered on its own)
    size: int  # contacts (or emails to tag) in the batch
    status: BatchStatus = BatchStatus.QUEUED
    omnisend_batch_id: str | None = None
    attempts: int = 0
    confirmed: int = 0
    failed: int = 0
    error: str | None = None
    # the batch's message, kept for reports and retries: a SendBatch (contacts) or a TagBatch (tags)
    payload: Union["SendBatch", "TagBatch", None] = None
    failures: list[Failure] = field(default_factory=list)
    kind: BatchKind = BatchKind.CONTACTS

    def failed_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.failures:
            out[f.reason] = out.get(f.reason, 0) + 1
        return out

    def fail_all(self, reason: str, detail: str) -> None:
        """Every item of the batch failed with ``reason`` (not sent, or its outcome unknown)."""
        self.status = BatchStatus.FAILED
        self.error = detail
        self.failures = [Failure(i, reason, detail) for i in range(self.size)]
        self.failed, self.confirmed = self.size, 0
