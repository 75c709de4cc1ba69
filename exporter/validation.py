"""Request body checks that name every bad field at once (problem+json ``errors``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

MAX_BODY_BYTES = 64 * 1024


class BadRequest(Exception):
    def __init__(self, detail: str, errors: list[dict] | None = None):
        self.detail = detail
        self.errors = errors or []
        super().__init__(detail)


@dataclass(frozen=True)
class Field:
    name: str
    kind: type | tuple[type, ...]
    required: bool = False
    check: Callable[[Any], str | None] | None = None  # returns a message when the value is wrong
    children: tuple["Field", ...] | None = None  # for objects


_KIND_NAMES = {str: "a string", bool: "true or false", int: "a whole number", dict: "an object", list: "a list"}


def parse_json(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    if not body.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"The request body is not valid JSON: {e}.") from None


def check_object(data: Any, spec: tuple[Field, ...], path: str = "", partial: bool = False) -> list[dict]:
    """Every problem with ``data`` against ``spec``; unknown fields are errors too."""
    if not isinstance(data, dict):
        return [{"field": path or "(body)", "code": "type", "message": "must be a JSON object"}]
    errors: list[dict] = []
    known = {f.name for f in spec}
    for key in data:
        if key not in known:
            errors.append({"field": path + key, "code": "unknown", "message": f"unknown field; allowed: {', '.join(sorted(known))}"})
    for f in spec:
        name = path + f.name
        if f.name not in data or data[f.name] is None:
            if f.required and not partial:
                errors.append({"field": name, "code": "required", "message": "is required"})
            continue
        value = data[f.name]
        kinds = f.kind if isinstance(f.kind, tuple) else (f.kind,)
        # bool is an int in Python; a JSON true is not a number here
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            errors.append({"field": name, "code": "type", "message": f"must be {_KIND_NAMES.get(kinds[0], kinds[0].__name__)}"})
            continue
        if f.children is not None:
            errors.extend(check_object(value, f.children, name + ".", partial=False))
            continue
        if f.check is not None:
            message = f.check(value)
            if message:
                errors.append({"field": name, "code": "invalid", "message": message})
    return errors


def validate(data: Any, spec: tuple[Field, ...], partial: bool = False) -> dict:
    errors = check_object(data, spec, partial=partial)
    if errors:
        raise BadRequest("The request has invalid fields.", errors)
    return data


def length(lo: int, hi: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if not lo <= len(value.strip()) <= hi:
            return f"must be {lo} to {hi} characters"
        return None

    return check


def positive(value: int) -> str | None:
    return None if value > 0 else "must be greater than 0"
