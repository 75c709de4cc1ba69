"""The README's "Running it locally" blocks, run as written: the first starts the stack and runs an export,
the second stops it. In bash, from the project folder, with ports of their own (``SANDBOX_PORT``,
``APP_PORT``, ``AZURITE_PORT_BASE`` and ``AzureWebJobsStorage``, which the block honours), an Azurite of
their own on a clean data folder, and a development key store in a temporary folder, so that the
test clashes with no other run on this machine."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from devtools import azurite
from tests.conftest import ROOT

SECTION = "## Running it locally"


def readme_blocks() -> list[str]:
    """The bash blocks of the section, in order."""
    text = (ROOT / "README.md").read_text("utf-8")
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def azurite_connection_string_for(base: int) -> str:
    from azure.storage.blob._shared.parser import DEVSTORE_ACCOUNT_KEY

    account = "devstoreaccount1"
    return (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={DEVSTORE_ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{base}/{account};QueueEndpoint=http://127.0.0.1:{base + 1}/{account};"
            f"TableEndpoint=http://127.0.0.1:{base + 2}/{account};")


def skip_if_bootstrap_would_install_into_a_shared_folder() -> None:
    """Both blocks start with scripts/bootstrap.sh, which installs what is missing or changed. Where .venv
    or node_modules is a link to another checkout's (work trees side by side), installing there would
    change what every other checkout runs with: then the test is skipped, saying why."""
    reqs = b"".join((ROOT / n).read_bytes() for n in ("requirements.txt", "requirements-dev.txt",
                                                      "requirements-infra-check.txt") if (ROOT / n).exists())
    stamp = ROOT / ".venv" / ".requirements.sha"
    pip = (ROOT / ".venv").is_symlink() and (not stamp.exists() or stamp.read_text().strip() != hashlib.sha256(reqs).hexdigest())
    lock, installed = ROOT / "package-lock.json", ROOT / "node_modules" / ".package-lock.json"
    npm = (ROOT / "node_modules").is_symlink() and (not installed.exists() or lock.stat().st_mtime > installed.stat().st_mtime)
    if pip or npm:
        pytest.skip(f"scripts/bootstrap.sh would reinstall {'.venv' if pip else 'node_modules'}, a link to another "
                    "checkout's: not from a test")


@pytest.fixture
def own_stack(tmp_path):
    """Ports and an Azurite data folder nobody else uses; afterwards, nothing of it left running."""
    skip_if_bootstrap_would_install_into_a_shared_folder()
    base = azurite.PORT_BASE + 50  # this suite's Azurite is on PORT_BASE; the block's own next to it
    ports = {"SANDBOX_PORT": free_port(), "APP_PORT": free_port()}
    if any(port_open(p) for p in (base, base + 1, base + 2)):
        pytest.fail(f"ports {base}-{base + 2} are in use: the README block's Azurite needs them")
    shutil.rmtree(ROOT / ".local" / f"azurite-{base}", ignore_errors=True)  # a fresh machine's empty storage
    env = {k: v for k, v in os.environ.items() if k not in ("EXPORTER_URL", "EXPORTER_TOKEN", "VIRTUAL_ENV")}
    env.update({k: str(v) for k, v in ports.items()})
    env.update({"AZURITE_PORT_BASE": str(base), "AzureWebJobsStorage": azurite_connection_string_for(base),
                "EXPORTER_DEV_SECRETS_FILE": str(tmp_path / "dev-secrets.json"), "BATCH_CHECK_DELAY_SECONDS": "1"})
    yield env, ports, base
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "devtools.azurite", "stop"], cwd=ROOT,
                   env=env, capture_output=True, timeout=30)  # when the block failed before its stop line


def test_the_readme_local_block_runs_as_written_and_the_stop_block_stops_it(own_stack):
    env, ports, base = own_stack
    start, stop = readme_blocks()
    assert "python -m exporter run $EXPORT --wait" in start and "kill %1 %2" in stop
    script = f"set -euo pipefail\n{start}\necho '--- stop'\n{stop}\n"
    proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the README block did not finish in 240 s:\n{out}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the block's background jobs, should the stop line not have run
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{ports['APP_PORT']}/api: ok" in out, out
    assert re.search(r"Run \S+ queued\.", out) and re.search(r"Run \S+: partiallySucceeded", out), out
    read, confirmed, rejected = (int(re.search(rf"(?m)^  {label}\s+(\d+)$", out).group(1))
                                 for label in ("rows read", r"exported \(confirmed\)", "rejected"))
    assert read == 2000 and rejected > 0 and confirmed == read - rejected, out  # 2% invalid emails in the sample
    assert "Azurite stopped." in out.split("--- stop")[1], out
    assert not any(port_open(p) for p in (*ports.values(), base)), "the stop block left something running"


def test_health_wait_gives_up_with_a_message_when_nothing_answers():
    import sys
    import time

    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "exporter", "health", "--wait", "1", "--url",
                           f"http://127.0.0.1:{free_port()}/api"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and time.monotonic() - t0 >= 1
    assert "did not answer within 1s" in done.stderr and "python -m exporter serve" in done.stderr
    assert "Traceback" not in done.stderr
