"""CDM ``model.json`` (version 1.0) as written by Dynamics 365 Customer Insights next to exported segments.

Only what the exporter needs: an entity's attribute names (the CSV columns, in file order) and the
``CsvFormatSettings`` of its partitions. Defaults follow the CDM spec: no header row, ``,`` as the
delimiter, every field quoted with ``"`` (``QuoteStyle.Csv`` / ``CsvStyle.QuoteAlways``), UTF-8.

Errors are raised as :class:`ModelJsonError`; their messages never quote file contents other than
names (entity, attribute) and setting values.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

MODEL_JSON = "model.json"
MAX_MODEL_JSON_BYTES = 64 * 1024 * 1024


class ModelJsonError(ValueError):
    """model.json is not usable; the message says what is wrong (the caller adds where)."""


@dataclass(frozen=True)
class CsvFormat:
    """How a segment's CSV partitions are written.

    ``quotechar`` "" means no quoting at all (CDM ``QuoteStyle.None``).
    """

    header: bool
    delimiter: str = ","
    quotechar: str = '"'
    encoding: str = "utf-8"


DEFAULT_FORMAT = CsvFormat(header=False)


@dataclass(frozen=True)
class CdmPartition:
    name: str
    location: str
    fmt: CsvFormat


@dataclass(frozen=True)
class CdmEntity:
    name: str
    columns: tuple[str, ...]
    partitions: tuple[CdmPartition, ...]

    def format_for_folder(self, folder: str | None) -> CsvFormat:
        """The format of the partition whose location points into ``folder`` (a blob prefix ending in
        "/"), else of the first partition, else the CDM defaults."""
        if folder:
            needle = "/" + folder.strip("/") + "/"
            for p in self.partitions:
                if needle in _location_path(p.location):
                    return p.fmt
        return self.partitions[0].fmt if self.partitions else DEFAULT_FORMAT


def _location_path(location: str) -> str:
    try:
        path = urlsplit(location).path if "://" in location else location
    except ValueError:
        path = location
    return "/" + unquote(path).lstrip("/")


def normalize_encoding(name: str) -> str:
    """Python codec name for a CDM/IANA encoding name ("UTF-8" -> "utf-8"); ModelJsonError if unknown."""
    try:
        return codecs.lookup(name.strip()).name
    except (LookupError, AttributeError):
        raise ModelJsonError(f"encoding {name!r} is not supported") from None


def _bool_setting(value, setting: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ModelJsonError(f"{setting} must be true or false, got {value!r}")


def parse_format_settings(settings) -> CsvFormat:
    """``fileFormatSettings`` of a partition -> CsvFormat (missing settings take the CDM defaults)."""
    if settings is None:
        return DEFAULT_FORMAT
    if not isinstance(settings, dict):
        raise ModelJsonError("fileFormatSettings must be an object")
    kind = settings.get("$type", "CsvFormatSettings")
    if kind != "CsvFormatSettings":
        raise ModelJsonError(f"fileFormatSettings $type {kind!r} is not supported; only CsvFormatSettings")
    header = _bool_setting(settings.get("columnHeaders", False), "columnHeaders")
    delimiter = settings.get("delimiter", ",")
    if delimiter in (None, ""):
        delimiter = ","
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise ModelJsonError(f"delimiter must be one character other than a quote or line break, got {delimiter!r}")
    quote_style = settings.get("quoteStyle", "QuoteStyle.Csv") or "QuoteStyle.Csv"
    if quote_style == "QuoteStyle.Csv":
        quotechar = '"'
    elif quote_style == "QuoteStyle.None":
        quotechar = ""
    else:
        raise ModelJsonError(f"quoteStyle {quote_style!r} is not supported; use QuoteStyle.Csv or QuoteStyle.None")
    csv_style = settings.get("csvStyle", "CsvStyle.QuoteAlways") or "CsvStyle.QuoteAlways"
    if csv_style not in ("CsvStyle.QuoteAlways", "CsvStyle.QuoteAfterDelimiter"):
        raise ModelJsonError(f"csvStyle {csv_style!r} is not supported")
    encoding = settings.get("encoding", "UTF-8") or "UTF-8"
    if not isinstance(encoding, str):
        raise ModelJsonError(f"encoding must be a string, got {encoding!r}")
    return CsvFormat(header=header, delimiter=delimiter, quotechar=quotechar, encoding=normalize_encoding(encoding))


def parse_model(data: bytes) -> dict:
    """Bytes of a model.json -> the parsed document (a dict with an ``entities`` list)."""
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ModelJsonError(f"it is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, UnicodeDecodeError):
        raise ModelJsonError("it is not valid JSON text (not UTF-8/16/32)") from None
    if not isinstance(doc, dict):
        raise ModelJsonError("it is not a JSON object")
    entities = doc.get("entities")
    if not isinstance(entities, list):
        raise ModelJsonError("it has no 'entities' list")
    return doc


def find_entity(doc: dict, name: str) -> CdmEntity:
    """The entity called ``name`` (exact match, else a unique case-insensitive match)."""
    entities = [e for e in doc.get("entities", []) if isinstance(e, dict)]
    matches = [e for e in entities if e.get("name") == name]
    if not matches:
        folded = name.casefold()
        matches = [e for e in entities if isinstance(e.get("name"), str) and e["name"].casefold() == folded]
    if not matches:
        raise ModelJsonError(f"it has no entity named {name!r} ({len(entities)} other entities)")
    if len(matches) > 1:
        raise ModelJsonError(f"it has {len(matches)} entities named {name!r}")
    entity = matches[0]
    attributes = entity.get("attributes")
    if not isinstance(attributes, list) or not attributes:
        raise ModelJsonError(f"entity {name!r} lists no attributes")
    columns = []
    for i, attr in enumerate(attributes, 1):
        col = attr.get("name") if isinstance(attr, dict) else None
        if not isinstance(col, str) or col == "":
            raise ModelJsonError(f"attribute {i} of entity {name!r} has no name")
        columns.append(col)
    partitions = []
    raw_partitions = entity.get("partitions") or []
    if not isinstance(raw_partitions, list):
        raise ModelJsonError(f"partitions of entity {name!r} is not a list")
    for i, p in enumerate(raw_partitions, 1):
        if not isinstance(p, dict):
            raise ModelJsonError(f"partition {i} of entity {name!r} is not an object")
        try:
            fmt = parse_format_settings(p.get("fileFormatSettings"))
        except ModelJsonError as exc:
            raise ModelJsonError(f"partition {i} of entity {name!r}: {exc}") from None
        partitions.append(CdmPartition(name=str(p.get("name") or ""), location=str(p.get("location") or ""), fmt=fmt))
    return CdmEntity(name=entity["name"], columns=tuple(columns), partitions=tuple(partitions))


def format_settings_json(fmt: CsvFormat) -> dict:
    """CsvFormat -> a CDM ``fileFormatSettings`` object (for writers such as the sample generator)."""
    return {
        "$type": "CsvFormatSettings",
        "columnHeaders": fmt.header,
        "delimiter": fmt.delimiter,
        "quoteStyle": "QuoteStyle.Csv" if fmt.quotechar else "QuoteStyle.None",
        "csvStyle": "CsvStyle.QuoteAlways",
        "encoding": "UTF-8" if fmt.encoding == "utf-8" else fmt.encoding,
    }
