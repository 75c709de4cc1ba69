"""``./scripts/demo.sh --keep``: after its two runs the stack stays up, the console URL it prints answers
and the two runs are there; Ctrl+C (SIGINT) then stops the app, the sandbox and the Azurite it started.
On an Azurite of its own (``AZURITE_PORT_BASE``), next to this suite's, on a clean data folder."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import requests

from devtools import azurite
from exporter.api.access import DEV_ADMIN_PRINCIPAL
from tests.conftest import ROOT
from tests.test_readme_local import port_open, skip_if_bootstrap_would_install_into_a_shared_folder

URL_LINE = re.compile(r"^  console: (http://127\.0\.0\.1:\d+/api)/console/#/exports/(\w+)$")


def test_demo_keep_leaves_the_stack_running_with_the_two_runs_in_the_console_then_stops_it():
    skip_if_bootstrap_would_install_into_a_shared_folder()
    base = azurite.PORT_BASE + 60
    assert not any(port_open(p) for p in (base, base + 1, base + 2)), f"ports {base}-{base + 2} are in use"
    shutil.rmtree(ROOT / ".local" / f"azurite-{base}", ignore_errors=True)
    env = {**os.environ, "AZURITE_PORT_BASE": str(base)}
    proc = subprocess.Popen([str(ROOT / "scripts" / "demo.sh"), "--keep", "--rows", "300", "--partitions", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        match = None
        while match is None:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)  # the demo ended, or took too long
            lines.append(line)
            match = URL_LINE.match(line.rstrip("\n"))
        api, export_id = match.groups()
        assert "python -m exporter runs list" in proc.stdout.readline() and "Press Ctrl+C" in proc.stdout.readline()

        page = requests.get(f"{api}/console/", timeout=10)
        assert page.status_code == 200 and 'data-mode="development"' in page.text
        admin = {"X-MS-CLIENT-PRINCIPAL": DEV_ADMIN_PRINCIPAL}
        exports = requests.get(f"{api}/exports", headers=admin, timeout=10).json()["exports"]
        assert [x["id"] for x in exports] == [export_id]
        runs = requests.get(f"{api}/exports/{export_id}/runs", headers=admin, timeout=10).json()["runs"]
        assert len(runs) == 2 and all(r["status"] == "partiallySucceeded" for r in runs), runs
        assert runs[0]["counts"]["queued"] < runs[1]["counts"]["queued"]  # the second sent only what changed
        assert proc.poll() is None  # still running

        proc.send_signal(signal.SIGINT)  # Ctrl+C
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "devtools.azurite", "stop"], cwd=ROOT,
                           env=env, capture_output=True, timeout=30)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "Stopped: the app, the Omnisend sandbox and Azurite." in rest, rest
    assert not port_open(base) and not port_open(int(api.rsplit(":", 1)[1].split("/")[0]))
