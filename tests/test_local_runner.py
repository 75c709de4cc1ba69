"""The local runner drives the app's own handlers the way the Functions host does."""

import json
from datetime import datetime, timezone

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
])
def test_ncrontab_next_occurrence(schedule, after, expected):
    assert cron_next(schedule, after) == expected


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
