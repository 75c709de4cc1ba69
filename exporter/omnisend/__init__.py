"""Omnisend: the API client, its typed errors, the API's limits and the pacing of requests."""

from .client import OmnisendClient
from .errors import (
    OmnisendAuthError,
    OmnisendError,
    OmnisendKeyUnusable,
    OmnisendNoAnswer,
    OmnisendNotFound,
    OmnisendRateLimited,
    OmnisendTerminalError,
    OmnisendTransientError,
    OmnisendUnavailable,
    OmnisendValidationError,
    OmnisendVersionRetired,
    OmnisendWriteUnconfirmed,
)
from .results import BatchInfo, BatchItemResult

__all__ = [
    "BatchInfo", "BatchItemResult", "OmnisendAuthError", "OmnisendClient", "OmnisendError", "OmnisendKeyUnusable", "OmnisendNoAnswer",
    "OmnisendNotFound",
    "OmnisendRateLimited", "OmnisendTerminalError", "OmnisendTransientError", "OmnisendUnavailable",
    "OmnisendValidationError", "OmnisendVersionRetired", "OmnisendWriteUnconfirmed",
]
