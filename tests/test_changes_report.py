"""The changes report's lines: the fast path for validated emails writes exactly what the csv module
and the report's cell escaping would, and anything else still takes that path."""

from __future__ import annotations

import csv
import io

from exporter.state.changes import HEADER, ChangesWriter
from exporter.state.reports import FORMULA_STARTS, safe_cell


class Blob:
    """An append blob in memory: what ``CsvAppender`` needs of one."""

    def __init__(self) -> None:
        self.data = b""

    def append_block(self, block: bytes) -> None:
        self.data += block


def expected(rows) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for row in rows:
        writer.writerow([safe_cell(c) for c in row])
    return buf.getvalue().encode()


EMAILS = [
    "ann@example.com", "o'brien+news@example.co.uk", "-dash@example.org", "+plus@example.org",
    "=formula@example.org", 'quote"d@example.org', "comma,@example.org", "line\nbreak@example.org",
    "žana@example.lt", "tab\t@example.org", "@at@example.org", "\tlead@example.org", "\rcr@example.org",
    "surrogate\udcff@example.org",
]


def test_every_line_is_what_the_csv_path_writes():
    blob = Blob()
    writer = ChangesWriter(blob, HEADER)  # type: ignore[arg-type]
    rows = []
    for i, email in enumerate(EMAILS):
        if i % 3 == 0:
            writer.joined(email)
            rows.append((email, "joined", ""))
        elif i % 3 == 1:
            writer.changed(email, ("firstName", "city") if i % 2 else None)
            rows.append((email, "changed", "firstName;city" if i % 2 else "unknown"))
        else:
            writer.left(email)
            rows.append((email, "left", ""))
    writer.changed("same@example.org", ())
    rows.append(("same@example.org", "changed", ""))
    writer.close()
    assert blob.data == expected(rows)
    read_back = list(csv.reader(io.StringIO(blob.data.decode(), newline="")))
    assert len(read_back) == len(EMAILS) + 1
    assert read_back[4][0] == "'=formula@example.org" and read_back[2][0] == "'-dash@example.org"
    assert {e[:1] for e in EMAILS} >= set(FORMULA_STARTS)  # each start a spreadsheet takes for a formula
