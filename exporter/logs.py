"""Log lines that carry the run, export and batch they are about, so one run can be followed.

Handlers pass ``extra={"run_id": ..., "export_id": ..., "batch": ...}``, and the queue handlers set
the same fields for everything they do with ``log_context(...)``: every record of a logger made by
``get_logger`` while that context is active carries them too, also the lines of modules that know
nothing of runs (the Omnisend client, storage). Locally the formatter appends them as key=value;
under the Functions host they travel as custom dimensions.
Personal data (emails, names) and API keys are never put in a log line.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Iterator

from .redaction import scrub

CONTEXT_FIELDS = ("run_id", "export_id", "connection_id", "batch", "trigger")

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("exporter_log_context", default=None)


@contextlib.contextmanager
def log_context(**fields) -> Iterator[None]:
    """Within this block (in this thread), records of the app's loggers carry ``fields`` (None ones are left out)."""
    current = _context.get() or {}
    token = _context.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    """Adds the active ``log_context`` fields a record does not have already (``extra`` wins), and
    takes any copy of an API key out of the record's text and traceback (``redaction``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        _scrub_record(record)
        return True


_TRACEBACKS = logging.Formatter()


def _scrub_record(record: logging.LogRecord) -> None:
    message = record.getMessage()
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = _TRACEBACKS.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = scrub(record.exc_text)
        record.exc_info = None  # handlers render exc_text; none formats the raw exception again


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
