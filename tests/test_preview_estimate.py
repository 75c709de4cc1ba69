"""A preview's estimated duration, checked against the real run that follows it, at scaled-down limits
where the request budget, not the machine, sets the pace."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.domain import parse_iso
from tests.apphelpers import create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND

# 10 requests per 2 s: the pacer admits 9 per 2.5 s, so 2,000 contacts (20 batches, 40 contact
# requests and 8 tag calls) need five windows after the first: about 12.5 s of pacing
LIMIT, WINDOW = 10, 2


@pytest.fixture
def sandbox():
    from devtools.omnisend_sandbox import SandboxServer

    server = SandboxServer(api_keys={TEST_API_KEY: TEST_BRAND}, rate_limit=LIMIT, window_seconds=WINDOW,
                           tags_rate_limit=6000, batch_delay_seconds=0.02, tags_delay_seconds=0.01)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app_env(app_env):
    return {**app_env, "OMNISEND_RATE_LIMIT": str(LIMIT), "OMNISEND_RATE_WINDOW_SECONDS": str(WINDOW)}


def test_the_run_after_a_preview_takes_within_a_quarter_of_its_estimate(services, workers, sandbox,
                                                                         segment_container):
    write_segment_refresh(segment_container, folder="ci", segment="Timed",
                          profiles=generate_profiles(2000, seed=8, invalid_share=0, duplicate_share=0),
                          when=datetime.now(timezone.utc) - timedelta(minutes=5), partitions=2)
    export = create_export(create_connection(TEST_API_KEY)["id"], segment_container.container_name, "ci", "Timed")
    preview = wait_for_run(start_run(export["id"], dryRun="true")["runId"])
    estimate = preview["preview"]["estimate"]
    assert (estimate["contactBatches"], estimate["contactRequests"], estimate["tagCalls"]) == (20, 40, 8)
    requests_before = sandbox.stats(TEST_BRAND)["requests"]

    run = wait_for_run(start_run(export["id"])["runId"], timeout=120)
    took = (parse_iso(run["finishedAt"]) - parse_iso(run["createdAt"])).total_seconds()
    assert run["status"] == "succeeded" and run["counts"]["confirmed"] == 2000
    assert abs(took - estimate["seconds"]) <= 0.25 * estimate["seconds"], (took, estimate)
    # the requests the estimate counted are the ones the run made (a check of a batch still running at
    # Omnisend would add one)
    made = sandbox.stats(TEST_BRAND)["requests"] - requests_before
    assert estimate["contactRequests"] + estimate["tagCalls"] <= made <= estimate["contactRequests"] + \
        estimate["tagCalls"] + 4, made
