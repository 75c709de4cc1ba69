"""Start and stop Azurite, the real Azure Storage emulator, for local runs and tests.

Usage: ``python -m devtools.azurite start|stop|status``. ``start`` is idempotent: when something
already answers on the blob, queue and table ports it is reused and left running.

``AZURITE_PORT_BASE`` (default 10000) moves the three ports (base, base+1, base+2), so that two
work trees can run their tests side by side, each against its own Azurite.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT_BASE = int(os.environ.get("AZURITE_PORT_BASE", "10000"))
PORTS = (PORT_BASE, PORT_BASE + 1, PORT_BASE + 2)
DATA_DIR = ROOT / ".local" / f"azurite-{PORT_BASE}"
PID_FILE = ROOT / ".local" / f"azurite-{PORT_BASE}.pid"
LOG_FILE = ROOT / ".local" / f"azurite-{PORT_BASE}.log"
HOST = "127.0.0.1"
_ACCOUNT = "devstoreaccount1"  # Azurite's well-known development account


def connection_string() -> str:
    """The storage connection for this Azurite: the usual shortcut on the default ports."""
    if PORT_BASE == 10000:
        return "UseDevelopmentStorage=true"
    from azure.storage.blob._shared.parser import DEVSTORE_ACCOUNT_KEY  # public, documented by Microsoft

    return (f"DefaultEndpointsProtocol=http;AccountName={_ACCOUNT};AccountKey={DEVSTORE_ACCOUNT_KEY};"
            f"BlobEndpoint=http://{HOST}:{PORTS[0]}/{_ACCOUNT};QueueEndpoint=http://{HOST}:{PORTS[1]}/{_ACCOUNT};"
            f"TableEndpoint=http://{HOST}:{PORTS[2]}/{_ACCOUNT};")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((HOST, port)) == 0


def is_running() -> bool:
    return all(_port_open(p) for p in PORTS)


def _binary() -> Path:
    path = ROOT / "node_modules" / ".bin" / "azurite"
    if not path.exists():
        raise SystemExit("Azurite is not installed: run `npm ci` in the project folder first.")
    return path


def start(timeout: float = 30.0) -> bool:
    """Start Azurite unless it already runs. Returns True when this call started it."""
    if is_running():
        return False
    if any(_port_open(p) for p in PORTS):
        raise SystemExit(f"Some of the ports {PORTS} are taken by something that is not a full Azurite.")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_FILE, "ab")
    proc = subprocess.Popen(
        [str(_binary()), "--silent", "--location", str(DATA_DIR),
         "--blobHost", HOST, "--queueHost", HOST, "--tableHost", HOST,
         "--blobPort", str(PORTS[0]), "--queuePort", str(PORTS[1]), "--tablePort", str(PORTS[2]),
         "--skipApiVersionCheck", "--disableTelemetry", "--loose"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    PID_FILE.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"Azurite exited with code {proc.returncode}; see {LOG_FILE}.")
        if is_running():
            return True
        time.sleep(0.2)
    stop()
    raise SystemExit(f"Azurite did not open ports {PORTS} within {timeout:.0f}s; see {LOG_FILE}.")


def stop() -> bool:
    """Stop the Azurite this project started (by pid file). Returns True when one was stopped."""
    if not PID_FILE.exists():
        return False
    pid = int(PID_FILE.read_text().strip() or 0)
    PID_FILE.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "status"
    if cmd == "start":
        print("Azurite started." if start() else "Azurite already running; reusing it.")
    elif cmd == "stop":
        print("Azurite stopped." if stop() else "No Azurite started by this project is running.")
    elif cmd == "status":
        print("running" if is_running() else "not running")
    else:
        print("usage: python -m devtools.azurite start|stop|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
