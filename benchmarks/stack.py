"""The local stack for the benchmarks: Azurite, the sandbox and the app as separate processes, and
CPU accounting of each from /proc (no psutil)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from devtools import azurite

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / ".local" / "benchmarks"
CLK_TCK = os.sysconf("SC_CLK_TCK")
API_KEY = "bench-omnisend-api-key-0001"
BRAND = "bench-brand"


# --- /proc ---------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def group_cpu_seconds(pgid: int) -> float | None:
    """CPU seconds of every live process in process group ``pgid`` (Azurite is node and may fork)."""
    total, found = 0.0, False
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid:  # field 5: process group
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            found = True
    return total if found else None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def vm_hwm_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def vm_rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine_facts() -> dict:
    mem = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            mem[k] = v.strip()
    return {"cores": os.cpu_count(), "nproc": _nproc(), "mem_total": mem.get("MemTotal"),
            "mem_available": mem.get("MemAvailable"), "loadavg": loadavg(),
            "python": sys.version.split()[0]}


def _nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(len(os.sched_getaffinity(0)))


# --- Azurite ---------------------------------------------------------------------------------------


def azurite_pid() -> int | None:
    try:
        return int(azurite.PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None


# --- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer on {url} within {timeout:.0f}s; see {log}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float | None:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def start_sandbox(rate_limit: int, tags_rate_limit: int, window_seconds: float, tag: str,
                  batch_delay_seconds: float = 0.05) -> Proc:
    """``python -m devtools.omnisend_sandbox`` as its own process (its CPU is its own)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = LOG_DIR / f"sandbox-{tag}.log"
    cmd = [sys.executable, "-m", "devtools.omnisend_sandbox", "--port", str(port), "--api-key", f"{API_KEY}:{BRAND}",
           "--rate-limit", str(rate_limit), "--tags-rate-limit", str(tags_rate_limit),
           "--window-seconds", str(window_seconds), "--batch-delay-seconds", str(batch_delay_seconds)]
    with open(log, "wb") as out:
        popen = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc = Proc("sandbox", popen, f"http://127.0.0.1:{port}/api/", log)
    _wait_http(f"http://127.0.0.1:{port}/_sandbox/brands/{BRAND}/stats", popen, 30, "the sandbox", log)
    return proc


def sandbox_stats(sandbox: Proc) -> dict:
    base = sandbox.url[: -len("/api/")]
    return requests.get(f"{base}/_sandbox/brands/{BRAND}/stats", timeout=10).json()


def app_env(sandbox: Proc, rate_limit: int, tags_rate_limit: int, window_seconds: int) -> dict:
    return {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string(),
        "EXPORTER_DEV_MODE": "1",
        "OMNISEND_API_URL": sandbox.url,
        "REFRESH_SETTLE_SECONDS": "0",
        "BATCH_CHECK_DELAY_SECONDS": "1",
        "OMNISEND_RATE_LIMIT": str(rate_limit),
        "OMNISEND_TAGS_RATE_LIMIT": str(tags_rate_limit),
        "OMNISEND_RATE_WINDOW_SECONDS": str(window_seconds),
    }


def start_app(env: dict, workers: int, tag: str) -> Proc:
    """``python -m exporter serve`` (the local runner: HTTP API, 8 upload workers, no timer)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = LOG_DIR / f"app-{tag}.log"
    cmd = [sys.executable, "-m", "exporter", "serve", "--port", str(port), "--workers", str(workers), "--no-timer"]
    with open(log, "wb") as out:
        popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
    proc = Proc("app", popen, f"http://127.0.0.1:{port}/api", log)
    _wait_http(f"http://127.0.0.1:{port}/api/health", popen, 60, "the app", log)
    return proc

