"""A large run is tagged in waves while it uploads: every member tagged once, in fewer, earlier calls."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.devhost.local_runner import LocalHost
from exporter.domain import BatchKind, Tally
from exporter.lifecycle import settle
from exporter.lifecycle import tag_planning as tags
from tests.apphelpers import create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND

LIMIT, WINDOW = 40, 6  # Omnisend's limits scaled down in time, so that the upload takes a while
ROWS, WAVE = 6000, 5  # 60 contact batches, 12 waves


@pytest.fixture
def sandbox():
    from devtools.omnisend_sandbox import SandboxServer

    server = SandboxServer(api_keys={TEST_API_KEY: TEST_BRAND}, rate_limit=LIMIT, tags_rate_limit=LIMIT,
                           window_seconds=WINDOW, batch_delay_seconds=0.02)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app_env(app_env):
    return {**app_env, "OMNISEND_RATE_LIMIT": str(LIMIT), "OMNISEND_TAGS_RATE_LIMIT": str(LIMIT),
            "OMNISEND_RATE_WINDOW_SECONDS": str(WINDOW)}


def test_tags_are_planned_in_waves_while_contacts_upload(services, sandbox, segment_container, app_env, monkeypatch):
    monkeypatch.setattr(tags, "WAVE_BATCHES", WAVE)
    monkeypatch.setattr(tags, "WAVE_TICK_SECONDS", 1)
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=generate_profiles(ROWS, seed=5, invalid_share=0),
                          when=datetime.now(timezone.utc) - timedelta(minutes=5), partitions=2)
    planned_at_end = []  # the waves' cursor when the run's last tag planning began
    last_planning = tags.plan_remaining_tags

    def plan_tags(svc, run_id):
        planned_at_end.append(svc.tallies.get(run_id).waves)
        return last_planning(svc, run_id)

    monkeypatch.setattr(settle, "plan_remaining_tags", plan_tags)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    with LocalHost(services.clients, port=0, batch_workers=8, run_workers=1, timer=False, idle_sleep=0.2, env=app_env):
        run = wait_for_run(start_run(export["id"])["runId"], timeout=240)
    assert run["status"] == "succeeded" and run["counts"]["confirmed"] == ROWS and run["counts"]["tagged"] == ROWS

    run_id = run["runId"]
    tally = services.tallies.get(run_id)
    tag_batches = sorted(services.batches.list(run_id, kind=BatchKind.TAGS), key=lambda b: b.number)
    numbers = [b.number for b in tag_batches]
    assert numbers == list(range(1, len(numbers) + 1)) == list(range(1, tally.tags_planned + 1))
    assert tally.waves == ROWS // 100 // WAVE and tally.wave_tick >= 1 and tally.tags_numbered == tally.tags_planned
    emails = [e.casefold() for b in tag_batches for e in b.payload.emails]
    assert len(emails) == len(set(emails)) == ROWS  # every member in exactly one tag batch
    # a wave holds 500 emails: two tag batches of 250 each, none wasted on a partial batch
    assert len(tag_batches) == ROWS // 250

    stats = sandbox.stats(TEST_BRAND)
    assert stats["admittedByPath"]["POST /contacts/tags"] == len(tag_batches), stats  # no tag call made twice
    tag = tag_batches[0].payload.tag
    held = sandbox.contacts(TEST_BRAND)
    assert len(held) == ROWS and all(tag in c["tags"] for c in held)

    # the waves overlapped the upload: most tag batches were planned by ticks, before the contacts
    # were all counted (the scaled-down rate limit makes the upload last well over a tick)
    assert len(planned_at_end) == 1 and planned_at_end[0] > 0

    # planning the waves again from the start gives the same tag batches, number for number: what a
    # redelivered tick or a tick racing the last planning enqueues is recognised by its number
    sent = []
    monkeypatch.setattr(services.batch_queue, "send", lambda message, delay_seconds=0: sent.append(message))
    again = tags._plan_waves(services, services.runs.get(run_id), tag, Tally(planned=tally.planned), backlog=None)
    assert again == (tally.waves, tally.tags_planned)
    assert [(m.number, m.emails) for m in sent] == [(b.number, b.payload.emails) for b in tag_batches]
