"""Removing a connection: sending stops at once, reading what was sent does not.

A removed connection's batches in flight were accepted by Omnisend with its key; without the key
their results cannot be read, and contacts that landed would count as "outcome unknown". So while
any run of the connection may still write, the connection is kept as retired (never used to send)
with its key, and the key leaves Key Vault once those runs are counted, or after RESULTS_KEPT_FOR
(the timer's tick purges it). With nothing in flight, the key goes at once.
"""

from __future__ import annotations

from ..domain import Connection, Run
from ..logs import get_logger
from ..services import Services
from .cancel import note_on_active_run
from .history import DRAINED_AFTER, in_flight

log = get_logger(__name__)

RESULTS_KEPT_FOR = 2 * DRAINED_AFTER  # longest a removed connection's key is kept for reading results


def runs_in_flight(svc: Services, connection_id: str) -> list[Run]:
    """The connection's runs that may still write (only an export's latest run can: it holds the lock)."""
    now = svc.clock()
    runs = (svc.runs.get(run_id) for _, run_id in svc.locks.held())
    return [r for r in runs if r is not None and r.connection_id == connection_id and in_flight(r, now)]


def remove_connection(svc: Services, conn: Connection, removed_by: str) -> bool:
    """Remove the connection; its exports are disabled (not deleted). Returns whether its key is kept
    for a while, to read the results of batches in flight."""
    busy = runs_in_flight(svc, conn.id)
    now = svc.clock()
    if busy:
        svc.connections.retired.put((conn, now))  # first: a crash after it keeps the key, never loses results
    else:
        svc.secrets.delete(conn.secret_name)  # first: if Key Vault refuses, nothing else has changed
    svc.connections.delete(conn.id)
    removed = f"Connection {conn.display_name!r} was removed by {removed_by} at {now:%Y-%m-%d %H:%M} UTC"
    for export in svc.exports.list():
        if export.connection_id == conn.id:
            export.enabled = False
            export.disabled_reason = removed + "."
            export.updated_at = now
            svc.exports.put(export)
    for run in busy:  # they stop sending by themselves (the uploader finds no connection); say why on them
        if run.status.is_active:
            note_on_active_run(svc, run.id, removed + "; batches not sent yet were not sent.")
    log.info("connection removed%s", "; its key is kept to read the results of batches in flight" if busy else "",
             extra={"connection_id": conn.id})
    return bool(busy)


def purge_retired(svc: Services) -> int:
    """Delete the keys of removed connections whose runs are counted (or kept too long); returns how many."""
    purged = 0
    for conn, retired_at in svc.connections.retired.all():
        if svc.clock() - retired_at < RESULTS_KEPT_FOR and runs_in_flight(svc, conn.id):
            continue
        svc.secrets.delete(conn.secret_name)
        svc.connections.retired.delete(conn.id)
        purged += 1
        log.info("key of removed connection deleted: its batches are counted", extra={"connection_id": conn.id})
    return purged
