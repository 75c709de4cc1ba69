"""Turn a segment row into an Omnisend contact, or into a rejection with a reason.

The mapper resolves column positions once, so mapping a row is a handful of list lookups: the
planner calls it for every row of segments with a million profiles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii as _json_str  # what json.dumps uses for str (ensure_ascii)

from ..domain import MAPPABLE_FIELDS, MARKED_FIELDS, Consent, Mapping, field_mark
from ..domain.reasons import (
    REASON_CONTROL_CHARACTER,
    REASON_INVALID_CONSENT_DATE,
    REASON_INVALID_EMAIL,
    REASON_MISSING_EMAIL,
    REASON_VALUE_TOO_LONG,
)
from .countries import ISO_ALPHA2

# Omnisend does not document field limits; a longer value is almost surely bad data (for example a
# runaway quoted field) and would crowd a queue message, so such rows are rejected, never truncated.
MAX_FIELD_CHARS = 2_000

# C0 control characters but tab, line feed and carriage return (an address may span lines): no field of
# a contact should hold them, and a NUL or an escape code sent to Omnisend would reach every email
# template that shows the field. Such a row is rejected, never cleaned.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

# Pragmatic address syntax: one "@", no spaces or control characters, a dotted domain of valid labels.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@(?=.{4,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def is_valid_email(value: str) -> bool:
    return (
        _EMAIL.match(value) is not None
        and not value.startswith(".")
        and ".." not in value
        and ".@" not in value
    )


class MappingError(ValueError):
    """The export's mapping names columns the segment does not have."""

    def __init__(self, missing: dict[str, str], available: tuple[str, ...]):
        self.missing = missing
        self.available = available
        names = ", ".join(f"{field} -> {column!r}" for field, column in missing.items())
        super().__init__(
            f"The segment has no column for {names}. Available columns: {', '.join(available)}. "
            "Change the export's mapping to one of these column names."
        )


@dataclass(frozen=True)
class Rejection:
    reason: str  # one of the REASON_* keys
    detail: str  # a sentence for the report (never more than an operator needs)


# Omnisend keeps the status with the newest statusChangedAt. A profile whose consent is unknown is sent
# as nonSubscribed dated long ago: it starts new contacts as nonSubscribed and never overrides a status
# a contact already has in Omnisend (subscribed or unsubscribed, set there or by an earlier export).
UNKNOWN_CONSENT_AT = "2000-01-01T00:00:00Z"


@dataclass(frozen=True)
class ContactOptions:
    consent: Consent | None = None  # None: exporting a profile is not consent to marketing
    send_welcome_message: bool = False


class ContactMapper:
    """Maps rows of one segment schema with one export mapping."""

    def __init__(self, columns: tuple[str, ...], mapping: Mapping, options: ContactOptions = ContactOptions()):
        index = {name: i for i, name in enumerate(columns)}
        wanted = mapping.columns()
        consent = options.consent
        if consent is not None:
            wanted = {**wanted, "consent": consent.column}
            if consent.changed_at_column:
                wanted["consentChangedAt"] = consent.changed_at_column
        missing = {f: c for f, c in wanted.items() if c not in index}
        if missing:
            raise MappingError(missing, columns)
        self.consent_index = index[consent.column] if consent else None
        self.consent_at_index = index[consent.changed_at_column] if consent and consent.changed_at_column else None
        self.width = len(columns)
        self.email_index = index[wanted["email"]]
        self.field_indexes = tuple(
            (api, index[wanted[api]]) for api, _ in MAPPABLE_FIELDS if api != "email" and api in wanted
        )
        self.options = options
        # map_json: the contact's JSON text built from pieces, byte for byte what
        # json.dumps(map(fields), separators=(",", ":")) gives (the membership fingerprints depend on it)
        welcome = "true" if options.send_welcome_message else "false"
        self._json_head = '{"identifiers":[{"type":"email","id":'
        self._json_mid = '}},"sendWelcomeMessage":' + welcome + "}]"
        self._json_unknown = ',"channels":{"email":{"status":"nonSubscribed","statusChangedAt":' + \
            _json_str(UNKNOWN_CONSENT_AT)
        self._json_fields = tuple((f',"{api}":', i, api == "country", MARKED_FIELDS.index(api))
                                  for api, i in self.field_indexes)
        self._consent_slot = MARKED_FIELDS.index("consent")

    def _channel(self, fields: list[str]) -> dict | Rejection:
        unknown = {"status": "nonSubscribed", "statusChangedAt": UNKNOWN_CONSENT_AT}
        if self.consent_index is None:
            return unknown
        value = fields[self.consent_index].strip().casefold()
        consent = self.options.consent
        if value in consent.subscribed:
            status = "subscribed"
        elif value in consent.unsubscribed:
            status = "unsubscribed"
        else:
            return unknown  # empty or unrecognised: consent unknown, nothing changes in Omnisend
        if self.consent_at_index is None:
            # dated with the refresh time by the planner, after fingerprinting: a new refresh of the
            # same consent is not a change
            return {"status": status}
        at = _channel_at(fields[self.consent_at_index].strip())
        if at is None:
            return Rejection(REASON_INVALID_CONSENT_DATE, "the consent date column holds no ISO date")
        return {"status": status, "statusChangedAt": at}

    def email_of(self, fields: list[str]) -> str:
        """The row's email as an operator would want it in a report: trimmed, or '' when absent."""
        return fields[self.email_index].strip() if len(fields) > self.email_index else ""

    def map(self, fields: list[str]) -> dict | Rejection:
        email = fields[self.email_index].strip()
        if not email:
            return Rejection(REASON_MISSING_EMAIL, "the email column is empty")
        if len(email) > 254 or not is_valid_email(email):
            return Rejection(REASON_INVALID_EMAIL, "not a valid email address")
        channel = self._channel(fields)
        if isinstance(channel, Rejection):
            return channel
        contact: dict = {
            "identifiers": [
                {
                    "type": "email",
                    "id": email,
                    "channels": {"email": channel},
                    "sendWelcomeMessage": self.options.send_welcome_message,
                }
            ]
        }
        for api, i in self.field_indexes:
            value = fields[i].strip()
            if not value:
                continue  # an empty cell never blanks a value Omnisend already has
            if len(value) > MAX_FIELD_CHARS:
                return Rejection(REASON_VALUE_TOO_LONG, f"{api} is longer than {MAX_FIELD_CHARS} characters")
            control = None if value.isprintable() else _CONTROL.search(value)
            if control is not None:
                return _control_character(api, control.group())
            if api == "country" and len(value) == 2 and value.upper() in ISO_ALPHA2:
                contact["countryCode"] = value.upper()
            else:
                contact[api] = value
        return contact


    def map_json(self, fields: list[str], dated_at: str) -> tuple[str, str, str, int] | Rejection:
        """The planner's fast path: ``(email, fingerprint text, text to send, field marks)`` or a Rejection.

        The same checks, in the same order, as ``map``; the texts are what ``json.dumps`` with
        ``separators=(",", ":")`` makes of ``map``'s contact, without building it. The fingerprint
        text is the contact as mapped; the text to send differs only for a consent status without
        a date column, which is dated ``dated_at`` (the refresh's time) after fingerprinting. The
        marks (``domain.members.field_mark``) are taken of the same pieces as the fingerprint.
        """
        email = fields[self.email_index].strip()
        if not email:
            return _MISSING_EMAIL
        if len(email) > 254 or not is_valid_email(email):
            return _INVALID_EMAIL
        undated = None
        if self.consent_index is None:
            channel = self._json_unknown
        else:
            c = self._channel(fields)
            if isinstance(c, Rejection):
                return c
            channel = ',"channels":{"email":{"status":' + _json_str(c["status"])
            if "statusChangedAt" in c:
                channel += ',"statusChangedAt":' + _json_str(c["statusChangedAt"])
            else:
                undated = channel + ',"statusChangedAt":' + _json_str(dated_at)
        email_json = _json_str(email)
        marks = field_mark(0, email_json) | field_mark(self._consent_slot, channel)
        parts = [self._json_head, email_json, channel, self._json_mid]
        append, search_control = parts.append, _CONTROL.search
        for key, i, is_country, slot in self._json_fields:
            value = fields[i].strip()
            if not value:
                continue
            if len(value) > MAX_FIELD_CHARS:
                return Rejection(REASON_VALUE_TOO_LONG, f"{key[2:-2]} is longer than {MAX_FIELD_CHARS} characters")
            # isprintable (C) is true for nearly every value; only the others are searched
            control = None if value.isprintable() else search_control(value)
            if control is not None:
                return _control_character(key[2:-2], control.group())
            if is_country and len(value) == 2 and value.upper() in ISO_ALPHA2:
                append(',"countryCode":')
                value_json = _json_str(value.upper())
            else:
                append(key)
                value_json = _json_str(value)
            append(value_json)
            marks |= field_mark(slot, value_json)
        append("}")
        text = "".join(parts)
        if undated is None:
            return email, text, text, marks
        parts[2] = undated
        return email, text, "".join(parts), marks


def _control_character(api: str, char: str) -> Rejection:
    return Rejection(REASON_CONTROL_CHARACTER, f"{api} holds the control character U+{ord(char):04X}")


_MISSING_EMAIL = Rejection(REASON_MISSING_EMAIL, "the email column is empty")
_INVALID_EMAIL = Rejection(REASON_INVALID_EMAIL, "not a valid email address")


def _channel_at(value: str) -> str | None:
    """An ISO date or datetime from the consent date column, as UTC ISO 8601; None when unreadable."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
