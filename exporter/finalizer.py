"""The end of a run: tag the members Omnisend confirmed, then record them as the export's new state.

Tags go on with ``POST /contacts/tags`` (250 emails a call; its own 60 calls a minute) only after
the contacts exist, from what Omnisend confirmed. A large run is tagged in waves while it uploads:
every WAVE_BATCHES contact batches, once all are counted, get their tag batches (a tick on the runs
queue looks every WAVE_TICK_SECONDS). The tags endpoint's own limit makes the tags of a first run as
long as its contacts (1,000,000 members: about 67 minutes of tag calls), so doing them one after
the other would double the run. Whatever no wave planned is planned once every contact batch is
counted. The membership state then records exactly the members whose contact and tag Omnisend
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
WAVE_BATCHES = 25  # contact batches per tag wave: up to 2,500 emails, 10 tag batches
WAVE_TICK_SECONDS = 10  # how often the wave planner looks for complete waves
WAVE_MIN_BACKLOG = 10  # tag batches a wave may wait behind; at least the tags limit per window


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
        yield from _batch_confirmed(batch)


def _batch_confirmed(batch, skip=()):
    """(email, fingerprint) of the batch's contacts Omnisend stored, but those at the positions ``skip``."""
    if batch.status is not BatchStatus.FINISHED or not batch.payload:
        return
    failed = {f.index for f in batch.failures}
    fps = batch.payload.get("fps") or []
    for i, contact in enumerate(batch.payload["contacts"]):
        if i not in failed and i not in skip:
            yield contact["identifiers"][0]["id"], int(fps[i]) if i < len(fps) else 0


def _batch_to_tag(batch):
    """Emails of the batch's stored contacts that need the membership tag: not those the planner found
    holding it from an earlier run (tagging them again would spend the tags endpoint's slow budget)."""
    holding = set((batch.payload or {}).get("tagged") or ())
    return (email for email, _ in _batch_confirmed(batch, holding))


def _tag_messages(svc: Services, run: Run, tag: str, emails, number: int) -> int:
    """Enqueue tag batches of TAG_BATCH emails numbered from ``number + 1``; returns the last number."""
    head = {"type": "tags", "runId": run.id, "exportId": run.export_id, "connectionId": run.connection_id, "tag": tag}
    chunk: list[str] = []
    for email in emails:
        chunk.append(email)
        if len(chunk) == TAG_BATCH:
            number += 1
            svc.storage.send_batch_message(json.dumps({**head, "batch": number, "emails": chunk}))
            chunk = []
    if chunk:
        number += 1
        svc.storage.send_batch_message(json.dumps({**head, "batch": number, "emails": chunk}))
    return number


def _wave_count(tally: Tally) -> int:
    return -(-tally.planned // WAVE_BATCHES)


def _plan_waves(svc: Services, run: Run, tag: str, tally: Tally, backlog: int | None) -> tuple[int, int]:
    """Tag batches for the next waves whose contact batches are all counted, in wave order.

    A wave's tag batches are numbered on from the waves before it, so the same cursor gives the same
    numbers: planning a wave twice (a redelivered tick, a tick racing the last planning) enqueues
    batches the uploader knows by number, so nothing is counted twice (two copies handled at the
    same moment can both call Omnisend: the same tag added again, a tags request spent). Stops at
    the first wave not complete, or while ``backlog`` tag batches wait to be sent (the tags budget
    is slow, and messages waiting for it would only cycle through the queue). Returns the new cursor.
    """
    wave, number = tally.waves, tally.tags_numbered
    waves = _wave_count(tally)
    while wave < waves and (backlog is None or number - tally.tags_done < backlog):
        first, last = wave * WAVE_BATCHES + 1, min((wave + 1) * WAVE_BATCHES, tally.planned)
        batches = list(svc.storage.list_batch_range(run.id, first, last))
        if backlog is not None and (len(batches) < last - first + 1 or not all(b.status.is_final for b in batches)):
            break
        number = _tag_messages(svc, run, tag, (email for b in batches for email in _batch_to_tag(b)), number)
        wave += 1
    return wave, number


def tag_wave_tick(svc: Services, run_id: str, seq: int) -> None:
    """One tick of a run's wave planner: plan the tags of the waves complete so far, then come back.

    A tick is accepted only as the next one of its run (``seq == wave_tick + 1``), so a duplicated
    tick message ends at its second delivery instead of doubling the ticks. Ticks stop when every
    wave is planned, or the run's last tag planning (or a retry) took over, or the run ended.
    """
    tally, _ = svc.storage.get_tally(run_id)
    if tally.wave_tick != seq - 1 or tally.tags_planned != -1 or tally.tag_retry or tally.planned < 0:
        return
    run = svc.storage.get_run(run_id)
    export = svc.storage.get_export(run.export_id) if run is not None else None
    tag = export.effective_tag if export is not None else None
    if run is None or run.status.is_final or tag is None:
        return
    wave, number = _plan_waves(svc, run, tag, tally, max(WAVE_MIN_BACKLOG, svc.settings.omnisend_tags_rate_limit))
    start = tally.waves

    def advance(t: Tally) -> None:
        # also when the last tag planning was asked for meanwhile (-2): it then starts after these waves
        if t.waves == start and t.tags_planned < 0 and not t.tag_retry:
            t.waves, t.tags_numbered = wave, number

    if wave > start:
        tally = svc.storage.update_tally(run_id, advance)
        log.info("tag waves %d-%d planned (tag batches up to %d)", start + 1, wave, number,
                 extra={"run_id": run_id, "export_id": run.export_id})
    if tally.waves < _wave_count(tally):
        svc.storage.send_run_message({"type": "tagwave", "runId": run_id, "seq": seq + 1}, delay_seconds=WAVE_TICK_SECONDS)

    def ticked(t: Tally) -> None:
        if t.wave_tick == seq - 1:
            t.wave_tick = seq

    svc.storage.update_tally(run_id, ticked)


def start_tag_waves(svc: Services, run: Run, batches: int) -> None:
    """After planning: a run of more than one wave gets its tags planned while it uploads."""
    if batches > WAVE_BATCHES:
        svc.storage.send_run_message({"type": "tagwave", "runId": run.id, "seq": 1}, delay_seconds=WAVE_TICK_SECONDS)


def plan_tags(svc: Services, run_id: str) -> None:
    """Enqueue the tag batches still to plan once every contact batch is counted (safe to repeat)."""
    from .runs import settle

    run = svc.storage.get_run(run_id)
    tally, _ = svc.storage.get_tally(run_id)
    if run is None or tally.tags_planned >= 0:
        return
    export = svc.storage.get_export(run.export_id)
    tag = export.effective_tag if export else None
    wave, number = tally.waves, tally.tags_numbered
    if tag is not None and not run.status.is_final:
        if tally.tag_retry:
            number = _plan_retry_tags(svc, run, tag, number)
        else:  # the waves not planned during the upload, all complete now
            wave, number = _plan_waves(svc, run, tag, tally, backlog=None)

    def planned(t: Tally) -> None:
        t.tags_planned = t.tags_numbered = number
        t.waves, t.tag_retry = wave, False

    log.info("%d tag batches planned", number, extra={"run_id": run_id, "export_id": run.export_id})
    settle(svc, run_id, svc.storage.update_tally(run_id, planned))


def _plan_retry_tags(svc: Services, run: Run, tag: str, number: int) -> int:
    """A run whose failed batches were sent again was tagged before: tag only the contacts confirmed
    and not tagged yet, numbering on from the tag batches it has."""
    tagged = KeySet()
    for batch in svc.storage.list_batches(run.id, kind="tags"):
        number = max(number, batch.number)
        if batch.status is BatchStatus.FINISHED:
            for email in (batch.payload or {}).get("emails", []):
                tagged.add(member_key(email))
    untagged = (email for b in svc.storage.list_batches(run.id) for email in _batch_to_tag(b)
                if member_key(email) not in tagged)
    return _tag_messages(svc, run, tag, untagged, number)


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
