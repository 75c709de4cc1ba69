"""A worker process killed mid-run loses nothing: another worker finishes the run with exact counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from devtools.sample_segment import generate_profiles, write_segment_refresh
from tests.apphelpers import create_connection, create_export, first_valid_rows, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND

ROOT = Path(__file__).resolve().parent.parent


def spawn_worker(app_env: dict, secrets: dict) -> subprocess.Popen:
    env = {**os.environ, **app_env, "WORKER_SECRETS": json.dumps(secrets), "WORKER_LEASE_SECONDS": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.worker_process"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_killing_a_worker_process_mid_run_loses_nothing(services, sandbox, segment_container, app_env):
    profiles = list(generate_profiles(6000, seed=21, invalid_share=0.01, duplicate_share=0.005))
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=profiles,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5), partitions=2)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    sandbox.faults.latency_seconds = 0.03  # slow enough that the kill lands mid-run
    secrets = {f"omnisend-connection-{conn['id']}": TEST_API_KEY}
    run_id = start_run(export["id"])["runId"]

    first = spawn_worker(app_env, secrets)
    try:
        deadline = time.monotonic() + 60
        while services.runs.get(run_id).counts.batches_done < 15:
            assert time.monotonic() < deadline, "the first worker made no progress"
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # no chance to clean up: in-flight messages are abandoned
        first.wait()
    killed_at = services.runs.get(run_id)
    assert not killed_at.status.is_final and killed_at.counts.batches_done < killed_at.counts.batches

    second = spawn_worker(app_env, secrets)
    try:
        run = wait_for_run(run_id, timeout=120)
    finally:
        os.killpg(second.pid, signal.SIGKILL)
        second.wait()

    valid = first_valid_rows(profiles)
    stored = [c["email"] for c in sandbox.contacts(TEST_BRAND)]
    c = run["counts"]
    assert run["status"] == "partiallySucceeded"  # the invalid rows only
    assert c["failed"] == 0 and c["confirmed"] == len(valid) == len(set(stored)) == len(stored)
    assert c["read"] == 6000 == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]
    assert c["batchesDone"] == c["batches"]
