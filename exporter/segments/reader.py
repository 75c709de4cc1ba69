"""Reading segment exports from Azure Blob Storage (Dynamics 365 Customer Insights layout).

The platform writes one folder per refresh and splits large segments into partitions::

    <container>/<folder>/<Segment>/<yyyy>/<MM>/<dd>/<HHmm>/<Segment>_<n>.csv[.gz]
    <container>/<folder>/model.json          (CDM model.json; optional)

``refresh.latest_settled_refresh`` picks the newest time folder once the platform stopped writing
it, ``schema.load_schema`` finds the column names and CSV format (model.json, else the header row)
and ``read_rows`` here streams the rows of every partition.

Blobs are read with ranged GETs of ``DOWNLOAD_CHUNK_BYTES`` pinned to the ETag seen when the
partition is opened, so memory stays bounded whatever the client's ``max_single_get_size`` is, and a
partition rewritten while it is read is reported instead of being read half old, half new.

Error messages say what is wrong and what to do. They name blobs, columns and settings, never
other file contents (segment rows hold personal data).
"""

from __future__ import annotations

import csv
from typing import Iterable, Iterator, NamedTuple

from azure.storage.blob import ContainerClient

from ..domain import Refresh
from . import blobs
from .cdm import CsvFormat
from .errors import SegmentFormatError
from .schema import SegmentSchema

# A quoted field may hold a long value; the caller decides what is too long. (Process-wide setting.)
FIELD_SIZE_LIMIT = 16 * 1024 * 1024
csv.field_size_limit(FIELD_SIZE_LIMIT)

_MAX_NAMES_IN_MESSAGE = 10
# When this many first rows of a partition all have the same wrong number of fields, the schema does
# not describe the file (model.json of another export, a column added or removed): one clear error
# instead of a rejection for every row.
SCHEMA_MISMATCH_ROWS = 3


class SourceRow(NamedTuple):
    partition: str  # blob name
    number: int  # 1-based data record number within the partition (a header row is not counted)
    fields: list[str]
    error: str | None  # None, or why the row is unusable ("expected 9 columns, found 8", ...)


_new_row = tuple.__new__  # builds a SourceRow without the Python-level NamedTuple __new__ (hot path)


def _dialect(fmt: CsvFormat) -> dict:
    if fmt.quotechar:
        return {"delimiter": fmt.delimiter, "quotechar": fmt.quotechar, "doublequote": True, "strict": True}
    return {"delimiter": fmt.delimiter, "quotechar": None, "quoting": csv.QUOTE_NONE, "strict": True}


def _names(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(repr(n[:64]) for n in names[:_MAX_NAMES_IN_MESSAGE])
    more = len(names) - _MAX_NAMES_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")


def _header_mismatch(partition: str, header: list[str], schema: SegmentSchema) -> SegmentFormatError:
    expected = set(schema.columns)
    found = set(header)
    missing = [c for c in schema.columns if c not in found]
    unexpected = [c for c in header if c not in expected]
    source = "model.json" if schema.origin == "model.json" else "the first partition's header row"
    if not (expected & found):
        # Probably no header row at all: do not echo the row, it may be personal data.
        return SegmentFormatError(
            f"{partition}: the first row matches none of the columns from {source}; the partition has no "
            "header row or a different layout. Re-export the segment so that all partitions have the same "
            "header row."
        )
    if not missing and not unexpected:
        detail = "the same columns in a different order"
    else:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names(unexpected)}")
        detail = "; ".join(parts)
    return SegmentFormatError(
        f"{partition}: the header row differs from the columns from {source}: {detail}. "
        "Re-export the segment so that all partitions have the same columns."
    )


def _width_mismatch(partition: str, width: int, schema: SegmentSchema) -> SegmentFormatError:
    source = "model.json" if schema.origin == "model.json" else "the first partition's header row"
    return SegmentFormatError(
        f"{partition}: its first {SCHEMA_MISMATCH_ROWS} rows have {width} columns, but {source} lists "
        f"{len(schema.columns)} columns ({_names(schema.columns)}): {source} does not describe this file. "
        "Re-export the segment so that the column list and the files agree."
    )


def read_rows(container: ContainerClient, refresh: Refresh, schema: SegmentSchema) -> Iterator[SourceRow]:
    """Every data row of the refresh, partition by partition, streamed (bounded memory).

    Rows with the wrong number of fields, blank lines and rows with undecodable bytes are yielded
    with ``error`` set; malformed CSV (e.g. an unbalanced quote) raises SegmentFormatError, and so
    does a partition whose first ``SCHEMA_MISMATCH_ROWS`` rows all have the same wrong number of
    fields (the schema does not describe it).
    """
    for partition in refresh.partitions:
        yield from _partition_rows(container, partition, schema)


def _partition_rows(container: ContainerClient, partition: str, schema: SegmentSchema) -> Iterator[SourceRow]:
    fmt = schema.fmt
    checked, text = blobs.open_text(container, partition, fmt.encoding, blobs.DOWNLOAD_CHUNK_BYTES)
    reader = csv.reader(text, **_dialect(fmt))
    expected_header = list(schema.columns)
    ncols = len(expected_header)
    bad_encoding = "not valid UTF-8" if fmt.encoding == "utf-8" else f"not valid {fmt.encoding}"
    undecodable = blobs.UNDECODABLE.search
    new_row = _new_row
    number = 0
    leading_bad, leading_width = 0, 0  # the first rows, while all have the same wrong number of fields
    try:
        try:
            if fmt.header:
                header = next(reader, None)
                if header is None:
                    return  # an empty partition
                if header != expected_header:
                    raise _header_mismatch(partition, header, schema)
            for fields in reader:
                number += 1
                if len(fields) != ncols:
                    error = f"expected {ncols} columns, found {len(fields)}" if fields else "empty row"
                    if leading_bad == number - 1 and fields and (number == 1 or len(fields) == leading_width):
                        leading_bad, leading_width = number, len(fields)
                        if leading_bad >= SCHEMA_MISMATCH_ROWS:
                            raise _width_mismatch(partition, leading_width, schema)
                    if checked.dirty and undecodable("\x00".join(fields)):  # a short row of bad bytes
                        error = bad_encoding
                elif checked.dirty and undecodable("\x00".join(fields)):
                    error = bad_encoding
                else:
                    error = None
                yield new_row(SourceRow, (partition, number, fields, error))
        except csv.Error as exc:
            raise SegmentFormatError(
                f"{partition}: malformed CSV at line {reader.line_num}: {exc}. Fix or re-export the file."
            ) from None
    finally:
        text.close()
