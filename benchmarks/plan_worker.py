"""Plan one queued run in this process and print what it cost, as one JSON line.

    python -m benchmarks.plan_worker RUN_ID [--profile FILE]

Run by ``benchmarks.planning`` in a fresh process per measurement, so that the peak RSS (VmHWM) is
the planner's alone (plus the segment reader process it may start, reported on its own; its CPU is
added to the planner's). Time spent enqueueing the spooled batches and loading the membership state is
measured separately by wrapping those two functions (they are called once per run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_id")
    p.add_argument("--profile", help="write cProfile stats of plan_run to this file")
    args = p.parse_args(argv)

    from benchmarks.stack import vm_hwm_mb, vm_rss_mb
    from exporter.config import load_settings
    from exporter.planning import planner, prepared_rows
    from exporter.services import build_services
    from exporter.state import membership

    svc = build_services(load_settings(os.environ))
    spent = {"enqueue": 0.0, "state_load": 0.0, "enqueue_cpu": 0.0}

    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)  # all threads of the process
        return ru.ru_utime + ru.ru_stime

    def children_cpu() -> float:  # the segment reader process, once it has ended
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    def timed(name, fn):
        def wrapper(*a, **kw):
            t, c = time.perf_counter(), cpu()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.perf_counter() - t
                if name == "enqueue":
                    spent["enqueue_cpu"] += cpu() - c
        return wrapper

    planner.enqueue = timed("enqueue", planner.enqueue)
    readers = []  # the segment reader process is started (or not) by prepared_rows._from_process
    from_process = prepared_rows._from_process

    def counted_reader(*a, **kw):
        readers.append(True)
        return from_process(*a, **kw)

    prepared_rows._from_process = counted_reader
    membership.StateStore.load = timed("state_load", membership.StateStore.load)

    rss_before = vm_rss_mb()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    children0 = children_cpu()
    t0 = time.perf_counter()
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        run = prof.runcall(planner.plan_run, svc, args.run_id)
        prof.dump_stats(args.profile)
    else:
        run = planner.plan_run(svc, args.run_id)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "wall": wall,
        "enqueue": spent["enqueue"],
        "state_load": spent["state_load"],
        "enqueue_cpu": spent["enqueue_cpu"],
        "cpu": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime) + children_cpu() - children0,
        "rss_before_mb": rss_before,
        "peak_rss_mb": vm_hwm_mb(),
        "reader_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if readers else 0.0,
        "maxrss_mb": ru1.ru_maxrss / 1024,
        "status": run.status.value if run else None,
        "error": run.error if run else None,
        "counts": run.counts.to_api() if run else None,
        "preview": run.preview.to_api() if run and run.preview else None,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
