"""A first run at Omnisend's limits on a virtual clock: what 1,000,000 and 5,000,000 members would take.

    python -m benchmarks.simulate [--members 98500,1000000,5000000] [--workers 8] [--json FILE]

A real million-member run at Omnisend's limits takes over an hour and cannot run in CI; these two
cores cannot drive it at scaled limits either. So the project's own scheduling code runs here against
a simulated Omnisend, with time made virtual:

- the pacer: ``RateLimiter.pacer`` (exporter/omnisend/pacing.py), its clock the virtual one, its
  budgets in memory (``MemoryRateBudgets``: the same read/write-under-ETag contract);
- the hand-off: dispatch messages ``dispatch_stagger`` apart (exporter/planning/enqueue.py), each
  fanning out DISPATCH_LINES send messages;
- the tag waves: ``tag_wave_tick`` and ``plan_remaining_tags`` (exporter/lifecycle/tag_planning.py)
  on a stand-in for the storage they read (the tally, the batch records, the two queues);
- queue delays in whole seconds as the app sends them (``state/queues._delay``), a rate-limited
  message back after ``retry_after`` plus up to 1 s (``upload/outcomes.classify``), a check after
  ``batch_check_delay_seconds * min(2**polls, 15)`` (``upload/send.schedule_check``).

What is modelled rather than run: the queue workers (``devhost/local_runner.QueuePump``: 8 workers
on the batches queue and 2 on the runs queue, the earliest visible message first, an idle worker
polling again after 0.05 s doubling up to host.json's maxPollingInterval of 2 s); each message's own
work (storage calls, CPU) as a fixed ``handling_seconds``, half before its Omnisend request and half
after; Omnisend as the sandbox behaves (devtools/omnisend_sandbox: a sliding window per brand, 400
and 60 a minute, a 429 that does not consume budget, a batch done ``batch_seconds`` after its POST).
Every contact is valid and confirmed: the simulation is about time, not outcomes.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import sys
import time
from bisect import bisect_left
from collections import deque
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

from exporter.config import load_settings
from exporter.domain import Batch, BatchStatus, RunStatus, Tally
from exporter.lifecycle.tag_planning import WAVE_BATCHES, WAVE_TICK_SECONDS, plan_remaining_tags, tag_wave_tick
from exporter.messages import CheckBatch, Dispatch, PlanTags, SendBatch, TagBatch, WaveTick
from exporter.omnisend import OmnisendRateLimited
from exporter.omnisend.limits import MAX_BATCH_ITEMS, MAX_EMAILS_PER_TAG_REQUEST, TAGS_PATH
from exporter.omnisend.pacing import Budget, RateLimiter
from exporter.planning.enqueue import dispatch_delay, dispatch_stagger
from exporter.planning.spool import DISPATCH_LINES
from exporter.state.queues import _delay

from .memory_budgets import MemoryRateBudgets

RUN, EXPORT, CONNECTION = "sim-run", "sim-export", "sim-connection"
IDLE_FIRST, IDLE_MAX = 0.05, 2.0  # QueuePump.work's idle back-off; host.json maxPollingInterval


@dataclass
class Params:
    """What the simulation assumes, each from a measurement or the app's settings (see docs/benchmarks.md)."""

    members: int
    rate_limit: int = 400
    tags_rate_limit: int = 60
    window_seconds: int = 60
    workers: int = 8  # batches-queue workers (python -m exporter serve --workers 8)
    run_workers: int = 2  # runs-queue workers (LocalHost's default)
    check_delay_seconds: int = 1  # BATCH_CHECK_DELAY_SECONDS in the benchmarks
    # a message's own work, storage calls and CPU: the 100,000-row run at the real limits spent 159.6 s
    # of app CPU, 150.9 s of Azurite and 30.1 s of the sandbox on 2,369 requests (table 3): 0.144 s each
    handling_seconds: float = 0.144
    batch_seconds: float = 0.05  # the sandbox's --batch-delay-seconds: a POST /batches is done this much later
    # planning before the first dispatch: the 100,000-row run's 4.0 s, and for larger segments the 1M
    # first run's rate of table 1 (70,945 rows/s) for the rest
    planning_seconds: float | None = None
    seed: int = 1

    def planning(self) -> float:
        if self.planning_seconds is not None:
            return self.planning_seconds
        return 4.0 + max(0, self.members - 100_000) / 70_945


@dataclass
class Result:
    members: int
    contact_batches: int
    tag_calls: int
    wall_seconds: float
    planning_seconds: float
    tags_floor_seconds: float  # ceil(members / 250) tag calls at the pacer's cap
    share_of_floor: float  # wall / floor
    contacts_floor_seconds: float  # 2 requests a batch plus the tag calls at the general pacer's cap
    requests: dict[str, int]
    answered_429: int
    # mean/min/max requests per window over a phase's busy span: "contacts" every request while contacts
    # are busy (table 3's contacts row), "contacts only" their own, "tags" the tag calls
    per_window: dict[str, dict[str, float]]
    busy_seconds: dict[str, float]
    deferred: dict[str, int]  # messages the pacer sent back to the queue, by kind
    confirmed: int = 0  # contacts counted confirmed (every one is, in the simulation)
    tagged: int = 0  # emails the tag calls carried
    cpu_seconds: float = 0.0
    over_limit_windows: int = 0  # windows of Omnisend's length holding more requests than it allows
    params: dict[str, Any] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SimQueue:
    """Messages visible from a time on; the earliest visible first (Azure's queues are roughly FIFO)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.heap: list[tuple[float, int, object]] = []
        self.order = itertools.count()

    def send(self, message: object, delay_seconds: float = 0) -> None:
        heapq.heappush(self.heap, (self.clock.now + (_delay(delay_seconds) or 0), next(self.order), message))

    def take(self) -> object | None:
        if self.heap and self.heap[0][0] <= self.clock.now:
            return heapq.heappop(self.heap)[2]
        return None


class Omnisend:
    """The sandbox's gateway and batches: sliding windows per brand, a 429 over either limit."""

    def __init__(self, p: Params) -> None:
        self.p = p
        self.general: deque[float] = deque()
        self.tags: deque[float] = deque()
        self.log: dict[str, list[float]] = {"contacts": [], "tags": []}
        self.answered_429 = 0
        self.done_at: dict[int, float] = {}

    def request(self, at: float, is_tags: bool) -> float | None:
        """A request arriving at ``at``: None when served, else the 429's retryAfter."""
        for window in (self.general, self.tags):
            while window and window[0] <= at - self.p.window_seconds:
                window.popleft()
        waits = []
        if len(self.general) >= self.p.rate_limit:
            waits.append(self.general[len(self.general) - self.p.rate_limit] + self.p.window_seconds - at)
        if is_tags and len(self.tags) >= self.p.tags_rate_limit:
            waits.append(self.tags[len(self.tags) - self.p.tags_rate_limit] + self.p.window_seconds - at)
        if waits:
            self.answered_429 += 1
            return max(1, math.ceil(max(waits)))
        self.general.append(at)
        if is_tags:
            self.tags.append(at)
        self.log["tags" if is_tags else "contacts"].append(at)
        return None


class Store:
    """What tag_planning reads and writes of storage: the tally, the batch records, the queues."""

    def __init__(self, p: Params, clock: Clock) -> None:
        self.tally = Tally(planned=-(-p.members // MAX_BATCH_ITEMS))
        self.records: dict[int, Batch] = {}
        self.batch_queue = SimQueue(clock)
        self.run_queue = SimQueue(clock)
        self.run = SimpleNamespace(id=RUN, export_id=EXPORT, connection_id=CONNECTION, status=RunStatus.UPLOADING)
        contacts = [{"identifiers": [{"type": "email", "id": f"c{i}@example.com"}]} for i in range(MAX_BATCH_ITEMS)]
        self.contacts = contacts
        self.last_size = p.members - (self.tally.planned - 1) * MAX_BATCH_ITEMS
        self.svc = SimpleNamespace(
            tallies=SimpleNamespace(get=lambda run_id: self.tally, update=self._update),
            runs=SimpleNamespace(get=lambda run_id: self.run),
            exports=SimpleNamespace(get=lambda export_id: SimpleNamespace(effective_tag="Sim")),
            batches=SimpleNamespace(range=self._range),
            batch_queue=self.batch_queue, run_queue=self.run_queue,
            settings=SimpleNamespace(omnisend_tags_rate_limit=p.tags_rate_limit),
        )

    def _update(self, run_id: str, change: Callable[[Tally], None]) -> Tally:
        change(self.tally)
        return self.tally

    def _range(self, run_id: str, first: int, last: int) -> list[Batch]:
        return [self.records[n] for n in range(first, last + 1) if n in self.records]

    def send_batch(self, number: int) -> SendBatch:
        size = self.last_size if number == self.tally.planned else MAX_BATCH_ITEMS
        return SendBatch(RUN, EXPORT, CONNECTION, number=number, contacts=self.contacts[:size])


class Simulation:
    def __init__(self, p: Params) -> None:
        self.p = p
        self.clock = Clock()
        self.rng = random.Random(p.seed)
        self.store = Store(p, self.clock)
        self.omnisend = Omnisend(p)
        self.general = Budget(p.rate_limit, p.window_seconds)
        self.tags_budget = Budget(p.tags_rate_limit, p.window_seconds)
        self._waits: list[float] = []
        limiter = RateLimiter(MemoryRateBudgets(), self.general, self.tags_budget, clock=self.clock,
                              sleep=self._waits.append)
        self.pace = limiter.pacer(CONNECTION)
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.order = itertools.count()
        self.deferred = {"contacts": 0, "tags": 0}
        self.ended_at: float | None = None

    # --- the event loop ---------------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.events, (when, next(self.order), action))

    def run(self) -> Result:
        cpu = time.process_time()
        p, settings = self.p, _settings(self.p)
        planning = p.planning()
        stagger = dispatch_stagger(settings)
        batches = self.store.tally.planned
        for i, first in enumerate(range(0, batches, DISPATCH_LINES)):
            last = min(first + DISPATCH_LINES, batches)
            self.at(planning, lambda i=i, first=first, last=last: self.store.batch_queue.send(
                Dispatch(RUN, EXPORT, CONNECTION, first=first + 1, lines=last - first),
                delay_seconds=dispatch_delay(i, stagger)))
        if batches > WAVE_BATCHES:  # start_tag_waves
            self.at(planning, lambda: self.store.run_queue.send(WaveTick(RUN, 1), delay_seconds=WAVE_TICK_SECONDS))
        for w in range(p.workers):
            self.at(planning + 0.001 * w, lambda: self._worker(self.store.batch_queue, self._handle_batch, IDLE_FIRST))
        for w in range(p.run_workers):
            self.at(planning, lambda: self._worker(self.store.run_queue, self._handle_run, IDLE_FIRST))
        while self.events and self.ended_at is None:
            self.clock.now, _, action = heapq.heappop(self.events)
            action()
        if self.ended_at is None:
            raise RuntimeError("the simulated run never ended")
        return self._result(planning, time.process_time() - cpu)

    def _worker(self, queue: SimQueue, handle: Callable[[object], float], idle: float) -> None:
        """QueuePump.work: take a message and handle it, or look again after a growing idle wait."""
        message = queue.take()
        if message is None:
            self.at(self.clock.now + idle, lambda: self._worker(queue, handle, min(idle * 2, IDLE_MAX)))
            return
        busy = handle(message)
        self.at(self.clock.now + busy, lambda: self._worker(queue, handle, IDLE_FIRST))

    # --- handlers: each returns how long its worker is busy -----------------------------------------

    def _request(self, path: str) -> float | None:
        """Pace one request as the Omnisend client does; the seconds the worker waits for its slot, or
        None when the pacer sent the message back to the queue (``OmnisendRateLimited``)."""
        self._waits.clear()
        try:
            self.pace(path)
        except OmnisendRateLimited as e:
            self._retry_after = e.retry_after + self.rng.uniform(0, 1)  # outcomes.classify
            return None
        return sum(self._waits)

    def _handle_batch(self, message: object) -> float:
        half = self.p.handling_seconds / 2
        store, queue = self.store, self.store.batch_queue
        if isinstance(message, Dispatch):
            for n in range(message.first, message.last + 1):
                queue.send(store.send_batch(n))
            return self.p.handling_seconds
        is_tags = isinstance(message, TagBatch)
        kind = "tags" if is_tags else "contacts"
        self.clock.now += half  # reading the batch, the run, the connection
        try:
            wait = self._request(TAGS_PATH if is_tags else "batches")
            if wait is None:
                self.deferred[kind] += 1
                queue.send(message, delay_seconds=self._retry_after)
                return half
            sent_at = self.clock.now + wait
            self.at(sent_at, lambda: self._arrive(message, is_tags))
            return half + wait + half
        finally:
            self.clock.now -= half

    def _arrive(self, message: object, is_tags: bool) -> None:
        """The request reaches Omnisend (in the order of arrival, as windows count them)."""
        sent_at, half = self.clock.now, self.p.handling_seconds / 2
        answer = self.omnisend.request(sent_at, is_tags)
        if answer is not None:  # a 429: back after its retryAfter (plus up to a second)
            self.store.batch_queue.send(message, delay_seconds=answer + self.rng.uniform(0, 1))
            return
        self.at(sent_at + half, lambda: self._after(message, sent_at))

    def _after(self, message: object, sent_at: float) -> None:
        """What a handler records once Omnisend answered (its commit), at that moment."""
        store, p = self.store, self.p
        if isinstance(message, SendBatch):
            store.records[message.number] = Batch(RUN, message.number, message.size, status=BatchStatus.ACCEPTED,
                                                  payload=message)
            self.omnisend.done_at[message.number] = sent_at + p.batch_seconds
            store.batch_queue.send(CheckBatch(RUN, EXPORT, CONNECTION, number=message.number, polls=0),
                                   delay_seconds=p.check_delay_seconds)
        elif isinstance(message, CheckBatch):
            polls = message.polls + 1
            if self.omnisend.done_at[message.number] > sent_at:  # not done yet: look again later
                store.batch_queue.send(CheckBatch(RUN, EXPORT, CONNECTION, number=message.number, polls=polls),
                                       delay_seconds=p.check_delay_seconds * min(2**polls, 15))
                return
            batch = store.records[message.number]
            batch.status, batch.confirmed = BatchStatus.FINISHED, batch.size
            store.tally.batches_done += 1
            store.tally.confirmed += batch.size
            if store.tally.complete:  # settle -> request_tags
                store.run_queue.send(PlanTags(RUN))
        elif isinstance(message, TagBatch):
            store.tally.tags_done += 1
            store.tally.tagged += message.size
            self._maybe_end()

    def _handle_run(self, message: object) -> float:
        if isinstance(message, WaveTick):
            tag_wave_tick(self.store.svc, RUN, message.seq)  # type: ignore[arg-type]
        elif isinstance(message, PlanTags):
            plan_remaining_tags(self.store.svc, RUN)  # type: ignore[arg-type]
            self._maybe_end()
        return self.p.handling_seconds

    def _maybe_end(self) -> None:
        if self.store.tally.complete and self.store.tally.tags_complete:
            self.ended_at = self.clock.now

    # --- what it measured ---------------------------------------------------------------------------

    def _result(self, planning: float, cpu: float) -> Result:
        p, log = self.p, self.omnisend.log
        assert self.ended_at is not None
        tag_calls = -(-p.members // MAX_EMAILS_PER_TAG_REQUEST)
        tags_floor = tag_calls * self.tags_budget.window / self.tags_budget.allowed
        contacts_floor = (2 * self.store.tally.planned + tag_calls) * self.general.window / self.general.allowed
        every = sorted(log["contacts"] + log["tags"])
        over = sum(1 for t in every if _count(every, t, p.window_seconds) > p.rate_limit) + \
            sum(1 for t in log["tags"] if _count(log["tags"], t, p.window_seconds) > p.tags_rate_limit)
        return Result(
            members=p.members, contact_batches=self.store.tally.planned, tag_calls=len(log["tags"]),
            wall_seconds=self.ended_at, planning_seconds=planning, tags_floor_seconds=tags_floor,
            share_of_floor=self.ended_at / tags_floor, contacts_floor_seconds=contacts_floor,
            requests={k: len(v) for k, v in log.items()}, answered_429=self.omnisend.answered_429,
            per_window={"contacts": _per_window(every, p.window_seconds, log["contacts"]),
                        "contacts only": _per_window(log["contacts"], p.window_seconds),
                        "tags": _per_window(log["tags"], p.window_seconds)},
            busy_seconds={k: (v[-1] - v[0]) if v else 0.0 for k, v in log.items()},
            deferred=dict(self.deferred), confirmed=self.store.tally.confirmed, tagged=self.store.tally.tagged,
            cpu_seconds=cpu, over_limit_windows=over, params=asdict(p))


def _settings(p: Params) -> Any:
    return load_settings({"OMNISEND_RATE_LIMIT": str(p.rate_limit), "OMNISEND_TAGS_RATE_LIMIT": str(p.tags_rate_limit),
                          "OMNISEND_RATE_WINDOW_SECONDS": str(p.window_seconds),
                          "BATCH_CHECK_DELAY_SECONDS": str(p.check_delay_seconds)})


def _count(times: list[float], end: float, length: float) -> int:
    """Requests in the window (end - length, end] of sorted ``times``."""
    return bisect_left(times, end + 1e-9) - bisect_left(times, end - length + 1e-9)


def _per_window(times: list[float], window: float, span: list[float] | None = None) -> dict[str, float]:
    """Requests of ``times`` per window of ``window`` s sliding a second at a time over the busy span
    of ``span`` (default: of ``times``), as the benchmark's table 3 counts them: its contacts row
    counts every admitted request, tags included, while contacts are busy (a span shorter than a
    window is one window)."""
    span = span if span is not None else times
    if not span:
        return {"mean": 0.0, "min": 0.0, "max": 0.0, "windows": 0}
    first, last = span[0], span[-1]
    if last - first <= window:
        return {"mean": float(len(times)), "min": float(len(times)), "max": float(len(times)), "windows": 0}
    counts = [_count(times, first + window + k, window) for k in range(int(last - first - window) + 1)]
    return {"mean": sum(counts) / len(counts), "min": float(min(counts)), "max": float(max(counts)),
            "windows": len(counts)}


def simulate(members: int, **params: Any) -> Result:
    return Simulation(Params(members=members, **params)).run()


def describe(r: Result) -> str:
    c, t = r.per_window["contacts"], r.per_window["tags"]
    return (f"{r.members:>9,} members: {r.wall_seconds:8.1f} s ({r.wall_seconds / 60:5.1f} min), tags floor "
            f"{r.tags_floor_seconds:.1f} s, {r.share_of_floor:.3f}x the floor; while contacts are busy "
            f"{c['mean']:.1f} requests per window ({c['min']:.0f}-{c['max']:.0f}; contacts' own "
            f"{r.per_window['contacts only']['mean']:.1f}), tags {t['mean']:.1f} ({t['min']:.0f}-{t['max']:.0f}) over "
            f"{r.busy_seconds['tags']:.0f} s busy; {r.requests['contacts']:,} contact requests, "
            f"{r.requests['tags']:,} tag calls, 429s {r.answered_429}, deferred by the pacer {r.deferred}, "
            f"over a limit {r.over_limit_windows}; {r.cpu_seconds:.1f} s CPU")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.simulate", description=__doc__.split("\n")[0])
    ap.add_argument("--members", default="98500,1000000,5000000",
                    help="comma-separated; 98,500 is what the measured 100,000-row run sent")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--handling-seconds", type=float, default=Params.handling_seconds)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    results = []
    for n in (int(x.replace(",", "").replace("_", "")) for x in args.members.split(",")):
        r = simulate(n, workers=args.workers, handling_seconds=args.handling_seconds)
        print(describe(r), flush=True)
        results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
