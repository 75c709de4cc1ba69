"""A segment's columns and CSV format: from the CDM model.json beside the segments, else from the
header row of the refresh's first partition."""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from typing import Iterable

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from ..domain import Refresh
from .blobs import HEADER_CHUNK_BYTES, UNDECODABLE, open_text
from .cdm import MAX_MODEL_JSON_BYTES, CsvFormat, ModelJsonError, find_entity, parse_model
from .errors import SegmentFormatError, SourceNotFoundError, _storage_error, _where
from .refresh import _model_json_name, _segment_prefix


@dataclass(frozen=True)
class SegmentSchema:
    columns: tuple[str, ...]
    fmt: CsvFormat
    origin: str  # "model.json" or "header"


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
    checked, text = open_text(container, partition, "utf-8", HEADER_CHUNK_BYTES)
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
    if any(UNDECODABLE.search(c) for c in header):
        raise SegmentFormatError(f"The header row of {partition} is not valid UTF-8; export the segment as UTF-8.")
    if any("@" in c for c in header):
        raise SegmentFormatError(
            f"The first row of {partition} looks like data (it holds an email address), not a header row. "
            "Export the segment with column headers or include the model.json that describes it."
        )
    _check_columns(header, f"the header row of {partition}")
    fmt = CsvFormat(header=True, delimiter=delimiter, quotechar='"', encoding="utf-8")
    return SegmentSchema(columns=tuple(header), fmt=fmt, origin="header")
