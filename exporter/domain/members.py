"""Members: how a contact is known across runs, without keeping its address in memory.

A member is keyed by a 64-bit hash of its casefolded email (the same in every process and run),
and what was sent for it by a 64-bit fingerprint of its contact's JSON text. Beside the fingerprint,
each sent field leaves a 14-bit mark (a CRC of its JSON text): the fingerprint says *whether* a member
changed, the marks say *which fields* did, for the changes report and the preview. A planned contact
carries both in one int, ``fingerprint | marks << 64`` (``planned_fp``), so they travel together through
batches into the membership state without a second list beside every ``fps``.
"""

from __future__ import annotations

import hashlib
from array import array
from zlib import crc32


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


# The fields a contact's marks cover, one 14-bit slot each (9 x 14 = 126 bits, two u64 in the state):
# the mapped fields in MAPPABLE_FIELDS order, then the email channel (consent status and its date).
# 7-bit marks were tried first: a changed field kept its mark once in 127 (three cities in a test of
# a few dozen changes already met one), too often for a report people read.
MARKED_FIELDS = ("email", "firstName", "lastName", "address", "country", "state", "city", "postalCode", "consent")
MARK_BITS = 14
FP_BITS = 64
FP_MASK = (1 << FP_BITS) - 1
_MARK = (1 << MARK_BITS) - 1


def field_mark(slot: int, json_text: str) -> int:
    """The mark of one sent field: 1..16383 in its slot (0 means "not sent"). Not a hash for identity:
    two values share a mark once in 16383, so a changed member can show fewer changed fields than it
    has, never a change it does not have; whether it changed at all is the fingerprint's to say."""
    # the CRC's low bits (not a remainder modulo 2**14 - 1: the first version's "% 127" met "Lyon" and
    # "Lyon Town" with one remainder for both moduli)
    return ((crc32(json_text.encode()) & _MARK) or 1) << (MARK_BITS * slot)


def planned_fp(fp: int, marks: int) -> int:
    return fp | marks << FP_BITS


def changed_fields(old_marks: int, new_marks: int) -> tuple[str, ...] | None:
    """Names of the fields whose marks differ; None when the old marks are unknown (0: a state written
    before marks were kept)."""
    if not old_marks:
        return None
    diff = old_marks ^ new_marks
    return tuple(name for slot, name in enumerate(MARKED_FIELDS) if diff >> (MARK_BITS * slot) & _MARK)


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
