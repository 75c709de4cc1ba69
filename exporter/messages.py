"""Every queue message the app sends, one dataclass per kind, with its JSON form beside it.

Two queues carry the work (config.QUEUE_RUNS, config.QUEUE_BATCHES):

- runs queue: ``PlanRun`` (plan a queued run), ``PlanTags`` (a run's contacts are counted: plan its
  last tag batches), ``WaveTick`` (a large run uploads: plan the tags of the contact batches counted
  so far);
- batches queue: ``Dispatch`` (fan out a stretch of the run's spooled plan), ``SendBatch`` (send up
  to 100 contacts), ``CheckBatch`` (read what Omnisend did with them), ``TagBatch`` (add or remove
  the membership tag for up to 250 emails).

Each kind has one ``type`` on the wire and one meaning. Messages of the types this app sent before
(``tags`` and ``tagwave`` on the runs queue, ``tags``/``untags`` on the batches queue) are still
read, so an upgrade does not strand the messages in flight.

``SendBatch`` is written by the planner for every contact of a segment: its text is put together
from contacts that are already JSON text (``encode_send``), which costs a fraction of building and
dumping the dict; ``decode_batch_message`` reads it like any other message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Iterable, Iterator, Union

from .domain.batches import BatchKind


class MessageError(ValueError):
    """A queue message that is not one of the app's: unreadable JSON, an unknown type, a missing field."""


def _dumps(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True)
class RunRef:
    """Who a batches-queue message is about (every one of them carries these)."""

    run_id: str
    export_id: str | None
    connection_id: str

    def _head(self, type_: str) -> dict:
        return {"type": type_, "runId": self.run_id, "exportId": self.export_id, "connectionId": self.connection_id}

    @staticmethod
    def _of(body: dict) -> dict:
        return {"run_id": body["runId"], "export_id": body.get("exportId"), "connection_id": body["connectionId"]}


# --- the runs queue --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunsQueueMessage:
    TYPE: ClassVar[str] = ""
    run_id: str

    def encode(self) -> str:
        return _dumps({"type": self.TYPE, "runId": self.run_id, **self._more()})

    def _more(self) -> dict:
        return {}


class PlanRun(_RunsQueueMessage):
    TYPE = "plan"


class PlanTags(_RunsQueueMessage):
    TYPE = "planTags"
    LEGACY = "tags"


@dataclass(frozen=True)
class WaveTick(_RunsQueueMessage):
    TYPE = "tagWave"
    LEGACY = "tagwave"
    seq: int = 1  # accepted only as the run's next tick (Tally.wave_tick + 1)

    def _more(self) -> dict:
        return {"seq": self.seq}


RunMessage = Union[PlanRun, PlanTags, WaveTick]


def decode_run_message(text: str | bytes) -> RunMessage:
    body = _load(text)
    kind = body.get("type")
    try:
        if kind == PlanTags.TYPE or kind == PlanTags.LEGACY:
            return PlanTags(body["runId"])
        if kind == WaveTick.TYPE or kind == WaveTick.LEGACY:
            return WaveTick(body["runId"], int(body["seq"]))
        if kind == PlanRun.TYPE or kind is None:  # the first plan messages had no type
            return PlanRun(body["runId"])
    except (KeyError, TypeError, ValueError) as e:
        raise MessageError(f"a {kind or 'plan'} message without a valid {e}") from None
    raise MessageError(f"unknown runs-queue message type {kind!r}")


# --- the batches queue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SendBatch(RunRef):
    """Up to 100 contacts for POST /batches, with where each came from (for the report) and what the
    membership state will record of it. Also the contact batch's payload, kept for reports and retries."""

    TYPE = "send"
    number: int = 0
    parts: list[str] = field(default_factory=list)  # partition blob names the contacts came from
    refs: list[list[int]] = field(default_factory=list)  # per contact: [index into parts, row number]
    fps: list[int] = field(default_factory=list)  # per contact: fingerprint of what was sent
    tagged: list[int] = field(default_factory=list)  # positions of contacts already holding the membership tag
    contacts: list[dict] = field(default_factory=list)  # the Omnisend contact bodies
    attempt: int = 0  # sends that failed transiently so far
    unanswered: int = 0  # of those, sends Omnisend never answered: it may hold the contacts already
    server_errors: int = 0  # of those, sends answered a server error that may come after the work (not 503)

    @property
    def unconfirmed(self) -> int:
        """Sends that may have landed without Omnisend saying so."""
        return self.unanswered + self.server_errors

    @property
    def size(self) -> int:
        return len(self.contacts)

    def email(self, i: int) -> str:
        return self.contacts[i]["identifiers"][0]["id"] if i < len(self.contacts) else ""

    def source_row(self, i: int) -> tuple[str, int | str]:
        """(partition, row number) of the contact at position ``i``."""
        if i >= len(self.refs):
            return "", ""
        part, row = self.refs[i]
        return self.parts[part], row

    def fingerprint(self, i: int) -> int:
        return int(self.fps[i]) if i < len(self.fps) else 0

    def stored(self, failed: set[int], skip: Iterable[int] = ()) -> Iterator[tuple[str, int]]:
        """(email, fingerprint) of the contacts not in ``failed`` nor ``skip``."""
        skipped = set(skip)
        for i in range(len(self.contacts)):
            if i not in failed and i not in skipped:
                yield self.email(i), self.fingerprint(i)

    def payload(self) -> dict:
        """What the batch's record keeps of this message (the same keys, without type and attempt)."""
        body = self._head(self.TYPE)
        del body["type"]
        body.update(batch=self.number, parts=self.parts, refs=self.refs, fps=self.fps, contacts=self.contacts)
        if self.tagged:
            body["tagged"] = self.tagged
        return body

    def with_attempt(self, attempt: int, unanswered: int | None = None,
                     server_errors: int | None = None) -> "SendBatch":
        return replace(self, attempt=attempt, unanswered=self.unanswered if unanswered is None else unanswered,
                       server_errors=self.server_errors if server_errors is None else server_errors)

    def encode(self) -> str:
        body = {"type": self.TYPE, **self.payload()}
        if self.attempt:
            body["attempt"] = self.attempt
        if self.unanswered:
            body["unanswered"] = self.unanswered
        if self.server_errors:
            body["serverErrors"] = self.server_errors
        return _dumps(body)

    @classmethod
    def from_payload(cls, body: dict, attempt: int = 0, unanswered: int = 0, server_errors: int = 0) -> "SendBatch":
        return cls(**RunRef._of(body), number=body["batch"], parts=body.get("parts") or [],
                   refs=body.get("refs") or [], fps=[int(f) for f in body.get("fps") or []],
                   tagged=[int(t) for t in body.get("tagged") or []], contacts=body["contacts"], attempt=attempt,
                   unanswered=unanswered, server_errors=server_errors)


def send_head(run_id: str, export_id: str, connection_id: str) -> str:
    """The start of every SendBatch text of a run (``encode_send`` adds the rest)."""
    return _dumps({"type": SendBatch.TYPE, "runId": run_id, "exportId": export_id, "connectionId": connection_id})[:-1]


def encode_send(head: str, number: int, parts: list[str], refs: list[str], fps: list[str], tagged: list[str],
                contacts: list[str]) -> str:
    """A SendBatch's text from pieces that are JSON text already (the planner's hot path): the same
    fields ``SendBatch.encode`` writes (``tagged`` in another place, which JSON does not mind),
    without building a dict per contact."""
    return (f'{head},"batch":{number},"parts":[{",".join(parts)}],'
            f'"refs":[{",".join(refs)}],"fps":[{",".join(fps)}],'
            + (f'"tagged":[{",".join(tagged)}],' if tagged else "")
            + f'"contacts":[{",".join(contacts)}]}}')


@dataclass(frozen=True)
class CheckBatch(RunRef):
    """A delayed look at what Omnisend did with a contact batch it accepted."""

    TYPE = "check"
    number: int = 0
    omnisend_batch_id: str = ""
    polls: int = 0  # looks so far that found the batch still running

    def encode(self) -> str:
        return _dumps({**self._head(self.TYPE), "batch": self.number, "omnisendBatchId": self.omnisend_batch_id,
                       "polls": self.polls})


@dataclass(frozen=True)
class TagBatch(RunRef):
    """The membership tag added to (``BatchKind.TAGS``) or removed from (``UNTAGS``) up to 250 emails."""

    TYPES = {BatchKind.TAGS: "tag", BatchKind.UNTAGS: "untag"}
    LEGACY = {"tags": BatchKind.TAGS, "untags": BatchKind.UNTAGS}
    kind: BatchKind = BatchKind.TAGS
    number: int = 0
    tag: str = ""
    emails: list[str] = field(default_factory=list)
    attempt: int = 0

    @property
    def size(self) -> int:
        return len(self.emails)

    def payload(self) -> dict:
        body = self._head(self.TYPES[self.kind])
        del body["type"]
        body.update(batch=self.number, tag=self.tag, emails=self.emails)
        return body

    def with_attempt(self, attempt: int) -> "TagBatch":
        return replace(self, attempt=attempt)

    def encode(self) -> str:
        body = {"type": self.TYPES[self.kind], **self.payload()}
        if self.attempt:
            body["attempt"] = self.attempt
        return _dumps(body)

    @classmethod
    def from_payload(cls, kind: BatchKind, body: dict, run_id: str = "", number: int = 0,
                     attempt: int = 0) -> "TagBatch":
        """From a message or a batch record (records written before this kept only tag and emails)."""
        return cls(run_id=body.get("runId", run_id), export_id=body.get("exportId"),
                   connection_id=body.get("connectionId", ""), kind=kind, number=body.get("batch", number),
                   tag=body["tag"], emails=body["emails"], attempt=attempt)


@dataclass(frozen=True)
class Dispatch(RunRef):
    """Lines ``first`` .. ``first + lines - 1`` of the run's spool blob, bytes ``start`` to ``end``."""

    TYPE = "dispatch"
    first: int = 1
    lines: int = 0
    start: int = 0
    end: int = 0

    @property
    def last(self) -> int:
        return self.first + self.lines - 1

    def encode(self) -> str:
        return _dumps({**self._head(self.TYPE), "first": self.first, "lines": self.lines, "start": self.start,
                       "end": self.end})


BatchMessage = Union[SendBatch, CheckBatch, TagBatch, Dispatch]


def decode_batch_message(text: str | bytes) -> BatchMessage:
    body = _load(text)
    kind = body.get("type")
    try:
        if kind == SendBatch.TYPE:
            return SendBatch.from_payload(body, attempt=body.get("attempt", 0), unanswered=body.get("unanswered", 0),
                                          server_errors=body.get("serverErrors", 0))
        if kind == CheckBatch.TYPE:
            return CheckBatch(**RunRef._of(body), number=body["batch"], omnisend_batch_id=body["omnisendBatchId"],
                              polls=body.get("polls", 0))
        tag_kind = _tag_kind(kind)
        if tag_kind is not None:
            return TagBatch.from_payload(tag_kind, body, attempt=body.get("attempt", 0))
        if kind == Dispatch.TYPE:
            return Dispatch(**RunRef._of(body), first=body["first"], lines=body["lines"], start=body["start"],
                            end=body["end"])
    except (KeyError, TypeError, ValueError) as e:
        raise MessageError(f"a {kind} message without a valid {e}") from None
    raise MessageError(f"unknown batches-queue message type {kind!r}")


def decode_or_none(decode: Any, text: str | bytes, log: Any) -> Any:
    """A poison queue's message decoded, or None (logged) when it is none of the app's: it is dropped."""
    try:
        return decode(text)
    except MessageError:
        log.error("unreadable message in the poison queue dropped (%d characters)", len(text))
        return None


def _tag_kind(type_: Any) -> BatchKind | None:
    for kind, name in TagBatch.TYPES.items():
        if type_ == name:
            return kind
    return TagBatch.LEGACY.get(type_) if isinstance(type_, str) else None


def _load(text: str | bytes) -> dict:
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise MessageError(f"not JSON ({len(text)} characters)") from None
    if not isinstance(body, dict):
        raise MessageError("not a JSON object")
    return body

