"""Structured logs: one run can be followed by its ids, and no line holds personal data or a key.

Every record the app's loggers (``exporter.*``) write while working on a run carries ``run_id`` and
``export_id`` as attributes (custom dimensions in Application Insights), and ``batch`` while working
on a batch. No record of any logger, at DEBUG, holds an email address of the segment or the API key.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from devtools.sample_segment import generate_profiles, write_segment_refresh
from tests.apphelpers import call, create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY

STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def record_text(record: logging.LogRecord) -> str:
    """Everything a handler could put in a line or a custom dimension."""
    parts = [str(record.msg), record.getMessage(), repr(record.args)]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    parts += [f"{k}={v!r}" for k, v in vars(record).items() if k not in STANDARD_ATTRIBUTES]
    return "\n".join(parts)


def test_run_logs_carry_run_export_and_batch_and_no_personal_data(services, workers, sandbox, segment_container, caplog,
                                                                   monkeypatch):
    services.backoff = lambda attempt: 0.1
    profiles = list(generate_profiles(450, seed=17, invalid_share=0.05, duplicate_share=0.02))
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=profiles,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5), partitions=2)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    # paths that log more than the happy one: a server error (retried), a 429, items Omnisend refuses
    sandbox.faults.force_status(503, count=1, route="POST /batches")
    sandbox.faults.force_status(429, count=1, route="GET /batches/{batchID}/items")
    sandbox.faults.item_error_rate = 0.05

    caplog.set_level(logging.DEBUG)
    run_id = start_run(export["id"])["runId"]
    run = wait_for_run(run_id)
    assert call("run_cancel", "POST", "", route_params={"id": run_id})[0] == 409  # already ended
    caplog.set_level(logging.WARNING)
    records = list(caplog.records)

    assert run["status"] == "partiallySucceeded" and run["counts"]["failed"] > 0  # the refused items
    ours = [r for r in records if r.name == "exporter" or r.name.startswith("exporter.")]
    planning = [r for r in ours if r.threadName.startswith("export-runs")]
    batch_work = [r for r in ours if r.threadName.startswith("export-batches")]
    assert planning and batch_work
    assert any(r.name == "exporter.omnisend.client" for r in batch_work)  # the client's own lines, at DEBUG
    assert any(r.levelno >= logging.WARNING for r in batch_work)  # the 503 was logged
    for r in ours:
        if r.threadName.startswith("export-") or getattr(r, "run_id", None) is not None:
            where = f"{r.name}: {r.getMessage()!r} ({r.threadName})"
            assert getattr(r, "run_id", None) == run_id, where
            assert getattr(r, "export_id", None) == export["id"], where
    for r in batch_work:
        assert isinstance(getattr(r, "batch", None), int), f"{r.name}: {r.getMessage()!r}"
    assert any(getattr(r, "run_id", None) == run_id and r.threadName == "MainThread" for r in ours)  # "run queued"

    emails = {p["PrimaryEmail"].strip() for p in profiles}
    emails = {e for e in emails if "@" in e and not e.startswith("@") and not e.endswith("@")}
    needles = {e.casefold() for e in emails} | {TEST_API_KEY.casefold()}
    assert len(records) > 100
    for r in records:
        text = record_text(r).casefold()
        leaked = [n for n in needles if n in text]
        assert not leaked, f"{r.name} logged {leaked[:3]}: {r.getMessage()[:300]!r}"
