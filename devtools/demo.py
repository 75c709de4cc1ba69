"""The main job on the local defaults: a real export run, end to end, with a readable report.

    python -m devtools.demo [--rows 10000] [--partitions 3] [--keep [--port 7071]]

Starts Azurite (unless running) and the Omnisend sandbox, uploads a generated segment in the
Dynamics 365 Customer Insights layout (with a few bad rows), starts the app with the local runner,
then, over the app's HTTP API, creates a connection and an export and runs it. ``--keep`` leaves the
stack running after the two runs, prints the console's URL and stops everything on Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from devtools import azurite
from devtools.omnisend_sandbox import SandboxServer
from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.devhost.api_client import ApiClient, print_counts, progress_line

ROOT = Path(__file__).resolve().parent.parent
DEMO_KEY = "demo-omnisend-api-key-0001"
DEMO_BRAND = "demo-brand"
CONTAINER, FOLDER, SEGMENT = "cdp-exports", "customer-insights", "HighValueCustomers"
MAPPING = {"email": "PrimaryEmail", "firstName": "FirstName", "lastName": "LastName", "address": "StreetAddress",
           "city": "City", "state": "State", "postalCode": "PostCode", "country": "Country"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--keep", action="store_true",
                   help="leave the stack running after the runs, to look at them in the console (Ctrl+C stops it)")
    p.add_argument("--port", type=int, default=0, help="the app's port (default: any free port)")
    args = p.parse_args(argv)

    started_azurite = azurite.start()
    print("Azurite:", "started" if started_azurite else "already running, reused")
    sandbox = SandboxServer(api_keys={DEMO_KEY: DEMO_BRAND}).start()
    print(f"Omnisend sandbox: {sandbox.url} (rate limit 400 requests/min, as Omnisend)")
    try:
        return _run(args, sandbox)
    finally:
        sandbox.stop()
        if started_azurite:
            azurite.stop()
        print("Stopped: the app, the Omnisend sandbox" + (" and Azurite." if started_azurite else
              "; Azurite was running before the demo and still is."), flush=True)


def _run(args, sandbox: SandboxServer) -> int:
    from exporter.config import load_settings
    from exporter.devhost.local_runner import LocalHost
    from exporter.services import build_services, set_services

    env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string(), "EXPORTER_DEV_MODE": "1",
           "OMNISEND_API_URL": sandbox.url, "REFRESH_SETTLE_SECONDS": "0", "BATCH_CHECK_DELAY_SECONDS": "1"}
    os.environ.update({k: env[k] for k in ("EXPORTER_DEV_MODE",)})

    blobs = BlobServiceClient.from_connection_string(env["AzureWebJobsStorage"])
    try:
        blobs.create_container(CONTAINER)
    except ResourceExistsError:
        pass
    when = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=1)
    # run 1 exports the first N; the next refresh takes 1% more of the same people for its joiners
    everyone = list(generate_profiles(args.rows + max(1, args.rows // 100), seed=int(time.time()) % 10_000,
                                      invalid_share=0.01, duplicate_share=0.005))
    names = write_segment_refresh(blobs.get_container_client(CONTAINER), folder=FOLDER, segment=SEGMENT,
                                  profiles=everyone[:args.rows], when=when, partitions=args.partitions)
    print(f"Segment: {args.rows} profiles (1% invalid emails, 0.5% duplicates) in {len(names)} partitions")
    for name in names:
        print(f"  {CONTAINER}/{name}")
    print(f"  {CONTAINER}/{FOLDER}/model.json")

    services = build_services(load_settings(env))
    services.clients.ensure_resources()
    set_services(services)
    host = LocalHost(services.clients, port=args.port, batch_workers=args.workers, timer=False, idle_sleep=0.5, env=env)
    host.start()
    try:
        print(f"App (local runner, development mode): {host.url}\n")
        api = ApiClient(host.url)
        conn = api.request("POST", "connections", {
            "displayName": f"Omnisend demo {datetime.now():%Y-%m-%d %H:%M:%S}", "apiKey": DEMO_KEY,
            "allowContributors": False, "dataPrivacyConsent": True})
        print(f"Connection {conn['displayName']!r} created (key checked with Omnisend, stored outside the app data)")
        export = api.request("POST", "exports", {
            "name": "High value customers to Omnisend", "connectionId": conn["id"],
            "source": {"container": CONTAINER, "folder": FOLDER, "segment": SEGMENT}, "mapping": MAPPING})
        print(f"Export {export['name']!r} saved (not run yet)")
        t0 = time.monotonic()
        run = api.request("POST", f"exports/{export['id']}/runs")
        print(f"Run {run['runId']} started\n")
        last = [""]

        def show(r: dict) -> None:
            line = progress_line(r)
            if line != last[0]:
                print("  " + line, flush=True)
                last[0] = line

        run = api.wait_for_run(run["runId"], progress=show, poll=1)
        ok = _report(api, sandbox, run, time.monotonic() - t0)

        # The platform refreshes the segment: 1% changed a field, 1% left, 1% joined.
        churned = _churn(everyone, args.rows)
        write_segment_refresh(blobs.get_container_client(CONTAINER), folder=FOLDER, segment=SEGMENT,
                              profiles=churned, when=when + timedelta(seconds=30), partitions=args.partitions)
        print("\nA new refresh: 1% of the profiles changed a field, 1% left the segment, 1% joined. Run 2:\n")
        t0 = time.monotonic()
        run2 = api.wait_for_run(api.request("POST", f"exports/{export['id']}/runs")["runId"], progress=show, poll=1)
        ok = _report(api, sandbox, run2, time.monotonic() - t0) and ok
        print(f"\nRun 2 sent {run2['counts']['queued']} contacts instead of {run['counts']['queued']}: "
              "only what changed since Omnisend last confirmed the segment.")
        if args.keep:
            _keep(host.url, export["id"])
        return 0 if ok else 1
    finally:
        host.stop()
        set_services(None)


def _keep(url: str, export_id: str) -> None:
    """Leave the stack running until Ctrl+C or SIGTERM, saying where to look and how to stop it."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"\nThe stack keeps running (--keep). The two runs, in the browser (development mode, as an Admin):\n"
          f"  console: {url}/console/#/exports/{export_id}\n"
          f"  CLI:     EXPORTER_URL={url} python -m exporter runs list {export_id}\n"
          "Press Ctrl+C (or send SIGTERM) to stop the app, the Omnisend sandbox and Azurite (when the demo "
          "started it).", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    print("Stopping.", flush=True)


def _churn(everyone: list[dict], rows: int) -> list[dict]:
    """The next refresh: the first 1% left, the next 1% changed their last name, 1% are new."""
    n = max(1, rows // 100)
    first = everyone[:rows]
    changed = [{**p, "LastName": p["LastName"] + "-Smith"} for p in first[n:2 * n]]
    return changed + first[2 * n:] + everyone[rows:rows + n]


def _report(api: ApiClient, sandbox: SandboxServer, run: dict, elapsed: float) -> bool:
    print()
    print_counts(run)
    c = run["counts"]
    stored = len(sandbox.contacts(DEMO_BRAND))
    print(f"  time taken           {elapsed:>8.1f}s  ({(c['confirmed'] + c['skipped']) / elapsed:,.0f} profiles/s)")
    print(f"  contacts now in the Omnisend sandbox: {stored}")
    out = ROOT / ".local" / "demo" / f"rejects-{run['runId']}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(api.request("GET", f"runs/{run['runId']}/rejects"))
    print(f"  rejected rows with reasons: {out.relative_to(ROOT)}")
    if run.get("changesUrl"):
        changes = out.with_name(f"changes-{run['runId']}.csv")
        changes.write_bytes(api.request("GET", f"runs/{run['runId']}/changes"))
        print(f"  who joined, changed (which fields) or left: {changes.relative_to(ROOT)}")
    balanced = c["read"] == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]
    print(f"  every row accounted for: {'yes' if balanced else 'NO'}")
    return balanced and run["status"] in ("succeeded", "partiallySucceeded")


if __name__ == "__main__":
    sys.exit(main())
