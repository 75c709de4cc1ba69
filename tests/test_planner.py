"""The planner: batches that fit Omnisend and the queue, and nothing sent for a segment that turns out bad."""

from __future__ import annotations

import gzip
import io
import json
from datetime import datetime, timedelta, timezone

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter import config
from exporter.domain import Run, RunCounts, RunStatus, utcnow
from exporter.planning.batching import MAX_BATCH_CONTACTS, MAX_MESSAGE_CHARS, BatchBuilder
from tests.apphelpers import call, create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND

FOLDER_TIME = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y/%m/%d/%H%M")


def _run() -> Run:
    return Run(id="r1", export_id="e1", connection_id="c1", trigger="manual", status=RunStatus.PLANNING,
               counts=RunCounts(), created_at=utcnow())


def test_batches_hold_at_most_100_contacts_and_fit_a_queue_message():
    spool = io.StringIO()
    builder = BatchBuilder(_run(), spool)
    small = json.dumps({"identifiers": [{"type": "email", "id": "a@example.com"}]})
    big = json.dumps({"identifiers": [{"type": "email", "id": "b@example.com"}], "address": "x" * 1900})
    for i in range(250):
        builder.add(small, "Seg_1.csv", i + 1)
    for i in range(100):
        builder.add(big, "Seg_2.csv", i + 1)
    builder.flush()
    messages = [json.loads(line) for line in spool.getvalue().splitlines()]
    assert [len(m["contacts"]) for m in messages[:2]] == [100, 100]
    assert len(messages[2]["parts"]) == 2  # batches keep filling across partitions
    assert len(messages) > 5  # the large contacts were split by size, not by count
    assert all(len(line) <= MAX_MESSAGE_CHARS for line in spool.getvalue().splitlines())
    assert all(len(m["contacts"]) <= MAX_BATCH_CONTACTS for m in messages)
    assert sum(len(m["contacts"]) for m in messages) == 350 == builder.contacts
    assert [m["batch"] for m in messages] == list(range(1, len(messages) + 1))
    # every contact keeps its source row, for the report
    big_refs = [tuple(r) for m in messages for r in m["refs"] if m["parts"][r[0]] == "Seg_2.csv"]
    assert sorted(row for _, row in big_refs) == list(range(1, 101))


def test_contacts_with_long_values_travel_through_real_queue_messages(services, workers, sandbox, segment_container):
    profiles = list(generate_profiles(300, seed=5, invalid_share=0))
    for p in profiles:
        p["StreetAddress"] = "Long street name " * 110  # ~1.9 KB each: 100 of them would not fit a message
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=profiles,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))
    conn = create_connection(TEST_API_KEY)
    run = wait_for_run(start_run(create_export(conn["id"], segment_container.container_name, "ci", "Seg")["id"])["runId"])
    assert run["status"] == "succeeded" and run["counts"]["confirmed"] == 300 and run["counts"]["batches"] > 3


def test_plain_gzipped_csv_with_a_header_and_spaced_column_names(services, workers, sandbox, segment_container):
    text = "Customer Id,E-mail Address,Given Name,Home City\r\n" + "".join(
        f'{i},"person{i}@example.com","Name, {i}",City {i % 7}\r\n' for i in range(1, 501))
    segment_container.upload_blob(f"plain/Members/{FOLDER_TIME}/Members_1.csv.gz", gzip.compress(text.encode()))
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "plain", "Members",
                           mapping={"email": "E-mail Address", "firstName": "Given Name", "city": "Home City"})
    run = wait_for_run(start_run(export["id"])["runId"])
    assert run["status"] == "succeeded" and run["counts"]["confirmed"] == 500
    stored = {c["email"]: c for c in sandbox.contacts(TEST_BRAND)}
    assert stored["person7@example.com"]["firstName"] == "Name, 7" and stored["person7@example.com"]["city"] == "City 0"


def _nothing_sent(services, sandbox):
    assert sandbox.stats(TEST_BRAND)["batchesCreated"] == 0
    assert services.clients.queue(config.QUEUE_BATCHES).peek_messages(max_messages=1) == []


def test_a_malformed_partition_fails_the_run_before_anything_is_sent(services, workers, sandbox, segment_container):
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=generate_profiles(300, seed=2),
                          when=datetime.now(timezone.utc) - timedelta(minutes=5), partitions=2)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    # the platform rewrites the second partition and leaves a quote open at the end of it
    name = next(b.name for b in segment_container.list_blobs("ci/Seg/") if b.name.endswith("_2.csv"))
    data = segment_container.download_blob(name).readall() + b'"9","unterminated@example.com","Ann\r\n'
    segment_container.upload_blob(name, data, overwrite=True)
    run = wait_for_run(start_run(export["id"])["runId"])
    assert run["status"] == "failed" and "Seg_2.csv" in run["error"] and "Nothing was sent" in run["error"]
    _nothing_sent(services, sandbox)


def test_a_refresh_without_a_mapped_column_fails_before_anything_is_sent(services, workers, sandbox, segment_container):
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=generate_profiles(50, seed=2),
                          when=datetime.now(timezone.utc) - timedelta(minutes=30))
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    # the next refresh renamed the email column
    renamed = [{("Email" if k == "PrimaryEmail" else k): v for k, v in p.items()} for p in generate_profiles(50, seed=3)]
    columns = tuple("Email" if c == "PrimaryEmail" else c for c in renamed[0])
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=renamed, columns=columns,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))
    run = wait_for_run(start_run(export["id"])["runId"])
    assert run["status"] == "failed" and "PrimaryEmail" in run["error"] and "Email" in run["error"]
    _nothing_sent(services, sandbox)


def test_no_refresh_yet_is_said_on_save_and_on_run(services, sandbox, segment_container):
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Empty")
    assert export["notices"] and "no refresh" in export["notices"][0]
    status, body, _ = call("export_runs", "POST", "", route_params={"id": export["id"]})
    assert status == 409 and body["title"] == "Nothing to export"


def test_a_second_run_while_one_is_active_is_refused_with_its_id(services, sandbox, segment_container):
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=generate_profiles(10),
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    first = start_run(export["id"])  # no workers: it stays queued
    status, body, _ = call("export_runs", "POST", "", route_params={"id": export["id"]})
    assert status == 409 and body["activeRunId"] == first["runId"]
