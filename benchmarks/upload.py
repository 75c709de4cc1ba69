"""Benchmarks 2 to 4: whole runs through the app, against the sandbox, each in its own process.

A scenario writes a segment, starts the sandbox (``python -m devtools.omnisend_sandbox``) and the app
(``python -m exporter serve``, 8 upload workers) with the same rate limits, creates a connection and
an export over the app's HTTP API, runs the export and, optionally, runs it again after 1% churn.
While a run goes, a sampler reads the sandbox's request counters (admin endpoint, not counted by its
rate limit) and the CPU seconds of every process from /proc twice a second.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from bisect import bisect_right
from dataclasses import dataclass, field

from exporter import config
from exporter.devhost.api_client import ApiClient
from exporter.omnisend.pacing import TARGET_SHARE, WINDOW_MARGIN, Budget

from . import segment as seg
from .stack import (
    API_KEY,
    Proc,
    app_env,
    azurite_pid,
    group_cpu_seconds,
    loadavg,
    machine_cpu,
    proc_cpu_seconds,
    sandbox_stats,
    start_app,
    start_sandbox,
)


def pacer_cap(limit: int, window_seconds: float) -> float:
    """Most requests per window the app's pacer lets through: it reserves ``Budget.allowed`` requests
    (97% of the limit) per window made a little longer (``Budget.window``)."""
    b = Budget(limit, window_seconds)
    return b.allowed * window_seconds / b.window


TARGET_SHARE_NOTE = (
    f"The app's pacer (exporter/omnisend/pacing.py) aims at {TARGET_SHARE:.0%} of the limit over the window plus "
    f"a margin of {WINDOW_MARGIN}s (for the delay between a reserved slot and the request's arrival), so it can reach at most the "
    f"'pacer's cap' share: {100 * pacer_cap(400, 60) / 400:.1f}% with a 60 s window, "
    f"{100 * pacer_cap(400, 6) / 400:.1f}% with a 6 s window."
)

CONTACT_PATHS = ("POST /batches", "GET /batches/{batchID}", "GET /batches/{batchID}/items")
TAG_PATHS = ("POST /contacts/tags", "DELETE /contacts/tags")
SAMPLE_SECONDS = 0.5


@dataclass(frozen=True)
class Limits:
    name: str
    rate_limit: int  # requests per window, the sandbox's and the app's
    tags_rate_limit: int
    window_seconds: int


UNLIMITED = Limits("no rate limit", 1_000_000, 1_000_000, 1)
SCALED = Limits("Omnisend's limit, time / 10", 400, 60, 6)


@dataclass
class Sample:
    t: float
    requests: int
    admitted: int
    limited: int
    contacts: int  # admitted requests of the contact batches (send and check)
    tags: int  # admitted requests of the tags endpoints
    cpu: dict


@dataclass
class RunResult:
    label: str
    rows: int
    limits: Limits
    wall: float
    planning: float  # from the POST until the run left planning (as seen by polling)
    status: str
    counts: dict
    requests: dict  # sandbox counters during the run (deltas)
    cpu: dict  # CPU seconds during the whole run, per process, and of the machine
    cpu_upload: dict  # the same after planning
    samples: list[Sample] = field(default_factory=list)
    loadavg: str = ""

    @property
    def contacts_per_s(self) -> float:
        return self.counts["confirmed"] / self.wall if self.wall else 0.0

    @property
    def upload_contacts_per_s(self) -> float:
        return self.counts["confirmed"] / max(self.wall - self.planning, 1e-9)

    @property
    def balanced(self) -> bool:
        c = self.counts
        return c["read"] == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]

    def windows(self, paths: str) -> dict:
        """Requests per window over the busy part of ``paths`` ("all" during the contact phase, or "tags")."""
        return window_stats(self.samples, paths, self.limits.window_seconds)


def _cpu_snapshot(app: Proc, sandbox: Proc) -> dict:
    pid = azurite_pid()
    busy, total = machine_cpu()
    return {"app": app.cpu() or 0.0, "sandbox": sandbox.cpu() or 0.0,
            "azurite": (group_cpu_seconds(pid) if pid else None) or 0.0,
            "driver": proc_cpu_seconds(os.getpid()) or 0.0, "machine_busy": busy, "machine_total": total}


def _delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in a}


def _counter(stats: dict, paths: tuple[str, ...]) -> int:
    return sum(stats["byPath"].get(p, 0) for p in paths)


def _stats_delta(s0: dict, s1: dict) -> dict:
    by_path = {k: v - s0["byPath"].get(k, 0) for k, v in s1["byPath"].items() if v - s0["byPath"].get(k, 0)}
    by_status = {k: v - s0["byStatus"].get(k, 0) for k, v in s1["byStatus"].items() if v - s0["byStatus"].get(k, 0)}
    return {"requests": s1["requests"] - s0["requests"], "admitted": s1["admitted"] - s0["admitted"],
            "rateLimited": s1["rateLimited"] - s0["rateLimited"], "byPath": by_path, "byStatus": by_status,
            "batchesCreated": s1["batchesCreated"] - s0["batchesCreated"],
            "contactsCreated": s1["contactsCreated"] - s0["contactsCreated"],
            "contactsUpdated": s1["contactsUpdated"] - s0["contactsUpdated"]}


class Sampler(threading.Thread):
    def __init__(self, app: Proc, sandbox: Proc, t0: float):
        super().__init__(name="bench-sampler", daemon=True)
        self.app, self.sandbox, self.t0 = app, sandbox, t0
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()

    def sample(self) -> None:
        st = sandbox_stats(self.sandbox)
        self.samples.append(Sample(time.monotonic() - self.t0, st["requests"], st["admitted"], st["rateLimited"],
                                   _counter(st, CONTACT_PATHS), _counter(st, TAG_PATHS),
                                   _cpu_snapshot(self.app, self.sandbox)))

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_SECONDS):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a missed sample only coarsens the windows
                pass

    def stop(self) -> list[Sample]:
        self.stop_event.set()
        self.join(timeout=10)
        return self.samples


def window_stats(samples: list[Sample], which: str, window: float) -> dict:
    """Admitted requests per ``window`` seconds while ``which`` ("contacts" or "tags") was busy.

    The busy part runs from the last sample before the first such request to the first sample
    that saw the last one. Counts come from the sandbox (every admitted request counts against its
    limit); ``which`` only chooses the phase. Windows slide from sample to sample; a window's count
    is scaled from the samples nearest to ``window`` apart.
    """
    if len(samples) < 2:
        return {}
    phase = [getattr(s, which) for s in samples]
    final = phase[-1]
    start = next((i for i, v in enumerate(phase) if v > phase[0]), None)
    if start is None:
        return {}
    start = max(0, start - 1)
    end = next(i for i, v in enumerate(phase) if v == final)
    span = samples[end].t - samples[start].t
    counter = "tags" if which == "tags" else "admitted"
    values = [getattr(s, counter) for s in samples]
    times = [s.t for s in samples]
    per_window = []
    for i in range(start, end + 1):
        j = bisect_right(times, times[i] + window) - 1
        if j > end or times[j] - times[i] < window * 0.9:
            break
        per_window.append((values[j] - values[i]) * window / (times[j] - times[i]))
    total = values[end] - values[start]
    return {
        "busy_seconds": span,
        "requests": total,
        "windows": len(per_window),
        # a busy part shorter than a window: all its requests fell in one window
        "mean": sum(per_window) / len(per_window) if per_window else float(total),
        "min": min(per_window) if per_window else None,
        "max": max(per_window) if per_window else None,
        "average": total * window / max(span, 1e-9),
        "limited": samples[end].limited - samples[start].limited,
    }


def _poll_run(api: ApiClient, run_id: str, t0: float, timeout: float) -> tuple[dict, float]:
    planned_at = None
    deadline = time.monotonic() + timeout
    while True:
        run = api.request("GET", f"runs/{run_id}")
        now = time.monotonic()
        if planned_at is None and run["status"] not in ("queued", "planning"):
            planned_at = now - t0
        c = run["counts"]
        if run["status"] in ("succeeded", "partiallySucceeded", "failed", "cancelled") and c["batchesDone"] >= c["batches"]:
            return run, planned_at if planned_at is not None else now - t0
        if now > deadline:
            raise RuntimeError(f"run {run_id} did not end within {timeout:.0f}s: {run['status']} {c}")
        time.sleep(0.25)


def measure_run(api: ApiClient, export_id: str, app: Proc, sandbox: Proc, rows: int, limits: Limits, label: str,
                timeout: float) -> RunResult:
    s0 = sandbox_stats(sandbox)
    cpu0 = _cpu_snapshot(app, sandbox)
    t0 = time.monotonic()
    sampler = Sampler(app, sandbox, t0)
    sampler.sample()
    sampler.start()
    started = api.request("POST", f"exports/{export_id}/runs")
    run, planned_at = _poll_run(api, started["runId"], t0, timeout)
    wall = time.monotonic() - t0
    cpu1 = _cpu_snapshot(app, sandbox)
    samples = sampler.stop()
    sampler.sample()
    samples = sampler.samples
    s1 = sandbox_stats(sandbox)
    after_planning = next((s.cpu for s in samples if s.t >= planned_at), cpu1)
    return RunResult(label, rows, limits, wall, planned_at, run["status"], run["counts"], _stats_delta(s0, s1),
                     _delta(cpu0, cpu1), _delta(after_planning, cpu1), samples, loadavg())


def clear_app_queues() -> None:
    from .planning import services

    svc = services()
    for name in (config.QUEUE_RUNS, config.QUEUE_BATCHES):
        for q in (name, name + config.POISON_SUFFIX):
            svc.clients.queue(q).clear_messages()


def scenario(limits: Limits, rows: int, incremental: bool, log=print, timeout: float = 3600,
             workers: int = 8) -> list[RunResult]:
    tag = "unlimited" if limits is UNLIMITED else f"limit{limits.rate_limit}per{limits.window_seconds}s"
    segment = f"Up{rows}x{uuid.uuid4().hex[:6]}"
    written = seg.write(segment, rows, churned=False, minutes_ago=30)
    log(f"  wrote {rows:,} rows in {written.seconds:.1f}s")
    clear_app_queues()
    sandbox = start_sandbox(limits.rate_limit, limits.tags_rate_limit, limits.window_seconds, tag)
    app = None
    try:
        app = start_app(app_env(sandbox, limits.rate_limit, limits.tags_rate_limit, limits.window_seconds),
                        workers, tag)
        api = ApiClient(app.url, timeout=120)
        conn = api.request("POST", "connections", {"displayName": f"benchmark {tag} {segment}", "apiKey": API_KEY,
                                                   "allowContributors": False, "dataPrivacyConsent": True})
        export = api.request("POST", "exports", {
            "name": f"{segment} benchmark", "connectionId": conn["id"], "mapping": seg.MAPPING,
            "source": {"container": seg.CONTAINER, "folder": seg.FOLDER, "segment": segment}})
        results = [measure_run(api, export["id"], app, sandbox, rows, limits, "full run", timeout)]
        log(f"  full run: {_line(results[-1])}")
        if incremental:
            seg.write(segment, rows, churned=True, minutes_ago=20)
            if limits.window_seconds > 1:  # a later refresh: the full run's requests have left the window
                time.sleep(limits.window_seconds + 1)
            results.append(measure_run(api, export["id"], app, sandbox, rows, limits, "after 1% churn", timeout))
            log(f"  after 1% churn: {_line(results[-1])}")
        for path in (f"exports/{export['id']}", f"connections/{conn['id']}"):  # leave no enabled export behind
            try:
                api.request("DELETE", path, expect=(200, 204, 404))
            except (SystemExit, Exception) as e:  # noqa: BLE001 - cleanup must not lose the measurements
                log(f"  (cleanup: {e})")
        return results
    finally:
        if app is not None:
            app.stop()
        sandbox.stop()
        seg.delete(segment)


def _line(r: RunResult) -> str:
    c = r.counts
    return (f"{r.status} in {r.wall:.1f}s (planning {r.planning:.1f}s): confirmed {c['confirmed']:,} "
            f"skipped {c['skipped']:,} failed {c['failed']:,} tagged {c['tagged']:,} untagged {c['untagged']:,}; "
            f"{r.requests['requests']:,} requests, {r.requests['rateLimited']:,} answered 429; "
            f"{r.contacts_per_s:,.0f} contacts/s")
