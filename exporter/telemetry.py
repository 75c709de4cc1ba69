"""Telemetry that follows one run: OpenTelemetry spans, log records and metrics for Azure Monitor.

Under the Functions host the Python worker does not turn ``logging`` ``extra`` fields into custom
dimensions, so the app speaks OpenTelemetry (Microsoft's "Use OpenTelemetry with Azure Functions"):
host.json sets ``"telemetryMode": "OpenTelemetry"``, and with the app setting
``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`` the worker itself calls the Azure Monitor
distro's ``configure_azure_monitor()`` before it loads function_app.py. ``configure()`` then adds
the app's parts to the providers the worker made; without that setting, and only when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set, it calls ``configure_azure_monitor()`` itself.
Nothing is exported otherwise (tests, ``serve`` without a connection string).

What the app adds:
- one span per handler invocation (``invocation``: each HTTP request, timer tick and queue
  message), named after the endpoint or function; ``log_context`` puts ``run_id``, ``export_id``
  and ``batch`` on it as soon as the handler knows them, and ``ContextSpanProcessor`` on every span
  started inside it (the Omnisend and storage calls);
- on the exporting log handlers, a filter that gives every record (any logger) the active context
  as attributes, and takes API keys (``redaction``) and email addresses out of its text, its
  exception and its attributes;
- a span's exception event and status hold the same cleaned text, never the raw message;
- metrics, once per run when it ends (``run_ended``), and each 429 Omnisend answers
  (``omnisend_throttled``), with the export id as attribute (never an email).
Telemetry never fails a handler: errors recording a metric are logged and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .logs import CONTEXT_FIELDS, current_context, get_logger, log_context, scrub_record
from .redaction import scrub

if TYPE_CHECKING:
    from .domain import Run

log = get_logger(__name__)

SCOPE = "exporter"  # instrumentation scope of the app's spans and metrics
CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
WORKER_TELEMETRY = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"  # read by the Functions Python worker

# Metric names (Azure Monitor: customMetrics.name); attributes export_id, status, trigger.
METRIC_CONFIRMED = "exporter.run.contacts.confirmed"
METRIC_FAILED = "exporter.run.contacts.failed"
METRIC_REJECTED = "exporter.run.contacts.rejected"
METRIC_DURATION = "exporter.run.duration"
METRIC_RUNS = "exporter.runs.ended"
METRIC_THROTTLED = "exporter.omnisend.throttled"  # 429s answered by Omnisend (attribute export_id)

EMAIL_MASK = "[email]"
_EMAIL = re.compile(r"[^\s@<>()\[\]{}\"',;:/\\]+@[^\s@<>()\[\]{}\"',;:/\\]+\.[A-Za-z0-9-]{2,}")
_MAX_ATTRIBUTE = 200  # an id taken from a request path is cut at this length


def clean(text: str) -> str:
    """``text`` without API keys (``redaction.scrub``) and without email addresses."""
    return _EMAIL.sub(EMAIL_MASK, scrub(text)) if text else text


def _clean_value(value: Any) -> Any:
    return clean(value) if isinstance(value, str) else value


# --- spans ---------------------------------------------------------------------------------------


class ContextSpanProcessor(SpanProcessor):
    """Every span started while a ``log_context`` is active carries its fields as attributes."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        fields = {k: _clean_value(v) for k, v in current_context().items() if k in CONTEXT_FIELDS}
        if fields:
            span.set_attributes(fields)


@dataclass
class _State:
    tracer_provider: Any = None  # None: the global one
    meter_provider: Any = None
    instruments: Any = None
    attached_to: Any = None  # the global tracer provider ContextSpanProcessor was added to


_state = _State()


def _tracer() -> trace.Tracer:
    _attach_to_global()
    provider = _state.tracer_provider or trace.get_tracer_provider()
    return provider.get_tracer(SCOPE)


def record_error(span: Span, error: BaseException) -> None:
    """The error as the span's exception event and status, with keys and emails taken out."""
    text = clean("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    span.record_exception(error, attributes={"exception.message": clean(str(error)), "exception.stacktrace": text})
    span.set_status(Status(StatusCode.ERROR, clean(f"{type(error).__name__}: {error}")))


@contextlib.contextmanager
def invocation(name: str, trigger: str, **attributes: Any) -> Iterator[Span]:
    """One span covering one handler invocation (``trigger``: http, timer or queue). Fields of a
    ``log_context`` entered inside it land on it too; an error leaving it is recorded, cleaned."""
    attrs = {"faas.trigger": trigger, **{k: _clean_value(v) for k, v in attributes.items() if v is not None}}
    with _tracer().start_as_current_span(name, kind=SpanKind.INTERNAL, attributes=attrs, record_exception=False,
                                         set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as e:
            record_error(span, e)
            raise


_PATH_IDS = {"runs": "run_id", "exports": "export_id", "connections": "connection_id"}


@contextlib.contextmanager
def http_invocation(name: str, method: str, url: str) -> Iterator[Callable[[Any], None]]:
    """``invocation`` for an HTTP request: the run, export or connection its path names is in the
    log context; call the function it yields with the answer's body to name the run or export the
    answer is about (``runId``, ``exportId``)."""
    parts = [p for p in url.split("?", 1)[0].split("/") if p]
    ids: dict[str, str] = {}
    if "api" in parts:
        rest = parts[parts.index("api") + 1:]
        if len(rest) >= 2 and rest[0] in _PATH_IDS:
            ids[_PATH_IDS[rest[0]]] = clean(rest[1][:_MAX_ATTRIBUTE])

    def answered(body: Any) -> None:
        if isinstance(body, Mapping):
            span = trace.get_current_span()
            for key, field in (("runId", "run_id"), ("exportId", "export_id")):
                if isinstance(body.get(key), str) and span.is_recording():
                    span.set_attribute(field, clean(body[key][:_MAX_ATTRIBUTE]))

    with invocation(name, "http", **{"http.request.method": method}), log_context(**ids):
        yield answered


# --- log records ---------------------------------------------------------------------------------

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class TelemetryLogFilter(logging.Filter):
    """On an exporting handler: every record carries the active context's fields, and no API key
    or email address in its text, exception or attributes (records of any logger, not only ours)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_context().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        scrub_record(record, clean)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, clean(value))
        return True


TELEMETRY_FILTER = TelemetryLogFilter()


def _exporting_handlers(logger: logging.Logger) -> list[logging.Handler]:
    kinds: list[type] = []
    with contextlib.suppress(ImportError):
        from opentelemetry.instrumentation.logging.handler import LoggingHandler

        kinds.append(LoggingHandler)
    with contextlib.suppress(ImportError):
        from opentelemetry.sdk._logs import LoggingHandler as SdkLoggingHandler

        kinds.append(SdkLoggingHandler)
    return [h for h in logger.handlers if isinstance(h, tuple(kinds))]


def _filter_log_handlers(logger: logging.Logger | None = None) -> list[logging.Handler]:
    handlers = _exporting_handlers(logger or logging.getLogger())
    for handler in handlers:
        if TELEMETRY_FILTER not in handler.filters:
            handler.addFilter(TELEMETRY_FILTER)
    return handlers


# --- setup ---------------------------------------------------------------------------------------


def _attach_to_global() -> None:
    """Give the global SDK tracer provider (made by the worker, or by ``configure``) the context
    processor, and the root logger's OpenTelemetry handlers the filter, once."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if provider is _state.attached_to or not isinstance(provider, TracerProvider):
        return
    provider.add_span_processor(ContextSpanProcessor())
    _filter_log_handlers()
    _state.attached_to = provider


def _quiet_libraries() -> None:
    """The Azure SDK logs every storage request and its headers at INFO: exported, that is most of
    the traces and none of the story. As ``serve`` does, only their warnings go."""
    for name in ("azure", "urllib3"):
        if logging.getLogger(name).level < logging.WARNING:
            logging.getLogger(name).setLevel(logging.WARNING)


def configure(environ: Mapping[str, str] | None = None) -> str:
    """Set up export to Azure Monitor, once per process, as the environment says. Returns what was
    done: ``worker`` (the Functions worker configured the distro: the app's parts are added to it),
    ``distro`` (``configure_azure_monitor()`` called here), or ``off`` (no connection string)."""
    from opentelemetry.sdk.trace import TracerProvider

    env = os.environ if environ is None else environ
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        _attach_to_global()
        _quiet_libraries()
        return "worker"
    if not env.get(CONNECTION_STRING):
        return "off"
    _quiet_libraries()
    if (env.get(WORKER_TELEMETRY) or "").strip().lower() == "true":
        return "worker"  # the worker configures the distro; the first invocation adds the app's parts
    from azure.monitor.opentelemetry import configure_azure_monitor

    # the connection string and APPLICATIONINSIGHTS_AUTHENTICATION_STRING (Entra ID) come from the environment
    configure_azure_monitor(connection_string=env[CONNECTION_STRING], span_processors=[ContextSpanProcessor()])
    provider = trace.get_tracer_provider()
    _state.attached_to = provider if isinstance(provider, TracerProvider) else None
    _filter_log_handlers()
    return "distro"


def use_providers(tracer_provider: Any = None, meter_provider: Any = None) -> Callable[[], None]:
    """Send the app's spans and metrics to these providers instead of the global ones (tests: the
    SDK with in-memory exporters), with the context processor added and the root logger's
    OpenTelemetry handlers filtered. Returns the function that undoes it."""
    if tracer_provider is not None:
        tracer_provider.add_span_processor(ContextSpanProcessor())
    handlers = _filter_log_handlers()
    previous = (_state.tracer_provider, _state.meter_provider, _state.instruments)
    _state.tracer_provider, _state.meter_provider, _state.instruments = tracer_provider, meter_provider, None

    def undo() -> None:
        _state.tracer_provider, _state.meter_provider, _state.instruments = previous
        for handler in handlers:
            handler.removeFilter(TELEMETRY_FILTER)

    return undo


# --- metrics -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Instruments:
    confirmed: metrics.Counter
    failed: metrics.Counter
    rejected: metrics.Counter
    duration: metrics.Histogram
    runs: metrics.Counter
    throttled: metrics.Counter


def _instruments() -> _Instruments:
    if _state.instruments is None:
        meter = (_state.meter_provider or metrics.get_meter_provider()).get_meter(SCOPE)
        _state.instruments = _Instruments(
            confirmed=meter.create_counter(METRIC_CONFIRMED, unit="{contact}",
                                           description="Contacts Omnisend confirmed, per run that ended"),
            failed=meter.create_counter(METRIC_FAILED, unit="{contact}",
                                        description="Contacts that did not land at Omnisend, per run that ended"),
            rejected=meter.create_counter(METRIC_REJECTED, unit="{row}",
                                          description="Rows rejected while reading the segment, per run that ended"),
            duration=meter.create_histogram(METRIC_DURATION, unit="s",
                                            description="From a run's start (or creation) to its end"),
            runs=meter.create_counter(METRIC_RUNS, unit="{run}", description="Runs that ended, by status"),
            throttled=meter.create_counter(METRIC_THROTTLED, unit="{response}",
                                           description="Requests Omnisend answered 429 (its rate limit)"),
        )
    return _state.instruments


def run_ended(run: "Run") -> None:
    """A run's counts became final: its metrics, once (the caller knows it made that change)."""
    try:
        attrs = {"export_id": run.export_id, "status": run.status.value, "trigger": run.trigger}
        m = _instruments()
        m.confirmed.add(run.counts.confirmed, attrs)
        m.failed.add(run.counts.failed, attrs)
        m.rejected.add(run.counts.rejected, attrs)
        m.runs.add(1, attrs)
        start = run.started_at or run.created_at
        if run.finished_at is not None and start is not None:
            m.duration.record(max(0.0, (run.finished_at - start).total_seconds()), attrs)
    except Exception:  # telemetry never fails a run
        log.warning("the run's metrics could not be recorded", exc_info=True)


def omnisend_throttled() -> None:
    """Omnisend answered 429: counted with the export of the active ``log_context``."""
    try:
        export_id = current_context().get("export_id")
        _instruments().throttled.add(1, {"export_id": export_id} if export_id else {})
    except Exception:  # telemetry never fails a send
        log.warning("a 429 could not be counted", exc_info=True)
