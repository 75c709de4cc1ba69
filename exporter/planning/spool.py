"""The plan of a run, spooled: its batch messages in a local file while the segment is read, and in
the run's spool blob for the uploaders once the whole refresh was read cleanly."""

from __future__ import annotations

import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from ..domain import Run
from ..messages import Dispatch, SendBatch, decode_batch_message
from ..state.reports import ReportWriter
from ..state.spools import SpoolBlob

DISPATCH_LINES = 50  # messages a dispatch message fans out
SPOOL_UPLOAD_THREADS = 4
SPOOL_BLOCK_BYTES = 8 << 20


class Spool:
    """The plan's queue messages, one JSON line each, in a local temporary file (read back for the
    report when a run ends before sending) and, as it grows, staged block by block as the run's spool
    blob from a background thread, so that handing a large plan off costs little after the read.
    Staged blocks are invisible until ``commit``: nothing can be fanned out before the plan is whole.
    """

    def __init__(self, blob: SpoolBlob, run: Run):
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8")
        self._blob = blob
        self._run = run
        self._pool: ThreadPoolExecutor | None = None
        self._staged: deque = deque()
        self._block_ids: list[str] = []
        self._buf = bytearray()
        self._error: BaseException | None = None
        self._group_starts: list[int] = []  # byte offset of every DISPATCH_LINES-th line
        self.offset = 0
        self.lines = 0

    def write(self, line: str) -> None:
        """Add one message (a JSON line ending in a newline)."""
        self._file.write(line)
        data = line.encode("utf-8")
        if self.lines % DISPATCH_LINES == 0:
            self._group_starts.append(self.offset)
        self.lines += 1
        self.offset += len(data)
        self._buf += data
        if len(self._buf) >= SPOOL_BLOCK_BYTES:
            self._stage()

    def _stage(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(SPOOL_UPLOAD_THREADS, thread_name_prefix="spool")
        block_id = f"{len(self._block_ids):08d}"
        self._block_ids.append(block_id)
        self._staged.append(self._pool.submit(self._blob.stage, block_id, bytes(self._buf)))
        self._buf.clear()
        while len(self._staged) > SPOOL_UPLOAD_THREADS:  # bounded memory: wait for the oldest block
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        try:
            self._staged.popleft().result()
        except Exception as e:  # noqa: BLE001 - reported when the plan is handed off, not mid-read
            self._error = self._error or e

    def messages(self) -> Iterator[str]:
        """The messages from the first, as text, read back from the local file (also for the report of a
        run that ends before sending); the file is left at its end."""
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            yield line.rstrip("\n")

    def commit(self) -> list[Dispatch]:
        """Make the spool blob whole; returns the dispatch messages that cover it."""
        if self._buf:
            self._stage()
        while self._staged:
            self._wait_oldest()
        if self._error is not None:
            raise self._error
        self._blob.commit(self._block_ids)
        ends = self._group_starts[1:] + [self.offset]
        run = self._run
        return [Dispatch(run.id, run.export_id, run.connection_id, first=i * DISPATCH_LINES + 1,
                         lines=min(DISPATCH_LINES, self.lines - i * DISPATCH_LINES), start=start, end=end)
                for i, (start, end) in enumerate(zip(self._group_starts, ends))]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._file.close()

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def report_unsent(report: ReportWriter, spool: Spool, reason: str, detail: str) -> None:
    """List every contact of the spooled send batches in the report as not sent, one row each (so the
    report has as many rows with ``reason`` as the run counts failed with it).

    Streams the spool from its start, one message (line) at a time.
    """
    for line in spool.messages():
        message = decode_batch_message(line)
        if not isinstance(message, SendBatch):
            continue  # tag removals of leavers: no contact of this run's rows
        for i in range(message.size):
            partition, row = message.source_row(i)
            report.add("planning", partition, row, message.email(i), reason, detail)
