"""Log lines that carry the run, export and batch they are about, so one run can be followed.

Handlers pass ``extra={"run_id": ..., "export_id": ..., "batch": ...}``, and the queue handlers set
the same fields for everything they do with ``log_context(...)``: every record of a logger made by
``get_logger`` while that context is active carries them too, also the lines of modules that know
nothing of runs (the Omnisend client, storage). Locally the formatter appends them as key=value.
Under the Functions host the worker does not turn ``extra`` fields into custom dimensions, so they
travel as OpenTelemetry attributes instead (``telemetry.py``): entering a ``log_context`` also puts
its fields on the current span, and the OpenTelemetry log handler exports a record's fields as
attributes. Personal data (emails, names) and API keys are never put in a log line.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Iterator

from opentelemetry import trace

from .redaction import scrub

CONTEXT_FIELDS = ("run_id", "export_id", "connection_id", "batch", "trigger")

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("exporter_log_context", default=None)


@contextlib.contextmanager
def log_context(**fields) -> Iterator[None]:
    """Within this block (in this thread), records of the app's loggers carry ``fields`` (None ones are left out)."""
    current = _context.get() or {}
    added = {k: v for k, v in fields.items() if v is not None}
    token = _context.set({**current, **added})
    span = trace.get_current_span()  # the handler's span (telemetry.invocation) names them too
    if added and span.is_recording():
        span.set_attributes(added)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict:
    """The fields of the active ``log_context`` (a copy)."""
    return dict(_context.get() or {})


class _ContextFilter(logging.Filter):
    """Adds the active ``log_context`` fields a record does not have already (``extra`` wins), and
    takes any copy of an API key out of the record's text and traceback (``redaction``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        scrub_record(record)
        return True


_TRACEBACKS = logging.Formatter()

# OpenTelemetry's names for a record's exception (semantic conventions): the OpenTelemetry log
# handler would read them from ``exc_info``, which a scrubbed record no longer has.
EXCEPTION_TYPE, EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE = "exception.type", "exception.message", "exception.stacktrace"


def scrub_record(record: logging.LogRecord, clean=scrub) -> None:
    """Take secrets out of the record's text and traceback (``clean``: ``redaction.scrub`` unless
    told). Its exception is kept as scrubbed text: ``exc_text``, and the attributes above."""
    message = record.getMessage()
    text = clean(message)
    if text != message:
        record.msg, record.args = text, None
    if record.exc_info and not record.exc_text:
        record.exc_text = _TRACEBACKS.formatException(record.exc_info)
    if record.exc_info and record.exc_info[0] is not None:
        kind, value = record.exc_info[0], record.exc_info[1]
        setattr(record, EXCEPTION_TYPE, kind.__name__)
        setattr(record, EXCEPTION_MESSAGE, str(value) if value is not None else "")
    if record.exc_text:
        record.exc_text = clean(record.exc_text)
        setattr(record, EXCEPTION_STACKTRACE, record.exc_text)
        record.exc_info = None  # handlers render exc_text; none formats the raw exception again
    for name in (EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE):
        value = getattr(record, name, None)
        if isinstance(value, str):
            setattr(record, name, clean(value))


_FILTER = _ContextFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records carry the active ``log_context``."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


class ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, None) is not None)
        return f"{line} [{context}]" if context else line


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(ContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
