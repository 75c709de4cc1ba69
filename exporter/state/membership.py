"""What Omnisend holds of an export's segment: each confirmed member and a fingerprint of what was sent.

A run sends only new members and members whose sent fields changed, and removes the membership tag
from members who left. For a million members that state must stay small and fast, so it is not a
Python object per member:

- On storage: one blob per state version, ``<header JSON line>`` then records sorted by member key,
  each ``<key u64><fingerprint u64><field marks 2 x u64><email length u16><email>`` (format 2; format 1,
  read still, had no marks: its members' changed fields show as unknown). A state is written as a new blob and
  only then made current by rewriting a small pointer blob, so a crash while writing leaves the
  previous state in force.
- In memory while planning: the keys, fingerprints and field marks in four ``array('Q')`` (32 bytes a member), a
  bytearray of "still in the segment" marks, and a local copy of the blob to stream the emails of the
  members who left.
"""

from __future__ import annotations

import json
import os
import random
import struct
import tempfile
import time
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from ..domain.members import FP_BITS, FP_MASK

RECORDS = {1: struct.Struct("<QQH"), 2: struct.Struct("<QQQQH")}  # by format version
FORMAT_VERSION = 2  # written; every version in RECORDS is read
RECORD = RECORDS[FORMAT_VERSION]
LOAD_CHUNK_BYTES = 4 * 1024 * 1024  # one ranged GET of a state blob
LOAD_ATTEMPTS = 5


@dataclass(frozen=True)
class StateHeader:
    export_id: str
    connection_id: str
    sync_key: str  # Export.sync_key(): a different one means every member is sent again
    tag: str
    run_id: str
    count: int
    version: int = FORMAT_VERSION  # of the records that follow

    def to_json(self) -> str:
        return json.dumps({"version": FORMAT_VERSION, "exportId": self.export_id, "connectionId": self.connection_id,
                           "syncKey": self.sync_key, "tag": self.tag, "runId": self.run_id, "count": self.count})

    @classmethod
    def from_json(cls, line: bytes) -> "StateHeader":
        d = json.loads(line)
        if d.get("version") not in RECORDS:
            raise ValueError(f"membership state format {d.get('version')} is not one of {sorted(RECORDS)}")
        return cls(d["exportId"], d["connectionId"], d["syncKey"], d["tag"], d["runId"], d["count"], d["version"])


def _records(f: BinaryIO, version: int, emails: bool = True,
             chunk: int = 1 << 20) -> Iterator[tuple[int, int, str | None]]:
    """(key, planned fingerprint, email) of every record from the file's position on, read in large
    pieces; the planned fingerprint holds the field marks above its 64 bits (``domain.planned_fp``).
    Without ``emails`` the email is None (not decoded: loading a million keys stays fast)."""
    for key, fp, marks, email in _raw_records(f, version, emails, chunk):
        yield key, fp | marks << FP_BITS, email


def _raw_records(f: BinaryIO, version: int, emails: bool,
                 chunk: int) -> Iterator[tuple[int, int, int, str | None]]:
    """(key, fingerprint, marks, email): marks are 0 in format 1, which has none."""
    record = RECORDS[version]
    unpack, size, with_marks = record.unpack_from, record.size, version >= 2
    buf, pos = b"", 0
    while True:
        more = f.read(chunk)
        if more:
            buf = buf[pos:] + more
            pos = 0
        end = len(buf)
        while pos + size <= end:
            if with_marks:
                key, fp, low, high, n = unpack(buf, pos)
                marks = low | high << 64
            else:
                key, fp, n = unpack(buf, pos)
                marks = 0
            stop = pos + size + n
            if stop > end:
                break
            yield key, fp, marks, buf[pos + size:stop].decode("utf-8") if emails else None
            pos = stop
        if not more:
            if pos != end:
                raise ValueError("membership state ends in the middle of a record")
            return


class MemberState:
    """The previous confirmed members, loaded for one run: lookups by key, marks, and the leavers."""

    def __init__(self, header: StateHeader, path: str):
        self.header = header
        self.path = path
        self.keys = array("Q")
        self.fps = array("Q")  # fingerprints (64 bits): what decides whether a member changed
        # field marks, in two halves: which fields changed (0 when the state predates them)
        self._marks_low, self._marks_high = array("Q"), array("Q")
        add_key, add_fp = self.keys.append, self.fps.append
        add_low, add_high = self._marks_low.append, self._marks_high.append
        with open(path, "rb") as f:
            f.readline()
            for key, fp, marks, _ in _raw_records(f, header.version, False, 1 << 20):
                add_key(key)
                add_fp(fp)
                add_low(marks & FP_MASK)
                add_high(marks >> 64)
        self.present = bytearray(len(self.keys))
        # Keys are hashes, evenly spread: an index of where each range of top bits starts (about 8
        # keys a range, half a byte a member) leaves a bisection of a handful of keys per lookup.
        n = len(self.keys)
        bits = (n // 8).bit_length()
        self._shift = 64 - bits
        self._starts = starts = array("I", [0]) * ((1 << bits) + 1)
        keys, shift = self.keys, self._shift
        for b in range(1 << bits):
            starts[b] = bisect_left(keys, b << shift, starts[b - 1] if b else 0)
        starts[1 << bits] = n

    def __len__(self) -> int:
        return len(self.keys)

    def marks(self, i: int) -> int:
        """The field marks of the member at ``i`` (``domain.members``)."""
        return self._marks_low[i] | self._marks_high[i] << 64

    def find(self, key: int) -> int:
        """Position of ``key`` in ``keys`` (and ``fps``, ``present``), or -1."""
        b = key >> self._shift
        hi = self._starts[b + 1]
        i = bisect_left(self.keys, key, self._starts[b], hi)
        return i if i < hi and self.keys[i] == key else -1

    def records(self) -> Iterator[tuple[int, int, str]]:
        """(key, planned fingerprint, email) of every member, in key order."""
        with open(self.path, "rb") as f:
            f.readline()
            # emails=True: every email is a str
            yield from cast("Iterator[tuple[int, int, str]]", _records(f, self.header.version))

    def leavers(self) -> Iterator[tuple[int, str]]:
        """(key, email) of members not marked present, in key order."""
        for i, (key, _, email) in enumerate(self.records()):
            if not self.present[i]:
                yield key, email

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class StateChangingError(RuntimeError):
    """The export's state was replaced again and again while it was read (writers racing)."""


class StateStore:
    """Membership states of exports, as blobs in the app's artifacts container."""

    def __init__(self, container):
        self.container = container

    def _pointer(self, export_id: str):
        return self.container.get_blob_client(f"state/{export_id}/current.json")

    def current_name(self, export_id: str) -> str | None:
        """The name of the export's current state blob; None when it has none."""
        try:
            return json.loads(self._pointer(export_id).download_blob().readall())["blob"]
        except ResourceNotFoundError:
            return None

    def load(self, export_id: str) -> MemberState | None:
        """The export's current state, or None when it has none.

        Several workers may write the same run's state at once (each that sees the run complete; the
        result is the same). A state blob replaced or deleted while it is read is read again from the
        pointer, never taken for "no state": that would forget every member.
        """
        for attempt in range(LOAD_ATTEMPTS):
            name = self.current_name(export_id)
            if name is None:
                return None
            try:
                return self._load_blob(name)
            except (ResourceNotFoundError, ResourceModifiedError):
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
        raise StateChangingError(
            f"The membership state of export {export_id} kept changing while it was read "
            f"({LOAD_ATTEMPTS} attempts); run the export again."
        )

    def _load_blob(self, name: str) -> MemberState:
        blob = self.container.get_blob_client(name)
        props = blob.get_blob_properties()
        fd, path = tempfile.mkstemp(prefix="members-", suffix=".bin")
        try:
            with os.fdopen(fd, "wb") as f:
                # ranged GETs pinned to the ETag: the client's first GET would otherwise hold up to 32 MB
                for offset in range(0, props.size, LOAD_CHUNK_BYTES):
                    stream = blob.download_blob(offset=offset, length=min(LOAD_CHUNK_BYTES, props.size - offset),
                                                max_concurrency=1, etag=props.etag,
                                                match_condition=MatchConditions.IfNotModified)
                    for chunk in stream.chunks():
                        f.write(chunk)
            with open(path, "rb") as f:
                header = StateHeader.from_json(f.readline())
        except BaseException:
            os.unlink(path)
            raise
        return MemberState(header, path)

    def write(self, header: StateHeader, records: Iterable[tuple[int, int, str]]) -> int:
        """Write a new state from (key, planned fingerprint, email) records sorted by key; returns how
        many were written. Always in the newest format."""
        count = 0
        with tempfile.TemporaryFile() as body:
            last = None
            for key, fp, email in records:
                if last is not None and key <= last:
                    raise ValueError("membership records must be strictly sorted by key")
                raw = email.encode("utf-8")
                marks = fp >> FP_BITS
                body.write(RECORD.pack(key, fp & FP_MASK, marks & FP_MASK, marks >> 64, len(raw)))
                body.write(raw)
                last = key
                count += 1
            body.seek(0)
            name = f"state/{header.export_id}/members-{header.run_id}.bin"
            final = StateHeader(header.export_id, header.connection_id, header.sync_key, header.tag, header.run_id, count)
            with tempfile.TemporaryFile() as f:
                f.write(final.to_json().encode() + b"\n")
                while chunk := body.read(1 << 20):
                    f.write(chunk)
                f.seek(0)
                self.container.get_blob_client(name).upload_blob(f, overwrite=True, max_concurrency=2)
        previous = self.current_name(header.export_id)
        self._pointer(header.export_id).upload_blob(json.dumps({"blob": name, "count": count}), overwrite=True)
        if previous and previous != name:
            try:
                self.container.get_blob_client(previous).delete_blob()
            except ResourceNotFoundError:
                pass
        return count

    def delete(self, export_id: str) -> None:
        for blob in self.container.list_blobs(name_starts_with=f"state/{export_id}/"):
            self.container.delete_blob(blob.name)


def merge(previous: Iterable[tuple[int, int, str]], upserts: Iterable[tuple[int, int, str]],
          deletes: Iterable[int]) -> Iterator[tuple[int, int, str]]:
    """The next state, streamed: previous members, with confirmed sends written over them and
    confirmed leavers taken out. All three inputs are sorted by key."""
    prev, ups, dels = iter(previous), iter(upserts), iter(deletes)
    p, u, d = next(prev, None), next(ups, None), next(dels, None)
    while p is not None or u is not None:
        if u is not None and (p is None or u[0] <= p[0]):
            if p is not None and p[0] == u[0]:
                p = next(prev, None)
            yield u
            u = next(ups, None)
            continue
        assert p is not None  # u is None here, and the loop runs while one of them is not
        while d is not None and d < p[0]:
            d = next(dels, None)
        if d is None or d != p[0]:
            yield p
        p = next(prev, None)


class Upserts:
    """Confirmed members of a run, gathered compactly, then given back sorted by key."""

    def __init__(self):
        self.keys = array("Q")
        self.fps = array("Q")
        self.marks_low, self.marks_high = array("Q"), array("Q")
        self.offsets = array("Q")
        self.emails = bytearray()

    def add(self, key: int, fp: int, email: str) -> None:
        """``fp``: the planned fingerprint (field marks above its 64 bits)."""
        self.keys.append(key)
        self.fps.append(fp & FP_MASK)
        marks = fp >> FP_BITS
        self.marks_low.append(marks & FP_MASK)
        self.marks_high.append(marks >> 64)
        self.offsets.append(len(self.emails))
        self.emails += email.encode("utf-8")

    def __len__(self) -> int:
        return len(self.keys)

    def sorted(self) -> Iterator[tuple[int, int, str]]:
        ends = self.offsets[1:] + array("Q", [len(self.emails)])
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        last = None
        for i in order:
            if self.keys[i] == last:
                continue  # the same member twice (a resent batch): keep one
            last = self.keys[i]
            marks = self.marks_low[i] | self.marks_high[i] << 64
            yield self.keys[i], self.fps[i] | marks << FP_BITS, self.emails[self.offsets[i]:ends[i]].decode("utf-8")
