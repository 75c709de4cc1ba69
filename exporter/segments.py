"""Reading segment exports from Azure Blob Storage (Dynamics 365 Customer Insights layout).

The platform writes one folder per refresh and splits large segments into partitions::

    <container>/<folder>/<Segment>/<yyyy>/<MM>/<dd>/<HHmm>/<Segment>_<n>.csv[.gz]
    <container>/<folder>/model.json          (CDM model.json; optional)

``find_latest_refresh`` picks the newest time folder, ``is_settled`` tells whether the platform has
stopped writing it, ``load_schema`` finds the column names and CSV format (model.json, else the
header row) and ``read_rows`` streams the rows of every partition.

Blobs are read with ranged GETs of ``DOWNLOAD_CHUNK_BYTES`` pinned to the ETag seen when the
partition is opened, so memory stays bounded whatever the client's ``max_single_get_size`` is, and a
partition rewritten while it is read is reported instead of being read half old, half new.

Error messages say what is wrong and what to do. They name blobs, columns and settings, never
other file contents (segment rows hold personal data).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import itertools
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator, NamedTuple

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from exporter.cdm import MAX_MODEL_JSON_BYTES, MODEL_JSON, CsvFormat, ModelJsonError, find_entity, parse_model
from exporter.domain import Refresh

__all__ = [
    "CsvFormat",
    "SegmentFormatError",
    "SegmentSchema",
    "SegmentSourceError",
    "SourceNotFoundError",
    "SourceRow",
    "find_latest_refresh",
    "is_settled",
    "load_schema",
    "read_rows",
]

# A quoted field may hold a long value; the caller decides what is too long. (Process-wide setting.)
FIELD_SIZE_LIMIT = 16 * 1024 * 1024
csv.field_size_limit(FIELD_SIZE_LIMIT)

# One ranged GET. While it is received the storage SDK and its HTTP stack briefly hold several copies,
# so a reader peaks at roughly 10x this (about 20 MB), whatever the size of the blob.
DOWNLOAD_CHUNK_BYTES = 2 * 1024 * 1024
HEADER_CHUNK_BYTES = 64 * 1024  # first GET when only the header row is needed
_TEXT_CHUNK_CHARS = 64 * 1024  # bytes handed to the text decoder at a time
_GZIP_BLOCK_BYTES = 256 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" turns bad bytes into
_MAX_NAMES_IN_MESSAGE = 10
# When this many first rows of a partition all have the same wrong number of fields, the schema does
# not describe the file (model.json of another export, a column added or removed): one clear error
# instead of a rejection for every row.
SCHEMA_MISMATCH_ROWS = 3


class SegmentSourceError(Exception):
    """The segment cannot be read; the message says what is wrong and what to do."""


class SourceNotFoundError(SegmentSourceError):
    """The container, a partition or the segment's data does not exist."""


class SegmentFormatError(SegmentSourceError):
    """model.json or a partition is not in a format the exporter can read."""


@dataclass(frozen=True)
class SegmentSchema:
    columns: tuple[str, ...]
    fmt: CsvFormat
    origin: str  # "model.json" or "header"


class SourceRow(NamedTuple):
    partition: str  # blob name
    number: int  # 1-based data record number within the partition (a header row is not counted)
    fields: list[str]
    error: str | None  # None, or why the row is unusable ("expected 9 columns, found 8", ...)


_new_row = tuple.__new__  # builds a SourceRow without the Python-level NamedTuple __new__ (hot path)


# --------------------------------------------------------------------------- names and locations


def _segment_prefix(folder: str | None, segment: str) -> str:
    if not segment or "/" in segment:
        raise SegmentSourceError(f"Segment name {segment!r} is not valid: it must be a non-empty name without '/'.")
    folder = (folder or "").strip("/")
    return f"{folder}/{segment}/" if folder else f"{segment}/"


def _model_json_name(folder: str | None) -> str:
    folder = (folder or "").strip("/")
    return f"{folder}/{MODEL_JSON}" if folder else MODEL_JSON


def _where(container: ContainerClient) -> str:
    return f"container '{container.container_name}' of storage account '{container.account_name}'"


def _storage_error(container: ContainerClient, exc: HttpResponseError, doing: str) -> SegmentSourceError:
    """Map an Azure error to a SegmentSourceError; transient errors are not mapped (caller re-raises)."""
    code = str(getattr(exc, "error_code", "") or "")
    if isinstance(exc, ResourceNotFoundError) and "ContainerNotFound" in code:
        return SourceNotFoundError(
            f"The {_where(container)} does not exist (while {doing}). Check the export's source container "
            "name, or wait until the platform has written its first export."
        )
    if isinstance(exc, ResourceNotFoundError):
        return SourceNotFoundError(
            f"A blob disappeared in the {_where(container)} while {doing}: the platform probably replaced "
            "the refresh. Run the export again."
        )
    if exc.status_code == 403:
        return SegmentSourceError(
            f"Access to the {_where(container)} was denied while {doing}. Grant the app's identity the "
            "'Storage Blob Data Reader' role on the storage account or container."
        )
    return None  # type: ignore[return-value]


# --------------------------------------------------------------------------- refreshes

_TIME_FOLDER = r"(\d{4})/(\d{2})/(\d{2})/(\d{4})/"


def find_latest_refresh(container: ContainerClient, folder: str, segment: str) -> Refresh | None:
    """The newest refresh of ``segment`` (by its yyyy/MM/dd/HHmm path), or None when there is none.

    Blobs that do not fit the layout are ignored. The refresh's ``last_modified`` is the newest blob
    anywhere in its time folder, so a refresh still being written is seen as recent.
    """
    prefix = _segment_prefix(folder, segment)
    folder_re = re.compile(re.escape(prefix) + _TIME_FOLDER)
    partition_re = re.compile(r"(?s)" + re.escape(segment) + r"_(\d+)\.(?i:csv(?:\.gz)?)\Z")
    newest: dict[str, datetime] = {}
    parts: dict[str, list[tuple[int, str, str, int]]] = {}
    try:
        for blob in container.list_blobs(name_starts_with=prefix):
            m = folder_re.match(blob.name)
            if not m:
                continue
            key = m.group(0)
            lm = blob.last_modified
            if key not in newest or lm > newest[key]:
                newest[key] = lm
            p = partition_re.match(blob.name, m.end())
            if p:
                parts.setdefault(key, []).append((int(p.group(1)), blob.name, blob.etag or "", blob.size or 0))
    except HttpResponseError as exc:
        mapped = _storage_error(container, exc, f"listing the refreshes of segment '{segment}'")
        if mapped is None:
            raise
        raise mapped from None
    for key in sorted(parts, reverse=True):
        if not _valid_time_folder(folder_re.match(key)):
            continue
        entries = sorted(parts[key])
        digest = hashlib.sha256()
        for name, etag in sorted((name, etag) for _, name, etag, _ in entries):
            digest.update(name.encode("utf-8", "surrogatepass") + b"\x00" + etag.encode() + b"\n")
        return Refresh(
            folder=key,
            fingerprint=digest.hexdigest(),
            partitions=tuple(name for _, name, _, _ in entries),
            last_modified=_aware(newest[key]),
            size=sum(size for *_, size in entries),
        )
    return None


def _valid_time_folder(m: re.Match | None) -> bool:
    if not m:
        return False
    y, mo, d, hm = m.groups()
    try:
        datetime(int(y), int(mo), int(d), int(hm[:2]), int(hm[2:]))
    except ValueError:
        return False
    return True


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def is_settled(refresh: Refresh, now: datetime, settle_seconds: int) -> bool:
    """True when no blob of the refresh changed in the last ``settle_seconds`` (the platform is done)."""
    if settle_seconds <= 0:
        return True
    return (_aware(now) - _aware(refresh.last_modified)).total_seconds() >= settle_seconds


# --------------------------------------------------------------------------- schema


def load_schema(container: ContainerClient, folder: str, segment: str, refresh: Refresh | None) -> SegmentSchema:
    """Column names and CSV format of the segment.

    From ``<folder>/model.json`` when it exists (the entity named like the segment; format settings of
    its partition in the refresh folder, else of its first partition, else CDM defaults). Otherwise
    from the header row of the refresh's first partition (only the beginning of the blob is read).
    """
    prefix = _segment_prefix(folder, segment)
    model_name = _model_json_name(folder)
    data = _download_small(container, model_name, f"reading {model_name}")
    if data is not None:
        try:
            entity = find_entity(parse_model(data), segment)
        except ModelJsonError as exc:
            raise SegmentFormatError(
                f"{model_name} in the {_where(container)} cannot be used: {exc}. Fix or re-export it "
                "(the platform rewrites it with every export)."
            ) from None
        _check_columns(entity.columns, f"entity '{segment}' in {model_name}")
        fmt = entity.format_for_folder(refresh.folder if refresh else None)
        return SegmentSchema(columns=entity.columns, fmt=fmt, origin="model.json")

    if refresh is None:
        raise SourceNotFoundError(
            f"Segment '{segment}' has no {model_name} and no refresh under '{prefix}' in the "
            f"{_where(container)}. Wait for the platform's first export, or check the folder and segment name."
        )
    if not refresh.partitions:
        raise SegmentFormatError(f"Refresh {refresh.folder} has no partition files ({segment}_<n>.csv).")
    return _schema_from_header(container, refresh.partitions[0])


def _download_small(container: ContainerClient, name: str, doing: str) -> bytes | None:
    """A small blob's bytes, or None when it does not exist (a missing container raises)."""
    try:
        downloader = container.get_blob_client(name).download_blob(max_concurrency=1, decompress=False)
        if downloader.size > MAX_MODEL_JSON_BYTES:
            raise SegmentFormatError(f"{name} is {downloader.size} bytes; more than the {MAX_MODEL_JSON_BYTES} accepted.")
        return downloader.readall()
    except ResourceNotFoundError as exc:
        if "BlobNotFound" in str(getattr(exc, "error_code", "") or ""):
            return None
        mapped = _storage_error(container, exc, doing)
        raise mapped from None
    except HttpResponseError as exc:
        mapped = _storage_error(container, exc, doing)
        if mapped is None:
            raise
        raise mapped from None


def _check_columns(columns: Iterable[str], where: str) -> None:
    seen: set[str] = set()
    for c in columns:
        if c and c in seen:
            raise SegmentFormatError(
                f"Column {c!r} appears twice in {where}; column names must be unique so that the mapping "
                "is unambiguous. Rename one of them in the platform's export."
            )
        seen.add(c)


def _sniff_delimiter(line: str) -> str:
    if "," in line:
        return ","
    counts = {d: line.count(d) for d in (";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _schema_from_header(container: ContainerClient, partition: str) -> SegmentSchema:
    checked, text = _open_text(container, partition, "utf-8", HEADER_CHUNK_BYTES)
    try:
        first_line = text.readline()
        delimiter = _sniff_delimiter(first_line)
        reader = csv.reader(itertools.chain([first_line], text), delimiter=delimiter, quotechar='"', strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise SegmentFormatError(f"{partition}: malformed CSV header row: {exc}. Fix or re-export the file.") from None
    finally:
        text.close()
    if not header or header == [""]:
        raise SegmentFormatError(
            f"{partition} starts with an empty line or is empty. Without a model.json the first partition must "
            "start with a header row naming the columns; export with headers or include the model.json."
        )
    if any(_UNDECODABLE.search(c) for c in header):
        raise SegmentFormatError(f"The header row of {partition} is not valid UTF-8; export the segment as UTF-8.")
    if any("@" in c for c in header):
        raise SegmentFormatError(
            f"The first row of {partition} looks like data (it holds an email address), not a header row. "
            "Export the segment with column headers or include the model.json that describes it."
        )
    _check_columns(header, f"the header row of {partition}")
    fmt = CsvFormat(header=True, delimiter=delimiter, quotechar='"', encoding="utf-8")
    return SegmentSchema(columns=tuple(header), fmt=fmt, origin="header")


# --------------------------------------------------------------------------- streaming


def _ranged_chunks(container: ContainerClient, name: str, chunk_size: int) -> Iterator[bytes]:
    """The blob's bytes in ranged GETs of ``chunk_size``, all pinned to the ETag the blob had first.

    The next range is fetched in a background thread while the current one is parsed (at most two
    ranges are in memory besides the one being decoded).
    """
    blob = container.get_blob_client(name)

    def fetch(offset: int, length: int) -> bytes:
        downloader = blob.download_blob(
            offset=offset,
            length=length,
            max_concurrency=1,
            decompress=False,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )
        # chunks() hands over the response body without the copies readall() makes; a range no larger
        # than the client's max_single_get_size is one piece.
        data = b"".join(downloader.chunks())
        if len(data) != length:
            raise SegmentSourceError(
                f"{name}: the storage service returned {len(data)} bytes instead of {length} at byte {offset}; "
                "run the export again."
            )
        return data

    pool = None
    try:
        props = blob.get_blob_properties()
        size, etag = props.size, props.etag
        ranges = [(offset, min(chunk_size, size - offset)) for offset in range(0, size, chunk_size)]
        if len(ranges) <= 1:
            for offset, length in ranges:
                yield fetch(offset, length)
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-read")
        pending = pool.submit(fetch, *ranges[0])
        for following in ranges[1:]:
            data = pending.result()
            pending = pool.submit(fetch, *following)
            yield data
        yield pending.result()
    except ResourceModifiedError:
        raise SegmentSourceError(
            f"{name} changed while it was being read (the platform rewrote it). Run the export again to read "
            "the new data."
        ) from None
    except HttpResponseError as exc:
        mapped = _storage_error(container, exc, f"reading partition {name}")
        if mapped is None:
            raise
        raise mapped from None
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class _IterRaw(io.RawIOBase):
    """A readable raw stream over an iterator of bytes blocks (feeds gzip.GzipFile)."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._buf):
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._buf, self._pos = block, 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


class _CheckedBytes(io.BufferedIOBase):
    """Bytes for the text decoder, checked on the way for bytes that are not valid in ``encoding``.

    ``dirty`` turns True once any invalid byte has passed; rows decoded before that cannot contain
    undecodable characters, so the per-row check is only needed after it (cheap for clean files).
    """

    def __init__(self, blocks: Iterator[bytes], encoding: str, on_close=None):
        self._blocks = blocks
        self._on_close = on_close
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.dirty = False
        self._ascii_fast = encoding == "utf-8"
        self._decoder = codecs.getincrementaldecoder(encoding)("strict")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            self._on_close()  # stops the download (and its background fetch) early
        self._buf = b""
        super().close()

    def _check(self, block: bytes, final: bool = False) -> None:
        if self.dirty:
            return
        if self._ascii_fast and not final and block.isascii() and not self._decoder.getstate()[0]:
            return
        try:
            self._decoder.decode(block, final)
        except UnicodeDecodeError:
            self.dirty = True

    def read1(self, size: int = -1) -> bytes:
        while self._pos >= len(self._buf):
            if self._eof:
                return b""
            block = next(self._blocks, None)
            if block is None:
                self._eof = True
                self._check(b"", final=True)
                return b""
            self._check(block)
            self._buf, self._pos = block, 0
        if size is None or size < 0 or (self._pos == 0 and size >= len(self._buf)):
            out = self._buf[self._pos :] if self._pos else self._buf
        else:
            out = self._buf[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def read(self, size: int = -1) -> bytes:
        if size is not None and size >= 0:
            return self.read1(size)
        return b"".join(iter(self.read1, b""))


def _gunzip_blocks(gz: gzip.GzipFile, name: str) -> Iterator[bytes]:
    try:
        while True:
            block = gz.read(_GZIP_BLOCK_BYTES)
            if not block:
                return
            yield block
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise SegmentFormatError(f"{name} is not a valid gzip file ({exc}). Re-export it.") from None


def _open_text(container: ContainerClient, name: str, encoding: str, chunk_size: int):
    """(checker, text stream) for a partition; gzip is detected by its magic bytes."""
    chunks = _ranged_chunks(container, name, chunk_size)
    first = next(chunks, b"")
    source: Iterator[bytes] = itertools.chain([first], chunks) if first else iter(())
    if first[:2] == _GZIP_MAGIC:
        source = _gunzip_blocks(gzip.GzipFile(fileobj=_IterRaw(source), mode="rb"), name)
    checked = _CheckedBytes(source, encoding, on_close=chunks.close)
    text = io.TextIOWrapper(
        checked,
        encoding="utf-8-sig" if encoding == "utf-8" else encoding,
        errors="surrogateescape",
        newline="",
    )
    text._CHUNK_SIZE = _TEXT_CHUNK_CHARS
    return checked, text


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
    checked, text = _open_text(container, partition, fmt.encoding, DOWNLOAD_CHUNK_BYTES)
    reader = csv.reader(text, **_dialect(fmt))
    expected_header = list(schema.columns)
    ncols = len(expected_header)
    bad_encoding = "not valid UTF-8" if fmt.encoding == "utf-8" else f"not valid {fmt.encoding}"
    undecodable = _UNDECODABLE.search
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
