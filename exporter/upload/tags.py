"""Add (``BatchKind.TAGS``) or remove (``UNTAGS``) the export's membership tag for up to 250 emails.

Leavers lose the tag only once the run has shown it reaches Omnisend: an untag batch of a run that
sends contacts waits for the first confirmed contact, and is given up when every contact batch was
counted with none confirmed (that run fails; a failed run never empties a segment in Omnisend, and
its leavers stay in the membership state, so the next run removes their tag).
"""

from __future__ import annotations

from ..domain import Batch, BatchKind, BatchStatus, Tally
from ..messages import TagBatch
from ..services import Services
from .accounting import commit, give_up_tags
from .outcomes import HANDLED, after_failed_send
from .send import reason_after_end


def send_tags(svc: Services, message: TagBatch) -> None:
    kind = message.kind
    found = svc.batches.get(message.run_id, message.number, kind)
    if found is not None and found[0].status.is_final:
        return
    status = svc.runs.status(message.run_id, message.export_id)
    if status is None:
        return
    if status.is_final:
        give_up_tags(svc, message, f"{reason_after_end(svc, message.run_id, status)} ({status.value})")
        return
    connection = svc.connections.get(message.connection_id)
    if connection is None:
        give_up_tags(svc, message, "not sent: the connection was removed")
        return
    if kind is BatchKind.UNTAGS and not _may_untag(svc, message):
        return
    client = None
    try:
        client = svc.omnisend(connection)
        if kind is BatchKind.TAGS:
            client.add_tags([message.tag], message.emails)
        else:
            client.remove_tags([message.tag], message.emails)
    except HANDLED as e:
        after_failed_send(svc, message, e, lambda reason, detail: give_up_tags(svc, message, detail),
                          used_key=client.key_id if client is not None else None)
        return
    size = message.size
    batch = Batch(run_id=message.run_id, number=message.number, size=size, kind=kind, status=BatchStatus.FINISHED,
                  confirmed=size, payload=message)

    def done(t: Tally) -> None:
        if kind is BatchKind.TAGS:
            t.tags_done += 1
            t.tagged += size
        else:
            t.untags_done += 1
            t.untagged += size

    commit(svc, batch, found[1] if found else None, done)


def _may_untag(svc: Services, message: TagBatch) -> bool:
    """Whether the leavers of ``message`` may lose the tag now; if not, the batch was put back or given up."""
    tally = svc.tallies.get(message.run_id)
    if tally.planned <= 0 or tally.confirmed > 0:
        return True  # nothing to send but the removals, or the run reaches Omnisend
    if not tally.complete:
        # the first contacts are confirmed at their check, batch_check_delay_seconds after their send
        svc.batch_queue.send(message, delay_seconds=max(1, svc.settings.batch_check_delay_seconds))
        return False
    give_up_tags(svc, message, "not removed: no contact of the run reached Omnisend, so no member lost the tag "
                               "(the next run removes it)")
    return False
