"""The console's Preview in Chromium, against the app and the sandbox: the dry run is started from the
export's page and from the exports list, its panel says what a run would do with the API's own numbers,
the history marks it as a preview (no Retry, no Cancel, nothing shown as exported), the membership
changes download, and Omnisend receives nothing.

``CONSOLE_SCREENSHOTS=docs/console`` saves docs/console/preview.png (docs/console.md).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from devtools.sample_segment import COLUMNS, generate_profiles, write_segment_refresh
from tests import test_console as base
from tests.apphelpers import call, create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND

browser = base.browser  # the same Chromium fixtures as tests/test_console.py
page = base.page
open_console, shot, unlabelled_controls = base.open_console, base.shot, base.unlabelled_controls

SEGMENT = "Members"


def write(container, profiles, minutes_ago: int) -> None:
    when = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    write_segment_refresh(container, folder="ci", segment=SEGMENT, profiles=profiles, when=when, partitions=2,
                          columns=COLUMNS)


@pytest.fixture
def churned_export(services, workers, sandbox, segment_container):
    """An export whose first refresh was sent for real, and a second refresh with churn: rows rejected,
    members who join, change (by field) and leave."""
    everyone = list(generate_profiles(330, seed=17, invalid_share=0.03, duplicate_share=0.02))
    first = everyone[:300]
    write(segment_container, first, minutes_ago=30)
    conn = create_connection(TEST_API_KEY, name="EU store")
    export = create_export(conn["id"], segment_container.container_name, "ci", SEGMENT, name="Members",
                           tag="Members")
    sent = wait_for_run(start_run(export["id"])["runId"])
    assert sent["counts"]["confirmed"] > 250
    key = lambda x: x["PrimaryEmail"].strip().lower()  # noqa: E731
    stored = {c["email"].lower() for c in sandbox.contacts(TEST_BRAND)}
    rows_of = Counter(key(x) for x in everyone)
    members = [x for x in first if key(x) in stored and rows_of[key(x)] == 1]  # one row each, sent
    leaving = {key(x) for x in members[:10]}
    edited = {key(x): {**x, "FirstName": x["FirstName"] + "x"} for x in members[10:15]}
    edited |= {key(x): {**x, "City": x["City"] + " Town"} for x in members[15:18]}
    second = [edited.get(key(x), x) for x in first if key(x) not in leaving] + everyone[300:]
    write(segment_container, second, minutes_ago=20)
    return export


def api_run(run_id: str) -> dict:
    status, body, _ = call("run", "GET", "", route_params={"id": run_id})
    assert status == 200, body
    return body


def api_changes(run_id: str) -> str:
    status, _, res = call("run_changes", "GET", "", route_params={"id": run_id})
    assert status == 200
    return res.get_body().decode()


def about(seconds: float) -> str:
    """The estimate in words, as the console words it (progress.js fmtAbout)."""
    if seconds < 60:
        return "less than a minute"
    m = math.floor(seconds / 60 + 0.5)
    return f"about {m} min" if m < 60 else f"about {m // 60} h {m % 60:02d} min"


def panel_counts(panel) -> dict[str, int]:
    return {k: int(v.replace(",", "")) for k, v in panel.locator(".preview-counts tr").evaluate_all(
        "(trs) => trs.map((tr) => [tr.dataset.count, tr.querySelector('td.num').innerText])")}


def test_preview_from_the_page_says_what_a_run_would_do_and_sends_nothing(page, workers, sandbox, services,
                                                                          churned_export):
    export_id = churned_export["id"]
    requests_before = sandbox.stats(TEST_BRAND)["requests"]
    contacts_before = sandbox.contacts(TEST_BRAND)
    state_before = services.states.current_name(export_id)
    open_console(page, workers)
    page.goto(f"{workers.url}/console/#/exports/{export_id}")
    page.wait_for_selector("h1:has-text('Export: Members')")
    page.get_by_role("button", name="Preview", exact=True).click()
    panel = page.get_by_role("region", name=re.compile(r"^Preview .*: what a run would do$"))
    panel.locator(".would-stop").wait_for(timeout=60_000)
    run_id = panel.locator("h3").inner_text().split(":")[0].removeprefix("Preview ")
    seen = api_run(run_id)
    c, p = seen["counts"], seen["preview"]
    assert seen["kind"] == "preview" and seen["status"] == "succeeded"
    assert c["joined"] > 0 and c["changed"] == 8 and c["left"] == 10 and c["rejected"] > 0  # the churn is real

    # the panel's numbers are the API's
    assert panel_counts(panel) == {"read": c["read"], "rejected": c["rejected"], "duplicates": c["duplicates"],
                                   "queued": c["queued"], "joined": c["joined"], "changed": c["changed"],
                                   "skipped": c["skipped"], "left": c["left"]}
    detail = lambda key: panel.locator(f".preview-counts tr[data-count={key}] td.detail").inner_text()  # noqa: E731
    assert detail("rejected") == " · ".join(f"{r}: {n:,}" for r, n in c["rejectedByReason"].items())
    assert detail("changed") == " · ".join(f"{f}: {n}" for f, n in c["changedFields"].items())
    assert set(c["changedFields"]) == {"firstName", "city"}
    assert detail("left") == 'lose the tag "Members"'
    assert panel.locator("[data-tag=added]").inner_text() == f'Tag "Members" added to {p["tagAdditions"]:,} members'
    assert panel.locator("[data-tag=removed]").inner_text() == \
        f'Tag "Members" removed from {p["tagRemovals"]} members who leave'
    assert p["wouldStop"] is None and panel.locator(".would-stop").get_attribute("data-would-stop") == "no"
    e = p["estimate"]
    estimate = panel.locator(".estimate")
    assert estimate.get_attribute("data-seconds") == str(e["seconds"])
    assert estimate.locator("strong").inner_text() == about(e["seconds"])
    assert f"{e['contactRequests']} contact requests ({e['contactBatches']} batches) and {e['tagCalls']} tag calls" \
        in estimate.inner_text()
    # the sample: the first 20 contacts as they would be sent, emails shown, and the JSON itself
    emails = panel.locator("table.sample tbody td.email").all_inner_texts()
    assert emails == [x["identifiers"][0]["id"] for x in p["sample"]] and len(emails) == 20
    first_names = panel.locator("table.sample tbody tr").evaluate_all("(trs) => trs.map((tr) => tr.cells[3].innerText)")
    assert panel.locator("table.sample thead th").nth(3).inner_text() == "First name"
    assert first_names == [x.get("firstName", "") for x in p["sample"]]
    panel.get_by_text("The same contacts as JSON").click()
    assert p["sample"][0]["identifiers"][0]["id"] in panel.locator(".sample-json pre").inner_text()

    # the history marks it as a preview: nothing exported, no Retry, no Cancel
    row = page.locator(f"#run-list tr[data-run-id='{run_id}']")
    row.wait_for()
    assert row.get_attribute("data-kind") == "preview" and row.get_attribute("data-status") == "succeeded"
    assert row.locator("td.outcome").inner_text().startswith(f"Preview · would send {c['queued']:,}")
    assert "tone-preview" in row.locator("td.outcome .status").get_attribute("class")
    assert row.locator("td[data-count=confirmed]").inner_text().startswith("—")
    assert row.locator(".runbar .seg").count() == 0
    assert row.get_by_role("button", name=re.compile("Retry|Cancel")).count() == 0
    assert row.get_by_role("button").all_inner_texts() == ["Show preview"]

    # the membership changes, as the API has them
    with page.expect_download() as download:
        panel.get_by_role("link", name=f"Membership changes of run {run_id} (CSV)").click()
    assert download.value.suggested_filename == f"run-{run_id}-changes.csv"
    text = Path(download.value.path()).read_bytes().decode("utf-8")  # as sent: CSV lines end in CRLF
    assert text == api_changes(run_id)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sum(r["change"] == "left" for r in rows) == 10 and sum(r["change"] == "changed" for r in rows) == 8

    # Omnisend received nothing, and no membership state was written
    assert sandbox.stats(TEST_BRAND)["requests"] == requests_before
    assert sandbox.contacts(TEST_BRAND) == contacts_before
    assert services.states.current_name(export_id) == state_before
    assert not unlabelled_controls(page)
    page.get_by_text("The same contacts as JSON").click()  # closed again for the screenshot
    shot(page, "preview")


def test_preview_from_the_exports_list_opens_the_export_with_its_panel(page, workers, sandbox, churned_export):
    requests_before = sandbox.stats(TEST_BRAND)["requests"]
    open_console(page, workers)
    row = page.locator(f"#export-list tr[data-export-id='{churned_export['id']}']")
    row.locator("td.last-run .status").wait_for()
    row.get_by_role("button", name="Preview Members: what a run would do, sending nothing").click()
    page.wait_for_selector("h1:has-text('Export: Members')")
    page.get_by_text("started: it plans the latest refresh and sends nothing.", exact=False).wait_for()
    panel = page.locator("#preview-panel")
    panel.locator(".would-stop").wait_for(timeout=60_000)
    run_id = panel.locator("h3").inner_text().split(":")[0].removeprefix("Preview ")
    assert panel_counts(panel)["queued"] == api_run(run_id)["counts"]["queued"]
    assert sandbox.stats(TEST_BRAND)["requests"] == requests_before

    # the list's last run is still the real one: a preview is not a run that exported something
    page.get_by_role("link", name="← All exports").click()
    last = page.locator(f"#export-list tr[data-export-id='{churned_export['id']}'] td.last-run .last-run-summary")
    last.wait_for()
    assert last.get_attribute("data-run-id") != run_id and last.locator(".status").inner_text().startswith("Exported")
