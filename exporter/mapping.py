"""Turn a segment row into an Omnisend contact, or into a rejection with a reason.

The mapper resolves column positions once, so mapping a row is a handful of list lookups: the
planner calls it for every row of segments with a million profiles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .countries import ISO_ALPHA2
from .domain import MAPPABLE_FIELDS, Mapping

# Rejection reasons: stable keys, counted per run ("rejectedByReason") and written to the report.
REASON_MALFORMED_ROW = "malformed row"
REASON_NOT_UTF8 = "not valid UTF-8"
REASON_MISSING_EMAIL = "missing email"
REASON_INVALID_EMAIL = "invalid email"
REASON_VALUE_TOO_LONG = "value too long"
REASON_CONTACT_TOO_LARGE = "contact too large"
REASON_DUPLICATE = "duplicate email"

# Omnisend does not document field limits; a longer value is almost surely bad data (for example a
# runaway quoted field) and would crowd a queue message, so such rows are rejected, never truncated.
MAX_FIELD_CHARS = 2_000

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


@dataclass(frozen=True)
class ContactOptions:
    channel_status: str = "nonSubscribed"  # exporting a profile is not consent to marketing
    send_welcome_message: bool = False


class ContactMapper:
    """Maps rows of one segment schema with one export mapping."""

    def __init__(self, columns: tuple[str, ...], mapping: Mapping, options: ContactOptions = ContactOptions()):
        index = {name: i for i, name in enumerate(columns)}
        wanted = mapping.columns()
        missing = {f: c for f, c in wanted.items() if c not in index}
        if missing:
            raise MappingError(missing, columns)
        self.width = len(columns)
        self.email_index = index[wanted["email"]]
        self.field_indexes = tuple(
            (api, index[wanted[api]]) for api, _ in MAPPABLE_FIELDS if api != "email" and api in wanted
        )
        self.options = options

    def email_of(self, fields: list[str]) -> str:
        """The row's email as an operator would want it in a report: trimmed, or '' when absent."""
        return fields[self.email_index].strip() if len(fields) > self.email_index else ""

    def map(self, fields: list[str]) -> dict | Rejection:
        email = fields[self.email_index].strip()
        if not email:
            return Rejection(REASON_MISSING_EMAIL, "the email column is empty")
        if len(email) > 254 or not is_valid_email(email):
            return Rejection(REASON_INVALID_EMAIL, "not a valid email address")
        contact: dict = {
            "identifiers": [
                {
                    "type": "email",
                    "id": email,
                    "channels": {"email": {"status": self.options.channel_status}},
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
            if api == "country" and len(value) == 2 and value.upper() in ISO_ALPHA2:
                contact["countryCode"] = value.upper()
            else:
                contact[api] = value
        return contact


def email_key(email: str) -> str:
    """Duplicate detection key: emails are compared case-insensitively."""
    return email.casefold()
