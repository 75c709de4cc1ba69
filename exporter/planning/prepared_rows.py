"""The planner's first stage: every row of a refresh read, mapped, keyed and fingerprinted, in order.

Reading, parsing and mapping are about 40% of planning's CPU; deduplication, diffing and batching
(the second stage, in the planner) need every earlier row and stay in one place. For a large segment
the first stage runs in a second process, so the two stages overlap on a machine with two cores.
The rows that come out, and their order, are the same either way.

A prepared row is one of two types:
- a contact, the plain tuple ``(key, partition, number, email, fp, text)`` (``PreparedContact``):
  ``key`` is its member key, ``fp`` its fingerprint with its field marks above (``domain.planned_fp``),
  ``text`` the JSON text to send;
- a ``RejectedRow`` (unreadable, or refused by the mapping), with the reason and the detail for
  the report.
Contacts stay plain tuples on purpose: a list of them crosses the process boundary (pickled) 2.7
times faster than the same rows as NamedTuples (measured: 1.8 against 4.9 us a row), about 3 s of
CPU at a million rows. Rejections are few, so they can afford a type of their own.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Union

from .. import segments
from ..config import Settings
from ..domain import Refresh, fingerprint, member_key, planned_fp
from ..domain.reasons import REASON_MALFORMED_ROW, REASON_NOT_UTF8
from ..state.clients import StorageClients
from .mapping import ContactMapper, Rejection

PROCESS_MIN_BYTES = 16 << 20  # smaller segments: starting a process (~1 s of imports) costs more than it saves
CHUNK_ROWS = 2000  # rows per message between the processes
QUEUE_CHUNKS = 16  # the reader is at most this many chunks ahead (bounded memory)
POLL_SECONDS = 5.0


PreparedContact = tuple[int, str, int, str, int, str]  # (key, partition, number, email, fp, text)


class RejectedRow(NamedTuple):
    partition: str
    number: int
    email: str
    reason: str
    detail: str


PreparedRow = Union[PreparedContact, RejectedRow]


class ReaderProcessError(RuntimeError):
    """The segment reader process ended without finishing. Like any unexpected planning error, the run
    fails before anything is sent (planner.plan_run), and can be started again."""


def prepare(rows: Iterable[segments.SourceRow], mapper: ContactMapper, dated_at: str) -> Iterator[PreparedRow]:
    map_json = mapper.map_json
    for partition, number, fields, error in rows:
        if error is not None:
            if error == REASON_NOT_UTF8:
                yield RejectedRow(partition, number, "", REASON_NOT_UTF8, error)
            else:
                yield RejectedRow(partition, number, mapper.email_of(fields), REASON_MALFORMED_ROW, error)
            continue
        # the contact's JSON text, as sent, and the text its fingerprint is taken of (they differ only
        # for mapped consent without a date, which is dated with the refresh's time)
        mapped = map_json(fields, dated_at)
        if type(mapped) is Rejection:
            yield RejectedRow(partition, number, mapper.email_of(fields), mapped.reason, mapped.detail)
            continue
        email, fp_text, text, marks = mapped
        yield member_key(email), partition, number, email, planned_fp(fingerprint(fp_text), marks), text


def use_process(settings: Settings, refresh: Refresh) -> bool:
    if settings.planner_reader_process != "auto":
        return settings.planner_reader_process == "on"
    return refresh.size >= PROCESS_MIN_BYTES and (os.cpu_count() or 1) >= 2


def prepared_rows(settings: Settings, container, refresh: Refresh, schema: segments.SegmentSchema,
                  mapper: ContactMapper, dated_at: str) -> Iterator[PreparedRow]:
    """The refresh's prepared rows. Raises SegmentSourceError (or a subclass) as ``read_rows`` does,
    after the rows before the problem, wherever the rows were read."""
    if not use_process(settings, refresh):
        yield from prepare(segments.read_rows(container, refresh, schema), mapper, dated_at)
        return
    yield from _from_process(settings, container.container_name, refresh, schema, mapper, dated_at)


def _from_process(settings, container_name, refresh, schema, mapper, dated_at) -> Iterator[PreparedRow]:
    # spawn, not fork: the planner runs among other threads (the host's, the local runner's), whose
    # locks a forked child would inherit in whatever state they were
    ctx = multiprocessing.get_context("spawn")
    chunks = ctx.Queue(QUEUE_CHUNKS)
    reader = ctx.Process(target=_reader_main, name="segment-reader", daemon=True,
                         args=(settings, container_name, refresh, schema, mapper, dated_at, chunks))
    reader.start()
    try:
        while True:
            try:
                item = chunks.get(timeout=POLL_SECONDS)
            except queue_module.Empty:
                if not reader.is_alive():
                    raise ReaderProcessError(
                        f"The segment reader process ended unexpectedly (exit code {reader.exitcode}) while "
                        f"reading {refresh.folder}."
                    ) from None
                continue
            if type(item) is list:
                yield from item
                continue
            kind, error_type, message = item
            if kind == "done":
                return
            if kind == "source":
                raise error_type(message)
            raise ReaderProcessError(f"The segment reader process failed while reading {refresh.folder}: {message}")
    finally:
        if reader.is_alive():
            reader.terminate()  # the consumer stopped early (an error here, or the run ended)
        reader.join(POLL_SECONDS)
        chunks.close()
        chunks.cancel_join_thread()


def _reader_main(settings, container_name, refresh, schema, mapper, dated_at, chunks) -> None:
    chunk: list[PreparedRow] = []
    try:
        container = StorageClients(settings).segment_container(container_name)
        for row in prepare(segments.read_rows(container, refresh, schema), mapper, dated_at):
            chunk.append(row)
            if len(chunk) >= CHUNK_ROWS:
                chunks.put(chunk)
                chunk = []
        end = ("done", None, None)
    except segments.SegmentSourceError as e:
        end = ("source", type(e), str(e))  # after the rows read before it, as in one process
    except BaseException as e:  # noqa: BLE001 - reported to the planner, which fails or retries the run
        end = ("crash", None, f"{type(e).__name__}: {e}")
    try:
        if chunk:
            chunks.put(chunk)
        chunks.put(end)
    finally:
        chunks.close()
        chunks.join_thread()  # everything put is flushed to the pipe before the process ends
