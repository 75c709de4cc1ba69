"""Packing planned contacts into batch messages: when a batch is full is decided here, how it is
sent is the uploader's (as the Singer SDK separates when to flush a batch from how to load it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..domain import BatchKind, Run, RunCounts
from ..messages import TagBatch, encode_send, send_head
from ..omnisend.limits import MAX_BATCH_ITEMS, MAX_EMAILS_PER_TAG_REQUEST
from ..state.membership import MemberState

MAX_BATCH_CONTACTS = MAX_BATCH_ITEMS  # Omnisend's limit per POST /batches
# A queue message is at most 64 KiB after base64 (4/3): keep the JSON text well below 48 KiB.
MAX_MESSAGE_CHARS = 46_000


class LineSink(Protocol):
    def write(self, line: str) -> None: ...


@dataclass
class _Pending:
    parts: list[str]
    refs: list[str]
    fps: list[str]  # fingerprint of each contact as planned: what the membership state records
    contacts: list[str]
    chars: int
    tagged: list[str] = field(default_factory=list)  # positions of contacts that hold the membership tag already
    part_index: dict[str, int] = field(default_factory=dict)  # position of each of ``parts``
    partition: str | None = None  # the last contact's partition, and its position in ``parts``
    index: int = 0


class BatchBuilder:
    """Packs pre-serialised contacts into SendBatch messages of at most 100 contacts and MAX_MESSAGE_CHARS."""

    def __init__(self, run: Run, spool: LineSink):
        self._head = send_head(run.id, run.export_id, run.connection_id)
        self._spool = spool
        self.batches = 0
        self.contacts = 0
        self._pending: _Pending | None = None
        self._part_refs: dict[str, str] = {}  # partition name -> its JSON string
        # envelope: head + ',"batch":NNNNNNN,"parts":[...],"refs":[...],"contacts":[...]}', and room for
        # ',"tagged":[...]' with every position of a full batch
        self._envelope = len(self._head) + 64 + 12 + 4 * MAX_BATCH_CONTACTS

    def fits_alone(self, contact_json: str, partition: str) -> bool:
        return self._envelope + len(partition) + 24 + len(contact_json) <= MAX_MESSAGE_CHARS

    def add(self, contact_json: str, partition: str, row: int, fp: int = 0) -> None:
        p = self._pending
        extra = len(contact_json) + 78  # its ref ("[i,row],"), its planned fingerprint (up to 58 digits), commas
        if (p is None or partition != p.partition or len(p.contacts) >= MAX_BATCH_CONTACTS
                or p.chars + extra > MAX_MESSAGE_CHARS):
            p = self._make_room(partition, extra)
        p.refs.append(f"[{p.index},{row}]")
        p.fps.append(str(fp))
        p.contacts.append(contact_json)
        p.chars += extra

    def _make_room(self, partition: str, extra: int) -> _Pending:
        """The batch the next contact goes into (the current one, or a new one), with its partition listed."""
        p = self._pending
        part_ref = self._part_refs.get(partition)
        if part_ref is None:
            part_ref = self._part_refs[partition] = json.dumps(partition)
        index = p.part_index.get(part_ref) if p is not None else None
        listed = 0 if index is not None else len(part_ref) + 1
        if p is not None and (len(p.contacts) >= MAX_BATCH_CONTACTS or p.chars + extra + listed > MAX_MESSAGE_CHARS):
            self.flush()
            p = None
        if p is None:
            p = self._pending = _Pending(parts=[], refs=[], fps=[], contacts=[], chars=self._envelope)
            index = None
        if index is None:
            index = p.part_index[part_ref] = len(p.parts)
            p.parts.append(part_ref)
            p.chars += len(part_ref) + 1
        p.partition, p.index = partition, index
        return p

    def mark_tagged(self) -> None:
        """The contact just added holds the membership tag from an earlier run: it is not tagged again."""
        p = self._pending
        assert p is not None, "mark_tagged follows add"
        p.tagged.append(str(len(p.contacts) - 1))

    @property
    def pending(self) -> int:
        return len(self._pending.contacts) if self._pending else 0

    def flush(self) -> None:
        p = self._pending
        if not p:
            return
        self.batches += 1
        self.contacts += len(p.contacts)
        self._spool.write(encode_send(self._head, self.batches, p.parts, p.refs, p.fps, p.tagged, p.contacts) + "\n")
        self._pending = None


def spool_untags(run: Run, state: MemberState, spool: LineSink, counts: RunCounts,
                 on_leaver: Callable[[str], None] = lambda email: None) -> int:
    """Spool removal of the membership tag for members of the last confirmed state who left, 250
    emails a batch; counts them as ``left`` (and tells ``on_leaver``). Returns the number of untag batches."""
    number = 0
    emails: list[str] = []

    def flush() -> None:
        nonlocal number, emails
        if emails:
            number += 1
            message = TagBatch(run.id, run.export_id, run.connection_id, kind=BatchKind.UNTAGS, number=number,
                               tag=state.header.tag, emails=emails)
            spool.write(message.encode() + "\n")
            emails = []

    for _, email in state.leavers():
        counts.left += 1
        on_leaver(email)
        emails.append(email)
        if len(emails) >= MAX_EMAILS_PER_TAG_REQUEST:
            flush()
    flush()
    return number
