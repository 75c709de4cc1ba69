"""A 20,000-contact export under each of the sandbox's fault modes, and under all of them at once.

After every run: each valid contact that did not fail is in Omnisend exactly as mapped and only once,
the run's counts add up, and every row that did not land is in the run's report with its reason.
Transient faults (429 bursts, 500s, answers slower than the client's timeout, dropped connections)
must end with every contact confirmed; permanent ones (batches Omnisend stops, items it refuses)
must fail exactly the contacts they hit, and the report must name exactly those.
"""

from __future__ import annotations

import contextlib
import csv
import io
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from devtools.omnisend_sandbox import Faults, SandboxServer
from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.devhost.local_runner import LocalHost
from exporter.domain import email_key
from exporter.planning.mapping import is_valid_email
from tests.apphelpers import call, create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND
from tests.test_end_to_end import FIELDS, expected_contacts

ROWS = 20_000
CLIENT_TIMEOUT = 1  # seconds: OMNISEND_TIMEOUT_SECONDS of the app under test
SEGMENT = "Faulty"
FOLDER = "ci"
STOPPED = "batch stopped by Omnisend"
REFUSED = "rejected by Omnisend (400)"


@pytest.fixture(scope="module")
def profiles():
    return list(generate_profiles(ROWS, seed=42, invalid_share=0.01, duplicate_share=0.005))


@pytest.fixture(scope="module")
def fault_segment(azurite_storage, profiles):
    """One 20,000-row refresh in two partitions, shared (read only) by every test of the module."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite_storage)
    container = service.create_container(f"faults{time.time_ns()}")
    write_segment_refresh(container, folder=FOLDER, segment=SEGMENT, profiles=profiles,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5), partitions=2)
    yield container
    container.delete_container()


@pytest.fixture
def sandbox():
    """Rate limits that never bind (the 429 test injects its own 429s)."""
    server = SandboxServer(api_keys={TEST_API_KEY: TEST_BRAND}, rate_limit=100_000, tags_rate_limit=100_000,
                           batch_delay_seconds=0.01, faults=Faults(seed=4))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app_env(app_env):
    return {**app_env, "OMNISEND_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT), "OMNISEND_RATE_LIMIT": "100000",
            "OMNISEND_TAGS_RATE_LIMIT": "100000"}


@pytest.fixture(autouse=True)
def fast_retries(services):
    services.backoff = lambda attempt: 0.1


class Bursts:
    """``count`` bursts of 429s (with retryAfter, like real ones): ``size`` requests in a row answered
    429, one burst each time Omnisend has taken another ``every`` batches. Tied to the run's progress,
    not to the clock, so every burst lands mid-run however fast the machine is."""

    def __init__(self, sandbox, size: int, count: int, every: int):
        self.sandbox, self.size, self.count, self.every = sandbox, size, count, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.bursts = 0

    def _run(self):
        faults = self.sandbox.faults
        while self.bursts < self.count and not self.stop.wait(0.02):
            if self.sandbox.stats(TEST_BRAND)["batchesCreated"] >= self.every * (self.bursts + 1):
                faults.force_status(429, count=self.size)
                self.bursts += 1
                while faults.forced_pending and not self.stop.wait(0.02):
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def export_under_faults(services, app_env, container, faults_on=lambda: None, bursts: Bursts | None = None) -> dict:
    """Export the segment with 8 workers; the faults are turned on once the connection and export exist."""
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], container.container_name, FOLDER, SEGMENT)
    faults_on()
    with LocalHost(services.clients, port=0, batch_workers=8, run_workers=1, timer=False, idle_sleep=0.5,
                   env=app_env), (bursts or contextlib.nullcontext()):
        return wait_for_run(start_run(export["id"])["runId"], timeout=300)


def report(run_id: str) -> list[dict]:
    status, _, res = call("run_rejects", "GET", "", route_params={"id": run_id})
    assert status == 200
    return list(csv.DictReader(io.StringIO(res.get_body().decode())))


def planned_batches(profiles) -> list[list[str]]:
    """The valid, first-seen emails in row order, cut in batches of 100, as the planner packs them
    (the sample contacts are small enough that no batch is cut short by the queue message size)."""
    emails, seen = [], set()
    for p in profiles:
        email = p["PrimaryEmail"].strip()
        if is_valid_email(email) and email_key(email) not in seen:
            seen.add(email_key(email))
            emails.append(email)
    return [emails[i:i + 100] for i in range(0, len(emails), 100)]


def expected_failures(profiles, stop_after: int | None = None, item_error_rate: float = 0.0) -> dict[str, str]:
    """Email key -> reason, for the contacts a stopping batch never reached and the ones Omnisend refuses."""
    failed = {}
    for batch in planned_batches(profiles):
        for position, email in enumerate(batch):
            if stop_after is not None and position >= stop_after:
                failed[email_key(email)] = STOPPED
            elif Faults.item_fails(email, item_error_rate):
                failed[email_key(email)] = REFUSED
    return failed


def check_run(run: dict, profiles, sandbox, failed: dict[str, str] | None = None) -> None:
    """The run's accounting, its report and Omnisend's contacts agree; ``failed``: email key -> reason."""
    failed = failed or {}
    c = run["counts"]
    expected = expected_contacts(profiles)
    assert run["status"] == "partiallySucceeded", run  # the segment's invalid rows, at least
    assert c["read"] == ROWS
    assert c["read"] == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"], c
    assert c["batchesDone"] == c["batches"] == len(planned_batches(profiles))
    assert c["skipped"] == 0
    want_reasons: dict[str, int] = {}
    for reason in failed.values():
        want_reasons[reason] = want_reasons.get(reason, 0) + 1
    assert c["failedByReason"] == want_reasons
    assert c["failed"] == len(failed) and c["confirmed"] == len(expected) - len(failed)

    # Omnisend holds exactly the contacts that did not fail, once each, as mapped
    stored = sandbox.contacts(TEST_BRAND)
    emails = [s["email"] for s in stored]
    assert len(emails) == len(set(emails)), "a contact appears twice"
    assert set(emails) == set(expected) - set(failed)
    for contact in stored:
        want = expected[contact["email"]]
        got = {k: contact.get(k) for k in (*FIELDS, "country", "countryCode") if contact.get(k) not in (None, "")}
        if "country" in want and "countryCode" not in want:
            got.pop("countryCode", None)  # Omnisend derives a code from a country name; we sent the name
        assert got == want, contact["email"]
        assert contact["identifiers"][0]["channels"]["email"]["status"] == "nonSubscribed"
    assert sandbox.stats(TEST_BRAND)["welcomeMessagesSent"] == 0

    # every row that did not land is in the report once, with its reason and where it came from
    rows = report(run["runId"])
    upload = [r for r in rows if r["stage"] == "upload"]
    assert len(upload) == len(failed)
    assert {email_key(r["email"]): r["reason"] for r in upload} == failed
    assert all(r["detail"] and r["partition"].endswith(".csv") and int(r["row"]) >= 1 for r in upload)
    planning = [r for r in rows if r["stage"] == "planning"]
    assert len(planning) == c["rejected"] + c["duplicates"] and all(r["reason"] for r in planning)
    assert set(c["rejectedByReason"]) <= {"invalid email", "missing email"}


def test_429_bursts(services, sandbox, app_env, fault_segment, profiles):
    sandbox.faults.retry_after_seconds = 1
    bursts = Bursts(sandbox, size=25, count=4, every=35)  # 25 requests in a row answered 429, 4 times
    run = export_under_faults(services, app_env, fault_segment, bursts=bursts)
    assert bursts.bursts == 4
    check_run(run, profiles, sandbox)  # a 429 never counts as a failed attempt: all were confirmed
    stats = sandbox.stats(TEST_BRAND)
    assert stats["byStatus"]["429"] == 100 and stats["byPath"]["POST /batches"] > run["counts"]["batches"]


def test_share_of_500s(services, sandbox, app_env, fault_segment, profiles):
    def faults_on():
        sandbox.faults.error_rate = 0.15

    run = export_under_faults(services, app_env, fault_segment, faults_on)
    check_run(run, profiles, sandbox)
    assert sandbox.stats(TEST_BRAND)["byStatus"]["500"] > 30


def test_answers_slower_than_the_client_timeout(services, sandbox, app_env, fault_segment, profiles):
    def faults_on():
        sandbox.faults.slow_rate, sandbox.faults.slow_seconds = 0.08, CLIENT_TIMEOUT + 0.5

    run = export_under_faults(services, app_env, fault_segment, faults_on)
    check_run(run, profiles, sandbox)
    stats = sandbox.stats(TEST_BRAND)
    assert stats["faultsInjected"] > 10
    # a batch whose POST timed out was sent again: Omnisend ran it twice, and nothing is stored twice
    assert stats["batchesCreated"] > run["counts"]["batches"]


def test_dropped_connections_before_and_after_processing(services, sandbox, app_env, fault_segment, profiles):
    def faults_on():
        sandbox.faults.drop_rate, sandbox.faults.drop_after_processing = 0.12, 0.5

    run = export_under_faults(services, app_env, fault_segment, faults_on)
    check_run(run, profiles, sandbox)
    stats = sandbox.stats(TEST_BRAND)
    assert stats["faultsInjected"] > 30 and stats["batchesCreated"] > run["counts"]["batches"]


def test_batches_that_stop(services, sandbox, app_env, fault_segment, profiles):
    def faults_on():
        sandbox.faults.stop_batches_after = 70

    run = export_under_faults(services, app_env, fault_segment, faults_on)
    failed = expected_failures(profiles, stop_after=70)
    assert len(failed) > 5000
    check_run(run, profiles, sandbox, failed)


def test_items_that_fail_validation(services, sandbox, app_env, fault_segment, profiles):
    def faults_on():
        sandbox.faults.item_error_rate = 0.03

    run = export_under_faults(services, app_env, fault_segment, faults_on)
    failed = expected_failures(profiles, item_error_rate=0.03)
    assert 400 < len(failed) < 800
    check_run(run, profiles, sandbox, failed)
    refused = [r for r in report(run["runId"]) if r["reason"] == REFUSED]
    assert all("identifiers[0].id" in r["detail"] and "not accepted" in r["detail"] for r in refused)


def test_all_faults_at_once(services, sandbox, app_env, fault_segment, profiles):
    f = sandbox.faults

    def faults_on():
        f.error_rate = f.drop_rate = f.slow_rate = 0.05
        f.drop_after_processing, f.slow_seconds = 0.5, CLIENT_TIMEOUT + 0.5
        f.stop_batches_after, f.item_error_rate = 90, 0.03

    bursts = Bursts(sandbox, size=25, count=3, every=40)
    run = export_under_faults(services, app_env, fault_segment, faults_on, bursts)
    failed = expected_failures(profiles, stop_after=90, item_error_rate=0.03)
    assert {STOPPED, REFUSED} == set(failed.values())
    check_run(run, profiles, sandbox, failed)
    stats = sandbox.stats(TEST_BRAND)
    assert stats["byStatus"]["429"] >= 25 and stats["byStatus"]["500"] > 0 and stats["faultsInjected"] > 100
