"""The exporter's HTTP API as the CLI and the demo call it: one session, the caller's identity (a
bearer token for a deployed app, else the development mode's local Admin), problems turned into
messages that name the CLI's flags, and the run report both print."""

from __future__ import annotations

import sys
import time

import requests

from ..api.access import DEV_ADMIN_PRINCIPAL

DEFAULT_URL = "http://127.0.0.1:7071/api"
FINAL = ("succeeded", "partiallySucceeded", "failed", "cancelled")


class ApiClient:
    """A thin client of the app's API for the CLI and the demo."""

    def __init__(self, base_url: str = DEFAULT_URL, principal: str = DEV_ADMIN_PRINCIPAL, timeout: float = 30,
                 token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        if token:  # a deployed app: App Service Authentication accepts an Entra access token as a bearer
            self.session.headers["Authorization"] = f"Bearer {token}"
        else:  # the development mode (serve) takes the identity header as sent
            self.session.headers["X-MS-CLIENT-PRINCIPAL"] = principal
        self.timeout = timeout

    @classmethod
    def from_args(cls, args) -> "ApiClient":
        return cls(args.url, token=getattr(args, "token", None))

    def request(self, method: str, path: str, body=None, expect=(200, 201, 202, 204), params=None):
        try:
            res = self.session.request(method, f"{self.base_url}/{path}", json=body, params=params,
                                       timeout=self.timeout)
        except requests.RequestException as e:
            raise SystemExit(f"Cannot reach the exporter API at {self.base_url} ({type(e).__name__}). Is "
                             "`python -m exporter serve` running there? Use --url to point elsewhere.") from None
        if res.status_code not in expect:
            raise SystemExit(f"{method} /api/{path} failed: {res.status_code} {_problem_text(res)}")
        if res.content and res.headers.get("Content-Type", "").startswith("application/json"):
            return res.json()
        return res.content

    def wait_for_run(self, run_id: str, progress=None, poll: float = 0.5, timeout: float = 3600,
                     stall_polls: int = 3) -> dict:
        """Poll until the run ended and its counts are final (``countsFinal``). A run that ended while
        its counts stay the same for ``stall_polls`` polls is returned as it is (a server without
        ``countsFinal``, or a run whose last batches are stuck)."""
        deadline = time.monotonic() + timeout
        last, unchanged = None, 0
        while True:
            run = self.request("GET", f"runs/{run_id}")
            if progress:
                progress(run)
            c = run["counts"]
            if run["status"] in FINAL and run.get("countsFinal", c["batchesDone"] >= c["batches"]):
                return run
            unchanged = unchanged + 1 if c == last else 0
            last = c
            if run["status"] in FINAL and unchanged >= stall_polls:
                return run
            if time.monotonic() > deadline:
                raise SystemExit(f"Run {run_id} did not end within {timeout:.0f}s (status {run['status']}).")
            time.sleep(poll)


# The CLI's flag for each API field an error can name: people fix the command they typed.
FLAGS = {
    "displayName": "--name", "name": "--name", "apiKey": "the API key (OMNISEND_API_KEY or --key-stdin)",
    "allowContributors": "--allow-contributors", "dataPrivacyConsent": "--consent",
    "maxProfilesPerExport": "--max-profiles", "connectionId": "--connection", "source.container": "--container",
    "source.folder": "--folder", "source.segment": "--segment", "tag": "--tag",
    "maxRemovalPercent": "--max-removal-percent", "maxRejectedPercent": "--max-rejected-percent",
    "sendWelcomeMessage": "--welcome-message", "consent.column": "--consent-column",
    "consent.subscribedValues": "--subscribed-values", "consent.unsubscribedValues": "--unsubscribed-values",
    "consent.changedAtColumn": "--consent-changed-at-column",
}


def flag_of(field: str) -> str:
    """The flag that sets an API field (``mapping.city`` -> ``--map city=COLUMN``), else the field."""
    if field.startswith("mapping."):
        return f"--map {field.removeprefix('mapping.')}=COLUMN"
    return FLAGS.get(field, field)


def _problem_text(res: requests.Response) -> str:
    try:
        body = res.json()
    except ValueError:
        return res.text[:500]
    text = body.get("detail") or body.get("title") or ""
    for e in body.get("errors") or []:
        field = str(e.get("field"))
        text += f"\n  - {flag_of(field)}: {e.get('message')}" + (f" (API field {field})" if flag_of(field) != field else "")
    return text


def progress_line(run: dict) -> str:
    c = run["counts"]
    total = c["queued"] or 0
    done = c["confirmed"] + c["failed"]
    pct = f"{100 * done / total:5.1f}%" if total else "  -  "
    return (f"{run['status']:<18} {pct}  read {c['read']:>8}  rejected {c['rejected']:>6}  "
            f"sent {c['sent']:>8}  confirmed {c['confirmed']:>8}  failed {c['failed']:>6}")


def print_breakdown(by_key: dict[str, int], out=sys.stdout, indent: int = 4, width: int = 30) -> None:
    """The lines under a count: its reasons (or fields), by name, each with its number."""
    for name, n in sorted(by_key.items()):
        print(f"{' ' * indent}{name:<{width}} {n:>7}", file=out)


def print_counts(run: dict, out=sys.stdout) -> None:
    c = run["counts"]
    print(f"Run {run['runId']}: {run['status']}", file=out)
    if run.get("error"):
        print(f"  error: {run['error']}", file=out)
    print(f"  rows read            {c['read']:>9}", file=out)
    print(f"  exported (confirmed) {c['confirmed']:>9}", file=out)
    print(f"  rejected             {c['rejected']:>9}", file=out)
    print_breakdown(c["rejectedByReason"], out)
    print(f"  duplicate emails     {c['duplicates']:>9}", file=out)
    print(f"  failed at Omnisend   {c['failed']:>9}", file=out)
    print_breakdown(c["failedByReason"], out)
    if c.get("joined", 0) + c.get("changed", 0):  # 0 and 0 in runs recorded before they were counted
        print(f"  joined the segment   {c['joined']:>9}", file=out)
        print(f"  changed              {c['changed']:>9}" + ("  (fields:)" if c.get("changedFields") else ""), file=out)
        print_breakdown(c.get("changedFields") or {}, out)
    print(f"  unchanged (skipped)  {c['skipped']:>9}", file=out)
    held = c.get("alreadyTagged", 0)
    print(f"  tagged as members    {c.get('tagged', 0):>9}" + (f"  (and {held} changed members kept their tag)" if held else ""),
          file=out)
    print(f"  left the segment     {c.get('left', 0):>9}  (tag removed: {c.get('untagged', 0)})", file=out)
    if c.get("tagFailures"):
        print(f"  tag changes failed   {c['tagFailures']:>9}  (retried by the next run)", file=out)
