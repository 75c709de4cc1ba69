"""The console's runs view and exports list in Chromium: the run bar in parts, the outcome in words,
the pace and time left while a run goes, where the members went, Cancel and Retry, the reports, and
each export's last run, next check and chart of its recent runs.

Two kinds of test. One serves the runs view fixed run JSON (the browser's requests for the export's runs
are answered by the test), so that every case the page must draw (a failed run of 19,600 contacts, a
routine run with rejected rows, a run half way, the fields issue #17 adds) is drawn from known numbers.
The others go through the whole app: a run is cancelled and retried from the page against the sandbox.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.domain import parse_iso
from tests import test_console as base
from tests.apphelpers import call, create_connection, create_export
from tests.conftest import TEST_API_KEY, TEST_BRAND

browser = base.browser  # the same Chromium fixtures as tests/test_console.py
page = base.page
open_console, shot, unlabelled_controls = base.open_console, base.shot, base.unlabelled_controls

BUDGET = {"requestsPerMinute": 384.8, "tagRequestsPerMinute": 57.5, "contactsPerRequest": 100, "emailsPerTagRequest": 250}


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def counts(**values) -> dict:
    base_counts = {k: 0 for k in ("read", "rejected", "duplicates", "queued", "sent", "confirmed", "failed", "skipped",
                                  "left", "tagged", "alreadyTagged", "untagged", "tagFailures", "batches",
                                  "batchesSent", "batchesDone")}
    return {**base_counts, "rejectedByReason": {}, "failedByReason": {}, **values}


def a_run(run_id: str, export_id: str, status: str, started: datetime, took: float | None, c: dict, **extra) -> dict:
    final = status in base.FINAL_STATUSES
    return {"runId": run_id, "exportId": export_id, "connectionId": "c", "trigger": "manual", "full": False,
            "confirm": False, "heldByThreshold": False, "status": status, "counts": c, "countsFinal": final,
            "createdAt": iso(started), "startedAt": iso(started),
            "finishedAt": iso(started + timedelta(seconds=took)) if final and took is not None else None,
            "error": None, "refresh": None, "stuck": None, "retryable": False, **extra}


@pytest.fixture
def saved_export(services, sandbox, segment_container):
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=generate_profiles(20, seed=3),
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))
    conn = create_connection(TEST_API_KEY)
    return create_export(conn["id"], segment_container.container_name, "ci", "Seg", name="Newsletter")


def fixed_runs(export_id: str, now: datetime) -> list[dict]:
    return [
        # half way: 300 confirmed, 100 failed, 600 not known yet; a minute in
        a_run("r-going", export_id, "uploading", now - timedelta(seconds=60), None,
              counts(read=1000, queued=1000, sent=600, confirmed=300, failed=100, batches=10, batchesSent=6,
                     batchesDone=4, failedByReason={"outcome unknown": 100})),
        # large and fast so far: the request budget, not the pace, says how long the rest takes
        a_run("r-big", export_id, "uploading", now - timedelta(seconds=2), None,
              counts(read=100000, queued=100000, sent=2000, confirmed=1000, batches=1000, batchesSent=20,
                     batchesDone=10)),
        # every contact sent is confirmed; its members are all counted: tagging goes on
        a_run("r-tagging", export_id, "verifying", now - timedelta(seconds=30), None,
              counts(read=500, queued=500, sent=500, confirmed=500, batches=5, batchesSent=5, batchesDone=5,
                     tagged=250, left=20)),
        # a routine run: 400 invalid emails, everything else exported
        a_run("r-routine", export_id, "partiallySucceeded", now - timedelta(hours=1), 95,
              counts(read=20000, rejected=400, rejectedByReason={"invalid email": 400}, queued=19600, sent=19600,
                     confirmed=19600, batches=196, batchesSent=196, batchesDone=196, tagged=19600,
                     joined=0, changed=0)),  # recorded before the API counted joined and changed apart
        # contacts failed at Omnisend, and a retry would send them again
        a_run("r-some-failed", export_id, "partiallySucceeded", now - timedelta(hours=2), 80,
              counts(read=1000, queued=1000, sent=1000, confirmed=950, failed=50,
                     failedByReason={"outcome unknown": 50}, batches=10, batchesSent=10, batchesDone=10, tagged=950),
              retryable=True),
        # the run of the issue: nothing arrived, every contact failed
        a_run("r-nothing", export_id, "failed", now - timedelta(hours=3), 240,
              counts(read=19600, queued=19600, sent=0, failed=19600,
                     failedByReason={"not sent: Omnisend unavailable": 19600}, batches=196, batchesSent=196,
                     batchesDone=196), error="Omnisend confirmed no contact of the segment; see the report.",
              retryable=True),
        # what issue #17 adds: joined and changed apart, and a report of the membership changes
        a_run("r-joined", export_id, "succeeded", now - timedelta(hours=4), 3,
              counts(read=40, queued=8, joined=5, changed=3, confirmed=8, skipped=32, left=2, untagged=2, tagged=5,
                     alreadyTagged=3, batches=1, batchesSent=1, batchesDone=1),
              kind="run", changesUrl="/api/runs/r-joined/changes"),
        # a preview as the API ends one: nothing sent (no batches, nothing confirmed), and a threshold a run would stop at
        a_run("r-preview", export_id, "succeeded", now - timedelta(hours=5), 1,
              counts(read=40, rejected=2, rejectedByReason={"invalid email": 2}, queued=8, joined=5, changed=3,
                     changedFields={"city": 3}, skipped=30, left=12),
              kind="preview", changesUrl="/api/runs/r-preview/changes", preview=PREVIEW),
    ]


PREVIEW = {"tag": "Newsletter", "tagAdditions": 5, "tagRemoved": "Newsletter", "tagRemovals": 12,
           "wouldStop": "12 of the 42 members (28.6%) would leave the segment and lose the tag 'Newsletter', more than "
                        "the export's maxRemovalPercent (20%).",
           "estimate": {"seconds": 262.4, "planningSeconds": 0.4, "contactBatches": 1, "contactRequests": 2,
                        "tagCalls": 2, "requestsPerWindow": 400, "tagCallsPerWindow": 60, "windowSeconds": 60}}
SAMPLE = [{"identifiers": [{"type": "email", "id": f"p{i}@example.com", "channels": {"email": {
    "status": "nonSubscribed", "statusChangedAt": "2026-12-03T10:00:00Z"}}, "sendWelcomeMessage": False}],
    "firstName": f"P{i}", "countryCode": "DE"} for i in range(8)]


def serve_fixed_runs(page, export_id: str, now: datetime) -> list[dict]:
    runs = fixed_runs(export_id, now)
    body = json.dumps({"runs": runs, "requestBudget": BUDGET})
    page.route(re.compile(rf".*/api/exports/{export_id}/runs(\?.*)?$"),
               lambda route: route.fulfill(status=200, content_type="application/json", body=body)
               if route.request.method == "GET" else route.continue_())
    page.route(re.compile(r".*/api/runs/r-joined/changes$"),
               lambda route: route.fulfill(status=200, content_type="text/csv; charset=utf-8",
                                           headers={"Content-Disposition": 'attachment; filename="run-r-joined-changes.csv"'},
                                           body="email,change\nann@example.com,joined\nbo@example.com,left\n"))
    preview = json.dumps({**runs[-1], "preview": {**PREVIEW, "sample": SAMPLE}})  # GET /runs/{id} adds the sample
    page.route(re.compile(r".*/api/runs/r-preview$"),
               lambda route: route.fulfill(status=200, content_type="application/json", body=preview))
    return runs


def segments(row) -> dict[str, tuple[int, float]]:
    """The bar's parts: (count, width in % of the bar)."""
    return row.evaluate("""(tr) => Object.fromEntries([...tr.querySelectorAll('.runbar .seg')].map((s) =>
        [s.dataset.part, [Number(s.dataset.count), 100 * s.getBoundingClientRect().width /
                          s.parentElement.getBoundingClientRect().width]]))""")


def test_the_runs_view_draws_each_run_by_what_happened(page, workers, saved_export):
    export_id = saved_export["id"]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    serve_fixed_runs(page, export_id, now)
    # the page's clock stands still at ``now``: the pace and time left are exact, and the page does not poll
    page.clock.install(time=now - timedelta(seconds=1))
    page.clock.pause_at(now)
    open_console(page, workers)
    page.goto(f"{workers.url}/console/#/exports/{export_id}")
    page.locator("#run-list tr[data-run-id=r-preview]").wait_for()
    row = lambda run_id: page.locator(f"#run-list tr[data-run-id={run_id}]")  # noqa: E731
    details = lambda run_id: page.locator(f"#run-list tr[data-details-of={run_id}]")  # noqa: E731
    outcome = lambda run_id: row(run_id).locator("td.outcome .status")  # noqa: E731

    # the failed run of the issue: all red, none of it drawn as progress, and nothing grey
    parts = segments(row("r-nothing"))
    assert {k: v[0] for k, v in parts.items()} == {"confirmed": 0, "failed": 19600, "unknown": 0}
    assert parts["confirmed"][1] < 0.5 and parts["failed"][1] > 98
    assert row("r-nothing").locator(".runbar-text").inner_text() == \
        "0 confirmed · 19,600 failed · 0 not yet known of 19,600"
    assert row("r-nothing").locator(".runbar").get_attribute("aria-label") == \
        "Run r-nothing: 0 confirmed, 19,600 failed, 0 not yet known, of 19,600 sent"
    assert outcome("r-nothing").inner_text() == "Failed · 19,600 contacts failed"
    assert "tone-bad" in outcome("r-nothing").get_attribute("class")

    # a routine run with invalid emails: worded by what happened, not an alarm; its API status as it is
    assert outcome("r-routine").inner_text() == "Exported · 400 rows rejected"
    assert "tone-ok" in outcome("r-routine").get_attribute("class")
    assert row("r-routine").get_attribute("data-status") == "partiallySucceeded"
    assert outcome("r-routine").get_attribute("title") == "status: partiallySucceeded"
    assert {k: v[0] for k, v in segments(row("r-routine")).items()} == {"confirmed": 19600, "failed": 0, "unknown": 0}
    assert outcome("r-some-failed").inner_text() == "Exported · 50 contacts failed"
    assert "tone-bad" in outcome("r-some-failed").get_attribute("class")

    # half way: three parts in proportion, the phase, the pace and the time left
    parts = segments(row("r-going"))
    assert {k: v[0] for k, v in parts.items()} == {"confirmed": 300, "failed": 100, "unknown": 600}
    for part, share in (("confirmed", 30), ("failed", 10), ("unknown", 60)):
        assert abs(parts[part][1] - share) < 1, parts
    live = details("r-going").locator(".live")
    assert live.locator(".phase").inner_text() == "Sending contacts"
    assert live.locator(".pace").inner_text() == "400 contacts a minute"  # 400 counted in the minute since it began
    assert live.locator(".eta").get_attribute("data-seconds") == "90"  # 600 left at that pace: longer than the budget's
    assert live.locator(".eta").inner_text() == "about 2 min left"
    # 30,000 a minute so far, but 980 batches not sent (2 requests each) and 100,000 members to tag (250
    # emails a request: 400 requests, at 57.5 a minute) take longer at the request budget: 417 s
    big = details("r-big").locator(".live")
    assert big.locator(".pace").inner_text() == "30,000 contacts a minute"
    assert big.locator(".eta").get_attribute("data-seconds") == "417" and big.locator(".eta").inner_text() == "about 7 min left"
    tagging = details("r-tagging").locator(".live")
    assert tagging.locator(".phase").inner_text() == "Tagging members"  # every contact counted; 250 to tag, 20 to untag
    assert tagging.locator(".eta").get_attribute("data-seconds") == "2"
    assert tagging.locator(".tagging").inner_text() == "250 of 500 tagged, 0 of 20 untagged"

    # Cancel while it runs, Retry where a retry would send something, neither otherwise
    assert row("r-going").get_by_role("button", name="Cancel run r-going").is_visible()
    assert row("r-going").get_by_role("button", name=re.compile("Retry")).count() == 0
    assert row("r-some-failed").get_by_role("button", name="Retry the failed contacts of run r-some-failed").is_visible()
    assert row("r-nothing").get_by_role("button", name=re.compile("Retry")).count() == 1
    assert row("r-routine").get_by_role("button").count() == 0

    # where the members went; joined and changed apart where the API counted them (not r-routine)
    facts = lambda run_id: dict(details(run_id).locator(".facts li").evaluate_all(  # noqa: E731
        "(lis) => lis.map((li) => [li.dataset.count, li.innerText])"))
    assert facts("r-routine") == {"sent": "Sent (new or changed) 19,600", "left": "Left 0", "unchanged": "Unchanged 0",
                                  "tagged": "Tagged 19,600", "duplicates": "Duplicates 0"}
    assert facts("r-joined") == {"joined": "Joined 5", "changed": "Changed 3", "left": "Left 2 (tag removed from 2)",
                                 "unchanged": "Unchanged 32", "tagged": "Tagged 5 (3 had it already)",
                                 "duplicates": "Duplicates 0"}

    # a preview: what a run would do, nothing drawn or counted as exported, no Retry or Cancel
    assert row("r-preview").get_attribute("data-kind") == "preview"
    assert "Preview: nothing sent" in row("r-preview").inner_text()
    assert outcome("r-preview").inner_text() == "Preview · would send 8 · 2 rows would be rejected · a run would stop before sending"
    assert "tone-warn" in outcome("r-preview").get_attribute("class")
    assert facts("r-preview") == {"joined": "Would join 5", "changed": "Would change 3",
                                  "left": "Would leave 12 (tag removed from 12)", "unchanged": "Unchanged 30",
                                  "tagged": "Would be tagged 5", "duplicates": "Duplicates 0"}
    assert row("r-preview").locator(".runbar .seg").count() == 0
    assert row("r-preview").locator(".runbar").get_attribute("aria-label") == "Preview r-preview: would send 8 · nothing sent"
    for key in ("confirmed", "failed"):
        assert row("r-preview").locator(f"td[data-count={key}]").inner_text().startswith("—")
    assert row("r-preview").get_by_role("button").all_inner_texts() == ["Show preview"]
    row("r-preview").get_by_role("button", name="Show preview r-preview").click()
    panel = page.get_by_role("region", name="Preview r-preview: what a run would do")
    assert panel.locator(".would-stop").inner_text() == f"A run would stop before sending: {PREVIEW['wouldStop']}"
    assert panel.locator(".would-stop").get_attribute("data-would-stop") == "yes"
    assert panel.locator(".estimate strong").inner_text() == "about 4 min"  # 262.4 s
    assert panel.locator(".preview-counts tr[data-count=changed] td.detail").inner_text() == "city: 3"
    assert panel.locator("table.sample thead th").all_inner_texts() == ["#", "Email", "Email status", "First name",
                                                                       "Country/region"]
    assert panel.locator("table.sample tbody td.email").all_inner_texts() == [f"p{i}@example.com" for i in range(8)]
    assert panel.locator("h4").inner_text() == "The first 8 contacts as they would be sent"
    assert page.evaluate("document.activeElement.id") == "preview-h"  # the panel opened has the focus
    panel.get_by_role("button", name="Close preview r-preview").click()
    assert page.locator("#preview-panel").is_hidden()

    # the reports: rejected rows, and the membership changes beside them when the run has them
    assert details("r-routine").get_by_role("link", name=re.compile("Download the rejected rows")).count() == 1
    assert details("r-routine").get_by_role("link", name=re.compile("Membership changes")).count() == 0
    with page.expect_download() as download:
        details("r-joined").get_by_role("link", name="Membership changes of run r-joined (CSV)").click()
    assert download.value.suggested_filename == "run-r-joined-changes.csv"
    assert Path(download.value.path()).read_text("utf-8").splitlines()[1] == "ann@example.com,joined"
    assert not unlabelled_controls(page)
    shot(page, "run-outcomes")


@pytest.fixture
def app_env(app_env):
    return {**app_env, "OMNISEND_RATE_LIMIT": "100000"}  # the sandbox's latency sets the pace, not the budget


ROWS = 5000  # 50 batches: plenty left to cancel


def test_a_run_is_cancelled_then_retried_from_the_page_and_the_list_charts_it(page, workers, sandbox, services,
                                                                             segment_container):
    write_segment_refresh(segment_container, folder="ci", segment="Big", profiles=generate_profiles(ROWS, seed=21,
                          invalid_share=0), when=datetime.now(timezone.utc) - timedelta(minutes=5))
    conn = create_connection(TEST_API_KEY, name="EU store")
    export = create_export(conn["id"], segment_container.container_name, "ci", "Big", name="Big segment")
    sandbox.faults.latency_seconds = 0.3  # each request takes a while: there is time to cancel half way
    open_console(page, workers)
    page.goto(f"{workers.url}/console/#/exports/{export['id']}")
    page.get_by_role("button", name="Run now").click()
    run_row = page.locator("#run-list tbody tr[data-run-id][data-status=uploading]").first
    run_row.wait_for(timeout=60_000)
    run_id = run_row.get_attribute("data-run-id")
    live = page.locator(f"#run-list tr[data-details-of='{run_id}'] .live")
    assert live.locator(".phase").inner_text() == "Sending contacts"
    assert re.fullmatch(r"[\d,]+ contacts a minute|measuring the pace", live.locator(".pace").inner_text())
    assert re.fullmatch(r"(about|at least) \d+ min left|less than a minute left|almost done|estimating the time left",
                        live.locator(".eta").inner_text())
    run_row.get_by_role("button", name=f"Cancel run {run_id}").click()
    page.locator(f"#run-list tr[data-run-id='{run_id}'][data-status=cancelled]").wait_for()
    retry = page.get_by_role("button", name=f"Retry the failed contacts of run {run_id}")
    retry.wait_for(timeout=60_000)  # once the batches not sent are counted as failed
    page.locator(f"#run-list tr[data-details-of='{run_id}'] .reasons").get_by_text(
        "failed, not sent: the run had ended", exact=False).wait_for()
    outcome = page.locator(f"#run-list tr[data-run-id='{run_id}'] td.outcome")
    base.expect(outcome).not_to_contain_text("Counts still changing", timeout=60_000)  # every batch accounted for
    cancelled = call("run", "GET", "", route_params={"id": run_id})[1]
    c = cancelled["counts"]
    assert cancelled["status"] == "cancelled" and cancelled["retryable"] and cancelled["countsFinal"]
    assert 0 < c["failed"] < ROWS and c["confirmed"] + c["failed"] == ROWS
    assert outcome.locator(".status").inner_text() == f"Cancelled · {c['confirmed']:,} exported · {c['failed']:,} contacts failed"
    assert {k: v[0] for k, v in segments(page.locator(f"#run-list tr[data-run-id='{run_id}']")).items()} == \
        {"confirmed": c["confirmed"], "failed": c["failed"], "unknown": 0}

    sandbox.faults.latency_seconds = 0
    retry.click()
    page.locator("#run-notice").get_by_text("of failed contacts sent again", exact=False).wait_for()
    page.locator(f"#run-list tr[data-run-id='{run_id}'][data-status=succeeded]").wait_for(timeout=60_000)
    page.locator(f"#run-list tr[data-run-id='{run_id}'] .runbar-text").get_by_text(
        f"{ROWS:,} confirmed · 0 failed · 0 not yet known of {ROWS:,}").wait_for()
    assert page.get_by_role("button", name=re.compile("Retry")).count() == 0
    assert len(sandbox.contacts(TEST_BRAND)) == ROWS
    done = call("run", "GET", "", route_params={"id": run_id})[1]
    assert done["counts"]["confirmed"] == ROWS and done["counts"]["failed"] == 0 and done["countsFinal"]

    # the membership changes of the real run download from the URL the API gives (absolute, as deployed)
    assert done["changesUrl"].startswith("http") and done["changesUrl"].endswith(f"/runs/{run_id}/changes")
    with page.expect_download() as download:
        page.get_by_role("link", name=f"Membership changes of run {run_id} (CSV)").click()
    downloaded = Path(download.value.path()).read_text().splitlines()
    assert downloaded[0] == "email,change,fields" and len(downloaded) == ROWS + 1
    assert {line.split(",")[1] for line in downloaded[1:]} == {"joined"}

    # a second run: nothing changed, so nothing is sent; both are charted in the list
    page.get_by_role("button", name="Run now").click()
    page.locator("#run-list tbody tr[data-run-id][data-status=succeeded]").nth(1).wait_for(timeout=30_000)
    second = page.locator("#run-list tbody tr[data-run-id]").first
    assert second.locator("td.outcome").inner_text().startswith("Up to date")
    shot(page, "runs-retried")

    page.get_by_role("link", name="← All exports").click()
    row = page.locator(f"#export-list tr[data-export-id='{export['id']}']")
    chart = row.locator("svg.runs-chart")
    chart.wait_for()
    assert chart.locator("g.run").count() == 2
    assert chart.locator(f"g.run[data-run-id='{run_id}'] rect.bar-exported").evaluate("(r) => r.getBBox().height") > 20
    assert chart.get_attribute("role") == "img"
    assert chart.get_attribute("aria-label").startswith(f"Last 2 runs of Big segment: {ROWS:,} contacts exported, 0 failed")
    assert chart.locator("circle.duration").count() == 2
    last = row.locator("td.last-run")
    assert last.locator(".status").inner_text() == "Up to date"
    assert "0 exported · 0 failed" in last.inner_text()
    next_check = parse_iso(shown_next_check(row))
    assert datetime.now(timezone.utc) < next_check <= datetime.now(timezone.utc) + timedelta(minutes=15)
    assert not unlabelled_controls(page)
    shot(page, "exports")


def shown_next_check(row) -> str:
    """The next check the list shows, as the API gave it (the cell shows it in the page's locale)."""
    text = row.locator("td.next-check").inner_text().splitlines()[0]
    return datetime.strptime(text, "%d %b %Y, %H:%M:%S").replace(tzinfo=timezone.utc).isoformat()


def test_the_exports_list_says_what_is_not_scheduled(page, workers, services, saved_export):
    call("export", "PUT", "", {**{k: saved_export[k] for k in ("name", "connectionId", "source", "mapping")},
                               "enabled": False}, route_params={"id": saved_export["id"]})
    open_console(page, workers)
    row = page.locator(f"#export-list tr[data-export-id='{saved_export['id']}']")
    row.locator("td.next-check").get_by_text("Disabled: not checked").wait_for()
    row.locator("td.last-run").get_by_text("No runs yet").wait_for()
    assert row.locator("svg.runs-chart").get_attribute("aria-label") == "Newsletter has no ended runs yet"
    services.timer_enabled = False  # serve --no-timer
    call("export", "PUT", "", {**{k: saved_export[k] for k in ("name", "connectionId", "source", "mapping")},
                               "enabled": True}, route_params={"id": saved_export["id"]})
    page.reload()
    row.locator("td.next-check").get_by_text("No timer in this app: Run now only").wait_for()
