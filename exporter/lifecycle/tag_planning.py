"""Membership tags: which tag batches a run sends, and when.

Tags go on with ``POST /contacts/tags`` (250 emails a call; its own 60 calls a minute) only after
the contacts exist, from what Omnisend confirmed. A large run is tagged in waves while it uploads:
every WAVE_BATCHES contact batches, once all are counted, get their tag batches (a ``WaveTick`` on
the runs queue looks every WAVE_TICK_SECONDS). The tags endpoint's own limit makes the tags of a
first run as long as its contacts (1,000,000 members: about 67 minutes of tag calls), so doing them
one after the other would double the run. Whatever no wave planned is planned once every contact
batch is counted (``plan_remaining_tags``). Planning here only records what it enqueued in the
tally; ``settle`` moves the run on.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from ..domain import Batch, BatchKind, BatchStatus, KeySet, Run, TagPlanning, Tally, member_key
from ..logs import get_logger
from ..messages import PlanTags, SendBatch, TagBatch, WaveTick
from ..omnisend.limits import MAX_EMAILS_PER_TAG_REQUEST
from ..services import Services

log = get_logger(__name__)

TAG_BATCH = MAX_EMAILS_PER_TAG_REQUEST  # emails per POST /contacts/tags
# Small, frequent waves keep the tags endpoint busy from the first minute: a wave is ready a few seconds
# after its contacts are confirmed, not after 25 batches and up to 10 s more (measured with 25 and 10 s:
# the tags endpoint at 79% of its cap over 100,000 rows). A wave's emails still fill whole tag batches
# (1,000 emails: 4 calls of 250), and a tick costs a few storage calls.
WAVE_BATCHES = 10  # contact batches per tag wave: up to 1,000 emails, 4 tag batches
WAVE_TICK_SECONDS = 1  # how often the wave planner looks for complete waves (3 s delayed a first tag call up to 3 s)
WAVE_MIN_BACKLOG = 10  # tag batches a wave may wait behind; at least the tags limit per window


def request_tags(svc: Services, run_id: str) -> None:
    """Ask (once) for the run's tag batches to be planned, on the runs queue."""
    won: list[bool] = []

    def mark(t: Tally) -> None:
        won.clear()  # called again when another writer got in first: only the last call counts
        if t.tag_planning is TagPlanning.NOT_PLANNED:
            t.tag_planning = TagPlanning.PLANNING
            won.append(True)

    svc.tallies.update(run_id, mark)
    if won:
        svc.run_queue.send(PlanTags(run_id))


def batch_stored(batch: Batch, skip: Iterable[int] = ()) -> Iterator[tuple[str, int]]:
    """(email, fingerprint) of the contact batch's contacts Omnisend stored, but those at ``skip``."""
    if batch.status is not BatchStatus.FINISHED or not isinstance(batch.payload, SendBatch):
        return iter(())
    return batch.payload.stored({f.index for f in batch.failures}, set(skip))


def run_stored(svc: Services, run_id: str) -> Iterator[tuple[str, int]]:
    """(email, fingerprint) of every contact of the run that Omnisend stored, batch by batch."""
    for batch in svc.batches.list(run_id):
        yield from batch_stored(batch)


def _to_tag(batch: Batch) -> Iterator[str]:
    """Emails of the batch's stored contacts that need the membership tag: not those the planner found
    holding it from an earlier run (tagging them again would spend the tags endpoint's slow budget)."""
    holding = batch.payload.tagged if isinstance(batch.payload, SendBatch) else ()
    return (email for email, _ in batch_stored(batch, holding))


def _enqueue_tags(svc: Services, run: Run, tag: str, emails: Iterable[str], number: int) -> int:
    """Enqueue tag batches of TAG_BATCH emails numbered from ``number + 1``; returns the last number."""
    chunk: list[str] = []

    def send() -> None:
        nonlocal number, chunk
        number += 1
        svc.batch_queue.send(TagBatch(run.id, run.export_id, run.connection_id, kind=BatchKind.TAGS, number=number,
                                      tag=tag, emails=chunk))
        chunk = []

    for email in emails:
        chunk.append(email)
        if len(chunk) == TAG_BATCH:
            send()
    if chunk:
        send()
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
        batches = list(svc.batches.range(run.id, first, last))
        if backlog is not None and (len(batches) < last - first + 1 or not all(b.status.is_final for b in batches)):
            break
        number = _enqueue_tags(svc, run, tag, (email for b in batches for email in _to_tag(b)), number)
        wave += 1
    return wave, number


def _run_and_tag(svc: Services, run_id: str) -> tuple[Run | None, str | None]:
    run = svc.runs.get(run_id)
    export = svc.exports.get(run.export_id) if run is not None else None
    return run, export.effective_tag if export is not None else None


def tag_wave_tick(svc: Services, run_id: str, seq: int) -> None:
    """One tick of a run's wave planner: plan the tags of the waves complete so far, then come back.

    A tick is accepted only as the next one of its run (``seq == wave_tick + 1``), so a duplicated
    tick message ends at its second delivery instead of doubling the ticks. Ticks stop when every
    wave is planned, or the run's last tag planning (or a retry) took over, or the run ended.
    """
    tally = svc.tallies.get(run_id)
    if (tally.wave_tick != seq - 1 or tally.tag_planning is not TagPlanning.NOT_PLANNED or tally.tag_retry
            or tally.planned < 0):
        return
    run, tag = _run_and_tag(svc, run_id)
    if run is None or run.status.is_final or tag is None:
        return
    wave, number = _plan_waves(svc, run, tag, tally, max(WAVE_MIN_BACKLOG, svc.settings.omnisend_tags_rate_limit))
    start = tally.waves

    def advance(t: Tally) -> None:
        # also when the last tag planning was asked for meanwhile (PLANNING): it then starts after these waves
        if t.waves == start and not t.tags_are_planned and not t.tag_retry:
            t.waves, t.tags_numbered = wave, number

    if wave > start:
        tally = svc.tallies.update(run_id, advance)
        log.info("tag waves %d-%d planned (tag batches up to %d)", start + 1, wave, number,
                 extra={"run_id": run_id, "export_id": run.export_id})
    if tally.waves < _wave_count(tally):
        svc.run_queue.send(WaveTick(run_id, seq + 1), delay_seconds=WAVE_TICK_SECONDS)

    def ticked(t: Tally) -> None:
        if t.wave_tick == seq - 1:
            t.wave_tick = seq

    svc.tallies.update(run_id, ticked)


def start_tag_waves(svc: Services, run: Run, batches: int) -> None:
    """After planning: a run of more than one wave gets its tags planned while it uploads."""
    if batches > WAVE_BATCHES:
        svc.run_queue.send(WaveTick(run.id, 1), delay_seconds=WAVE_TICK_SECONDS)


def plan_remaining_tags(svc: Services, run_id: str) -> Tally | None:
    """Enqueue the tag batches still to plan once every contact batch is counted (safe to repeat).
    Returns the tally that records them, or None when there was nothing to do."""
    run = svc.runs.get(run_id)
    tally = svc.tallies.get(run_id)
    if run is None or tally.tags_are_planned:
        return None
    _, tag = _run_and_tag(svc, run_id)
    wave, number = tally.waves, tally.tags_numbered
    if tag is not None and not run.status.is_final:
        if tally.tag_retry:
            number = _plan_retry_tags(svc, run, tag, number)
        else:  # the waves not planned during the upload, all complete now
            wave, number = _plan_waves(svc, run, tag, tally, backlog=None)

    def planned(t: Tally) -> None:
        t.plan_tags(number)
        t.tags_numbered = number
        t.waves, t.tag_retry = wave, False

    log.info("%d tag batches planned", number, extra={"run_id": run_id, "export_id": run.export_id})
    return svc.tallies.update(run_id, planned)


def _plan_retry_tags(svc: Services, run: Run, tag: str, number: int) -> int:
    """A run whose failed batches were sent again was tagged before: tag only the contacts confirmed
    and not tagged yet, numbering on from the tag batches it has."""
    tagged = KeySet()
    for batch in svc.batches.list(run.id, kind=BatchKind.TAGS):
        number = max(number, batch.number)
        if batch.status is BatchStatus.FINISHED and isinstance(batch.payload, TagBatch):
            for email in batch.payload.emails:
                tagged.add(member_key(email))
    untagged = (email for b in svc.batches.list(run.id) for email in _to_tag(b) if member_key(email) not in tagged)
    return _enqueue_tags(svc, run, tag, untagged, number)
