"""``python -m exporter runs ...``: follow, cancel and retry runs, and download what did not arrive.

    runs list EXPORT_ID [--output table|json]   the export's runs, newest first
    runs show RUN_ID [--output table|json]      one run: status, counts, error
    runs cancel RUN_ID                          no further batches are sent
    runs retry RUN_ID                           send an ended run's failed batches again
    runs rejects RUN_ID [--out FILE]            the rejected and failed rows as CSV (stdout by default)
    runs changes RUN_ID [--out FILE]            who joins, changes (which fields) or leaves, as CSV
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .api_client import ApiClient, print_counts


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows])


def _list(api: ApiClient, args) -> None:
    runs = api.request("GET", f"exports/{args.id}/runs")["runs"]
    if args.output == "json":
        print(json.dumps(runs, indent=2))
        return
    if not runs:
        print("No runs yet: saving an export never runs it (python -m exporter run EXPORT_ID).")
        return
    rows = [[r["runId"], r["status"], "preview" if r.get("kind") == "preview" else r["trigger"],
             r.get("startedAt") or r["createdAt"], r["counts"]["read"], r["counts"]["confirmed"], r["counts"]["rejected"],
             r["counts"]["failed"]] for r in runs]
    print(_table(rows, ["RUN", "STATUS", "TRIGGER", "STARTED", "READ", "EXPORTED", "REJECTED", "FAILED"]))


def _show(api: ApiClient, args) -> None:
    run = api.request("GET", f"runs/{args.id}")
    if args.output == "json":
        print(json.dumps(run, indent=2))
    else:
        print_counts(run)


def _cancel(api: ApiClient, args) -> None:
    run = api.request("POST", f"runs/{args.id}/cancel")
    print(f"Run {args.id} {run['status']}: no further batches are sent.")


def _retry(api: ApiClient, args) -> None:
    answer = api.request("POST", f"runs/{args.id}/retry")
    print(f"Run {args.id}: {answer['batchesResent']} failed batches sent again; follow it with runs show {args.id}.")


def _download(api: ApiClient, args, what: str, name: str) -> None:
    data = api.request("GET", f"runs/{args.id}/{what}")
    if args.out:
        with open(args.out, "wb") as f:
            f.write(data)
        print(f"{name} of run {args.id} written to {args.out}.", file=sys.stderr)
    else:
        sys.stdout.write(data.decode("utf-8"))


def _rejects(api: ApiClient, args) -> None:
    _download(api, args, "rejects", "Rejected and failed rows")


def _changes(api: ApiClient, args) -> None:
    _download(api, args, "changes", "Membership changes")


ACTIONS = {
    "list": (_list, "EXPORT_ID", "the export's runs, newest first"),
    "show": (_show, "RUN_ID", "one run: status, counts and error"),
    "cancel": (_cancel, "RUN_ID", "stop a run: no further batches are sent"),
    "retry": (_retry, "RUN_ID", "send an ended run's failed batches again"),
    "rejects": (_rejects, "RUN_ID", "the rejected and failed rows as CSV"),
    "changes": (_changes, "RUN_ID", "the members who join, change (with the fields) or leave, as CSV"),
}


def cmd_runs(args) -> int:
    ACTIONS[args.action][0](ApiClient.from_args(args), args)
    return 0


def add_runs_command(sub, url_option: Callable[..., None]) -> None:
    command = sub.add_parser("runs", help="follow, cancel and retry runs; download their rejected rows")
    url_option(command)
    actions = command.add_subparsers(dest="action", required=True)
    for name, (_, target, help_text) in ACTIONS.items():
        parser = actions.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("id", metavar=target)
        url_option(parser, argparse.SUPPRESS)
        if name in ("list", "show"):
            parser.add_argument("--output", choices=("table", "json"), default="table")
        if name in ("rejects", "changes"):
            parser.add_argument("--out", metavar="FILE", help="write the CSV here instead of to standard output")
    command.set_defaults(fn=cmd_runs)
