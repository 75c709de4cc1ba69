"""Counts declared once: a dataclass field says what it is, and (de)serialisation follows from it.

Each field made with ``api_field`` carries its role (``COUNTER`` fields add up across a tally's
shards; ``PLAN`` and ``CURSOR`` fields, the planned counts and the tag waves' cursor, belong to the
tally's head) and is written under its name in camelCase. Adding a counter is adding one field.
"""

from __future__ import annotations

from dataclasses import Field, field, fields
from typing import Any, Iterator

COUNTER = "counter"  # added up across the shards of a run's tally
PLAN = "plan"  # the head's: what was planned
CURSOR = "cursor"  # the head's: where the tag waves stand


def api_field(default: Any = 0, *, role: str = COUNTER) -> Any:
    """A field written under its camelCase name, with its role; dict-valued counts (counts by
    reason) pass ``default=dict``."""
    if callable(default):
        return field(default_factory=default, metadata={"role": role})
    return field(default=default, metadata={"role": role})


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def counts_of(cls_or_obj: Any, *roles: str) -> Iterator[Field]:
    """The count fields of a dataclass, in declaration order; with ``roles``, only those roles."""
    for f in fields(cls_or_obj):
        role = f.metadata.get("role")
        if role is not None and (not roles or role in roles):
            yield f


def to_api(obj: Any, *roles: str) -> dict:
    """The count fields as API JSON (camelCase names; dicts copied)."""
    out = {}
    for f in counts_of(obj, *roles):
        value = getattr(obj, f.name)
        out[camel(f.name)] = dict(value) if isinstance(value, dict) else value
    return out


def from_api(cls: Any, data: dict, *roles: str) -> dict:
    """Keyword arguments for ``cls`` from API JSON; unknown names are ignored, missing ones default."""
    return {f.name: data[camel(f.name)] for f in counts_of(cls, *roles) if camel(f.name) in data}
