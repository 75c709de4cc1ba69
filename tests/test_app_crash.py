"""A crash of the app process mid-run loses nothing (#14 item 6).

``python -m exporter serve`` (the local app: HTTP API, queue workers) is SIGKILLed while batches are
in flight and started again. Its development key store is on disk, so the restarted app can still
send with the connection's key; the messages the dead app had taken come back after their lease, as
under the Functions host. The run ends with every valid contact confirmed once and counts that add up.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.devhost.api_client import ApiClient
from tests.apphelpers import first_valid_rows, wait_for_run
from tests.conftest import ROOT, TEST_API_KEY, TEST_BRAND

ROWS = 6000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app_env: dict, keys_file, port: int) -> subprocess.Popen:
    env = {**os.environ, **app_env, "EXPORTER_DEV_SECRETS_FILE": str(keys_file)}
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--port", str(port), "--no-timer",
                             "--workers", "4", "--lease-seconds", "3"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()
    assert line.startswith("Serving the exporter API on"), line + proc.stderr.read()
    return proc


def kill(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up: messages it had taken are abandoned
    proc.wait()
    return proc.stderr.read()


def test_killing_the_app_mid_run_loses_nothing(services, sandbox, segment_container, app_env, tmp_path):
    profiles = list(generate_profiles(ROWS, seed=23, invalid_share=0.01, duplicate_share=0.005))
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=profiles,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5), partitions=2)
    sandbox.faults.latency_seconds = 0.03  # slow enough that the kill lands mid-run
    keys_file, port = tmp_path / "dev-secrets.json", free_port()
    app = serve(app_env, keys_file, port)
    try:
        api = ApiClient(f"http://127.0.0.1:{port}/api")
        conn = api.request("POST", "connections", {"displayName": "Crash store", "apiKey": TEST_API_KEY,
                                                   "dataPrivacyConsent": True})
        export = api.request("POST", "exports", {
            "name": "Crash", "connectionId": conn["id"], "mapping": {"email": "PrimaryEmail", "firstName": "FirstName"},
            "source": {"container": segment_container.container_name, "folder": "ci", "segment": "Seg"}})
        run_id = api.request("POST", f"exports/{export['id']}/runs")["runId"]
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600  # the key is on disk, for its owner only
        deadline = time.monotonic() + 60
        while services.runs.get(run_id).counts.batches_done < 10:
            assert time.monotonic() < deadline, "the app made no progress"
            time.sleep(0.1)
    finally:
        kill(app)
    killed_at = services.runs.get(run_id)
    assert not killed_at.status.is_final and killed_at.counts.batches_done < killed_at.counts.batches

    app = serve(app_env, keys_file, port)
    try:
        run = wait_for_run(run_id, timeout=120)
    finally:
        errors = kill(app)
    assert "cannot send" not in errors  # the restarted app found the connection's key

    valid = first_valid_rows(profiles)
    stored = [c["email"] for c in sandbox.contacts(TEST_BRAND)]
    c = run["counts"]
    assert run["status"] == "partiallySucceeded"  # the invalid rows only
    assert c["failed"] == 0 and c["confirmed"] == len(valid) == len(set(stored)) == len(stored), c
    assert c["read"] == ROWS == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"]
    assert c["batchesDone"] == c["batches"]
