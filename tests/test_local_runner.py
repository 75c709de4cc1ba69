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
