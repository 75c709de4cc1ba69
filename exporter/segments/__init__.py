"""Segments as the platform writes them to Blob Storage (Dynamics 365 Customer Insights layout).

The way in: ``latest_settled_refresh`` (which refresh to export), ``load_schema`` (its columns and
CSV format) and ``read_rows`` (its rows, streamed). The blob clients come from ``state.clients``;
this package is the one reader of the platform's containers.
"""

from .cdm import CsvFormat
from .errors import SegmentFormatError, SegmentSourceError, SourceNotFoundError
from .reader import SourceRow, read_rows
from .refresh import NoRefreshError, RefreshNotSettledError, find_latest_refresh, is_settled, latest_settled_refresh
from .schema import SegmentSchema, load_schema

__all__ = [
    "CsvFormat",
    "NoRefreshError",
    "RefreshNotSettledError",
    "SegmentFormatError",
    "SegmentSchema",
    "SegmentSourceError",
    "SourceNotFoundError",
    "SourceRow",
    "find_latest_refresh",
    "is_settled",
    "latest_settled_refresh",
    "load_schema",
    "read_rows",
]
