"""Ambiguous sends (#14 item 3): a POST /batches that went out and was never answered may have landed.

The sandbox answers such a POST late, after it took effect, as a slow real API does. The uploader
sends the batch again, waiting longer for the answer each time, checks the first copy Omnisend
answers, caps the copies, and counts what it could not learn as "outcome unknown", never "not sent".
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from devtools.omnisend_sandbox.server import FaultAction
from exporter.domain.reasons import (
    REASON_OUTCOME_UNKNOWN,
    REASON_OUTCOME_UNKNOWN_NO_ANSWER,
    REASON_OUTCOME_UNKNOWN_SERVER_ERROR,
)
from exporter.upload.outcomes import MAX_UNANSWERED_SENDS
from tests.apphelpers import create_connection, create_export, report_rows, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND
from tests.test_bad_input import MAPPING, people, rows

SEG = "Slow"


@pytest.fixture
def app_env(app_env):
    return {**app_env, "OMNISEND_TIMEOUT_SECONDS": "1"}


def answer_batches_late(sandbox, seconds: float) -> None:
    """Every POST /batches is done at once and answered ``seconds`` later."""
    def on_request(method: str, route: str):
        return FaultAction(delay=seconds, slow=True) if route == "POST /batches" else None

    sandbox.faults.on_request = on_request


def segment(container, count: int, minutes_ago: int = 5) -> None:
    when = (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).strftime("%Y/%m/%d/%H%M")
    container.upload_blob(f"ci/{SEG}/{when}/{SEG}_1.csv", ("CustomerId,FirstName,PrimaryEmail,Country\r\n"
                                                          + rows(*people(1, count))).encode(), overwrite=True)


def run_once(export: dict) -> dict:
    return wait_for_run(start_run(export["id"])["runId"], timeout=90)


def test_a_send_answered_after_the_timeout_is_sent_again_and_the_answered_copy_counts(services, workers, sandbox,
                                                                                      segment_container):
    services.backoff = lambda attempt: 0.2
    segment(segment_container, 5)
    export = create_export(create_connection(TEST_API_KEY)["id"], segment_container.container_name, "ci", SEG,
                           mapping=MAPPING)
    answer_batches_late(sandbox, 1.5)  # later than the 1 s timeout, sooner than the 2 s the next copy waits
    run = run_once(export)
    c = run["counts"]
    assert run["status"] == "succeeded" and c["confirmed"] == 5 and c["failed"] == 0, run
    stats = sandbox.stats(TEST_BRAND)
    assert stats["byPath"]["POST /batches"] == 2 and stats["batchesCreated"] == 2  # one copy, then the answered one
    assert len(sandbox.contacts(TEST_BRAND)) == 5
    # the state recorded them: the same refresh again sends nothing
    sandbox.faults.on_request = lambda method, route: None
    again = run_once(export)
    assert again["counts"]["skipped"] == 5 and again["counts"]["batches"] == 0


def test_a_send_never_answered_is_capped_and_counted_as_outcome_unknown(services, workers, sandbox,
                                                                        segment_container):
    services.backoff = lambda attempt: 0.2
    segment(segment_container, 5)
    export = create_export(create_connection(TEST_API_KEY)["id"], segment_container.container_name, "ci", SEG,
                           mapping=MAPPING)
    answer_batches_late(sandbox, 6)  # later than any wait (at most 4 times the 1 s timeout)
    run = run_once(export)
    c = run["counts"]
    assert run["status"] == "failed" and c["confirmed"] == 0 and c["read"] == c["failed"] == 5, run
    assert c["failedByReason"] == {REASON_OUTCOME_UNKNOWN_NO_ANSWER: 5}
    assert "not sent" not in str(c["failedByReason"]) and "reached" not in run["error"]
    stats = sandbox.stats(TEST_BRAND)
    assert stats["byPath"]["POST /batches"] == MAX_UNANSWERED_SENDS == 4  # capped: not the 6 attempts of before
    assert len(sandbox.contacts(TEST_BRAND)) == 5  # they did land, once each: the outcome was unknown, not "failed"
    report = report_rows(run["runId"])
    assert {r["reason"] for r in report} == {REASON_OUTCOME_UNKNOWN_NO_ANSWER}
    assert all("did not answer 4 of 4 sends" in r["detail"] and f"/runs/{run['runId']}/retry" in r["detail"]
               for r in report)


def test_a_gateway_error_after_omnisend_did_the_work_is_sent_again_and_counted_once(services, workers, sandbox,
                                                                                   segment_container):
    """A 502 to POST /batches may come after the batch was created: the batch goes again (an upsert),
    and the copy Omnisend answers is the one checked; nothing counts as "not sent"."""
    services.backoff = lambda attempt: 0.2
    segment(segment_container, 5)
    export = create_export(create_connection(TEST_API_KEY)["id"], segment_container.container_name, "ci", SEG,
                           mapping=MAPPING)
    sandbox.faults.force_status(502, count=2, route="POST /batches", after_processing=True)
    run = run_once(export)
    c = run["counts"]
    assert run["status"] == "succeeded" and c["confirmed"] == 5 and c["failed"] == 0, run
    stats = sandbox.stats(TEST_BRAND)
    assert stats["batchesCreated"] == 3 and stats["byPath"]["POST /batches"] == 3  # two answered 502, then one
    assert len(sandbox.contacts(TEST_BRAND)) == 5


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_errors_to_every_send_leave_the_outcome_unknown_not_not_sent(services, workers, sandbox,
                                                                           segment_container, status):
    """After MAX_UNANSWERED_SENDS server errors (other than 503) the contacts may be in Omnisend: unknown."""
    services.backoff = lambda attempt: 0.1
    segment(segment_container, 5)
    export = create_export(create_connection(TEST_API_KEY)["id"], segment_container.container_name, "ci", SEG,
                           mapping=MAPPING)
    sandbox.faults.force_status(status, count=10, route="POST /batches")
    run = run_once(export)
    c = run["counts"]
    assert run["status"] == "failed" and c["read"] == c["failed"] == 5, run
    assert c["failedByReason"] == {REASON_OUTCOME_UNKNOWN_SERVER_ERROR: 5}
    assert sandbox.stats(TEST_BRAND)["byPath"]["POST /batches"] == MAX_UNANSWERED_SENDS
    report = report_rows(run["runId"])
    assert all("answered a server error to 4 of 4 sends" in r["detail"] and f"HTTP {status}" in r["detail"]
               for r in report)


def test_a_lost_answer_and_server_errors_together_leave_the_outcome_unknown_saying_both(services, workers, sandbox,
                                                                                       segment_container):
    services.backoff = lambda attempt: 0.1
    segment(segment_container, 5)
    export = create_export(create_connection(TEST_API_KEY)["id"], segment_container.container_name, "ci", SEG,
                           mapping=MAPPING)
    sends = []

    def on_request(method: str, route: str):
        if route != "POST /batches":
            return None
        sends.append(route)
        if len(sends) == 1:
            return FaultAction(delay=3, slow=True)  # done, answered after the 1 s timeout
        return FaultAction(status=502)

    sandbox.faults.on_request = on_request
    run = run_once(export)
    c = run["counts"]
    assert c["failedByReason"] == {REASON_OUTCOME_UNKNOWN: 5}, run
    assert len(sends) == MAX_UNANSWERED_SENDS
    report = report_rows(run["runId"])
    assert all("did not answer 1 and answered a server error to 3 of 4 sends" in r["detail"] for r in report)
