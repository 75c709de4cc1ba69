"""Telemetry that follows one run, checked with the real OpenTelemetry SDK and its in-memory exporters.

A run on the local stack (Azurite, the sandbox over HTTP, the local runner's queue workers) is
traced into an ``InMemorySpanExporter``, its log records go through the OpenTelemetry log handler
into an ``InMemoryLogRecordExporter`` and its metrics into an ``InMemoryMetricReader``: what
Application Insights would receive. Every handler invocation (HTTP request, timer tick, queue
message) has one span; the spans and the records made while handling the run carry ``run_id`` and
``export_id`` (``batch`` while handling a batch); the metrics equal the run's counts; and no key or
email address is anywhere in the spans (names, attributes, events, status) or the records.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
from azure.functions.timer import TimerRequest
from opentelemetry import trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import function_app
from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter import telemetry
from exporter.devhost.local_runner import user_function
from exporter.logs import get_logger, log_context
from exporter.workers import batches_queue, runs_queue
from tests.apphelpers import call, create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.logs = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])

    def metric_points(self, name: str) -> list:
        data = self.metrics.get_metrics_data()
        return [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name
                for p in m.data.data_points]


@pytest.fixture
def otel():
    """The SDK with in-memory exporters, wired the way the distro wires it: an OpenTelemetry log
    handler on the root logger, the requests instrumentation (the Omnisend calls), and the app's
    spans and metrics sent to these providers (``telemetry.use_providers``)."""
    o = Otel()
    root = logging.getLogger()
    handler = LoggingHandler(logger_provider=o.logger_provider)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    RequestsInstrumentor().instrument(tracer_provider=o.tracer_provider)
    undo = telemetry.use_providers(o.tracer_provider, o.meter_provider)
    yield o
    undo()
    RequestsInstrumentor().uninstrument()
    root.removeHandler(handler)
    root.setLevel(level)


def _span_text(span) -> str:
    parts = [span.name, repr(dict(span.attributes or {})), repr(span.status.description)]
    for event in span.events:
        parts += [event.name, repr(dict(event.attributes or {}))]
    return "\n".join(parts)


def _record_text(record) -> str:
    return f"{record.body!r}\n{dict(record.attributes or {})!r}"


def _counting(monkeypatch, module, name: str) -> list[int]:
    """Wrap a router so each call notes the span it runs in (the span of its invocation)."""
    seen: list[int] = []
    original = getattr(module, name)

    def spy(*args, **kwargs):
        seen.append(trace.get_current_span().get_span_context().span_id)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


def _wait_counts_final(run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = call("run", "GET", f"runs/{run_id}", route_params={"id": run_id})
        if body["countsFinal"]:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_a_run_is_traced_with_its_ids_one_span_per_invocation_and_metrics_of_its_counts(
        otel, services, workers, sandbox, segment_container, monkeypatch):
    services.backoff = lambda attempt: 0.1
    run_messages = _counting(monkeypatch, runs_queue, "handle_run_message")
    batch_messages = _counting(monkeypatch, batches_queue, "handle_batch_message")
    profiles = list(generate_profiles(300, seed=23, invalid_share=0.05, duplicate_share=0.02))
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=profiles,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5), partitions=2)
    conn = create_connection(TEST_API_KEY)
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    sandbox.faults.force_status(503, count=1, route="POST /batches")
    sandbox.faults.force_status(429, count=1, route="GET /batches/{batchID}/items")
    sandbox.faults.item_error_rate = 0.05

    run_id = start_run(export["id"])["runId"]
    wait_for_run(run_id)
    run = _wait_counts_final(run_id)
    user_function(function_app.app, "export_schedule")(TimerRequest(past_due=False))  # a tick, as the host fires it
    workers.stop()  # nothing is handled any more: every span has ended
    spans = otel.spans.get_finished_spans()
    finished = otel.logs.get_finished_logs()
    records = [r.log_record for r in finished]
    logger_of = {id(r.log_record): r.instrumentation_scope.name for r in finished}

    assert run["status"] == "partiallySucceeded" and run["counts"]["failed"] > 0 and run["counts"]["rejected"] > 0
    ours = [s for s in spans if s.instrumentation_scope.name == telemetry.SCOPE]
    by_name: dict[str, list] = {}
    for s in ours:
        by_name.setdefault(s.name, []).append(s)

    # one span per handler invocation: each queue message, each HTTP request, the timer tick
    plan_spans, upload_spans = by_name.get("plan_run", []), by_name.get("upload_batch", [])
    assert len(run_messages) >= 2 and len(batch_messages) >= 6  # plan, tags; sends, checks, tags
    assert sorted(run_messages) == sorted(s.context.span_id for s in plan_spans)
    assert sorted(batch_messages) == sorted(s.context.span_id for s in upload_spans)
    assert len(set(run_messages + batch_messages)) == len(run_messages) + len(batch_messages)
    assert all(s.parent is None for s in plan_spans + upload_spans)  # none is inside another
    assert len(by_name["start_export_run"]) == 1 and len(by_name["export_schedule"]) == 1
    assert len(by_name["create_connection"]) == 1 and len(by_name["create_export"]) == 1
    assert len(by_name["get_run"]) >= 2
    assert {s.attributes["faas.trigger"] for s in ours} == {"http", "queue", "timer"}

    # the run's and export's ids on every span of the run: its invocations and what they called
    start = by_name["start_export_run"][0]
    assert start.attributes["export_id"] == export["id"] and start.attributes["run_id"] == run_id
    assert all(s.attributes["run_id"] == run_id for s in by_name["get_run"])
    run_spans = plan_spans + upload_spans
    for s in run_spans:
        assert s.attributes.get("run_id") == run_id, (s.name, dict(s.attributes))
        assert s.attributes.get("export_id") == export["id"], (s.name, dict(s.attributes))
    for s in upload_spans:
        assert isinstance(s.attributes.get("batch"), int), dict(s.attributes)
    run_span_ids = {s.context.span_id for s in run_spans}
    children = [s for s in spans if s.parent is not None and s.parent.span_id in run_span_ids]
    omnisend_calls = [s for s in children if s.attributes.get("http.url", "").startswith(sandbox.url)]
    assert len(omnisend_calls) >= 6
    for s in children:
        assert s.attributes.get("run_id") == run_id, s.name
        assert s.attributes.get("export_id") in (export["id"], None), s.name
    for s in omnisend_calls:
        assert s.attributes.get("export_id") == export["id"], s.attributes
    for parent in run_spans:  # a runs-queue message names the export once its run is read: only those reads lack it
        mine = sorted((c for c in children if c.parent.span_id == parent.context.span_id), key=lambda c: c.start_time)
        named = [i for i, c in enumerate(mine) if "export_id" in c.attributes]
        assert all("export_id" in c.attributes for c in mine[named[0]:]) if named else not mine, parent.name
        assert all(sandbox.url not in c.attributes.get("http.url", "") for c in mine[:named[0] if named else 0])
    for s in omnisend_calls:
        parent = next(p for p in upload_spans + plan_spans if p.context.span_id == s.parent.span_id)
        if "batch" in parent.attributes:
            assert s.attributes.get("batch") == parent.attributes["batch"]

    # log records made while handling the run name it, its export and (in a batch) the batch
    in_run = [r for r in records if r.span_id in run_span_ids | {s.context.span_id for s in children}]
    assert len(in_run) > 50
    upload_ids = {s.context.span_id for s in upload_spans}
    for r in in_run:
        attrs = dict(r.attributes or {})
        assert attrs.get("run_id") == run_id, (r.body, attrs)
        if logger_of[id(r)].startswith("exporter"):
            assert attrs.get("export_id") == export["id"], (logger_of[id(r)], r.body, attrs)
        if r.span_id in upload_ids:
            assert isinstance(attrs.get("batch"), int), (r.body, attrs)
    for parent in run_spans:  # as for spans: only the storage lines of reading the run precede its export
        inside = {parent.context.span_id} | {c.context.span_id for c in children if c.parent.span_id == parent.context.span_id}
        mine = sorted((r for r in in_run if r.span_id in inside), key=lambda r: r.timestamp)
        named = [i for i, r in enumerate(mine) if "export_id" in r.attributes]
        assert named or not [r for r in mine if logger_of[id(r)].startswith("exporter")], parent.name
        assert all("export_id" in r.attributes for r in mine[named[0]:]) if named else True, parent.name
        assert all(logger_of[id(r)].startswith(("azure", "urllib3")) for r in mine[:named[0] if named else len(mine)])
    assert any(r.severity_text == "WARN" for r in in_run)  # the 503 and the 429

    # the metrics of the run: once, equal to its counts, with the export as attribute
    def total(name: str) -> float:
        points = [p for p in otel.metric_points(name) if p.attributes.get("export_id") == export["id"]]
        return sum(p.value for p in points)

    assert total(telemetry.METRIC_CONFIRMED) == run["counts"]["confirmed"] > 0
    assert total(telemetry.METRIC_FAILED) == run["counts"]["failed"]
    assert total(telemetry.METRIC_REJECTED) == run["counts"]["rejected"]
    assert total(telemetry.METRIC_RUNS) == 1
    (duration,) = [p for p in otel.metric_points(telemetry.METRIC_DURATION) if p.attributes["export_id"] == export["id"]]
    started = datetime.fromisoformat(run["startedAt"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(run["finishedAt"].replace("Z", "+00:00"))
    assert duration.count == 1 and abs(duration.sum - (finished - started).total_seconds()) < 1.0
    assert dict(duration.attributes) == {"export_id": export["id"], "status": "partiallySucceeded", "trigger": "manual"}
    served_429 = sandbox.stats(TEST_BRAND)["byStatus"].get("429", 0)
    assert served_429 >= 1 and total(telemetry.METRIC_THROTTLED) == served_429

    # no API key and no email address of the segment anywhere
    emails = {p["PrimaryEmail"].strip().casefold() for p in profiles}
    needles = {e for e in emails if "@" in e and not e.startswith("@") and not e.endswith("@")}
    needles.add(TEST_API_KEY.casefold())
    assert len(spans) > 20 and len(records) > 100
    for s in spans:
        text = _span_text(s).casefold()
        assert not [n for n in needles if n in text], text[:500]
    for r in records:
        text = _record_text(r).casefold()
        assert not [n for n in needles if n in text], text[:500]


def test_an_error_leaves_no_key_or_email_in_the_span_its_event_or_the_log_record(otel, monkeypatch):
    from exporter.redaction import register_secret

    key = "otel-test-key-" + "Zq9" * 8
    register_secret(key)
    log = get_logger("exporter.tests.telemetry")
    with pytest.raises(RuntimeError):
        with telemetry.invocation("upload_batch", "queue"), log_context(run_id="r-1", export_id="e-1", batch=3):
            try:
                raise ValueError(f"Omnisend said: key {key} refused for someone@example.com")
            except ValueError:
                log.exception("sending failed for someone@example.com")
            raise RuntimeError(f"gave up on {key.upper()} and someone.else@example.org")

    (span,) = otel.spans.get_finished_spans()
    assert span.name == "upload_batch" and span.status.status_code is trace.StatusCode.ERROR
    assert dict(span.attributes) == {"faas.trigger": "queue", "run_id": "r-1", "export_id": "e-1", "batch": 3}
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "RuntimeError"
    assert "gave up on ***" in event.attributes["exception.message"]
    assert telemetry.EMAIL_MASK in event.attributes["exception.message"]
    assert "Traceback" in event.attributes["exception.stacktrace"]
    (record,) = [r.log_record for r in otel.logs.get_finished_logs() if r.log_record.body.startswith("sending failed")]
    attrs = dict(record.attributes)
    assert record.body == f"sending failed for {telemetry.EMAIL_MASK}"
    assert attrs["run_id"] == "r-1" and attrs["export_id"] == "e-1" and attrs["batch"] == 3
    assert attrs["exception.type"] == "ValueError" and "***" in attrs["exception.message"]
    assert "Traceback" in attrs["exception.stacktrace"] and "***" in attrs["exception.stacktrace"]
    for text in (_span_text(span), _record_text(record)):
        low = text.casefold()
        assert key.casefold()[:12] not in low and "@example." not in low, text


def test_records_of_any_logger_get_the_context_on_the_exporting_handler(otel):
    with telemetry.invocation("get_run", "http"), log_context(run_id="r-2", export_id="e-2"):
        logging.getLogger("azure.core.some_library").warning("a library line for x@example.com")
    (record,) = [r.log_record for r in otel.logs.get_finished_logs()]
    assert record.attributes["run_id"] == "r-2" and record.attributes["export_id"] == "e-2"
    assert record.body == f"a library line for {telemetry.EMAIL_MASK}"


def test_configure_exports_nothing_without_a_connection_string():
    assert telemetry.configure({}) == "off"
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    libraries = {name: logging.getLogger(name).level for name in ("azure", "urllib3")}
    try:
        # the Functions worker configures the distro itself when told to: the app does not do it twice
        assert telemetry.configure({telemetry.CONNECTION_STRING: "InstrumentationKey=00000000-0000-0000-0000-000000000000",
                                    telemetry.WORKER_TELEMETRY: "true"}) == "worker"
        assert not isinstance(trace.get_tracer_provider(), TracerProvider)
        assert logging.getLogger("azure").level == logging.WARNING  # the SDK's request lines are not exported
    finally:
        for name, level in libraries.items():
            logging.getLogger(name).setLevel(level)
