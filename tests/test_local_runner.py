"""The local runner drives the app's own handlers the way the Functions host does."""

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from exporter import config
from exporter.config import QueueRules
from exporter.devhost.local_runner import QueuePump, _route_regex, cron_next, resolve_setting
from exporter.messages import PlanRun
from tests.apphelpers import ADMIN

UTC = timezone.utc


@pytest.mark.parametrize("schedule,after,expected", [
    ("0 */15 * * * *", datetime(2026, 11, 28, 10, 7, 30, tzinfo=UTC), datetime(2026, 11, 28, 10, 15, 0, tzinfo=UTC)),
    ("0 */15 * * * *", datetime(2026, 11, 28, 10, 45, 0, tzinfo=UTC), datetime(2026, 11, 28, 11, 0, 0, tzinfo=UTC)),
    ("*/10 * * * * *", datetime(2026, 11, 28, 10, 0, 5, tzinfo=UTC), datetime(2026, 11, 28, 10, 0, 10, tzinfo=UTC)),
    ("30 0 2 * * 1-5", datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC), datetime(2026, 11, 30, 2, 0, 30, tzinfo=UTC)),  # Sat -> Mon
    ("0 0 0 1 1 *", datetime(2026, 11, 28, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    # schedules Azure accepts that the hand-written parser refused: names of days and months (any case,
    # abbreviated or whole, as NCrontab reads them)
    ("0 30 9 * * Mon-Fri", datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC), datetime(2026, 11, 30, 9, 30, 0, tzinfo=UTC)),
    ("0 0 0 1 Jan *", datetime(2026, 11, 28, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ("0 0 0 1 january *", datetime(2026, 11, 28, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    # Microsoft's example: 9:30 every Monday in January
    ("0 30 9 * Jan Mon", datetime(2026, 11, 28, tzinfo=UTC), datetime(2027, 1, 4, 9, 30, tzinfo=UTC)),
    ("0 0 12 * * SUNDAY", datetime(2026, 11, 28, tzinfo=UTC), datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),
    ("0 0 0 * * 0", datetime(2026, 11, 28, tzinfo=UTC), datetime(2026, 11, 29, tzinfo=UTC)),  # 0 is Sunday
    # a day and a day of the week both given must both match (NCrontab), not either (classic cron)
    ("0 0 0 13 * Fri", datetime(2026, 11, 28, tzinfo=UTC), datetime(2027, 8, 13, tzinfo=UTC)),
    # a range written backwards is the same range forwards in NCrontab (not a wrap-around): Mon-Fri
    ("0 0 0 * * Fri-Mon", datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)),
    ("5/20 * * * * *", datetime(2026, 11, 28, 10, 0, 30, tzinfo=UTC), datetime(2026, 11, 28, 10, 0, 45, tzinfo=UTC)),
    ("0 0 */6 * * *", datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC), datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)),
    # the next time after the given one, never that time itself
    ("0 0 10 * * *", datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC), datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)),
])
def test_ncrontab_next_occurrence(schedule, after, expected):
    assert cron_next(schedule, after) == expected


@pytest.mark.parametrize("schedule, says", [
    ("0 0 0 * * 7", "day-of-week field '7'"),  # NCrontab's days of the week are 0-6: Azure refuses 7
    ("0 */15 * * *", "has 5"),  # five fields: the host reads six, seconds first
    ("0 0 0 ? * *", "day field '?'"),  # croniter's extensions, which NCrontab refuses
    ("0 0 0 L * *", "day field 'L'"),
    ("0 0 0 * * 5#2", "day-of-week field '5#2'"),
    ("0 0 0 * * H", "day-of-week field 'H'"),
    ("0 60 * * * *", "minute field '60'"),
    ("0 0 0 * Mon *", "month field 'Mon'"),
    ("0 0 0 1-Foo * *", "day field '1-Foo'"),
    ("0 0 0 31 2 *", "never fires"),  # the host would accept it and never run the timer
    ("", "has 0"),
])
def test_a_schedule_azure_would_refuse_is_refused_at_start_naming_the_setting(schedule, says):
    with pytest.raises(config.ConfigurationError) as refused:
        config.load_settings({"EXPORT_SCHEDULE": schedule} if schedule else {"EXPORT_SCHEDULE": " "})
    message = str(refused.value)
    assert message.startswith("Setting EXPORT_SCHEDULE ") and says in message
    assert repr(schedule if schedule else " ") in message  # the value as given
    assert "{second} {minute} {hour} {day} {month} {day-of-week}" in message and "'0 */15 * * * *'" in message


def test_the_local_runner_refuses_a_bad_schedule_before_it_starts(services, app_env):
    from exporter.devhost.local_runner import LocalHost

    with pytest.raises(config.ConfigurationError, match="Setting EXPORT_SCHEDULE .*'0 0 0 \\* \\* 7'"):
        LocalHost(services.clients, port=0, timer=True, env={**app_env, "EXPORT_SCHEDULE": "0 0 0 * * 7"})
    host = LocalHost(services.clients, port=0, timer=True, env={**app_env, "EXPORT_SCHEDULE": "0 30 9 * * Mon-Fri"})
    assert any(t.name == "timer-export_schedule" for t in host.threads)
    host.server.server_close()


def test_serve_refuses_a_bad_schedule_with_the_error():
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "EXPORT_SCHEDULE": "0 0 0 * * 7"}
    done = subprocess.run([sys.executable, "-m", "exporter", "serve", "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Serving" not in done.stdout
    assert "Setting EXPORT_SCHEDULE" in done.stderr and "'0 0 0 * * 7'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_timer_thread_survives_a_schedule_it_cannot_compute(caplog):
    """A next time that cannot be computed is logged and tried again; the thread goes on (it died)."""
    import threading

    from exporter.devhost.local_runner import timer_loop

    fired = threading.Event()
    stop = threading.Event()
    thread = threading.Thread(target=timer_loop, args=("0 0 0 31 2 *", fired.set, stop),
                              kwargs={"retry_seconds": 0.05}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while sum("could not be computed" in r.getMessage() for r in caplog.records) < 2:
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.02)
        assert thread.is_alive() and not fired.is_set()
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()  # only stop ends it


def test_the_timer_fires_again_once_its_schedule_can_be_computed():
    import threading

    from exporter.devhost.local_runner import timer_loop

    class Flaky:
        """A schedule whose next time cannot be computed twice, then is a moment away."""
        expression = "flaky"
        failures = 2

        def next_after(self, after):
            if self.failures:
                self.failures -= 1
                raise RuntimeError("the clock is broken")
            return after + timedelta(milliseconds=20)

    ticks = []
    stop = threading.Event()
    thread = threading.Thread(target=timer_loop, args=(Flaky(), lambda timer: ticks.append(timer), stop),
                              kwargs={"retry_seconds": 0.02}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while len(ticks) < 2:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(5)
    assert all(t.past_due is False for t in ticks)


def test_schedule_setting_is_resolved_like_the_host_does():
    assert resolve_setting("%EXPORT_SCHEDULE%", {"EXPORT_SCHEDULE": "0 0 * * * *"}) == "0 0 * * * *"
    assert resolve_setting("%EXPORT_SCHEDULE%", {}) == config.DEFAULT_SCHEDULE


def test_routes_match_templates():
    assert _route_regex("exports/{id}/runs").fullmatch("exports/abc/runs").groupdict() == {"id": "abc"}
    assert _route_regex("exports/{id}").fullmatch("exports/abc/runs") is None
    # a trailing catch-all may be empty, as in the host's routing: "console/{*path}" serves "console" too
    console = _route_regex("console/{*path}")
    assert console.fullmatch("console").groupdict() == {"path": None}
    assert console.fullmatch("console/").groupdict() == {"path": ""}
    assert console.fullmatch("console/css/x.css").groupdict() == {"path": "css/x.css"}
    assert console.fullmatch("consoles") is None


def test_queue_rules_come_from_host_json():
    rules = QueueRules.from_host_json()
    host = json.load(open(config.__file__.replace("exporter/config.py", "host.json")))["extensions"]["queues"]
    assert rules.max_dequeue_count == host["maxDequeueCount"]


def test_a_message_that_keeps_failing_goes_to_the_poison_queue(services):
    calls = []

    def failing(msg):
        calls.append(msg.dequeue_count)
        raise RuntimeError("boom")

    pump = QueuePump(services.clients, config.QUEUE_RUNS, failing, QueueRules(max_dequeue_count=3, visibility_timeout=0))
    services.run_queue.send(PlanRun("x"))
    for _ in range(3):
        assert pump.handle_one()
    assert calls == [1, 2, 3]
    assert not pump.handle_one()
    (poisoned,) = services.clients.queue(config.QUEUE_RUNS + config.POISON_SUFFIX).receive_messages()
    assert json.loads(poisoned.content) == {"type": "plan", "runId": "x"}


def test_http_is_served_over_a_real_socket(workers):
    res = requests.get(f"{workers.url}/connections", headers=ADMIN, timeout=10)
    assert res.status_code == 200 and res.json() == {"connections": []}
    assert requests.delete(f"{workers.url}/connections", headers=ADMIN, timeout=10).status_code == 405
    assert requests.get(f"{workers.url}/nowhere", headers=ADMIN, timeout=10).status_code == 404
    res = requests.post(f"{workers.url}/connections", data=b"{not json", headers=ADMIN, timeout=10)
    assert res.status_code == 400 and res.headers["Content-Type"].startswith("application/problem+json")


def _raw(url: str, head: str, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """Send a request head as bytes (no body follows) and read the answer: (status, headers, body)."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        top, _, rest = data.partition(b"\r\n\r\n")
        lines = top.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(rest) < int(headers.get("content-length", 0)):
            rest += sock.recv(65536)
    return int(lines[0].split()[1]), headers, rest


@pytest.mark.parametrize("length, status", [("-5", 400), ("abc", 400), ("1000000", 413)])
def test_a_request_body_is_capped_and_a_bad_length_is_refused_before_reading(workers, length, status):
    """Found on a developer's network: a negative Content-Length made the runner read until the client
    gave up, and any length was read whole. Now: 400 or 413 at once, the body never read."""
    head = f"POST /api/connections HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
    got, headers, body = _raw(workers.url, head)
    assert got == status and headers["connection"] == "close"
    got, _, _ = _raw(workers.url, "POST /api/connections HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert got == 411


def test_urls_the_runner_hands_out_name_itself_not_the_callers_host_header(workers, sandbox):
    from tests.conftest import TEST_API_KEY

    body = json.dumps({"displayName": "Host test", "apiKey": TEST_API_KEY, "dataPrivacyConsent": True})
    res = requests.post(f"{workers.url}/connections", data=body, timeout=10,
                        headers={**ADMIN, "Host": "evil.example", "Content-Type": "application/json"})
    assert res.status_code == 201 and res.headers["Location"].startswith(workers.url + "/connections/")


def test_serve_refuses_an_address_other_than_loopback_unless_asked(capsys):
    from exporter.devhost.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
