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


class RunKind(str, Enum):
    RUN = "run"
    # planning only: what a run would do, without sending, writing membership state, taking rate
    # budget or counting as the refresh's run for the timer
    PREVIEW = "preview"


@dataclass
class RunCounts:
    """Where every input row went. When a run ends: read = rejected + duplicates + confirmed + failed + skipped."""

    read: int = api_field()
    rejected: int = api_field()
    rejected_by_reason: dict[str, int] = api_field(dict)
    duplicates: int = api_field()
    queued: int = api_field()  # valid contacts put in batches for Omnisend (joined + changed)
    joined: int = api_field()  # of those, members not in the last confirmed state
    changed: int = api_field()  # members of the last confirmed state sent again: a field changed, or a full run
    changed_fields: dict[str, int] = api_field(dict)  # changed members by field that changed ("unknown": not known)
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
    kind: RunKind = RunKind.RUN
    changes_kept: bool = False  # planning read the refresh and wrote the changes report
    preview: "PreviewResult | None" = None  # a preview's result, once it is planned
    # Why the batches still to be sent are not sent, when the run failed for a cause they all share
    # (the key missing or refused): they are counted under it, not under "the run had ended".
    stop_reason: str | None = None

    @property
    def is_preview(self) -> bool:
        return self.kind is RunKind.PREVIEW

    def to_api(self, status_url: str | None = None) -> dict:
        body = {
            "runId": self.id,
            "kind": self.kind.value,
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
        if self.preview is not None:
            body["preview"] = self.preview.to_api()
        if status_url:
            body["statusUrl"] = status_url
        return body


@dataclass(frozen=True)
class Estimate:
    """How long a run would take at the connection's budget: its Omnisend requests paced as the
    pacer paces them (``omnisend/pacing.py``), after planning as long as the preview's own."""

    seconds: float
    planning_seconds: float
    contact_batches: int  # POST /batches of up to 100 contacts
    contact_requests: int  # those, and the reads of their results
    tag_calls: int  # POST /contacts/tags and .../remove (they count in the general budget too)
    requests_per_window: int  # the connection's general budget
    tag_calls_per_window: int
    window_seconds: int

    def to_api(self) -> dict:
        return {"seconds": round(self.seconds, 1), "planningSeconds": round(self.planning_seconds, 1),
                "contactBatches": self.contact_batches, "contactRequests": self.contact_requests, "tagCalls": self.tag_calls,
                "requestsPerWindow": self.requests_per_window, "tagCallsPerWindow": self.tag_calls_per_window,
                "windowSeconds": self.window_seconds}

    @classmethod
    def from_api(cls, d: dict) -> "Estimate":
        return cls(d["seconds"], d["planningSeconds"], d["contactBatches"], d["contactRequests"], d["tagCalls"], d["requestsPerWindow"],
                   d["tagCallsPerWindow"], d["windowSeconds"])


@dataclass(frozen=True)
class PreviewResult:
    """What a preview found a run would do (its counts are the run's counts)."""

    tag: str | None  # added to members who do not hold it yet
    tag_additions: int
    tag_removed: str | None  # removed from members who left (the tag of the last confirmed state)
    tag_removals: int
    would_stop: str | None  # why a real run would stop before sending (a threshold, the contract limit)
    estimate: Estimate

    def to_api(self) -> dict:
        return {"tag": self.tag, "tagAdditions": self.tag_additions, "tagRemoved": self.tag_removed,
                "tagRemovals": self.tag_removals, "wouldStop": self.would_stop, "estimate": self.estimate.to_api()}

    @classmethod
    def from_api(cls, d: dict) -> "PreviewResult":
        return cls(d["tag"], d["tagAdditions"], d["tagRemoved"], d["tagRemovals"], d["wouldStop"],
                   Estimate.from_api(d["estimate"]))
