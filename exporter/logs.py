"""Log lines that carry the run, export and batch they are about, so one run can be followed.

Handlers pass ``extra={"run_id": ..., "export_id": ..., "batch": ...}``. Locally the formatter
appends them as key=value; under the Functions host they travel as custom dimensions.
Personal data (emails, names) and API keys are never put in a log line.
"""

from __future__ import annotations

import logging

CONTEXT_FIELDS = ("run_id", "export_id", "connection_id", "batch", "trigger")


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
