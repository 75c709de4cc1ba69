"""An export: a segment, a connection and the mapping of segment columns to Omnisend contact fields.

Field names in ``to_api`` follow the public JSON API (camelCase); Python attributes stay snake_case.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime

from anyascii import anyascii

from .common import iso

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
        get = data.get
        return cls(email=data["email"], first_name=get("firstName"), last_name=get("lastName"), address=get("address"),
                   country=get("country"), state=get("state"), city=get("city"), postal_code=get("postalCode"))

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
_EMOJI_NAME = re.compile(r":[a-z0-9_+-]+:")  # how anyascii spells an emoji (":tada:")


def safe_tag(name: str, export_id: str = "") -> str:
    """A segment name made into a tag Omnisend accepts, readable from any script: transliterated to
    ASCII (anyascii: "Клиенты" -> "Klienty"; emoji dropped, runs of spaces made one), other characters
    become "-", at most 128. A name with no letter or digit left gets "segment-" and a stable hash of
    the export's id, so that two such exports never share a tag (a leaver of one would lose the tag it holds as a member of the other)."""
    text = " ".join(_EMOJI_NAME.sub(" ", anyascii(name)).split())
    tag = re.sub(r"[^a-zA-Z0-9_\- ]", "-", text)[:128].strip()
    if not re.search(r"[a-zA-Z0-9]", tag):
        return "segment-" + hashlib.sha256(export_id.encode()).hexdigest()[:8]
    return tag


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


DEFAULT_MAX_REMOVAL_PERCENT = 50
DEFAULT_MAX_REJECTED_PERCENT = 50


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
    # membership safety thresholds (percent; 100 turns one off): a run over either stops before it sends
    max_removal_percent: int = DEFAULT_MAX_REMOVAL_PERCENT  # of the current members, leaving at once
    max_rejected_percent: int = DEFAULT_MAX_REJECTED_PERCENT  # of the rows read, rejected

    @property
    def effective_tag(self) -> str:
        return self.tag or safe_tag(self.source.segment, self.id)

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
            "maxRemovalPercent": self.max_removal_percent,
            "maxRejectedPercent": self.max_rejected_percent,
            "enabled": self.enabled,
            "disabledReason": self.disabled_reason,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        }
