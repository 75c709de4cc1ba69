"""Add (``BatchKind.TAGS``) or remove (``UNTAGS``) the export's membership tag for up to 250 emails."""

from __future__ import annotations

from ..domain import Batch, BatchKind, BatchStatus, Tally
from ..messages import TagBatch
from ..services import Services
from .accounting import commit, give_up_tags
from .outcomes import HANDLED, after_failed_send


def send_tags(svc: Services, message: TagBatch) -> None:
    kind = message.kind
    found = svc.batches.get(message.run_id, message.number, kind)
    if found is not None and found[0].status.is_final:
        return
    status = svc.runs.status(message.run_id, message.export_id)
    if status is None:
        return
    if status.is_final:
        give_up_tags(svc, message, f"not sent: the run was {status.value}")
        return
    connection = svc.connections.get(message.connection_id)
    if connection is None:
        give_up_tags(svc, message, "not sent: the connection was removed")
        return
    try:
        client = svc.omnisend(connection)
        if kind is BatchKind.TAGS:
            client.add_tags([message.tag], message.emails)
        else:
            client.remove_tags([message.tag], message.emails)
    except HANDLED as e:
        after_failed_send(svc, message, e, lambda reason, detail: give_up_tags(svc, message, detail))
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
