"""Handing a plan to the uploaders: every batch message onto the batches queue, directly or through
dispatch messages, paced by the connection's request budget."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from ..config import Settings
from ..omnisend.pacing import Budget, other_requests_per_window
from ..services import Services
from .spool import DISPATCH_LINES, Spool

ENQUEUE_THREADS = 8
DIRECT_ENQUEUE_LINES = 50  # up to this many messages go straight onto the queue, without a spool blob
REQUESTS_PER_BATCH = 2  # a send and (usually) one check
# dispatch a little behind what the contacts' share can send, so the batches queue does not grow, yet
# ahead of what the tags endpoint consumes (58 calls of 250 a window: 145 contact batches, 50 in 20.9 s)
DISPATCH_PACE = 1.1
# dispatch messages visible at once: the tags endpoint's first window would otherwise wait for the
# second one (a first tag call needs its wave's contacts confirmed; 50 batches are 20 tag calls)
HEAD_START_DISPATCHES = 2


class EnqueueError(RuntimeError):
    """Enqueueing stopped part way; planning the run again is safe (batch numbers are stable)."""


def enqueue(svc: Services, spool: Spool) -> None:
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
            _send_all(svc, ((d.encode(), dispatch_delay(i, stagger)) for i, d in enumerate(spool.commit())))
    except Exception as e:
        raise EnqueueError(f"enqueueing batches failed: {type(e).__name__}") from e


def dispatch_delay(index: int, stagger: float) -> float:
    """When the dispatch message at ``index`` becomes visible: the first HEAD_START_DISPATCHES at once,
    then one every ``stagger`` seconds."""
    return max(0, index - HEAD_START_DISPATCHES + 1) * stagger


def dispatch_stagger(settings: Settings) -> float:
    """Seconds between dispatch messages becoming visible: a little more than the contacts' share of
    the request budget needs to send DISPATCH_LINES batches (what the pacer leaves them while tags are
    sent: 330 of Omnisend's 400 a minute, 18.3 s; at DISPATCH_PACE 20.2 s), and less than the tags
    endpoint takes to tag them (20.9 s), so contacts stay ahead of the tags.

    Faster, and batches pile up: workers pick them in no order, a message the pacer defers comes
    back later and may be deferred again, and a tag wave waits for its slowest batch (measured: at
    10 batches a second, 100,000 rows at Omnisend's limits took 619 s; at 0.9 of the contacts' share,
    the simulation's batches queue grew to ~960 messages over a million members, single batches took
    up to 24 minutes and the tags endpoint idled whole windows: 1.24x the tags floor at 1M, 1.46x at
    5M, against 1.002x and 1.003x at 1.1). Slower than the tags' pace, and the tags wait for contacts.
    """
    general = Budget(settings.omnisend_rate_limit, settings.omnisend_rate_window_seconds)
    tags = Budget(settings.omnisend_tags_rate_limit, settings.omnisend_rate_window_seconds)
    per_batch = REQUESTS_PER_BATCH * general.window / other_requests_per_window(general, tags)
    return DISPATCH_PACE * DISPATCH_LINES * per_batch


def _send_all(svc: Services, messages: Iterable[tuple[str, float]]) -> None:
    """Send (text, delay) messages with a few threads, holding only a small window of them in memory."""
    in_flight: deque = deque()
    with ThreadPoolExecutor(ENQUEUE_THREADS, thread_name_prefix="enqueue") as pool:
        for text, delay in messages:
            in_flight.append(pool.submit(svc.batch_queue.send_text, text, delay))
            if len(in_flight) >= 2 * ENQUEUE_THREADS:
                in_flight.popleft().result()
        while in_flight:
            in_flight.popleft().result()
