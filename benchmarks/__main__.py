"""``python -m benchmarks``: the exporter measured on the local stack, written to docs/benchmarks.md.

    python -m benchmarks [--rows 1000000] [--upload-rows 100000] [--ceiling LIMIT/TAGS/WINDOW:ROWS ...]
                         [--smoke] [--only planning,upload,ceiling] [--out docs/benchmarks.md]

1. planning   read, map, validate, dedupe, diff and enqueue: 100k, 300k and --rows rows (each <= --rows),
              a first run and a re-run after 1% churn, each planned --repeat times (median reported),
              each also as a preview (?dryRun=true: nothing sent, checked; --no-previews skips them),
              each try in a process of its own;
2. upload     the whole run, sandbox and app without rate limit, 8 workers: contacts/s and the CPU of
              the app, the sandbox and Azurite (from /proc), then a re-run after 1% churn (4.);
3. ceiling    the sandbox and the app at Omnisend's limits scaled down in time (400 requests and 60
              tags requests per 6 s) and as they are (per 60 s), 8 workers: requests per window and
              429s, then a re-run (4.).
Starts Azurite (AZURITE_PORT_BASE is honoured) unless it runs, and stops what it started.
``--smoke`` is the CI version: small sizes, the same code, about half a minute.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from devtools import azurite

from . import planning, report, upload
from .stack import ROOT, loadavg, machine_facts

PLAN_SIZES = (100_000, 300_000, 1_000_000)


@dataclass
class Results:
    command: str
    started: str
    machine: dict
    planning: list = field(default_factory=list)
    upload: list = field(default_factory=list)
    ceiling: list = field(default_factory=list)
    loadavg_end: str = ""
    notes: list = field(default_factory=list)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="largest planning size (default 1,000,000)")
    p.add_argument("--sizes", help="planning sizes instead, comma-separated (e.g. 1000000)")
    p.add_argument("--upload-rows", type=int, default=100_000,
                   help="rows of the whole run without rate limit (default 100,000; see docs/benchmarks.md)")
    p.add_argument("--ceiling", action="append", metavar="LIMIT/TAGS/WINDOW:ROWS",
                   help="a run at this limit (repeatable); default 400/60/6:20000 (Omnisend's limits, time / 10) "
                        "and 400/60/60:100000 (Omnisend's limits as they are)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--only", default="planning,upload,ceiling", help="comma-separated subset")
    p.add_argument("--smoke", action="store_true", help="CI size: 20,000 planning rows, 2,000 rows per whole run")
    p.add_argument("--repeat", type=int, default=3, help="planning tries per size and run (the median is reported)")
    p.add_argument("--previews", action=argparse.BooleanOptionalAction, default=True,
                   help="also plan each run as a preview (?dryRun=true), in table 1 as 'preview' and 'preview "
                        "re-run' (default; --no-previews skips them)")
    p.add_argument("--profile", metavar="DIR", help="also write cProfile stats of each planning run to DIR")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="Markdown report ('-' for none)")
    p.add_argument("--json", help="also write the raw results as JSON here")
    args = p.parse_args(argv)
    args.run_timeout = 300 if args.smoke else 4 * 3600  # a run that takes longer is reported as stuck
    if args.smoke:
        args.rows = min(args.rows, 20_000)
        args.repeat = 1
        args.upload_rows = min(args.upload_rows, 2_000)
        args.ceiling = args.ceiling or ["400/60/3:2000"]  # a short window: the re-run waits one out
    args.ceiling = [_limits(c) for c in (args.ceiling or DEFAULT_CEILINGS)]
    return args


DEFAULT_CEILINGS = ("400/60/6:20000", "400/60/60:100000")  # 100k at the real limits: ~7 min, a re-run ~2% of it


def _limits(text: str) -> tuple[upload.Limits, int]:
    try:
        spec, _, rows = text.partition(":")
        limit, tags, window = (int(x) for x in spec.split("/"))
        return upload.Limits(f"{limit}/{tags} per {window}s", limit, tags, window), int(rows or 20_000)
    except ValueError:
        raise SystemExit(f"--ceiling {text!r}: expected LIMIT/TAGS/WINDOW:ROWS, e.g. 400/60/6:20000") from None


def plan_sizes(rows: int) -> list[int]:
    return [n for n in PLAN_SIZES if n < rows] + [rows]


def run(args: argparse.Namespace, command: str, log=print) -> Results:
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    res = Results(command=command, started=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  machine=machine_facts())
    started_azurite = azurite.start()
    log(f"Azurite on ports {azurite.PORTS}: {'started' if started_azurite else 'already running, reused'}")
    try:
        if "planning" in only:
            svc = planning.services()
            for n in ([int(x) for x in args.sizes.split(",")] if args.sizes else plan_sizes(args.rows)):
                log(f"planning {n:,} rows")
                res.planning += planning.bench_size(svc, n, profile_dir=args.profile, log=log, repeat=args.repeat,
                                                    previews=args.previews)
        if "upload" in only:
            log(f"whole run without rate limit, {args.upload_rows:,} rows, {args.workers} workers")
            res.upload += upload.scenario(upload.UNLIMITED, args.upload_rows, incremental=True, log=log,
                                          workers=args.workers, timeout=args.run_timeout)
        if "ceiling" in only:
            for limits, rows in args.ceiling:
                log(f"whole run at {limits.name}, {rows:,} rows, {args.workers} workers")
                res.ceiling.append(upload.scenario(limits, rows, incremental=True, log=log, workers=args.workers,
                                                   timeout=args.run_timeout))
    finally:
        if started_azurite:
            azurite.stop()
    res.loadavg_end = loadavg()
    return res


def tables(res: Results) -> dict[str, str]:
    out = {}
    if res.planning:
        out["planning"] = report.planning_table(res.planning)
    if res.upload:
        out["upload"] = report.upload_table(res.upload) + "\n\nCPU after planning, per contact batch:\n\n" + \
            report.per_batch_table(res.upload) + extrapolation(res)
    if res.ceiling:
        runs = [r for rs in res.ceiling for r in rs]
        out["ceiling"] = report.ceiling_table(runs) + "\n\n" + report.upload_table(runs)
    pairs = [(rs[0], rs[1]) for rs in (res.upload, *res.ceiling) if len(rs) >= 2]
    if pairs:
        out["incremental"] = report.incremental_table(pairs)
    return out


def extrapolation(res: Results) -> str:
    """A whole run of the largest planned size, from the measured parts (stated, not measured)."""
    full = res.upload[0]
    biggest = max((r for r in res.planning if r.kind == "first run"), key=lambda r: r.rows, default=None)
    if biggest is None or biggest.rows <= full.rows or not full.counts["batches"]:
        return ""
    per_batch = (full.wall - full.planning) / full.counts["batches"]
    batches = biggest.counts["batches"]
    total = biggest.wall + per_batch * batches
    return (f"\n\nExtrapolated to {biggest.rows:,} rows (method: the planning time measured for {biggest.rows:,} "
            f"rows in table 1, {biggest.wall:.0f} s, plus its {batches:,} batches at the {per_batch:.3f} s per batch "
            f"this run took after planning; the per-batch work does not depend on the segment's size): about "
            f"{total / 60:.0f} min, {biggest.counts['queued'] / total:,.0f} contacts/s, at this machine's load.")


NOTES_MARKER = "<!-- findings: kept when python -m benchmarks rewrites the tables above -->"

TITLES = {"planning": "1. Planning", "upload": "2. Upload overhead (no rate limit)",
          "ceiling": "3. Ceiling (Omnisend's limits, scaled down in time and as they are)", "incremental": "4. Incremental (1% churn)"}


def markdown(res: Results, t: dict[str, str], notes: str = "") -> str:
    m = res.machine
    lines = [
        "# Benchmarks",
        "",
        f"Measured {res.started} with `{res.command}`.",
        "",
        f"Machine: {m['nproc']} cores (nproc), MemTotal {m['mem_total']} (MemAvailable {m['mem_available']} at the "
        f"start), Python {m['python']}. Load average at the start {m['loadavg']}, at the end {res.loadavg_end} "
        "(other engineers' tests share this machine; each table gives the load average when its row was taken).",
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    for key in ("planning", "upload", "ceiling", "incremental"):
        if key in t:
            lines += [f"## {TITLES[key]}", "", t[key], ""]
    return "\n".join(lines)


def to_json(res: Results) -> str:
    def plain(o):
        if isinstance(o, (planning.PlanResult, upload.RunResult)):
            d = asdict(o)
            d.pop("samples", None)
            return d
        return o

    return json.dumps({**asdict(res), "planning": [plain(r) for r in res.planning],
                       "upload": [plain(r) for r in res.upload],
                       "ceiling": [[plain(r) for r in rs] for rs in res.ceiling]},
                      indent=1, default=str)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    command = "python -m benchmarks" + ("" if not argv else " " + shlex.join(argv))
    t0 = time.monotonic()
    res = run(args, command)
    t = tables(res)
    for key, text in t.items():
        print(f"\n{TITLES[key]}\n\n{text}")
    if args.out != "-":
        out = Path(args.out)
        kept = ""
        if out.exists() and NOTES_MARKER in out.read_text():  # hand-written findings survive a regeneration
            kept = "\n" + NOTES_MARKER + out.read_text().split(NOTES_MARKER, 1)[1]
        out.write_text(markdown(res, t) + kept)
        print(f"\nwritten to {args.out}")
    if args.json:
        Path(args.json).write_text(to_json(res))
    print(f"done in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
