"""The management API: plumbing in ``http``, one module per resource, ``access`` and ``validation``."""

from .connections import create_connection, delete_connection, get_connection, list_connections, update_connection
from .exports import create_export, delete_export, get_export, list_exports, update_export
from .http import ApiRequest, ApiResponse, Endpoint, handle, problem
from .runs import (
    cancel_run,
    get_run,
    get_run_changes,
    get_run_rejects,
    list_export_runs,
    retry_run,
    start_export_run,
)
from .segments import list_segments, segment_columns, segment_containers
from .status import health, me

__all__ = [
    "ApiRequest", "ApiResponse", "Endpoint", "cancel_run", "create_connection", "create_export", "delete_connection",
    "delete_export", "get_connection", "get_export", "get_run", "get_run_changes", "get_run_rejects", "handle", "health",
    "list_connections", "list_export_runs", "list_exports", "list_segments", "me", "problem", "retry_run",
    "segment_columns", "segment_containers", "update_connection",
    "start_export_run", "update_export",
]
