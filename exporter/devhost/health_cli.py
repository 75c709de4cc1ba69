"""``python -m exporter health [--wait SECONDS]``: is the app working (GET /api/health).

``--wait`` keeps asking until the app answers, for a script that has just started ``serve`` in the
background (the README's "Running it locally" block): the next command may then use it at once.
"""

from __future__ import annotations

import time
from typing import Callable

import requests

from .api_client import ApiClient


def _first_answer(api: ApiClient, wait: float) -> None:
    """Return once the app answers at all (any HTTP status); SystemExit after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            api.session.get(f"{api.base_url}/health", timeout=5)
            return
        except requests.RequestException:
            if time.monotonic() >= deadline:
                raise SystemExit(f"The exporter API at {api.base_url} did not answer within {wait:.0f}s. Is "
                                 "`python -m exporter serve` running there (its log says why not)?") from None
            time.sleep(0.5)


def cmd_health(args) -> int:
    api = ApiClient.from_args(args)
    if args.wait:
        _first_answer(api, args.wait)
    health = api.request("GET", "health")
    print(f"{api.base_url}: {health['status']}")
    for problem in health["problems"]:
        print(f"  - {problem}")
    return 0 if health["status"] == "ok" else 1


def add_health_command(sub, url_option: Callable[..., None]) -> None:
    what = "is the app working: its schedule, stuck runs, poison messages and connection keys (exit 1 when not)"
    command = sub.add_parser("health", help=what, description=what)
    url_option(command)
    command.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                         help="wait up to SECONDS for the app to answer first (after starting serve)")
    command.set_defaults(fn=cmd_health)
