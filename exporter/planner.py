"""Plan a run: stream the segment, map and validate each row, drop duplicates, and fan out batches.

Planning happens in two steps so that nothing is sent for a segment that turns out to be bad:
1. read every partition once, writing ready-to-send batch messages to a local spool file (not
   memory) and rejected rows to the run's report;
2. only when the whole refresh was read cleanly, enqueue the spooled batches for the uploaders.
A malformed file, a missing column or a contract limit therefore fails the run before any contact
leaves the platform.
"""

from __future__ import annotations

import json
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timezone

from . import segments
from .domain import Run, RunCounts, RunStatus, Tally
from .finalizer import start_tag_waves
from .logs import get_logger, log_context
from .mapping import (
    REASON_CONTACT_TOO_LARGE,
    REASON_DUPLICATE,
    ContactMapper,
    ContactOptions,
    MappingError,
    Rejection,
)
from .membership import KeySet
from .prepared_rows import prepared_rows
from .runs import conclude, settle
from .services import Services
from .storage import ReportWriter

log = get_logger(__name__)

REASON_NOT_SENT_OVER_LIMIT = "not sent: over the contract limit"
REASON_NOT_SENT_UNREADABLE = "not sent: the segment could not be read"
REASON_NOT_SENT_RUN_ENDED = "not sent: the run had ended"
REASON_NOT_SENT_CONNECTION = "not sent: connection removed"

MAX_BATCH_CONTACTS = 100  # Omnisend's limit per POST /batches
# A queue message is at most 64 KiB after base64 (4/3): keep the JSON text well below 48 KiB.
MAX_MESSAGE_CHARS = 46_000
ENQUEUE_THREADS = 8
DIRECT_ENQUEUE_LINES = 50  # up to this many messages go straight onto the queue, without a spool blob
DISPATCH_LINES = 50  # messages a dispatch message fans out
REQUESTS_PER_BATCH = 2  # a send and (usually) one check
DISPATCH_PACE = 0.9  # dispatch a little ahead of what the budget can send, so no worker waits for work
SPOOL_UPLOAD_THREADS = 4
SPOOL_BLOCK_BYTES = 8 << 20


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
    """Packs pre-serialised contacts into queue messages of at most 100 contacts and MAX_MESSAGE_CHARS."""

    def __init__(self, run: Run, spool):
        self._head = json.dumps(
            {"type": "send", "runId": run.id, "exportId": run.export_id, "connectionId": run.connection_id},
            separators=(",", ":"),
        )[:-1]
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
        extra = len(contact_json) + 38
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
        self._spool.write(
            f'{self._head},"batch":{self.batches},"parts":[{",".join(p.parts)}],'
            f'"refs":[{",".join(p.refs)}],"fps":[{",".join(p.fps)}],'
            + (f'"tagged":[{",".join(p.tagged)}],' if p.tagged else "")
            + f'"contacts":[{",".join(p.contacts)}]}}\n'
        )
        self._pending = None


def _reject(report: ReportWriter, counts: RunCounts, partition: str, row: int, email: str, r: Rejection) -> None:
    counts.add_rejection(r.reason)
    report.add("planning", partition, row, email, r.reason, r.detail)


def _begin(svc: Services, run_id: str, redelivered: bool) -> tuple[Run, bool]:
    """Claim a queued run for planning: (run, False) when another delivery of the message already did,
    or the run was cancelled before it was planned.

    A redelivered message may take over a run left in planning: its worker died (planning is
    repeatable; batches already enqueued are recognised by number and not sent twice).
    """
    claimed = []

    def mutate(run: Run):
        claimed.clear()  # called again when another writer got in first: only the last call counts
        if not (run.status is RunStatus.QUEUED or (redelivered and run.status is RunStatus.PLANNING)):
            return False
        run.status = RunStatus.PLANNING
        run.started_at = svc.clock()
        claimed.append(True)

    run = svc.storage.update_run(run_id, mutate)
    return run, bool(claimed)


def plan_run(svc: Services, run_id: str, redelivered: bool = False) -> Run | None:
    with log_context(run_id=run_id):  # every line logged while planning names the run (and its export)
        run, claimed = _begin(svc, run_id, redelivered)
        with log_context(export_id=run.export_id):
            if not claimed:
                log.info("run already %s; message ignored", run.status.value)
                return None
            return _plan_claimed(svc, run)


def _plan_claimed(svc: Services, run: Run) -> Run:
    try:
        return _plan(svc, run)
    except EnqueueError:
        raise  # some batches may be out: let the queue deliver the plan again, which re-plans the run
    except Exception as e:  # noqa: BLE001 - a run must end visibly, never hang in "planning"
        log.exception("planning failed unexpectedly", extra={"run_id": run.id, "export_id": run.export_id})
        return _fail_early(svc, run.id, f"Planning failed unexpectedly ({type(e).__name__}); nothing was sent. "
                                        "The error was logged with this run's id.")


def handle_poison_message(svc: Services, text: str) -> None:
    """A plan message the host gave up on: the run ends, visibly, instead of waiting forever."""
    try:
        body = json.loads(text)
        run_id = body["runId"]
    except (ValueError, KeyError, TypeError):
        log.error("unreadable message in the poison queue dropped (%d characters)", len(text))
        return
    if body.get("type") == "tagwave":  # waves only speed tagging up: the run's last tag planning covers them
        log.warning("a tag wave tick failed on every attempt; the run's tags are planned at its end", extra={"run_id": run_id})
        return
    run = svc.storage.get_run(run_id)
    if run is not None and not run.status.is_final:
        with log_context(run_id=run_id, export_id=run.export_id):
            _fail_early(svc, run_id, "Planning failed on every attempt (the message reached the poison queue); "
                                     "nothing was sent. The errors were logged with this run's id.")


def _plan(svc: Services, run: Run) -> Run:
    ctx = {"run_id": run.id, "export_id": run.export_id}
    export = svc.storage.get_export(run.export_id)
    connection = svc.storage.get_connection(run.connection_id)
    if export is None:
        return _fail_early(svc, run.id, "The export was deleted before the run started.")
    if connection is None:
        return _fail_early(svc, run.id, f"Connection {run.connection_id} was removed; the run cannot send anything.")
    src = export.source
    container = svc.storage.segment_blobs.get_container_client(src.container)
    try:
        refresh = segments.find_latest_refresh(container, src.folder, src.segment)
        if refresh is None:
            return _fail_early(
                svc, run.id,
                f"Segment {src.segment!r} has no refresh under {src.container}/{src.folder}: nothing to export yet.",
            )
        if not segments.is_settled(refresh, svc.clock(), svc.settings.refresh_settle_seconds):
            return _fail_early(
                svc, run.id,
                f"The latest refresh {refresh.folder} is still being written (last change {refresh.last_modified:%H:%M:%S} "
                f"UTC; settle period {svc.settings.refresh_settle_seconds}s). Run again in a few minutes.",
            )
        schema = segments.load_schema(container, src.folder, src.segment, refresh)
        mapper = ContactMapper(schema.columns, export.mapping,
                               ContactOptions(consent=export.consent, send_welcome_message=export.send_welcome_message))
    except (segments.SegmentSourceError, MappingError) as e:
        return _fail_early(svc, run.id, str(e))
    refreshed_at = refresh.last_modified.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = svc.states.load(export.id)
    if state is not None and state.header.connection_id != export.connection_id:
        state.close()  # another Omnisend account: what the old one holds says nothing about this one
        state = None
    # unchanged members are skipped only when the last confirmed state was made the same way
    diffing = state is not None and state.header.sync_key == export.sync_key() and not run.full
    try:
        return _plan_rows(svc, run, export, connection, container, refresh, schema, mapper, state, diffing,
                          refreshed_at, ctx)
    finally:
        if state is not None:
            state.close()


def _plan_rows(svc, run, export, connection, container, refresh, schema, mapper, state, diffing, refreshed_at, ctx):

    counts = RunCounts()
    svc.storage.create_report(run.id)
    report = svc.storage.open_report(run.id)
    seen = KeySet()  # member keys (64-bit hashes of casefolded emails), not the addresses
    log.info("planning %s", refresh.folder, extra=ctx)
    with Spool(svc, run) as spool:
        builder = BatchBuilder(run, spool)
        # bound once: this loop runs for every row of the segment
        add, fits_alone, remember, mark_tagged = builder.add, builder.fits_alone, seen.add, builder.mark_tagged
        find = state.find if state is not None else None
        source = prepared_rows(svc.settings, container, refresh, schema, mapper, refreshed_at)
        try:
            for key, partition, number, email, fp, text in source:
                counts.read += 1
                if key is None:  # fp and text hold the reason and the detail
                    _reject(report, counts, partition, number, email, Rejection(fp, text))
                    continue
                if key in seen:
                    counts.duplicates += 1
                    report.add("planning", partition, number, email, REASON_DUPLICATE, "an earlier row has the same email")
                    continue
                tagged = False
                if find is not None:
                    i = find(key)
                    if i >= 0:
                        state.present[i] = 1
                        if diffing:
                            if state.fps[i] == fp:
                                remember(key)
                                counts.skipped += 1  # Omnisend already holds exactly this
                                continue
                            # a changed member: the state was made with this tag, so it holds the tag
                            # (a contact write without tags leaves them as they are)
                            tagged = True
                if not fits_alone(text, partition):
                    _reject(report, counts, partition, number, email,
                            Rejection(REASON_CONTACT_TOO_LARGE, "the contact does not fit in one queue message"))
                    continue
                remember(key)
                add(text, partition, number, fp)
                if tagged:
                    mark_tagged()
                    counts.already_tagged += 1
            builder.flush()
            untags = _plan_untags(run, export, state, spool, counts) if state is not None else 0
        except segments.SegmentSourceError as e:
            builder.flush()  # the contacts of the last, partly filled batch are listed as not sent too
            counts.queued = builder.contacts
            _report_unsent(report, spool, REASON_NOT_SENT_UNREADABLE, str(e))
            report.close()
            return _abandon(svc, run.id, counts, refresh, REASON_NOT_SENT_UNREADABLE, f"{e} Nothing was sent.")
        finally:
            source.close()  # stops a reader process still running (planning ended early)
            seen.clear()
        report.close()
        counts.queued = builder.contacts
        counts.batches = builder.batches

        limit = connection.max_profiles_per_export
        valid = counts.queued + counts.skipped
        if limit is not None and valid > limit:
            _report_spool(svc, run.id, spool, REASON_NOT_SENT_OVER_LIMIT,
                          f"the segment has {valid} valid profiles; the connection allows {limit}")
            return _abandon(
                svc, run.id, counts, refresh, REASON_NOT_SENT_OVER_LIMIT,
                f"The segment has {valid} valid profiles, more than the {limit} allowed per export by "
                f"connection {connection.display_name!r} (the Omnisend contract limit). Nothing was sent.",
            )
        current = svc.storage.get_run(run.id)
        if current is None or current.status.is_final:  # cancelled (or failed) while planning
            ended = current.status.value if current is not None else "deleted"
            _report_spool(svc, run.id, spool, REASON_NOT_SENT_RUN_ENDED, f"the run was {ended} while it was planned")
            return _abandon(svc, run.id, counts, refresh, REASON_NOT_SENT_RUN_ENDED, None)
        if svc.storage.get_connection(connection.id) is None:  # removed while planning
            _report_spool(svc, run.id, spool, REASON_NOT_SENT_CONNECTION,
                          "the connection was removed while the run was planned")
            return _abandon(svc, run.id, counts, refresh, REASON_NOT_SENT_CONNECTION,
                            f"Connection {connection.display_name!r} was removed while the run was planned; "
                            "nothing was sent.")
        # Enqueue only now that the whole refresh was read cleanly.
        _enqueue(svc, spool)
    if counts.read == 0:
        _note_empty_refresh(svc, run.id, refresh, counts.left)
    run = _record_planning(svc, run.id, counts, refresh, untags)
    if export.effective_tag:
        start_tag_waves(svc, run, counts.batches)
    log.info(
        "planned: %d read, %d rejected, %d duplicates, %d unchanged, %d contacts in %d batches, %d left the segment",
        counts.read, counts.rejected, counts.duplicates, counts.skipped, counts.queued, counts.batches, counts.left,
        extra=ctx,
    )
    return run


UNTAG_BATCH = 250  # emails per DELETE /contacts/tags


def _plan_untags(run: Run, export, state, spool, counts: RunCounts) -> int:
    """Spool removal of the membership tag for members of the last confirmed state who left."""
    head = {"type": "untags", "runId": run.id, "exportId": run.export_id, "connectionId": run.connection_id,
            "tag": state.header.tag}
    batch: list[str] = []
    number = 0

    def flush() -> None:
        nonlocal number, batch
        if batch:
            number += 1
            spool.write(json.dumps({**head, "batch": number, "emails": batch}, separators=(",", ":")) + "\n")
            batch = []

    for _, email in state.leavers():
        counts.left += 1
        batch.append(email)
        if len(batch) >= UNTAG_BATCH:
            flush()
    flush()
    return number


class EnqueueError(RuntimeError):
    """Enqueueing stopped part way; planning the run again is safe (batch numbers are stable)."""


def _enqueue(svc: Services, spool: "Spool") -> None:
    """Hand the spooled messages to the uploaders.

    A small run's messages go straight onto the batch queue. A large run's spool becomes one blob
    (its blocks were staged while the segment was read; committing them makes it whole) and only a
    "dispatch" message per DISPATCH_LINES of it is enqueued; uploaders fan those out while others
    already send. One queue message per Omnisend batch up front would cost the planner more than
    reading the segment (about 75 messages a second to Azurite from one process), and Omnisend takes
    at most ~3 batches a second anyway.

    Dispatch messages become visible ``dispatch_stagger`` apart, so batches are sent roughly in number
    order: tag waves, which follow batch numbers, can then start early instead of when nearly every
    batch is counted.
    """
    try:
        if spool.lines <= DIRECT_ENQUEUE_LINES:
            _send_all(svc, ((text, 0) for text in spool.messages()))
        else:
            stagger = dispatch_stagger(svc.settings)
            _send_all(svc, ((json.dumps(d, separators=(",", ":")), i * stagger) for i, d in enumerate(spool.commit())))
    except Exception as e:
        raise EnqueueError(f"enqueueing batches failed: {type(e).__name__}") from e


def dispatch_stagger(settings) -> float:
    """Seconds between dispatch messages becoming visible: a little less than the request budget needs
    to send DISPATCH_LINES batches (13.5 s at Omnisend's 400 a minute).

    Faster, and batches pile up visible: workers pick them in no order, and a message the pacer
    defers comes back later still, so the first tag wave is complete only late in the run (measured:
    at 10 batches a second, 100,000 rows at Omnisend's limits took 619 s, the tags endpoint idle for
    minutes). Slower, and the budget idles.
    """
    per_batch = REQUESTS_PER_BATCH * settings.omnisend_rate_window_seconds / settings.omnisend_rate_limit
    return DISPATCH_PACE * DISPATCH_LINES * per_batch


def _send_all(svc: Services, messages) -> None:
    """Send (text, delay) messages with a few threads, holding only a small window of them in memory."""
    in_flight: deque = deque()
    with ThreadPoolExecutor(ENQUEUE_THREADS, thread_name_prefix="enqueue") as pool:
        for text, delay in messages:
            in_flight.append(pool.submit(svc.storage.send_batch_message, text, delay))
            if len(in_flight) >= 2 * ENQUEUE_THREADS:
                in_flight.popleft().result()
        while in_flight:
            in_flight.popleft().result()


class Spool:
    """The plan's queue messages, one JSON line each, in a local temporary file (read back for the
    report when a run ends before sending) and, as it grows, staged block by block as the run's spool
    blob from a background thread, so that handing a large plan off costs little after the read.
    Staged blocks are invisible until ``commit``: nothing can be fanned out before the plan is whole.
    """

    def __init__(self, svc: Services, run: Run):
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8")
        self._blob = svc.storage.spool_blob(run.id)
        self._head = {"type": "dispatch", "runId": run.id, "exportId": run.export_id,
                      "connectionId": run.connection_id}
        self._pool: ThreadPoolExecutor | None = None
        self._staged: deque = deque()
        self._block_ids: list[str] = []
        self._buf = bytearray()
        self._error: BaseException | None = None
        self._group_starts: list[int] = []  # byte offset of every DISPATCH_LINES-th line
        self.offset = 0
        self.lines = 0

    def write(self, line: str) -> None:
        """Add one message (a JSON line ending in a newline)."""
        self._file.write(line)
        data = line.encode("utf-8")
        if self.lines % DISPATCH_LINES == 0:
            self._group_starts.append(self.offset)
        self.lines += 1
        self.offset += len(data)
        self._buf += data
        if len(self._buf) >= SPOOL_BLOCK_BYTES:
            self._stage()

    def _stage(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(SPOOL_UPLOAD_THREADS, thread_name_prefix="spool")
        block_id = f"{len(self._block_ids):08d}"
        self._block_ids.append(block_id)
        self._staged.append(self._pool.submit(self._blob.stage_block, block_id, bytes(self._buf)))
        self._buf.clear()
        while len(self._staged) > SPOOL_UPLOAD_THREADS:  # bounded memory: wait for the oldest block
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        try:
            self._staged.popleft().result()
        except Exception as e:  # noqa: BLE001 - reported when the plan is handed off, not mid-read
            self._error = self._error or e

    def messages(self):
        """The messages from the first, as text, read back from the local file (also for the report of a
        run that ends before sending); the file is left at its end."""
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            yield line.rstrip("\n")

    def commit(self) -> list[dict]:
        """Make the spool blob whole; returns the dispatch messages that cover it."""
        if self._buf:
            self._stage()
        while self._staged:
            self._wait_oldest()
        if self._error is not None:
            raise self._error
        self._blob.commit_block_list(self._block_ids)
        ends = self._group_starts[1:] + [self.offset]
        return [{**self._head, "first": i * DISPATCH_LINES + 1, "lines": min(DISPATCH_LINES, self.lines - i * DISPATCH_LINES),
                 "start": start, "end": end} for i, (start, end) in enumerate(zip(self._group_starts, ends))]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._file.close()

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _record_planning(svc: Services, run_id: str, counts: RunCounts, refresh, untags: int = 0) -> Run:
    """Planning is done: its counts go on the run, then the tally learns how many batches to expect.

    In this order, because the tally's planned count is what lets the run end: no worker may
    conclude the run before the planning counts are on it.
    """

    def mutate(run: Run):
        c = run.counts
        c.read, c.rejected, c.rejected_by_reason = counts.read, counts.rejected, dict(counts.rejected_by_reason)
        c.duplicates, c.queued, c.batches = counts.duplicates, counts.queued, counts.batches
        c.skipped, c.left, c.already_tagged = counts.skipped, counts.left, counts.already_tagged
        run.refresh_folder, run.refresh_fingerprint = refresh.folder, refresh.fingerprint
        if run.status is RunStatus.PLANNING:
            run.status = RunStatus.UPLOADING

    svc.storage.update_run(run_id, mutate)

    def planned(t: Tally) -> None:
        t.planned = counts.batches
        t.untags_planned = untags

    tally = svc.storage.update_tally(run_id, planned)
    try:
        return settle(svc, run_id, tally) or svc.storage.get_run(run_id)
    except Exception:  # noqa: BLE001 - batches are out: this is no planning failure ("nothing was sent")
        # the workers' next settle, or the scheduler's reconcile, moves the run on
        log.exception("moving the run on after planning failed", extra={"run_id": run_id})
        return svc.storage.get_run(run_id)


def _abandon(svc: Services, run_id: str, counts: RunCounts, refresh, reason: str, error: str | None) -> Run:
    """End a run whose contacts will not be sent; they are counted as failed with ``reason``.

    The planning counts, the unsent contacts, the end of the run and ``counts_final`` are written in
    one step: a run never shows as ended with counts that do not add up yet (a caller polling it
    would take them for its result). The tally records the same afterwards.
    """
    unsent, counts.batches = counts.queued, 0

    def mutate(run: Run):
        c = run.counts
        c.read, c.rejected, c.rejected_by_reason = counts.read, counts.rejected, dict(counts.rejected_by_reason)
        c.duplicates, c.queued, c.batches = counts.duplicates, counts.queued, 0
        c.skipped, c.left = counts.skipped, 0
        c.add_failures(reason, unsent)
        if refresh is not None:
            run.refresh_folder, run.refresh_fingerprint = refresh.folder, refresh.fingerprint
        if not run.status.is_final:  # a run cancelled while planning stays cancelled
            if error:
                run.status, run.finished_at, run.error = RunStatus.FAILED, svc.clock(), error
            else:
                conclude(run, svc.clock())
        run.counts_final = True

    run = svc.storage.update_run(run_id, mutate)
    log.warning("run ended %s before sending: %s", run.status.value, error or reason,
                extra={"run_id": run_id, "export_id": run.export_id})

    def nothing_sent(t: Tally) -> None:
        t.planned = 0
        t.add_failures({reason: unsent})

    svc.storage.update_tally(run_id, nothing_sent)
    return run


def _note_empty_refresh(svc: Services, run_id: str, refresh, left: int) -> None:
    """A refresh without a single row is an empty segment: the run goes on (and can succeed), but
    says so, since an empty export by mistake of the platform looks the same."""
    untagged = f" and the {left} members of the last confirmed run lose the tag" if left else ""
    note = (f"The refresh {refresh.folder} has no rows: the segment is empty, so nothing was sent{untagged}. "
            "If the segment is not empty, the platform wrote an empty refresh; check its export.")

    def mutate(run: Run):
        if run.status.is_final:
            return False
        run.error = note

    svc.storage.update_run(run_id, mutate)
    log.warning("refresh %s has no rows; %d members left", refresh.folder, left)


def _report_unsent(report: ReportWriter, spool: Spool, reason: str, detail: str) -> None:
    """List every contact of the spooled send batches in the report as not sent, one row each (so the
    report has as many rows with ``reason`` as the run counts failed with it).

    Streams the spool from its start, one message (line) at a time.
    """
    for line in spool.messages():
        message = json.loads(line)
        if message["type"] != "send":
            continue  # tag removals of leavers: no contact of this run's rows
        parts, refs = message["parts"], message["refs"]
        for (part, row), contact in zip(refs, message["contacts"]):
            report.add("planning", parts[part], row, contact["identifiers"][0]["id"], reason, detail)


def _report_spool(svc: Services, run_id: str, spool: Spool, reason: str, detail: str) -> None:
    """The run's report lists the spooled contacts, which will not be sent, before the run ends."""
    report = svc.storage.open_report(run_id)
    try:
        _report_unsent(report, spool, reason, detail)
    finally:
        report.close()


def _fail_early(svc: Services, run_id: str, error: str) -> Run:
    """A run that ends before reading any row: nothing read, nothing to account for."""
    return _abandon(svc, run_id, RunCounts(), None, REASON_NOT_SENT_UNREADABLE, error)
