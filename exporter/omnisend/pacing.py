"""One request budget per Omnisend connection, shared by every worker on every instance.

Omnisend allows 400 requests a minute per brand (sliding window; the tags endpoints 60), counting
every request, polling included. Reacting to 429s wastes requests and stalls workers, so requests are
paced before they are sent, with the same rule Omnisend applies: a sliding-window log. Each connection
has one entity in Table Storage holding the times reserved in the last window; a request reserves the
earliest time at which the window holds fewer than the limit, under the entity's ETag. A small export
therefore goes at full speed, and a large one at exactly the budget. A worker then waits for its slot;
when that wait would be long it does not sleep but raises ``OmnisendRateLimited``, so its message goes
back on the queue with that delay.

Reservations aim a little under the limit (``TARGET_SHARE``) and the window is taken a little longer
(``WINDOW_MARGIN``), so network jitter and clock differences between instances do not tip a window
over Omnisend's count.

The two budgets are scheduled together. The tags endpoint (60 a minute, 250 emails a call) sets a
first run's length, and its calls count in the general 400 too; when contacts filled the general
window first, tag calls waited behind them and the tags endpoint idled (measured: 79% of its cap at
100,000 rows). So while tags are being sent (a tag reservation in the last window), other requests
leave the tags' unused share of the general window free (``tags_headroom``), and a tag request takes
the earliest general slot that fits, even before slots other requests reserved ahead of it.
"""

from __future__ import annotations

import random
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Callable, TypeAlias

from ..logs import get_logger
from ..state.rate_budgets import BudgetChanged, RateBudgets
from .errors import OmnisendRateLimited
from .limits import TAGS_PATH

log = get_logger(__name__)

TARGET_SHARE = 0.97  # of the limit
# Seconds added to the window, whatever its length: it covers the delay between a reserved slot and the
# request's arrival at Omnisend (sleep overshoot, a busy interpreter, the network), which does not
# shrink with the window. Scaling it with the window let a loaded 2-core CI machine tip 6 s windows.
WINDOW_MARGIN = 0.5
MAX_SLEEP_SECONDS = 5.0  # longer waits go back to the queue instead of holding a worker
TAGS_KEY_SUFFIX = "-tags"  # a connection's tags budget: its own entity beside the general one
Held: TypeAlias = "int | Callable[[float], int]"  # slots to leave free in the window ending at a slot
TAGS_SEEN_SECONDS = 1.0  # how old this process's view of the tags budget may be when other requests consult it


@dataclass(frozen=True)
class Budget:
    per_window: int  # requests allowed per window
    window_seconds: float

    @property
    def allowed(self) -> int:
        return max(1, int(self.per_window * TARGET_SHARE))

    @property
    def window(self) -> float:
        return self.window_seconds + WINDOW_MARGIN

    @property
    def per_minute(self) -> float:
        """The requests a minute this budget lets through at most (what an estimate of time left uses)."""
        return self.allowed * 60 / self.window


def held_for_tags(general: Budget, tags: Budget) -> int:
    """General slots per window that other requests leave to tag calls while tags are being sent: the
    tags' whole allowance, but never more than half the general budget (tests scale both alike)."""
    return min(tags.allowed, general.allowed // 2)


def other_requests_per_window(general: Budget, tags: Budget) -> int:
    """What contact writes and checks may use of the general window while tags are being sent."""
    return general.allowed - held_for_tags(general, tags)


class RateLimiter:
    def __init__(self, budgets: RateBudgets, general: Budget, tags: Budget, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.budgets = budgets
        self.general = general
        self.tags = tags
        self.clock = clock
        self.sleep = sleep
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._known: dict[str, tuple[bytes, str | None]] = {}  # key -> (times, ETag) this process last wrote
        self._tags_seen: dict[str, tuple[bytes, float]] = {}  # tags key -> (times, when read or written)

    def pacer(self, connection_id: str) -> Callable[[str], None]:
        """The hook an OmnisendClient calls before each request of this connection."""

        tags_key = f"{connection_id}{TAGS_KEY_SUFFIX}"

        def pace(path: str) -> None:
            if path.rstrip("/").endswith(TAGS_PATH):
                wait = self._pace_tags(connection_id, tags_key)
            else:
                # the earliest slot that fits, between others if need be: after every slot reserved so
                # far would put it behind tag calls, which are now recorded when they go, seconds ahead
                wait = self.reserve(connection_id, self.general, held=self.tags_headroom(tags_key), ahead=True)
            if wait > 0:
                self.sleep(wait)

        return pace

    def _pace_tags(self, connection_id: str, tags_key: str) -> float:
        """Reserve a tags request in both budgets at the moment it is sent; returns the wait.

        The scarce tags budget first: a tag call it defers (back to the queue) then spends nothing of
        the general 400 (reserved first, each deferred tag call spent a general slot no request used:
        measured in the simulation, about one a tag call at 100,000 members). Then the earliest general
        slot from that moment, ahead of slots contacts reserved later; when that is later still, the
        tags slot moves to it, so both budgets record the time the request goes (a slot recorded
        early lets the real window hold more than the log says). Whatever a deferral leaves reserved
        is given back.
        """
        now = self.clock()
        tags_wait, tags_slot = self._reserve_locked(tags_key, self.tags)
        try:
            wait, slot = self._reserve_locked(connection_id, self.general, not_before=now + tags_wait, ahead=True)
        except OmnisendRateLimited:
            self.release(tags_key, tags_slot)
            raise
        if slot > tags_slot:
            self.release(tags_key, tags_slot)
            try:
                tags_wait, tags_slot = self._reserve_locked(tags_key, self.tags, not_before=slot)
            except OmnisendRateLimited:
                self.release(connection_id, slot)
                raise
        return max(wait, tags_wait)

    def tags_headroom(self, tags_key: str) -> Callable[[float], int]:
        """General slots other requests leave free for tag calls in the window that ends at a slot:
        while tags are being sent (one reserved in the last window), what the tags may still use of
        their allowance in that window. Counted in the window ending at the slot, not at now: a contact
        write reserved seconds ahead must leave room for the tag calls that come meanwhile (counted at
        now, contacts filled the window ahead and one tag call a window went back to the queue).
        Read from this process's last view of the tags budget, at most TAGS_SEEN_SECONDS old (another
        instance's tag calls show up that much later: it moves shares, never the limit)."""
        now = self.clock()
        seen = self._tags_seen.get(tags_key)
        if seen is None or now - seen[1] > TAGS_SEEN_SECONDS:
            seen = (self.budgets.read(tags_key)[0], now)
            self._tags_seen[tags_key] = seen
        times = array("d")
        times.frombytes(seen[0])
        if not times or times[-1] <= now - self.tags.window:
            return lambda slot: 0  # no tag call lately: the whole general budget is the other requests'
        held, window = held_for_tags(self.general, self.tags), self.tags.window

        def headroom(slot: float) -> int:
            return max(0, held - (bisect_right(times, slot) - bisect_right(times, slot - window)))

        return headroom

    def reserve(self, key: str, budget: Budget, not_before: float = 0.0, held: Held = 0, ahead: bool = False) -> float:
        """Reserve the next slot; returns how long to wait for it, or raises when that is too long.

        ``held``: slots to leave free (for tag calls) in the window ending at the slot, or a function
        of the slot giving them. ``ahead``: take the earliest slot that fits every window, even before
        slots reserved later in time by others (tag calls).

        Threads of one process take turns per key and remember the entity they last wrote, so a
        reservation is usually one conditional write; another instance's write shows as a 412, after
        which the entity is read again.
        """
        return self._reserve_locked(key, budget, not_before, held, ahead)[0]

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def _reserve_locked(self, key: str, budget: Budget, not_before: float = 0.0, held: Held = 0,
                        ahead: bool = False) -> tuple[float, float]:
        """(wait, the slot reserved)."""
        with self._lock(key):
            return self._reserve(key, budget, not_before, held, ahead)

    def release(self, key: str, slot: float) -> None:
        """Give back a slot this process reserved and will not use. Best effort: if the budget keeps
        changing under it, the slot stays spent (the budget errs on the side of fewer requests)."""
        with self._lock(key):
            for attempt in range(20):
                known = self._known.pop(key, None)
                packed, etag = known if known is not None else self.budgets.read(key)
                times = array("d")
                times.frombytes(packed)
                at = bisect_left(times, slot)
                if at >= len(times) or times[at] != slot:
                    return  # out of the log already
                del times[at]
                updated = times.tobytes()
                try:
                    written = self.budgets.write(key, updated, etag)
                except BudgetChanged:
                    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                    continue
                if written:
                    self._known[key] = (updated, written)
                return

    def _reserve(self, key: str, budget: Budget, not_before: float, held: Held, ahead: bool) -> tuple[float, float]:
        held_at = held if callable(held) else _always(held)
        for attempt in range(200):
            known = self._known.pop(key, None)
            packed, etag = known if known is not None else self.budgets.read(key)
            now = self.clock()
            times = array("d")
            times.frombytes(packed)
            cut = bisect_right(times, now - budget.window)  # what left the window
            times = times[cut:]
            start = max(now, not_before)
            slot = _slot_between(times, start, budget, held_at) if ahead else None
            if slot is None:
                slot = _slot_after(times, max(start, times[-1] if times else now), budget, held_at)
            wait = slot - now
            if wait > MAX_SLEEP_SECONDS:
                # nothing reserved: come back later, when the slot will be near
                raise OmnisendRateLimited(
                    f"Pacing requests to Omnisend: this connection's budget is spoken for the next {wait:.0f}s.",
                    retry_after=wait - MAX_SLEEP_SECONDS / 2,
                )
            times.insert(bisect_right(times, slot), slot)
            updated = times.tobytes()  # every slot not yet out of the window: slots taken ahead need them all
            try:
                written = self.budgets.write(key, updated, etag)
            except BudgetChanged:  # another worker took this slot
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            if written:
                self._known[key] = (updated, written)
            if key.endswith(TAGS_KEY_SUFFIX):  # what other requests consult (tags_headroom)
                self._tags_seen[key] = (updated, now)
            return max(0.0, wait), slot
        raise OmnisendRateLimited("The rate budget of this connection is too contended right now.", retry_after=1.0)


def _always(n: int) -> Callable[[float], int]:
    return lambda slot: n


def _slot_after(times: array, slot: float, budget: Budget, held_at: Callable[[float], int]) -> float:
    """The earliest slot from ``slot`` on (after every slot reserved so far) whose window holds fewer
    than the budget less the slots held there. A later slot may hold more (fewer tag calls in its
    window yet), so look again until it stands; it only moves later."""
    for _ in range(8):
        allowed = max(1, budget.allowed - held_at(slot))
        if len(times) < allowed:
            return slot
        later = times[len(times) - allowed] + budget.window
        if later <= slot:
            return slot
        slot = later
    return slot


def _fits(times: array, slot: float, budget: Budget, held: int = 0) -> bool:
    """Whether one more request at ``slot`` keeps every window that holds it within the budget: the
    window ending at ``slot`` (less the ``held`` slots left free there) and those ending at each later
    slot less than a window away."""
    first = bisect_right(times, slot - budget.window)
    at = bisect_right(times, slot)
    if at - first >= max(1, budget.allowed - held):
        return False
    for j in range(at, len(times)):
        if times[j] >= slot + budget.window:
            break
        if j + 1 - bisect_right(times, times[j] - budget.window) >= budget.allowed:
            return False
    return True


def _slot_between(times: array, start: float, budget: Budget,
                  held_at: Callable[[float], int] | None = None) -> float | None:
    """The earliest slot from ``start`` (within MAX_SLEEP_SECONDS) that fits, slotted between others
    if need be: ``start`` itself or the moment a reserved slot leaves the window. None: none does."""
    held = held_at or _always(0)
    if _fits(times, start, budget, held(start)):
        return start
    for t in times:
        candidate = t + budget.window
        if candidate > start + MAX_SLEEP_SECONDS:
            break
        if candidate > start and _fits(times, candidate, budget, held(candidate)):
            return candidate
    return None
