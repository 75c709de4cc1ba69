"""Members: how a contact is known across runs, without keeping its address in memory.

A member is keyed by a 64-bit hash of its casefolded email (the same in every process and run),
and what was sent for it by a 64-bit fingerprint of its contact's JSON text.
"""

from __future__ import annotations

import hashlib
from array import array


def email_key(email: str) -> str:
    """Duplicate detection key: emails are compared case-insensitively."""
    return email.casefold()


_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes


def member_key(email: str) -> int:
    """Stable 64-bit key of a member (same in every process and run): emails compare case-insensitively."""
    return _from_bytes(_blake2b(email_key(email).encode(), digest_size=8).digest(), "little")


def fingerprint(contact_json: str) -> int:
    return _from_bytes(_blake2b(contact_json.encode(), digest_size=8).digest(), "little")


class KeySet:
    """A set of 64-bit member keys at 8 to 16 bytes a key (open addressing in one ``array('Q')``).

    The planner remembers every email of a run to drop duplicates; a Python ``set`` of ints takes
    about 70 bytes a key (the int objects and the hash table), 70 MB for a million members. Keys are
    hashes, so their low bits index the table directly. Zero marks an empty slot (key 0 is kept aside).
    """

    __slots__ = ("_slots", "_mask", "_len", "_zero")

    def __init__(self, capacity: int = 1 << 18):
        size = 1 << max(4, (capacity - 1).bit_length())
        self._slots = array("Q", [0]) * size
        self._mask = size - 1
        self._len = 0
        self._zero = False

    def __len__(self) -> int:
        return self._len

    # __contains__ and add probe the table with the same loop, written twice on purpose: the planner
    # calls them for every row, and a shared helper costs a Python call per row (about 10% of dedup).
    def __contains__(self, key: int) -> bool:
        if not key:
            return self._zero
        slots, mask = self._slots, self._mask
        i = key & mask
        v = slots[i]
        while v:
            if v == key:
                return True
            i = (i + 1) & mask
            v = slots[i]
        return False

    def add(self, key: int) -> bool:
        """Add ``key``; True when it was not there yet."""
        if not key:
            if self._zero:
                return False
            self._zero = True
            self._len += 1
            return True
        slots, mask = self._slots, self._mask
        i = key & mask
        v = slots[i]
        while v:
            if v == key:
                return False
            i = (i + 1) & mask
            v = slots[i]
        slots[i] = key
        self._len += 1
        if self._len * 2 > mask:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        size = 2 * len(old)
        slots = array("Q", [0]) * size
        mask = size - 1
        for key in old:
            if key:
                i = key & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = key
        self._slots, self._mask = slots, mask

    def clear(self) -> None:
        """Empty, at the initial capacity (the memory of a large set is given back)."""
        self._slots = array("Q", [0]) * (1 << 18)
        self._mask = (1 << 18) - 1
        self._len = 0
        self._zero = False
