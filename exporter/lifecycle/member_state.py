"""The end of a run: the export's membership state records exactly the members whose contact and
tag Omnisend accepted, and forgets the leavers whose tag it accepted to remove. Anything that failed
is simply not recorded, so the next run sends it again."""

from __future__ import annotations

from ..domain import BatchKind, BatchStatus, Run, member_key
from ..logs import get_logger
from ..messages import TagBatch
from ..services import Services
from ..state.membership import StateHeader, Upserts, merge
from .tag_planning import run_stored

log = get_logger(__name__)


def _emails(svc: Services, run_id: str, kind: BatchKind, finished: bool):
    """Emails of the run's tag (or untag) batches that finished (or did not)."""
    for batch in svc.batches.list(run_id, kind=kind):
        if (batch.status is BatchStatus.FINISHED) == finished and isinstance(batch.payload, TagBatch):
            yield from batch.payload.emails


def write_state(svc: Services, run: Run) -> int:
    """Record the export's members as Omnisend now holds them. Idempotent: derived from the batches."""
    export = svc.exports.get(run.export_id)
    if export is None:
        return 0
    tag_failed = {member_key(e) for e in _emails(svc, run.id, BatchKind.TAGS, finished=False)}
    upserts = Upserts()
    for email, fp in run_stored(svc, run.id):
        key = member_key(email)
        if key not in tag_failed:  # a member without its tag is not done: the next run sends it again
            upserts.add(key, fp, email)
    deletes = sorted(member_key(e) for e in _emails(svc, run.id, BatchKind.UNTAGS, finished=True))
    previous = svc.states.load(export.id)
    try:
        if previous is not None and previous.header.connection_id != export.connection_id:
            previous.close()
            previous = None
        header = StateHeader(export.id, export.connection_id, export.sync_key(), export.effective_tag, run.id, 0)
        count = svc.states.write(header, merge(previous.records() if previous else [], upserts.sorted(), deletes))
    finally:
        if previous is not None:
            previous.close()
    log.info("membership state: %d members", count, extra={"run_id": run.id, "export_id": export.id})
    return count
