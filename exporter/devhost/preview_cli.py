"""``python -m exporter run EXPORT_ID --dry-run``: what a run would do, without sending anything."""

from __future__ import annotations

import json
import sys

from .api_client import ApiClient, print_breakdown


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m} min" if hours else f"{m} min {s} s" if m else f"{s} s"


def print_preview(run: dict, out=sys.stdout) -> None:
    c, p = run["counts"], run.get("preview") or {}
    print(f"Preview {run['runId']} of refresh {(run.get('refresh') or {}).get('folder', '?')}: {run['status']}"
          " (nothing was sent)", file=out)
    if run.get("error"):
        print(f"  error: {run['error']}", file=out)
        return
    print(f"  rows read                 {c['read']:>9}", file=out)
    print(f"  rejected                  {c['rejected']:>9}", file=out)
    print_breakdown(c["rejectedByReason"], out)
    print(f"  duplicate emails          {c['duplicates']:>9}", file=out)
    print(f"  would be sent             {c['queued']:>9}", file=out)
    print(f"    new members (joined)    {c.get('joined', 0):>9}", file=out)
    print(f"    changed members         {c.get('changed', 0):>9}", file=out)
    print_breakdown(c.get("changedFields", {}), out, indent=6, width=28)
    print(f"  unchanged (not sent)      {c['skipped']:>9}", file=out)
    print(f"  would leave               {c['left']:>9}", file=out)
    if p:
        if p.get("tag"):
            print(f"  tag {p['tag']!r} added to {p['tagAdditions']} members", file=out)
        if p.get("tagRemoved"):
            print(f"  tag {p['tagRemoved']!r} removed from {p['tagRemovals']} members", file=out)
        e = p["estimate"]
        print(f"  estimated duration        {_duration(e['seconds'])} ({e['contactRequests']} contact requests and "
              f"{e['tagCalls']} tag calls at {e['requestsPerWindow']} and {e['tagCallsPerWindow']} per "
              f"{e['windowSeconds']} s, after {e['planningSeconds']:.0f} s of planning)", file=out)
        if p.get("wouldStop"):
            print(f"  a run would stop before sending: {p['wouldStop']}", file=out)
    print(f"  changes: python -m exporter runs changes {run['runId']} --out changes.csv", file=out)


def run_preview(api: ApiClient, export_id: str, output: str) -> int:
    queued = api.request("POST", f"exports/{export_id}/runs", params={"dryRun": "true"})
    run = api.wait_for_run(queued["runId"], poll=0.5)
    if output == "json":
        print(json.dumps(run, indent=2))
    else:
        print_preview(run)
    return 0 if run["status"] == "succeeded" else 1
