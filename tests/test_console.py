"""The operator console: served by the app itself, and used in a real browser.

The first tests read the console's files over HTTP from the local runner (content types, caching, no
path traversal, nothing fetched from elsewhere). The browser tests drive Debian's Chromium
(/usr/bin/chromium) with Playwright against the local runner on Azurite and the Omnisend sandbox, as a
person would: create a connection, create an export with mapped fields, run it and watch the progress
reach the end, download the rejected rows; a Contributor does not see what is for admins only; and a
connection is added and removed with the keyboard alone. No page requests anything but the app.

``CONSOLE_SCREENSHOTS=docs/console`` saves screenshots of the main screens there (docs/console.md).
"""

from __future__ import annotations

import csv
import http.client
import io
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from devtools.sample_segment import COLUMNS, generate_profiles, write_segment_refresh
from exporter.blueprints.console import ASSETS, CONSOLE_DIR
from tests.apphelpers import CONTRIBUTOR, call, create_connection, create_export, use_services, wait_for_run
from tests.conftest import ROOT, TEST_API_KEY, TEST_BRAND

try:
    from playwright.sync_api import expect
except ImportError:  # requirements-dev.txt has it; without it the browser fixture fails, it does not skip
    expect = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
TIMEOUT_MS = 20_000
FINAL_STATUSES = ("succeeded", "partiallySucceeded", "failed", "cancelled")


def raw_get(url: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """GET a path exactly as written (no client-side normalisation of '..' or escapes)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


# --- the files, over HTTP ------------------------------------------------------------------------


def test_console_url_redirects_to_the_page_and_serves_it_with_sensible_headers(workers):
    res = requests.get(workers.url + "/console", allow_redirects=False, timeout=10)
    assert res.status_code == 308 and res.headers["Location"] == "/api/console/"
    page = requests.get(workers.url + "/console", timeout=10)  # follows the redirect
    assert page.status_code == 200 and page.url.endswith("/api/console/")
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'data-mode="development"' in page.text  # the local runner's development mode
    assert page.headers["Cache-Control"] == "no-cache" and page.headers["ETag"]
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    again = requests.get(page.url, headers={"If-None-Match": page.headers["ETag"]}, timeout=10)
    assert again.status_code == 304 and again.content == b""


ASSET_TYPES = {"app.js": "text/javascript; charset=utf-8", "api.js": "text/javascript; charset=utf-8",
               "console.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml; charset=utf-8",
               "index.html": "text/html; charset=utf-8"}
TRAVERSALS = ["/api/console/../function_app.py", "/api/console/../../host.json", "/api/console/%2e%2e/host.json",
              "/api/console/..%2fhost.json", "/api/console/..%5chost.json", "/api/console/%2fetc%2fpasswd",
              "/api/console//etc/passwd", "/api/console/../blueprints/console.py", "/api/console/nosuch.js",
              "/api/console/.%2e/.%2e/requirements.txt", "/api/console/app.js%00.html"]


def test_assets_have_their_content_types_and_nothing_else_is_served(workers):
    """One app for all the requests (starting one per case would cost a second each)."""
    for name, content_type in ASSET_TYPES.items():
        res = requests.get(f"{workers.url}/console/{name}", timeout=10)
        assert res.status_code == 200 and res.headers["Content-Type"] == content_type, name
        assert res.headers["Cache-Control"] == "no-cache"
        if name != "index.html":
            assert res.content == (CONSOLE_DIR / name).read_bytes()
    for path in TRAVERSALS:
        status, headers, body = raw_get(workers.url, path)
        assert status == 404, (path, body[:200])
        assert headers["content-type"].startswith("application/problem+json")
        assert b"import azure" not in body and b"root:" not in body and b"extensionBundle" not in body


def test_the_handler_refuses_traversal_even_when_the_route_lets_it_through(services):
    for path in ("../function_app.py", "..%2Fhost.json", "/etc/passwd", "console.css/..", "./app.js"):
        status, body, _ = call("console", "GET", f"console/{path}", route_params={"path": path})
        assert status == 404 and body["title"] == "Not found", path


def test_outside_development_mode_the_page_has_no_development_identity(services):
    from exporter.config import load_settings
    from exporter.services import Services

    platform = Services(load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                                       "WEBSITE_AUTH_ENABLED": "true"}), services.clients, services.secrets)
    restore = use_services(platform)
    try:
        status, _, res = call("console", "GET", "console/", route_params={"path": ""})
    finally:
        restore()
    assert status == 200 and b'data-mode="platform"' in res.get_body()


def test_the_console_loads_nothing_from_elsewhere():
    assert set(ASSETS) >= {"index.html", "app.js", "api.js", "console.css", "favicon.svg"}
    for name, asset in ASSETS.items():
        # the SVG namespace is a name, not a load (favicon.svg's xmlns, chart.js's createElementNS)
        text = asset.body.decode("utf-8").replace('xmlns="http://www.w3.org/2000/svg"', "")
        text = text.replace('const SVG = "http://www.w3.org/2000/svg";', "")
        assert not re.search(r"(?i)\b(src|href)\s*=\s*[\"']?(https?:)?//", text), name
        assert not re.search(r"(?i)https?://", text), name  # no CDN, no external font, no analytics
        assert "@import" not in text and "fetch(\"http" not in text, name


# --- in the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium); "
                    "scripts/bootstrap.sh installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, request, workers):
    context = browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True,
                                  locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 4" not in m.text else None)
    requested: list[str] = []
    pg.on("request", lambda r: requested.append(r.url))
    log: list[str] = []
    pg.on("response", lambda r: log.append(f"{r.request.method} {r.url} -> {r.status}"))
    pg.on("console", lambda m: log.append(f"console.{m.type}: {m.text}"))
    pg.errors, pg.requested = errors, requested
    yield pg
    (ROOT / ".local").mkdir(exist_ok=True)
    (ROOT / ".local" / f"console-last-{request.node.name}.log").write_text("\n".join(log + errors))
    last = ROOT / ".local" / f"console-last-{request.node.name}.png"  # what the page showed at the end (debugging)
    last.parent.mkdir(exist_ok=True)
    pg.screenshot(path=str(last))
    context.close()
    assert not errors, errors  # no script errors
    assert all(u.startswith("http://127.0.0.1:") or u.startswith("blob:") for u in requested), requested


def shot(page, name: str) -> None:
    """A screenshot of the whole page for docs/console/. The viewport is made as tall as the page for it
    (a full_page screenshot here left the next click without effect), then put back."""
    if not SCREENSHOTS:
        return
    folder = ROOT / SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(height, 4000))})
    page.evaluate("window.scrollTo(0, 0)")  # from the top, wherever the focus scrolled the page
    page.screenshot(path=str(folder / f"{name}.png"))
    page.set_viewport_size(size)


def unlabelled_controls(page) -> list[str]:
    """Form controls a screen reader would announce without a name."""
    return page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => !el.hidden && el.type !== 'hidden')
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !(el.textContent || '').trim())
        .map((el) => el.outerHTML.slice(0, 120))""")


def open_console(page, workers, identity: str = "admin") -> None:
    page.goto(workers.url + "/console")
    page.get_by_label("Development identity").select_option(identity)
    page.wait_for_selector("#signed-in:has-text('Signed in as')")


@pytest.fixture
def segment(segment_container):
    """600 profiles in two partitions: 12 invalid emails and 6 duplicates, written five minutes ago."""
    profiles = list(generate_profiles(600, seed=5, invalid_share=0.02, duplicate_share=0.01))
    write_segment_refresh(segment_container, folder="ci", segment="VIPCustomers", profiles=profiles,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5), partitions=2)
    return segment_container.container_name


def test_admin_connects_maps_runs_and_sees_the_counts_of_the_sandbox(page, workers, sandbox, segment, services):
    open_console(page, workers)
    assert page.locator("#dev-identity-box").is_visible()
    page.get_by_role("link", name="Connections").click()
    page.wait_for_selector("h1:has-text('Connections')")
    page.get_by_text("No connections yet").wait_for()
    consent_text = page.locator("#conn-consent-text").inner_text()
    assert "personal data" in consent_text and "compliance boundary" in consent_text

    # the API's own words: a rejected key, then a missing consent
    page.get_by_label("Display name").fill("Omnisend EU store")
    page.get_by_label("Admins and contributors").check()
    page.get_by_label("Omnisend API key").fill("wrong-key-123")
    page.get_by_label("I agree to the data privacy and compliance terms above").check()
    page.get_by_role("button", name="Connect").click()
    alert = page.locator("#connection-form [role=alert]")
    alert.get_by_text("Omnisend rejected this API key; the connection was not saved.", exact=False).wait_for()
    assert "apiKey: Omnisend rejected this API key" in alert.inner_text()
    assert page.get_by_label("Omnisend API key").input_value() == ""  # a rejected key is not kept either
    assert page.get_by_role("button", name="Save").is_disabled()
    page.get_by_label("Omnisend API key").fill(TEST_API_KEY)
    page.get_by_label("I agree to the data privacy and compliance terms above").uncheck()
    page.get_by_role("button", name="Connect").click()
    alert.get_by_text("dataPrivacyConsent: must be true: profile data, including personal data, leaves the "
                      "platform's compliance boundary for Omnisend").wait_for()
    assert page.get_by_label("I agree to the data privacy and compliance terms above").get_attribute("aria-invalid") == "true"

    # Connect, then Save; the key is gone from the page afterwards
    page.get_by_label("I agree to the data privacy and compliance terms above").check()
    page.get_by_role("button", name="Connect").click()
    page.get_by_text("Connected: Omnisend accepted the API key. Nothing was saved.").wait_for()
    assert services.connections.list() == []  # Connect saved nothing
    shot(page, "connections-connect")
    page.get_by_role("button", name="Save").click()
    page.get_by_text('Connection "Omnisend EU store" saved.', exact=False).wait_for()
    assert page.get_by_label("Omnisend API key").input_value() == ""
    assert page.get_by_label("Omnisend API key").get_attribute("type") == "password"
    row = page.locator("#connection-list tbody tr")
    row.get_by_text("Omnisend EU store").wait_for()
    assert row.count() == 1 and "Admins and contributors" in row.inner_text() and "local-admin@dev" in row.inner_text()
    assert TEST_API_KEY not in page.content()
    (conn,) = services.connections.list()
    assert conn.allow_contributors and conn.consented_by == "local-admin@dev"
    assert not unlabelled_controls(page)
    shot(page, "connections")

    # a new export: columns read from the segment, email and three attributes mapped
    page.get_by_role("link", name="Exports").click()
    page.get_by_role("link", name="New export").click()
    page.wait_for_selector("h1:has-text('New export')")
    assert page.get_by_role("button", name="Run now").is_disabled()
    page.get_by_label("Name", exact=True).fill("VIP customers")
    page.get_by_label("Connection").select_option(label="Omnisend EU store (admins and contributors)")
    page.get_by_label("Container").fill(segment)
    page.get_by_label("Folder (optional)").fill("ci")
    page.get_by_label("Segment", exact=True).fill("VIPCustomers")
    page.get_by_role("button", name="Save").click()  # no email column yet: the API says so
    page.locator("#export-form [role=alert]").get_by_text("mapping.email: is required").wait_for()
    page.get_by_role("button", name="Read columns").click()
    page.get_by_text(f"{len(COLUMNS)} columns read from model.json.").wait_for()
    email = page.get_by_label("Email (required)")
    assert email.locator("option").all_inner_texts()[1:] == list(COLUMNS)
    email.select_option("PrimaryEmail")
    for attribute, column in (("First name", "FirstName"), ("Country/region", "Country"), ("City", "City")):
        page.get_by_role("button", name="Add attribute").click()
        row = page.locator(".attr-row").last
        row.get_by_label("Omnisend field").select_option(label=attribute)
        row.get_by_label("Segment column").select_option(column)
    page.get_by_label("Membership tag (optional)").fill("VIP customers")
    assert not unlabelled_controls(page)
    shot(page, "export-new")
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector("h1:has-text('Export: VIP customers')")
    page.get_by_text('Export "VIP customers" saved. Saving does not run it.').wait_for()
    page.get_by_text("No runs yet.", exact=False).wait_for()
    export_id = page.evaluate("location.hash").rsplit("/", 1)[1]
    saved = services.exports.get(export_id)
    assert saved.mapping.to_api() == {"email": "PrimaryEmail", "firstName": "FirstName", "country": "Country",
                                      "city": "City"}
    assert saved.tag == "VIP customers" and saved.connection_id == conn.id and saved.enabled
    assert services.runs.list(export_id) == []  # saving ran nothing

    # Run now: the bar's confirmed part grows until every queued contact is confirmed or failed
    page.get_by_role("button", name="Run now").click()
    page.get_by_text("Run ", exact=False).get_by_text("started.", exact=False).first.wait_for()
    run_row = page.locator("#run-list tbody tr[data-run-id]").first
    seen, shot_taken = [], False
    deadline = time.monotonic() + 45
    while True:
        state = run_row.evaluate("""(tr) => { const part = (p) => { const s = tr.querySelector(`.seg-${p}`);
                return s ? Number(s.dataset.count) : null; };
            return [tr.dataset.status, part('confirmed'), part('failed'), part('unknown')]; }""")
        if not seen or seen[-1] != state:
            seen.append(state)
        if state[0] in ("succeeded", "partiallySucceeded") and state[3] == 0:
            break
        assert state[0] not in ("failed", "cancelled") and time.monotonic() < deadline, seen
        if state[0] not in FINAL_STATUSES and state[1] and not shot_taken:
            shot(page, "run-in-progress")
            shot_taken = True
        time.sleep(0.1)
    values = [confirmed for _, confirmed, _, _ in seen if confirmed is not None]
    assert values == sorted(values), seen  # the confirmed part only grows
    api_run = call("run", "GET", "", route_params={"id": run_row.get_attribute("data-run-id")})[1]
    c = api_run["counts"]
    stored = sandbox.contacts(TEST_BRAND)
    assert c["read"] == 600 and c["rejected"] == 12 and c["duplicates"] > 0 and c["failed"] == 0
    assert c["confirmed"] == len(stored) == c["queued"] == 600 - 12 - c["duplicates"]
    assert seen[-1][1:] == [c["queued"], 0, 0]
    cells = run_row.locator("td").all_inner_texts()
    header = page.locator("#run-list thead th").all_inner_texts()
    shown = dict(zip(header, cells))
    # the invalid emails did not reach Omnisend: said as what happened, the API's status as it is
    assert shown["Outcome"].startswith("Exported · 12 rows rejected") and api_run["status"] == "partiallySucceeded"
    assert run_row.get_attribute("data-status") == "partiallySucceeded"
    assert shown["Read"] == "600" and shown["Exported"] == f"{len(stored):,}" and shown["Rejected"] == "12"
    assert shown["Failed"] == "0"
    assert shown["Progress"].strip().endswith(f"{len(stored)} confirmed · 0 failed · 0 not yet known of {len(stored)}")
    assert re.fullmatch(r"\d+\.\d s", shown["Duration"]), shown["Duration"]
    details_row = page.locator("#run-list tr.run-details").first
    fact = lambda key: details_row.locator(f"[data-count={key}] .fact-value").inner_text()  # noqa: E731
    assert fact("duplicates") == str(c["duplicates"]) and fact("unchanged") == "0"
    # the API counts joined and changed apart (#17): a first run's members all join
    assert c["joined"] == c["queued"] and c["changed"] == 0
    assert fact("joined") == f"{c['joined']:,}" and fact("changed") == "0"
    assert fact("tagged") == f"{c['tagged']:,}" and c["tagged"] == len(stored)
    details = details_row.inner_text()
    for reason, n in c["rejectedByReason"].items():
        assert f"rejected, {reason}: {n}" in details
    assert {x["email"] for x in stored} and all(x.get("firstName") for x in stored)
    assert all("VIP customers" in x.get("tags", []) for x in stored)
    shot(page, "runs")

    # the rejected rows, downloaded with the caller's identity
    with page.expect_download() as download:
        details_row.get_by_role("link", name=re.compile("Download the rejected rows")).click()
    assert download.value.suggested_filename == f"run-{api_run['runId']}-rejects.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text("utf-8"))))
    for reason, n in c["rejectedByReason"].items():
        assert sum(1 for r in rows if r["reason"] == reason) == n
    assert sum(1 for r in rows if r["reason"] == "duplicate email") == c["duplicates"]


def test_a_contributor_does_not_see_what_is_for_admins_only(page, workers, services, segment):
    open_conn = create_connection(TEST_API_KEY, name="Shared store", allowContributors=True)
    closed_conn = create_connection(TEST_API_KEY, name="Admins' store")
    shared = create_export(open_conn["id"], segment, "ci", "VIPCustomers", name="Shared export")
    closed = create_export(closed_conn["id"], segment, "ci", "VIPCustomers", name="Admins' export")

    open_console(page, workers, "admin")
    assert page.get_by_role("link", name="Connections").is_visible()
    page.get_by_role("link", name="Admins' export", exact=True).wait_for()  # its chart's title names it too

    page.get_by_label("Development identity").select_option("contributor")
    page.get_by_text("Signed in as local-contributor@dev (Contributor)").wait_for()
    page.get_by_role("link", name="Shared export", exact=True).wait_for()
    assert page.get_by_role("link", name="Connections").count() == 0  # not in the navigation at all
    assert page.get_by_text("Admins' export").count() == 0
    assert page.locator("#export-list tbody tr").count() == 1
    page.goto(workers.url + "/console/#/connections")  # typed by hand: still no connections page
    page.wait_for_selector("h1:has-text('Exports')")
    assert page.locator("#connection-form").count() == 0 and page.get_by_text("Add a connection").count() == 0
    shot(page, "contributor-exports")

    page.get_by_role("link", name="New export").click()
    # only what a contributor may use
    expect(page.get_by_label("Connection").locator("option")).to_have_text(["— choose a connection —", "Shared store"])

    # an admins-only export by its address: the API's refusal, in its words
    page.goto(f"{workers.url}/console/#/exports/{closed['id']}")
    page.get_by_role("alert").get_by_text(
        "Connection \"Admins' store\" is for admins only; a Contributor may not see exports that use it.").wait_for()

    # a contributor may run the shared export from the list
    page.goto(f"{workers.url}/console/#/exports")
    page.get_by_role("button", name="Run Shared export now").click()
    page.wait_for_selector("h1:has-text('Export: Shared export')")
    page.locator("#run-list tbody tr[data-run-id]").first.wait_for()
    (run,) = call("export_runs", "GET", "", route_params={"id": shared["id"]}, headers=CONTRIBUTOR)[1]["runs"]
    assert not unlabelled_controls(page)
    wait_for_run(run["runId"])  # before the segment goes away with the test


def tab_to(page, selector: str, limit: int = 80) -> None:
    """Press Tab until the focused element matches ``selector``: it can be reached by keyboard."""
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} cannot be reached with Tab")


def test_a_connection_is_added_and_removed_with_the_keyboard_alone(page, workers, services):
    open_console(page, workers)
    page.locator("body").focus()
    tab_to(page, "a[data-nav=connections]")
    page.keyboard.press("Enter")
    page.get_by_text("No connections yet").wait_for()
    assert page.evaluate("document.activeElement.tagName") == "H1"  # focus follows the view
    tab_to(page, "#conn-name")
    page.keyboard.type("Keyboard store")
    tab_to(page, "#conn-admins-only")
    page.keyboard.press("ArrowDown")  # radio group: admins and contributors
    tab_to(page, "#conn-key")
    page.keyboard.type(TEST_API_KEY)
    tab_to(page, "#conn-consent")
    page.keyboard.press("Space")
    tab_to(page, "#conn-connect")
    page.keyboard.press("Enter")
    page.get_by_text("Connected: Omnisend accepted the API key.").wait_for()
    assert page.evaluate("document.activeElement.id") == "conn-save"  # Save is next, and has the focus
    page.keyboard.press("Enter")
    page.get_by_text('Connection "Keyboard store" saved.', exact=False).wait_for()
    (conn,) = services.connections.list()
    assert conn.display_name == "Keyboard store" and conn.allow_contributors

    page.locator("#connection-list").get_by_text("Keyboard store").wait_for()
    page.locator("body").focus()
    tab_to(page, "button[aria-label='Remove connection Keyboard store']")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.textContent") == "Yes, remove Keyboard store"
    page.keyboard.press("Enter")
    page.get_by_text("No connections yet").wait_for()
    assert services.connections.list() == []


def test_safety_thresholds_are_set_in_the_form_and_a_held_run_is_sent_with_run_anyway(page, workers, sandbox,
                                                                                       segment, services):
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment, "ci", "VIPCustomers", name="Guarded")
    open_console(page, workers)
    page.goto(f"{workers.url}/console#/exports/{export['id']}")
    page.wait_for_selector("h1:has-text('Export: Guarded')")
    removal = page.get_by_label("Most members that may leave in one run (%)")
    rejected = page.get_by_label("Most rows that may be rejected in one run (%)")
    assert removal.input_value() == "50" and rejected.input_value() == "50"
    rejected.fill("101")
    page.get_by_role("button", name="Save").click()
    page.locator("#export-form [role=alert]").get_by_text("maxRejectedPercent: must be 0 to 100").wait_for()
    assert rejected.get_attribute("aria-invalid") == "true"
    rejected.fill("1")  # the segment's 12 invalid emails are 2% of its rows
    removal.fill("30")
    page.get_by_role("button", name="Save").click()
    page.get_by_text('Export "Guarded" saved.', exact=False).wait_for()
    saved = services.exports.get(export["id"])
    assert (saved.max_removal_percent, saved.max_rejected_percent) == (30, 1)

    page.get_by_role("button", name="Run now").click()
    held = page.locator("#run-list tbody tr[data-status=failed]").first
    held.wait_for()
    page.locator("#run-list .run-error").get_by_text("more than the export's maxRejectedPercent (1%)",
                                                     exact=False).wait_for()
    assert sandbox.contacts(TEST_BRAND) == []
    assert not unlabelled_controls(page)
    held.get_by_role("button", name="Run anyway").click()
    page.locator("#run-list tbody tr[data-run-id]").first.and_(
        page.locator("tr[data-status=partiallySucceeded]")).wait_for(timeout=45_000)
    runs = services.runs.list(export["id"])
    assert [r.status.value for r in runs] == ["partiallySucceeded", "failed"] and runs[0].confirm
    assert len(sandbox.contacts(TEST_BRAND)) == runs[0].counts.confirmed > 0
    assert page.get_by_role("button", name="Run anyway").count() == 0  # only the newest run, when held


def test_a_connection_is_edited_and_its_key_replaced_after_omnisend_accepts_it(page, workers, sandbox, services):
    new_key = "sandbox-rotated-key-9876543210"
    sandbox.add_api_key(new_key, TEST_BRAND)
    conn = create_connection(TEST_API_KEY, name="Old name")
    open_console(page, workers)
    page.get_by_role("link", name="Connections").click()
    page.get_by_role("button", name="Edit connection Old name").click()
    form = page.locator("#connection-edit-form")
    assert form.get_by_label("New Omnisend API key (optional)").input_value() == ""  # write-only: never shown
    form.get_by_label("Display name").fill("EU store")
    form.get_by_label("Admins and contributors").check()
    form.get_by_label("New Omnisend API key (optional)").fill("wrong-key-123")
    form.get_by_role("button", name="Save changes").click()
    form.locator("[role=alert]").get_by_text("apiKey: Omnisend rejected this API key").wait_for()
    assert form.get_by_label("New Omnisend API key (optional)").input_value() == ""  # not kept in the page
    assert services.connections.get(conn["id"]).display_name == "Old name"  # nothing was saved
    form.get_by_label("New Omnisend API key (optional)").fill(new_key)
    form.get_by_role("button", name="Save changes").click()
    page.get_by_text("Omnisend accepted the new API key", exact=False).wait_for()
    stored = services.connections.get(conn["id"])
    assert stored.display_name == "EU store" and stored.allow_contributors
    assert services.secrets.get(stored.secret_name) == new_key and new_key not in page.content()
    page.locator("#connection-list tbody tr").get_by_text("EU store").wait_for()
    assert not unlabelled_controls(page)
