"""The Functions app's bindings, as the host will index them."""

import json

import function_app
from exporter import config
from exporter.devhost.local_runner import functions_of


def bindings():
    return {f.get_function_name(): json.loads(f.get_function_json())["bindings"] for f in functions_of(function_app.app)}


def test_timer_reads_its_schedule_from_the_app_setting():
    (timer,) = [b[0] for b in bindings().values() if b[0]["type"] == "timerTrigger"]
    assert timer["schedule"] == "%EXPORT_SCHEDULE%" and timer["runOnStartup"] is False


def test_queue_triggers_listen_on_the_configured_queues_and_their_poison_queues():
    queues = {b[0]["queueName"]: b[0]["connection"] for b in bindings().values() if b[0]["type"] == "queueTrigger"}
    poison = config.POISON_SUFFIX
    assert queues == {q: "AzureWebJobsStorage" for q in (config.QUEUE_RUNS, config.QUEUE_BATCHES,
                                                         config.QUEUE_RUNS + poison, config.QUEUE_BATCHES + poison)}


def test_http_routes_cover_the_api():
    routes = {(b[0]["route"], m) for b in bindings().values() if b[0]["type"] == "httpTrigger" for m in b[0]["methods"]}
    for want in [("connections", "POST"), ("connections", "GET"), ("connections/{id}", "GET"), ("connections/{id}", "DELETE"),
                 ("exports", "POST"), ("exports", "GET"), ("exports/{id}", "GET"), ("exports/{id}", "PUT"),
                 ("exports/{id}", "DELETE"), ("exports/{id}/runs", "POST"), ("exports/{id}/runs", "GET"),
                 ("runs/{id}", "GET"), ("runs/{id}/rejects", "GET"), ("runs/{id}/changes", "GET"),
                 ("runs/{id}/cancel", "POST"), ("me", "GET"),
                 ("segments/columns", "GET"), ("segments", "GET"), ("segments/containers", "GET"),
                 ("console/{*path}", "GET")]:
        assert want in routes
    assert all(b[0]["authLevel"] == "ANONYMOUS" for b in bindings().values() if b[0]["type"] == "httpTrigger")


def test_the_app_loads_without_the_development_host():
    """exporter/devhost/ (local runner, CLI) stays out of the deployment package (.funcignore): the
    app's functions must load without it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = ("import sys, importlib.abc\n"
            "class NoDevhost(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.startswith('exporter.devhost'):\n"
            "            raise ImportError('exporter.devhost is not deployed')\n"
            "sys.meta_path.insert(0, NoDevhost())\n"
            "import function_app\n"
            "print(len(function_app.app.get_functions()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 10
