"""Keeping Omnisend API keys out of every text the app writes: log records, API answers, run errors.

The code never puts a key in a text on purpose; this is the second line of defence, for texts made
of what others said (an Omnisend error that quotes the key, an exception from a library). Every key
the app uses registers here (``OmnisendClient`` does, for each key it is given); ``scrub`` then
replaces any copy of one: exact, in another case, JSON-escaped, URL-encoded, or a part of one of at
least ``MIN_PARTIAL`` characters (a key cut short by a message's length limit is still a secret).
"""

from __future__ import annotations

import json
import string
import threading
from urllib.parse import quote

MASK = "***"
MIN_PARTIAL = 12  # the shortest run of a key's characters that is hidden as a part of it
MAX_SECRETS = 500  # a process uses a few keys; a registry this full stops growing (the oldest stay)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)  # keeps every position


class Redactor:
    """Secrets and the texts to hide them in. A set of every ``MIN_PARTIAL``-character part of each
    form of each secret, looked up at every position of a text: as fast with many secrets as with
    one (a regular expression of their parts would try each at every position)."""

    def __init__(self, min_partial: int = MIN_PARTIAL) -> None:
        self._min = min_partial
        self._secrets: set[str] = set()
        self._parts: frozenset[str] = frozenset()  # lower-cased parts of the longer forms
        self._whole: frozenset[str] = frozenset()  # lower-cased forms too short to have parts
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        secret = secret.strip() if isinstance(secret, str) else ""
        if not secret:
            return
        with self._lock:
            if secret in self._secrets or len(self._secrets) >= MAX_SECRETS:
                return
            self._secrets.add(secret)
            parts, whole = set(self._parts), set(self._whole)
            for form in {secret, json.dumps(secret)[1:-1], quote(secret, safe="")}:
                low = form.translate(_ASCII_LOWER)
                if len(low) <= self._min:
                    whole.add(low)
                else:
                    parts.update(low[i:i + self._min] for i in range(len(low) - self._min + 1))
            self._parts, self._whole = frozenset(parts), frozenset(whole)

    def _spans(self, text: str) -> list[tuple[int, int]]:
        low = text.translate(_ASCII_LOWER)
        n, parts = self._min, self._parts
        found = [(i, i + n) for i in range(len(low) - n + 1) if low[i:i + n] in parts] if parts else []
        for form in self._whole:
            start = low.find(form)
            while start >= 0:
                found.append((start, start + len(form)))
                start = low.find(form, start + 1)
        return sorted(found)

    def scrub(self, text: str) -> str:
        if not text or not (self._parts or self._whole):
            return text
        spans = self._spans(text)
        if not spans:
            return text
        merged = [list(spans[0])]
        for start, end in spans[1:]:
            if start <= merged[-1][1]:  # overlaps or touches the span before: one mask for both
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        out, last = [], 0
        for start, end in merged:
            out += (text[last:start], MASK)
            last = end
        out.append(text[last:])
        return "".join(out)


REDACTOR = Redactor()


def register_secret(secret: str) -> None:
    """From now on, ``scrub`` hides this secret in every text."""
    REDACTOR.add(secret)


def scrub(text: str) -> str:
    return REDACTOR.scrub(text)
