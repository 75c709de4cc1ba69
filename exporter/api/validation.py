"""Request body checks that name every bad field at once (problem+json ``errors``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

MAX_BODY_BYTES = 64 * 1024
BODY = "(body)"  # the field name of a problem with the body as a whole

# Text the app cannot store or send: C0/C1 control characters and unpaired surrogates (not UTF-8).
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


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


def _body_error(detail: str, code: str, message: str) -> BadRequest:
    return BadRequest(detail, [{"field": BODY, "code": code, "message": message}])


def parse_json(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise _body_error(f"The request body is larger than {MAX_BODY_BYTES} bytes.", "too_large",
                          f"is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted")
    if not body.strip():
        raise _body_error("The request body is empty; send a JSON object.", "required", "is empty; send a JSON object")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:  # the messages name a position, never the content
        raise _body_error(f"The request body is not valid JSON: {e}.", "malformed", f"is not valid JSON: {e}") from None
    except RecursionError:
        raise _body_error("The request body nests too deeply to be read.", "malformed", "nests too deeply") from None


def check_object(data: Any, spec: tuple[Field, ...], path: str = "", partial: bool = False) -> list[dict]:
    """Every problem with ``data`` against ``spec``; unknown fields are errors too."""
    if not isinstance(data, dict):
        return [{"field": path or BODY, "code": "type", "message": "must be a JSON object"}]
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
        if isinstance(value, str) and _UNSTORABLE.search(value):
            errors.append({"field": name, "code": "invalid",
                           "message": "must not contain control characters or invalid Unicode (unpaired surrogates)"})
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


def between(lo: int, hi: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if lo <= value <= hi else f"must be {lo:,} to {hi:,}"

    return check


def matches(pattern: str, message: str) -> Callable[[str], str | None]:
    """A check that the whole (stripped) value matches ``pattern``; ``message`` never echoes the value."""
    compiled = re.compile(pattern)

    def check(value: str) -> str | None:
        return None if compiled.fullmatch(value.strip()) else message

    return check


def all_of(*checks: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        for c in checks:
            message = c(value)
            if message:
                return message
        return None

    return check
