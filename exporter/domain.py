"""The domain: connections, exports, runs and batches.

Field names in ``to_api`` follow the public JSON API (camelCase); Python attributes stay snake_case.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from enum import Enum


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if dt else None


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def new_id() -> str:
    return uuid.uuid4().hex


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


class BatchStatus(str, Enum):
    QUEUED = "queued"  # enqueued by the planner, not yet sent
    ACCEPTED = "accepted"  # Omnisend answered 201 with a batch id; outcome not known yet
    FINISHED = "finished"  # Omnisend finished it; per-item outcome recorded
    FAILED = "failed"  # could not be sent, or Omnisend stopped it

    @property
    def is_final(self) -> bool:
        return self in (BatchStatus.FINISHED, BatchStatus.FAILED)


@dataclass
class Connection:
    id: str
    display_name: str
    allow_contributors: bool
    data_privacy_consent: bool
    consented_by: str
    consented_at: datetime
    created_at: datetime
    max_profiles_per_export: int | None = None

    @property
    def secret_name(self) -> str:
        # Key Vault secret names allow only letters, digits and dashes.
        return f"omnisend-connection-{self.id}"

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "displayName": self.display_name,
            "allowContributors": self.allow_contributors,
            "dataPrivacyConsent": self.data_privacy_consent,
            "consentedBy": self.consented_by,
            "consentedAt": iso(self.consented_at),
            "createdAt": iso(self.created_at),
            "maxProfilesPerExport": self.max_profiles_per_export,
        }


# Omnisend contact fields an export can map, in API order: (json name, python attribute).
MAPPABLE_FIELDS = (
    ("email", "email"),
    ("firstName", "first_name"),
    ("lastName", "last_name"),
    ("address", "address"),
    ("country", "country"),
    ("state", "state"),
    ("city", "city"),
    ("postalCode", "postal_code"),
)


@dataclass(frozen=True)
class Mapping:
    """Which segment column feeds each Omnisend contact field (column names, as the platform wrote them)."""

    email: str
    first_name: str | None = None
    last_name: str | None = None
    address: str | None = None
    country: str | None = None
    state: str | None = None
    city: str | None = None
    postal_code: str | None = None

    def to_api(self) -> dict:
        return {api: getattr(self, attr) for api, attr in MAPPABLE_FIELDS if getattr(self, attr) is not None}

    @classmethod
    def from_api(cls, data: dict) -> "Mapping":
        return cls(**{attr: data.get(api) for api, attr in MAPPABLE_FIELDS})

    def columns(self) -> dict[str, str]:
        """Mapped contact field (json name) -> column name, for the fields that are mapped."""
        return self.to_api()


@dataclass(frozen=True)
class Source:
    container: str
    folder: str  # the platform's root folder inside the container ("" for the container root)
    segment: str

    def to_api(self) -> dict:
        return {"container": self.container, "folder": self.folder, "segment": self.segment}

    @classmethod
    def from_api(cls, data: dict) -> "Source":
        return cls(container=data["container"], folder=data.get("folder") or "", segment=data["segment"])


TAG_PATTERN = re.compile(r"^[a-zA-Z0-9_\- ]{1,128}$")  # what Omnisend's own plugin accepts


def safe_tag(name: str) -> str:
    """A segment name made into a tag Omnisend accepts: other characters become "-", at most 128."""
    tag = re.sub(r"[^a-zA-Z0-9_\- ]", "-", name).strip()[:128].strip()
    return tag or "segment"


@dataclass(frozen=True)
class Consent:
    """Maps a profile column to Omnisend's email channel status; without it, exports never change consent."""

    column: str
    subscribed: tuple[str, ...] = ("true", "yes", "1")
    unsubscribed: tuple[str, ...] = ("false", "no", "0")
    changed_at_column: str | None = None  # when the profile's consent changed; else the refresh time

    def to_api(self) -> dict:
        body = {"column": self.column, "subscribedValues": list(self.subscribed),
                "unsubscribedValues": list(self.unsubscribed)}
        if self.changed_at_column:
            body["changedAtColumn"] = self.changed_at_column
        return body

    @classmethod
    def from_api(cls, data: dict | None) -> "Consent | None":
        if not data:
            return None
        return cls(
            column=data["column"],
            subscribed=tuple(v.strip().casefold() for v in data.get("subscribedValues") or cls.subscribed),
            unsubscribed=tuple(v.strip().casefold() for v in data.get("unsubscribedValues") or cls.unsubscribed),
            changed_at_column=data.get("changedAtColumn") or None,
        )


@dataclass
class Export:
    id: str
    name: str
    connection_id: str
    source: Source
    mapping: Mapping
    enabled: bool
    created_at: datetime
    updated_at: datetime
    disabled_reason: str | None = None
    tag: str | None = None  # segment membership tag in Omnisend; None: derived from the segment name
    consent: Consent | None = None
    send_welcome_message: bool = False

    @property
    def effective_tag(self) -> str:
        return self.tag or safe_tag(self.source.segment)

    def sync_key(self) -> str:
        """What a member's state depends on besides its fields: when it changes, everyone is sent again."""
        parts = [self.connection_id, json.dumps(self.mapping.to_api(), sort_keys=True), self.effective_tag,
                 json.dumps(self.consent.to_api() if self.consent else None, sort_keys=True),
                 str(self.send_welcome_message)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "connectionId": self.connection_id,
            "source": self.source.to_api(),
            "mapping": self.mapping.to_api(),
            "tag": self.effective_tag,
            "consent": self.consent.to_api() if self.consent else None,
            "sendWelcomeMessage": self.send_welcome_message,
            "enabled": self.enabled,
            "disabledReason": self.disabled_reason,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        }


@dataclass
class RunCounts:
    """Where every input row went. When a run ends: read = rejected + duplicates + confirmed + failed + skipped."""

    read: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    queued: int = 0  # valid contacts put in batches for Omnisend
    sent: int = 0  # contacts in batches Omnisend accepted
    confirmed: int = 0  # contacts Omnisend reported as stored
    failed: int = 0  # contacts that did not land at Omnisend
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # members unchanged since the last confirmed run: nothing to send
    left: int = 0  # members of the last confirmed run no longer in the segment (not rows of this refresh)
    untagged: int = 0  # leavers whose membership tag Omnisend accepted to remove
    tagged: int = 0  # members whose membership tag Omnisend accepted to add
    already_tagged: int = 0  # queued members holding the tag from an earlier run (a field changed): not tagged again
    tag_failures: int = 0  # tag additions or removals that failed (retried by the next run)
    batches: int = 0
    batches_sent: int = 0  # batches past the send step: accepted by Omnisend, or given up unsent
    batches_done: int = 0  # batches whose every contact is counted as confirmed, failed or skipped

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
        return {
            "read": self.read,
            "rejected": self.rejected,
            "rejectedByReason": dict(self.rejected_by_reason),
            "duplicates": self.duplicates,
            "queued": self.queued,
            "sent": self.sent,
            "confirmed": self.confirmed,
            "failed": self.failed,
            "failedByReason": dict(self.failed_by_reason),
            "skipped": self.skipped,
            "left": self.left,
            "tagged": self.tagged,
            "alreadyTagged": self.already_tagged,
            "untagged": self.untagged,
            "tagFailures": self.tag_failures,
            "batches": self.batches,
            "batchesSent": self.batches_sent,
            "batchesDone": self.batches_done,
        }

    @classmethod
    def from_api(cls, data: dict) -> "RunCounts":
        names = {f.name for f in fields(cls)}
        camel = {
            "rejectedByReason": "rejected_by_reason",
            "failedByReason": "failed_by_reason",
            "batchesSent": "batches_sent",
            "batchesDone": "batches_done",
            "tagFailures": "tag_failures",
            "alreadyTagged": "already_tagged",
        }
        kwargs = {camel.get(k, k): v for k, v in data.items() if camel.get(k, k) in names}
        return cls(**kwargs)


@dataclass
class Refresh:
    """One refresh of a segment as written by the platform: a time folder and its partition blobs."""

    folder: str  # blob prefix of the time folder, e.g. "ci/Seg/2026/11/28/1200/"
    fingerprint: str  # stable digest of the partition names and ETags; equal means the same data
    partitions: tuple[str, ...]  # blob names, in partition order
    last_modified: datetime  # newest blob in the folder
    size: int = 0  # bytes of the partition blobs as stored (compressed, for .csv.gz)


@dataclass
class Run:
    id: str
    export_id: str
    connection_id: str
    trigger: str  # "schedule" or "manual"
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
    progress_at: datetime | None = None  # last change of the run or of its tally (storage time)

    def to_api(self, status_url: str | None = None) -> dict:
        body = {
            "runId": self.id,
            "exportId": self.export_id,
            "connectionId": self.connection_id,
            "trigger": self.trigger,
            "full": self.full,
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


@dataclass
class Failure:
    """One contact of a batch that did not land at Omnisend."""

    index: int  # position in the batch's contacts
    reason: str  # low-cardinality key, counted in failedByReason
    detail: str  # what Omnisend (or the uploader) said


BATCH_KINDS = ("contacts", "tags", "untags")  # contacts to write; membership tags to add; to remove


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
    payload: dict | None = None  # the send message: contacts and their source rows (kept for reports and retries)
    failures: list[Failure] = field(default_factory=list)
    kind: str = "contacts"

    def failed_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.failures:
            out[f.reason] = out.get(f.reason, 0) + 1
        return out


@dataclass
class Tally:
    """The upload side of a run's counts, kept beside its batches so both change in one transaction."""

    planned: int = -1  # batches the planner enqueued; -1 until planning ends
    sent: int = 0
    batches_sent: int = 0
    confirmed: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    batches_done: int = 0
    # membership tags: untag batches are planned with the contacts; tag batches once the contacts are
    # confirmed (-1: not yet; -2: being planned)
    untags_planned: int = 0
    untags_done: int = 0
    tags_planned: int = -1
    tags_done: int = 0
    tagged: int = 0
    untagged: int = 0
    tag_failures: int = 0
    # tag waves (finalizer.py): contact batches' tags planned while the upload goes on
    waves: int = 0  # waves of WAVE_BATCHES contact batches whose tag batches are planned
    tags_numbered: int = 0  # tag batch numbers those waves used (1..tags_numbered)
    wave_tick: int = 0  # ticks of the wave planner done; the next tick message carries wave_tick + 1
    tag_retry: bool = False  # failed batches were sent again: tag what is confirmed and not tagged yet
    updated_at: datetime | None = None  # last change: how a stuck run is noticed

    @property
    def complete(self) -> bool:
        """Every contact batch is counted."""
        return self.planned >= 0 and self.batches_done >= self.planned

    @property
    def tags_complete(self) -> bool:
        return self.tags_planned >= 0 and self.tags_done >= self.tags_planned and self.untags_done >= self.untags_planned

    def add_failures(self, by_reason: dict[str, int]) -> None:
        for reason, n in by_reason.items():
            if n:
                self.failed += n
                self.failed_by_reason[reason] = self.failed_by_reason.get(reason, 0) + n

    # counters that shards of a tally add up; the rest (planned counts, the waves' cursor) is the head's
    COUNTERS = ("sent", "batches_sent", "confirmed", "failed", "batches_done", "untags_done", "tags_done",
                "tagged", "untagged", "tag_failures")

    def plus(self, other: "Tally") -> "Tally":
        """This tally (the head, with the planned counts) with another shard's counters added."""
        total = replace(self, failed_by_reason=dict(self.failed_by_reason))  # the head's fields as they are
        for name in self.COUNTERS:
            setattr(total, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.failed_by_reason.items():
            total.failed_by_reason[reason] = total.failed_by_reason.get(reason, 0) + n
        total.failed_by_reason = {k: v for k, v in total.failed_by_reason.items() if v}
        if other.updated_at and (total.updated_at is None or other.updated_at > total.updated_at):
            total.updated_at = other.updated_at
        return total

    def batches_left(self) -> int:
        """Contact, untag and tag batches not counted yet (planned ones only)."""
        left = max(0, self.planned - self.batches_done) + max(0, self.untags_planned - self.untags_done)
        return left + max(0, (self.tags_planned if self.tags_planned >= 0 else self.tags_numbered) - self.tags_done)

    @property
    def wave_tags_in_flight(self) -> bool:
        """Tag batches of waves not counted yet, before the run's last tag planning."""
        return self.tags_planned < 0 and self.tags_done < self.tags_numbered

    def apply_to(self, counts: "RunCounts") -> None:
        counts.sent, counts.batches_sent = self.sent, self.batches_sent
        counts.confirmed, counts.failed = self.confirmed, self.failed
        counts.failed_by_reason = dict(self.failed_by_reason)
        counts.batches_done = self.batches_done
        counts.tagged, counts.untagged, counts.tag_failures = self.tagged, self.untagged, self.tag_failures
        if self.planned >= 0:
            counts.batches = self.planned
