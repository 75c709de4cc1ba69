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
"""

from __future__ import annotations

import random
import threading
import time
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable

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

    def pacer(self, connection_id: str) -> Callable[[str], None]:
        """The hook an OmnisendClient calls before each request of this connection."""

        def pace(path: str) -> None:
            wait = self.reserve(f"{connection_id}", self.general)
            if path.rstrip("/").endswith(TAGS_PATH):
                # tags requests spend both budgets, and go when both allow: the scarce tags budget
                # records the time the request is sent, never an earlier free slot of its own (the
                # general one may record a tags request a little early: a few of its 400)
                wait = self.reserve(f"{connection_id}-tags", self.tags, not_before=self.clock() + wait)
            if wait > 0:
                self.sleep(wait)

        return pace

    def reserve(self, key: str, budget: Budget, not_before: float = 0.0) -> float:
        """Reserve the next slot; returns how long to wait for it, or raises when that is too long.

        Threads of one process take turns per key and remember the entity they last wrote, so a
        reservation is usually one conditional write; another instance's write shows as a 412, after
        which the entity is read again.
        """
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            return self._reserve(key, budget, not_before)

    def _reserve(self, key: str, budget: Budget, not_before: float) -> float:
        for attempt in range(200):
            known = self._known.pop(key, None)
            packed, etag = known if known is not None else self.budgets.read(key)
            now = self.clock()
            times = array("d")
            times.frombytes(packed)
            cut = bisect_right(times, now - budget.window)  # what left the window
            times = times[cut:]
            slot = max(now, not_before, times[-1] if times else now)  # slots only move forward
            if len(times) >= budget.allowed:
                slot = max(slot, times[len(times) - budget.allowed] + budget.window)
            wait = slot - now
            if wait > MAX_SLEEP_SECONDS:
                # nothing reserved: come back later, when the slot will be near
                raise OmnisendRateLimited(
                    f"Pacing requests to Omnisend: this connection's budget is spoken for the next {wait:.0f}s.",
                    retry_after=wait - MAX_SLEEP_SECONDS / 2,
                )
            times.append(slot)
            updated = times[-budget.allowed:].tobytes()
            try:
                written = self.budgets.write(key, updated, etag)
            except BudgetChanged:  # another worker took this slot
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            if written:
                self._known[key] = (updated, written)
            return max(0.0, wait)
        raise OmnisendRateLimited("The rate budget of this connection is too contended right now.", retry_after=1.0)
