"""A run's report of rows that did not reach Omnisend: an append blob of the planner's rejections
(``exporter-runs/<run>/rejects.csv``), followed on reading by every contact the batch records list
as failed (their outcome and their report are one record)."""

from __future__ import annotations

import csv
import io
import re
from typing import Iterator

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from ..messages import SendBatch
from .batches import BatchRepository

COLUMNS = ("stage", "partition", "row", "email", "reason", "detail")
HEADER = (",".join(COLUMNS) + "\r\n").encode()
APPEND_BLOCK_BYTES = 4 << 20  # an append block holds at most 4 MiB
# A cell a spreadsheet would take for a formula (OWASP's CSV injection rule): written with a leading
# apostrophe, which spreadsheets show as text. The report holds what the segment's rows held.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(match: re.Match) -> str:
    """A byte the segment's encoding could not decode (held as a lone surrogate), shown as ``\\xNN``."""
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def safe_cell(value: object) -> object:
    if not isinstance(value, str):
        return value
    if _SURROGATE.search(value):  # not text: it cannot be written as UTF-8, so its bytes are shown
        value = _SURROGATE.sub(_escaped, value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _row(*cells: object) -> list[object]:
    return [safe_cell(c) for c in cells]


class CsvAppender:
    """Appends CSV lines to an append blob in blocks of about a megabyte (append blobs take concurrent
    writers, and a report of a million rows is never held whole)."""

    FLUSH_BYTES = 1 << 20

    def __init__(self, blob: BlobClient, header: bytes = HEADER):
        self._blob = blob
        self._header = header
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\r\n")

    def write_row(self, *cells: object) -> None:
        self._csv.writerow(_row(*cells))
        if self._buf.tell() >= self.FLUSH_BYTES:
            self.flush()

    def write_line(self, line: str) -> None:
        """A line the caller made CSV-safe itself (it ends with CRLF): the fast path of a million-line report."""
        self._buf.write(line)
        if self._buf.tell() >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        data = self._buf.getvalue()
        if not data:
            return
        raw = data.encode("utf-8")
        for start in range(0, len(raw), APPEND_BLOCK_BYTES):
            block = raw[start : start + APPEND_BLOCK_BYTES]
            try:
                self._blob.append_block(block)
            except ResourceNotFoundError:  # the run's report was never started (an old run): start it
                self._blob.create_append_blob()
                self._blob.append_block(self._header)
                self._blob.append_block(block)
        self._buf.seek(0)
        self._buf.truncate()

    def close(self) -> None:
        self.flush()


class ReportWriter(CsvAppender):
    """The run's report of rejected rows: one line per row, with the stage and the reason."""

    def add(self, stage: str, partition: str, row: int | str, email: str, reason: str, detail: str = "") -> None:
        self.write_row(stage, partition, row, email, reason, detail)


class ReportRepository:
    def __init__(self, container: ContainerClient, batches: BatchRepository):
        self._container = container
        self._batches = batches

    def _blob(self, run_id: str) -> BlobClient:
        return self._container.get_blob_client(f"{run_id}/rejects.csv")

    def create(self, run_id: str) -> None:
        """Start the run's report with its header; done once, before any batch can append to it."""
        blob = self._blob(run_id)
        blob.create_append_blob()
        blob.append_block(HEADER)

    def open(self, run_id: str) -> ReportWriter:
        return ReportWriter(self._blob(run_id))

    def read(self, run_id: str) -> Iterator[bytes]:
        """The run's report as CSV, streamed: the planner's rejections, then every contact that did
        not land at Omnisend, from the batch records."""
        try:
            yield from self._blob(run_id).download_blob().chunks()
        except ResourceNotFoundError:
            yield HEADER
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\r\n")
        for batch in self._batches.list(run_id, failed_only=True):
            sent = batch.payload if isinstance(batch.payload, SendBatch) else None
            for f in batch.failures:
                part, row = sent.source_row(f.index) if sent else ("", "")
                out.writerow(_row("upload", part, row, sent.email(f.index) if sent else "", f.reason, f.detail))
            if buf.tell() > 1 << 16:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
        if buf.tell():
            yield buf.getvalue().encode()

    def delete(self, run_id: str) -> None:
        try:
            self._blob(run_id).delete_blob()
        except ResourceNotFoundError:
            pass
