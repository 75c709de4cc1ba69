"""Plan a run: stream the segment, map and validate each row, drop duplicates, and fan out batches.

Planning happens in two steps so that nothing is sent for a segment that turns out to be bad:
1. read every partition once, writing ready-to-send batch messages to a local spool file (not
   memory) and rejected rows to the run's report;
2. only when the whole refresh was read cleanly, enqueue the spooled batches for the uploaders.
A malformed file, a missing column or a contract limit therefore fails the run before any contact
leaves the platform. The run's status changes in ``lifecycle.plan_status``; this module decides.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import timezone
from typing import NamedTuple

from .. import segments
from ..domain import FP_MASK, Connection, Export, KeySet, Refresh, Run, RunCounts, changed_fields
from ..domain.members import FP_BITS
from ..domain.reasons import (
    REASON_CONTACT_TOO_LARGE,
    REASON_DUPLICATE,
    REASON_NOT_SENT_CONNECTION,
    REASON_NOT_SENT_OVER_LIMIT,
    REASON_NOT_SENT_RUN_ENDED,
    REASON_NOT_SENT_THRESHOLD,
    REASON_NOT_SENT_UNREADABLE,
)
from ..lifecycle.plan_status import (
    abandon,
    claim_for_planning,
    fail_before_reading,
    note_empty_refresh,
    record_plan,
    record_preview,
)
from ..lifecycle.tag_planning import start_tag_waves
from ..logs import get_logger, log_context
from ..services import Services
from ..state.changes import UNKNOWN_FIELDS, ChangesWriter
from ..state.membership import MemberState
from ..state.reports import ReportWriter
from .batching import BatchBuilder, spool_untags
from .enqueue import EnqueueError, enqueue
from .mapping import ContactMapper, ContactOptions, MappingError
from .prepared_rows import RejectedRow, prepared_rows
from .preview import preview_result
from .safety import threshold_stop
from .spool import Spool, report_unsent

log = get_logger(__name__)


@dataclass
class _Source:
    """What planning reads: the refresh, how to map it, and the membership state to diff against."""

    export: Export
    connection: Connection
    container: object  # the segment's blob container (state.clients.segment_container)
    refresh: Refresh
    schema: segments.SegmentSchema
    mapper: ContactMapper
    state: MemberState | None
    diffing: bool  # unchanged members are skipped (the state was made the same way)

    @property
    def refreshed_at(self) -> str:
        return self.refresh.last_modified.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_run(svc: Services, run_id: str, redelivered: bool = False) -> Run | None:
    with log_context(run_id=run_id):  # every line logged while planning names the run (and its export)
        run, claimed = claim_for_planning(svc, run_id, redelivered)
        if run is None:
            log.info("run no longer exists (its export was deleted); message ignored")
            return None
        with log_context(export_id=run.export_id):
            if not claimed:
                log.info("run already %s; message ignored", run.status.value)
                return None
            try:
                return _plan(svc, run)
            except EnqueueError:
                raise  # some batches may be out: let the queue deliver the plan again, which re-plans the run
            except Exception as e:  # a run must end visibly, never hang in "planning"
                log.exception("planning failed unexpectedly", extra={"run_id": run.id, "export_id": run.export_id})
                return fail_before_reading(svc, run.id, f"Planning failed unexpectedly ({type(e).__name__}); nothing "
                                                        "was sent. The error was logged with this run's id.")


def _plan(svc: Services, run: Run) -> Run:
    export = svc.exports.get(run.export_id)
    connection = svc.connections.get(run.connection_id)
    if export is None:
        return fail_before_reading(svc, run.id, "The export was deleted before the run started.")
    if connection is None:
        return fail_before_reading(svc, run.id, f"Connection {run.connection_id} was removed; the run cannot send "
                                                "anything.")
    src = export.source
    container = svc.clients.segment_container(src.container)
    try:
        refresh = segments.latest_settled_refresh(container, src, svc.clock(), svc.settings.refresh_settle_seconds)
        schema = segments.load_schema(container, src.folder, src.segment, refresh)
        mapper = ContactMapper(schema.columns, export.mapping,
                               ContactOptions(consent=export.consent, send_welcome_message=export.send_welcome_message))
    except (segments.SegmentSourceError, MappingError) as e:
        return fail_before_reading(svc, run.id, str(e))
    state = svc.states.load(export.id)
    if state is not None and state.header.connection_id != export.connection_id:
        state.close()  # another Omnisend account: what the old one holds says nothing about this one
        state = None
    # unchanged members are skipped only when the last confirmed state was made the same way
    diffing = state is not None and state.header.sync_key == export.sync_key() and not run.full
    source = _Source(export, connection, container, refresh, schema, mapper, state, diffing)
    try:
        return _plan_rows(svc, run, source)
    finally:
        if state is not None:
            state.close()


def _plan_rows(svc: Services, run: Run, src: _Source) -> Run:
    counts = RunCounts()
    began = time.monotonic()
    svc.reports.create(run.id)
    report = svc.reports.open(run.id)
    changes = svc.changes.create(run.id)
    log.info("planning %s%s", src.refresh.folder, " (preview: nothing is sent)" if run.is_preview else "")
    with Spool(svc.spools.of(run.id), run) as spool:
        builder = BatchBuilder(run, spool)
        try:
            _batch_rows(svc, src, counts, report, builder, changes)
            untags = spool_untags(run, src.state, spool, counts, changes.left) if src.state is not None else 0
        except segments.SegmentSourceError as e:
            builder.flush()  # the contacts of the last, partly filled batch are listed as not sent too
            counts.queued = builder.contacts
            report_unsent(report, spool, REASON_NOT_SENT_UNREADABLE, str(e))
            report.close()
            changes.close()
            nothing = "Nothing would be sent." if run.is_preview else "Nothing was sent."
            return abandon(svc, run.id, counts, src.refresh, REASON_NOT_SENT_UNREADABLE, f"{e} {nothing}")
        report.close()
        changes.close()
        counts.queued, counts.batches = builder.contacts, builder.batches
        if run.is_preview:
            stop = _stop_before_sending(src, run, counts)
            result = preview_result(svc, run.id, src.export, src.state, counts, untags, spool,
                                    stop.error if stop else None, time.monotonic() - began)
            return record_preview(svc, run.id, counts, src.refresh, result)
        ended = _reason_not_to_send(svc, run, src, counts, spool)
        if ended is not None:
            return ended
        enqueue(svc, spool)  # only now that the whole refresh was read cleanly
    if counts.read == 0:
        note_empty_refresh(svc, run.id, src.refresh, counts.left)
    run = record_plan(svc, run.id, counts, src.refresh, untags)
    if src.export.effective_tag:
        start_tag_waves(svc, run, counts.batches)
    log.info(
        "planned: %d read, %d rejected, %d duplicates, %d unchanged, %d contacts in %d batches, %d left the segment",
        counts.read, counts.rejected, counts.duplicates, counts.skipped, counts.queued, counts.batches, counts.left,
    )
    return run


def _batch_rows(svc: Services, src: _Source, counts: RunCounts, report: ReportWriter, builder: BatchBuilder,
                changes: ChangesWriter) -> None:
    """Every row of the refresh counted, rejected with its reason, skipped as unchanged, or batched
    (and listed in the changes report as joined or changed).

    The loop runs for every row of the segment: names are bound once, and the usual row is a few
    lookups and appends.
    """
    seen = KeySet()  # member keys (64-bit hashes of casefolded emails), not the addresses
    add, fits_alone, remember, mark_tagged = builder.add, builder.fits_alone, seen.add, builder.mark_tagged
    joined, changed = changes.joined, changes.changed
    by_field: Counter[str] = Counter()
    state = src.state
    find = state.find if state is not None else None
    fps, marks_of = (state.fps, state.marks) if state is not None else (None, None)
    rows = prepared_rows(svc.settings, src.container, src.refresh, src.schema, src.mapper, src.refreshed_at)
    try:
        for row in rows:
            counts.read += 1
            if type(row) is RejectedRow:
                counts.add_rejection(row.reason)
                report.add("planning", row.partition, row.number, row.email, row.reason, row.detail)
                continue
            key, partition, number, email, fp, text = row
            if key in seen:
                counts.duplicates += 1
                report.add("planning", partition, number, email, REASON_DUPLICATE, "an earlier row has the same email")
                continue
            tagged = False
            i = -1
            if find is not None:
                i = find(key)
                if i >= 0:
                    state.present[i] = 1
                    if src.diffing:
                        if fps[i] == fp & FP_MASK:
                            remember(key)
                            counts.skipped += 1  # Omnisend already holds exactly this
                            continue
                        # a changed member: the state was made with this tag, so it holds the tag
                        # (a contact write without tags leaves them as they are)
                        tagged = True
            if not fits_alone(text, partition):
                counts.add_rejection(REASON_CONTACT_TOO_LARGE)
                report.add("planning", partition, number, email, REASON_CONTACT_TOO_LARGE,
                           "the contact does not fit in one queue message")
                continue
            remember(key)
            add(text, partition, number, fp)
            if tagged:
                mark_tagged()
                counts.already_tagged += 1
            if i < 0:
                counts.joined += 1
                joined(email)
                continue
            counts.changed += 1  # a field changed, or everyone is sent (a full run, a new mapping or tag)
            fields = changed_fields(marks_of(i), fp >> FP_BITS)
            by_field.update(fields if fields is not None else (UNKNOWN_FIELDS,))
            changed(email, fields)
        builder.flush()
    finally:
        rows.close()  # stops a reader process still running (planning ended early)
        seen.clear()
        counts.changed_fields = dict(by_field)


class _Stop(NamedTuple):
    reason: str  # what the unsent contacts are counted as
    detail: str  # for the report
    error: str
    held: bool = False  # a safety threshold: the same run with confirm goes through


def _stop_before_sending(src: _Source, run: Run, counts: RunCounts) -> _Stop | None:
    """The plan's own reasons not to send it: the contract limit and the safety thresholds (a preview
    reports them as what a run would do)."""
    limit = src.connection.max_profiles_per_export
    valid = counts.queued + counts.skipped
    if limit is not None and valid > limit:
        return _Stop(REASON_NOT_SENT_OVER_LIMIT, f"the segment has {valid} valid profiles; the connection allows {limit}",
                     f"The segment has {valid} valid profiles, more than the {limit} allowed per export by "
                     f"connection {src.connection.display_name!r} (the Omnisend contract limit). Nothing was sent.")
    stop = threshold_stop(src.export, run, counts, len(src.state) if src.state is not None else 0)
    if stop is not None:
        return _Stop(REASON_NOT_SENT_THRESHOLD, "the run stopped at the export's safety threshold before sending",
                     stop.error, stop.held)
    return None


def _reason_not_to_send(svc: Services, run: Run, src: _Source, counts: RunCounts, spool: Spool) -> Run | None:
    """The last checks before anything leaves: the contract limit, the safety thresholds, a run ended
    meanwhile, a connection removed meanwhile. Returns the run, ended with its contacts reported as not sent, or None: send."""
    stop = _stop_before_sending(src, run, counts)
    if stop is not None:
        return _end_unsent(svc, run, src, counts, spool, *stop)
    current = svc.runs.get(run.id)
    if current is None or current.status.is_final:  # cancelled (or failed) while planning
        ended = current.status.value if current is not None else "deleted"
        return _end_unsent(svc, run, src, counts, spool, REASON_NOT_SENT_RUN_ENDED,
                           f"the run was {ended} while it was planned", None)
    if svc.connections.get(src.connection.id) is None:  # removed while planning
        return _end_unsent(svc, run, src, counts, spool, REASON_NOT_SENT_CONNECTION,
                           "the connection was removed while the run was planned",
                           f"Connection {src.connection.display_name!r} was removed while the run was planned; "
                           "nothing was sent.")
    return None


def _end_unsent(svc: Services, run: Run, src: _Source, counts: RunCounts, spool: Spool, reason: str, detail: str,
                error: str | None, held: bool = False) -> Run:
    """The run's report lists the spooled contacts, which will not be sent, before the run ends."""
    report = svc.reports.open(run.id)
    try:
        report_unsent(report, spool, reason, detail)
    finally:
        report.close()
    return abandon(svc, run.id, counts, src.refresh, reason, error, held)
