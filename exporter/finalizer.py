"""The end of a run: tag the members Omnisend confirmed, then record them as the export's new state.

Tags go on with ``POST /contacts/tags`` (250 emails a call; its own 60 calls a minute) only after
the contacts exist, so they are planned once every contact batch is counted, from what Omnisend
confirmed. The membership state then records exactly the members whose contact and tag Omnisend
accepted, and forgets the leavers whose tag it accepted to remove. Anything that failed is simply
not recorded, so the next run sends it again.
"""

from __future__ import annotations

import json

from .domain import BatchStatus, Run, Tally
from .logs import get_logger
from .membership import KeySet, StateHeader, Upserts, member_key, merge
from .services import Services

log = get_logger(__name__)

TAG_BATCH = 250  # emails per POST /contacts/tags


def request_tags(svc: Services, run_id: str) -> None:
    """Ask (once) for the run's tag batches to be planned, on the runs queue."""
    won = []

    def mark(t: Tally) -> None:
        won.clear()  # called again when another writer got in first: only the last call counts
        if t.tags_planned == -1:
            t.tags_planned = -2
            won.append(True)

    svc.storage.update_tally(run_id, mark)
    if won:
        svc.storage.send_run_message({"type": "tags", "runId": run_id})


def _confirmed(svc: Services, run_id: str):
    """(email, fingerprint) of every contact of the run that Omnisend stored, batch by batch."""
    for batch in svc.storage.list_batches(run_id):
        if batch.status is not BatchStatus.FINISHED or not batch.payload:
            continue
        failed = {f.index for f in batch.failures}
        fps = batch.payload.get("fps") or []
        for i, contact in enumerate(batch.payload["contacts"]):
            if i not in failed:
                yield contact["identifiers"][0]["id"], int(fps[i]) if i < len(fps) else 0


def plan_tags(svc: Services, run_id: str) -> None:
    """Enqueue the tag batches of a run whose contacts are all counted (safe to repeat: stable numbers)."""
    from .runs import settle

    run = svc.storage.get_run(run_id)
    tally, _ = svc.storage.get_tally(run_id)
    if run is None or tally.tags_planned >= 0:
        return
    export = svc.storage.get_export(run.export_id)
    tag = export.effective_tag if export else None
    # a run whose failed batches were retried was tagged before: tag only the contacts confirmed since,
    # numbering on from the tag batches it has
    number, tagged = 0, KeySet()
    for batch in svc.storage.list_batches(run_id, kind="tags"):
        number = max(number, batch.number)
        if batch.status is BatchStatus.FINISHED:
            for email in (batch.payload or {}).get("emails", []):
                tagged.add(member_key(email))
    if tag is not None and not run.status.is_final:
        head = {"type": "tags", "runId": run.id, "exportId": run.export_id, "connectionId": run.connection_id, "tag": tag}
        emails: list[str] = []
        for email, _ in _confirmed(svc, run_id):
            if number and member_key(email) in tagged:
                continue
            emails.append(email)
            if len(emails) == TAG_BATCH:
                number += 1
                svc.storage.send_batch_message(json.dumps({**head, "batch": number, "emails": emails}))
                emails = []
        if emails:
            number += 1
            svc.storage.send_batch_message(json.dumps({**head, "batch": number, "emails": emails}))

    def planned(t: Tally) -> None:
        t.tags_planned = number

    log.info("%d tag batches planned", number, extra={"run_id": run_id, "export_id": run.export_id})
    settle(svc, run_id, svc.storage.update_tally(run_id, planned))


def write_state(svc: Services, run: Run) -> int:
    """Record the export's members as Omnisend now holds them. Idempotent: derived from the batches."""
    export = svc.storage.get_export(run.export_id)
    if export is None:
        return 0
    tag_failed = set()
    for batch in svc.storage.list_batches(run.id, kind="tags"):
        if batch.status is not BatchStatus.FINISHED:
            tag_failed.update(member_key(e) for e in (batch.payload or {}).get("emails", []))
    upserts = Upserts()
    for email, fp in _confirmed(svc, run.id):
        key = member_key(email)
        if key not in tag_failed:  # a member without its tag is not done: the next run sends it again
            upserts.add(key, fp, email)
    deletes = sorted(member_key(e) for b in svc.storage.list_batches(run.id, kind="untags")
                     if b.status is BatchStatus.FINISHED for e in (b.payload or {}).get("emails", []))
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
