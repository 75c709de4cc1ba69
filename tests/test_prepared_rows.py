"""The planner's first stage gives the same rows, in the same order, in this process and in a second one."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
from datetime import datetime, timedelta, timezone

import pytest

from devtools.sample_segment import COLUMNS, generate_profiles, write_segment_refresh
from exporter.domain import Mapping
from exporter.domain.reasons import REASON_MALFORMED_ROW, REASON_NOT_UTF8
from exporter.planning import prepared_rows as stage
from exporter.planning.mapping import ContactMapper, ContactOptions
from exporter.segments import SegmentFormatError, find_latest_refresh, load_schema

SEG = "Seg"
MAPPING = Mapping(email="PrimaryEmail", first_name="FirstName", last_name="LastName", city="City",
                  country="Country", postal_code="PostCode")
DATED_AT = "2026-11-28T12:00:00Z"


def _settings(services, mode: str):
    return dataclasses.replace(services.settings, planner_reader_process=mode)


def _write(container, rows: int, partitions: int) -> None:
    write_segment_refresh(container, folder="ci", segment=SEG, when=datetime.now(timezone.utc) - timedelta(minutes=5),
                          profiles=generate_profiles(rows, seed=11, invalid_share=0.02, duplicate_share=0.02),
                          partitions=partitions)


def _source(container):
    refresh = find_latest_refresh(container, "ci", SEG)
    schema = load_schema(container, "ci", SEG, refresh)
    return refresh, schema, ContactMapper(schema.columns, MAPPING, ContactOptions())


def _append_bad_rows(container, refresh) -> None:
    """A row of the wrong width and one that is not UTF-8, at the end of the last partition."""
    blob = container.get_blob_client(refresh.partitions[-1])
    data = blob.download_blob().readall()
    width = len(COLUMNS)
    data += b'"x","too few"\r\n' + b",".join([b'"M\xfcller"'] + [b'"v"'] * (width - 1)) + b"\r\n"
    blob.upload_blob(data, overwrite=True)


def test_a_second_process_gives_the_same_rows_in_the_same_order(services, segment_container):
    _write(segment_container, 12_000, partitions=3)
    refresh, schema, mapper = _source(segment_container)
    _append_bad_rows(segment_container, refresh)
    refresh, schema, mapper = _source(segment_container)
    here = list(stage.prepared_rows(_settings(services, "off"), segment_container, refresh, schema, mapper, DATED_AT))
    there = list(stage.prepared_rows(_settings(services, "on"), segment_container, refresh, schema, mapper, DATED_AT))
    assert len(here) == 12_002 and there == here
    rejected = [r for r in here if type(r) is stage.RejectedRow]
    contacts = [r for r in here if type(r) is not stage.RejectedRow]
    assert len({r[1] for r in contacts} | {r.partition for r in rejected}) == 3  # rows of every partition
    reasons = [r.reason for r in rejected]
    assert reasons.count(REASON_MALFORMED_ROW) == 1 and reasons.count(REASON_NOT_UTF8) == 1
    assert len(reasons) > 100  # the generated invalid emails are rejected in both, with the mapping's reasons
    assert all(type(r) is tuple and len(r) == 6 for r in contacts)  # (key, partition, number, email, fp, text)
    assert len({r[0] for r in contacts}) < len(contacts)  # duplicates are left to the planner


def test_an_unreadable_partition_raises_the_same_error_after_the_same_rows(services, segment_container):
    _write(segment_container, 5_000, partitions=2)
    refresh, schema, mapper = _source(segment_container)
    blob = segment_container.get_blob_client(refresh.partitions[1])
    blob.upload_blob(blob.download_blob().readall() + b'"1","unclosed,"a@example.com"\r\n', overwrite=True)
    refresh, schema, mapper = _source(segment_container)

    def read(mode):
        rows = []
        with pytest.raises(SegmentFormatError) as info:
            for row in stage.prepared_rows(_settings(services, mode), segment_container, refresh, schema, mapper, DATED_AT):
                rows.append(row)
        return rows, str(info.value)

    here, there = read("off"), read("on")
    assert there == here
    assert len(here[0]) == 5_000 and "malformed CSV" in here[1]


def test_the_reader_process_stops_when_the_planner_stops_early(services, segment_container):
    _write(segment_container, 20_000, partitions=1)
    refresh, schema, mapper = _source(segment_container)

    def readers():
        return [p for p in multiprocessing.active_children() if p.name == "segment-reader"]

    rows = stage.prepared_rows(_settings(services, "on"), segment_container, refresh, schema, mapper, DATED_AT)
    assert next(rows)[2] == 1  # a contact's number
    (reader,) = readers()  # still reading: 20,000 rows are more than the queue holds
    rows.close()  # the planner closes its source when planning ends early
    assert not reader.is_alive() and readers() == []


def test_a_reader_process_that_dies_mid_read_is_an_error_not_an_early_end(services, segment_container, monkeypatch):
    monkeypatch.setattr(stage, "POLL_SECONDS", 0.5)
    _write(segment_container, 60_000, partitions=1)  # 30 chunks: more than the queue holds, so it is still reading
    refresh, schema, mapper = _source(segment_container)
    rows = stage.prepared_rows(_settings(services, "on"), segment_container, refresh, schema, mapper, DATED_AT)
    assert next(rows)[2] == 1
    (reader,) = [p for p in multiprocessing.active_children() if p.name == "segment-reader"]
    os.kill(reader.pid, signal.SIGKILL)  # as the OOM killer would
    got = 1
    with pytest.raises(stage.ReaderProcessError, match="ended unexpectedly"):
        for _ in rows:
            got += 1
    assert got < 60_000  # the rows it had handed over, then the error: never a short segment taken as whole


def test_auto_uses_a_second_process_only_for_a_large_refresh(services, segment_container):
    _write(segment_container, 100, partitions=1)
    refresh, _, _ = _source(segment_container)
    assert 0 < refresh.size < stage.PROCESS_MIN_BYTES
    auto = _settings(services, "auto")
    assert not stage.use_process(auto, refresh)
    assert stage.use_process(auto, dataclasses.replace(refresh, size=stage.PROCESS_MIN_BYTES)) == (
        (stage.os.cpu_count() or 1) >= 2)
    assert stage.use_process(_settings(services, "on"), refresh)
    assert not stage.use_process(_settings(services, "off"), dataclasses.replace(refresh, size=1 << 40))
