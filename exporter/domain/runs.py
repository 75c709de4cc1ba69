"""A run: one export of one refresh, and where every row of it went."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from . import fields as counts
from .common import iso
from .fields import api_field


class RunStatus(str, Enum):
    QUEUED = "queued"
    PLANNING = "planning"
    UPLOADING = "uploading"
    VERIFYING = "verifying"
    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partiallySucceeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.PARTIALLY_SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)

    @property
    def is_active(self) -> bool:
        return not self.is_final


class Trigger(str, Enum):
    SCHEDULE = "schedule"
    MANUAL = "manual"


@dataclass
class RunCounts:
    """Where every input row went. When a run ends: read = rejected + duplicates + confirmed + failed + skipped."""

    read: int = api_field()
    rejected: int = api_field()
    rejected_by_reason: dict[str, int] = api_field(dict)
    duplicates: int = api_field()
    queued: int = api_field()  # valid contacts put in batches for Omnisend
    sent: int = api_field()  # contacts in batches Omnisend accepted
    confirmed: int = api_field()  # contacts Omnisend reported as stored
    failed: int = api_field()  # contacts that did not land at Omnisend
    failed_by_reason: dict[str, int] = api_field(dict)
    skipped: int = api_field()  # members unchanged since the last confirmed run: nothing to send
    left: int = api_field()  # members of the last confirmed run no longer in the segment (not rows of this refresh)
    tagged: int = api_field()  # members whose membership tag Omnisend accepted to add
    already_tagged: int = api_field()  # queued members holding the tag from an earlier run (a field changed): not tagged again
    untagged: int = api_field()  # leavers whose membership tag Omnisend accepted to remove
    tag_failures: int = api_field()  # tag additions or removals that failed (retried by the next run)
    batches: int = api_field()
    batches_sent: int = api_field()  # batches past the send step: accepted by Omnisend, or given up unsent
    batches_done: int = api_field()  # batches whose every contact is counted as confirmed, failed or skipped

    def add_rejection(self, reason: str) -> None:
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1

    def add_failures(self, reason: str, count: int) -> None:
        if count:
            self.failed += count
            self.failed_by_reason[reason] = self.failed_by_reason.get(reason, 0) + count

    @property
    def accounted(self) -> int:
        return self.rejected + self.duplicates + self.confirmed + self.failed + self.skipped

    @property
    def exported(self) -> int:
        return self.confirmed

    def to_api(self) -> dict:
        return counts.to_api(self)

    @classmethod
    def from_api(cls, data: dict) -> "RunCounts":
        return cls(**counts.from_api(cls, data))


@dataclass
class Run:
    id: str
    export_id: str
    connection_id: str
    trigger: str  # a Trigger value: "schedule" or "manual"
    status: RunStatus
    counts: RunCounts
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    refresh_folder: str | None = None
    refresh_fingerprint: str | None = None
    counts_final: bool = False  # every batch is accounted for; counts no longer change
    full: bool = False  # send every member, not only what changed since the last confirmed state
    confirm: bool = False  # started with ?confirm=true: the export's safety thresholds do not stop it
    held: bool = False  # stopped by a safety threshold before sending: a run with confirm would go through
    progress_at: datetime | None = None  # last change of the run or of its tally (storage time)

    def to_api(self, status_url: str | None = None) -> dict:
        body = {
            "runId": self.id,
            "exportId": self.export_id,
            "connectionId": self.connection_id,
            "trigger": self.trigger,
            "full": self.full,
            "confirm": self.confirm,
            "heldByThreshold": self.held,
            "status": self.status.value,
            "counts": self.counts.to_api(),
            "countsFinal": self.counts_final,  # every batch is accounted for: the counts no longer change
            "createdAt": iso(self.created_at),
            "startedAt": iso(self.started_at),
            "finishedAt": iso(self.finished_at),
            "error": self.error,
            "refresh": {"folder": self.refresh_folder, "fingerprint": self.refresh_fingerprint}
            if self.refresh_folder
            else None,
        }
        if status_url:
            body["statusUrl"] = status_url
        return body
