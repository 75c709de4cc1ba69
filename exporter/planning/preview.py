"""What a preview reports beyond its counts: the tag changes, a sample of the contacts as they would be
sent, and how long the run would take. Planning itself is the real one (``planner``); a preview only
stops where a run would hand its batches to the uploaders."""

from __future__ import annotations

from itertools import islice
from typing import Iterator

from ..domain import Export, PreviewResult, RunCounts
from ..messages import SendBatch, decode_batch_message
from ..services import Services
from ..state.membership import MemberState
from .estimate import estimate
from .spool import Spool

SAMPLE_CONTACTS = 20


def _contacts(spool: Spool) -> Iterator[dict]:
    """The planned contacts in order, read back from the spool (the POST /batches items, as sent)."""
    for line in spool.messages():
        message = decode_batch_message(line)
        if isinstance(message, SendBatch):
            yield from message.contacts


def preview_result(svc: Services, run_id: str, export: Export, state: MemberState | None, counts: RunCounts,
                   untag_batches: int, spool: Spool, would_stop: str | None, planning_seconds: float) -> PreviewResult:
    tag = export.effective_tag or None
    additions = counts.queued - counts.already_tagged if tag else 0
    removed = state.header.tag if state is not None and counts.left else None
    svc.samples.write(run_id, list(islice(_contacts(spool), SAMPLE_CONTACTS)))
    return PreviewResult(tag=tag, tag_additions=additions, tag_removed=removed,
                         tag_removals=counts.left if removed else 0, would_stop=would_stop,
                         estimate=estimate(svc.settings, counts, additions, untag_batches, planning_seconds))
