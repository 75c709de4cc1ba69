"""Runs, in the runs table: one partition per export (row keys sort newest first), and an index
partition that finds a run's export from its id. A run's upload counts live in its tally
(``state/tally.py``); a run read here carries them."""

from __future__ import annotations

import json
import time
from typing import Callable

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from ..domain import Run, RunCounts, RunStatus, parse_iso
from ..domain.runs import PreviewResult, RunKind
from ..redaction import scrub
from .errors import ConcurrencyError
from .tally import TallyRepository

INDEX_PARTITION = "~runs"  # pointer entities: run id -> export id


def _serialize(r: Run) -> dict:
    return {
        "PartitionKey": r.export_id,
        "RowKey": r.id,
        "ConnectionId": r.connection_id,
        "Trigger": r.trigger,
        "Status": r.status.value,
        "Counts": json.dumps(r.counts.to_api()),
        "CreatedAt": r.created_at,
        "StartedAt": r.started_at.isoformat() if r.started_at else "",
        "FinishedAt": r.finished_at.isoformat() if r.finished_at else "",
        "Error": scrub(r.error) if r.error else "",
        "RefreshFolder": r.refresh_folder or "",
        "RefreshFingerprint": r.refresh_fingerprint or "",
        "CountsFinal": r.counts_final,
        "Full": r.full,
        "Confirm": r.confirm,
        "Held": r.held,
        "Kind": r.kind.value,
        "ChangesKept": r.changes_kept,
        "Preview": json.dumps(r.preview.to_api()) if r.preview is not None else "",
        "StopReason": r.stop_reason or "",
    }


def _deserialize(e) -> Run:
    return Run(
        id=e["RowKey"],
        export_id=e["PartitionKey"],
        connection_id=e["ConnectionId"],
        trigger=e["Trigger"],
        status=RunStatus(e["Status"]),
        counts=RunCounts.from_api(json.loads(e["Counts"])),
        created_at=e["CreatedAt"],
        started_at=parse_iso(e.get("StartedAt")),
        finished_at=parse_iso(e.get("FinishedAt")),
        error=e.get("Error") or None,
        refresh_folder=e.get("RefreshFolder") or None,
        refresh_fingerprint=e.get("RefreshFingerprint") or None,
        counts_final=bool(e.get("CountsFinal", False)),
        full=bool(e.get("Full", False)),
        confirm=bool(e.get("Confirm", False)),
        held=bool(e.get("Held", False)),
        progress_at=e.metadata.get("timestamp"),
        kind=RunKind(e.get("Kind") or RunKind.RUN.value),
        changes_kept=bool(e.get("ChangesKept", False)),
        preview=PreviewResult.from_api(json.loads(e["Preview"])) if e.get("Preview") else None,
        stop_reason=e.get("StopReason") or None,
    )


class RunRepository:
    def __init__(self, table: TableClient, tallies: TallyRepository):
        self._table = table
        self._tallies = tallies
        self._run_exports: dict[str, str] = {}  # run id -> export id

    def create(self, r: Run) -> None:
        self._table.create_entity({"PartitionKey": INDEX_PARTITION, "RowKey": r.id, "ExportId": r.export_id})
        self._table.create_entity(_serialize(r))

    def _with_tally(self, run: Run) -> Run:
        """A run's counts: planning counts from its entity, upload counts from its live tally."""
        if not run.counts_final:
            tally = self._tallies.get(run.id)
            tally.apply_to(run.counts)
            if tally.updated_at and (run.progress_at is None or tally.updated_at > run.progress_at):
                run.progress_at = tally.updated_at
        return run

    def get(self, run_id: str) -> Run | None:
        found = self._entity(run_id)
        return self._with_tally(_deserialize(found)) if found is not None else None

    def require(self, run_id: str) -> Run:
        """The run, which must exist (KeyError otherwise: it was deleted meanwhile)."""
        run = self.get(run_id)
        if run is None:
            raise KeyError(run_id)
        return run

    def _entity(self, run_id: str, export_id: str | None = None):
        try:
            export_id = export_id or self.export_of(run_id)
            return self._table.get_entity(export_id, run_id) if export_id else None
        except ResourceNotFoundError:
            return None

    def export_of(self, run_id: str) -> str | None:
        """The export a run belongs to (never changes, so remembered)."""
        export_id = self._run_exports.get(run_id)
        if export_id is None:
            try:
                export_id = self._table.get_entity(INDEX_PARTITION, run_id)["ExportId"]
            except ResourceNotFoundError:
                return None
            if len(self._run_exports) > 10_000:
                self._run_exports.clear()
            self._run_exports[run_id] = export_id
        return export_id

    def status(self, run_id: str, export_id: str | None = None) -> RunStatus | None:
        """Only the run's status (one read: what a worker checks before each request)."""
        found = self._entity(run_id, export_id)
        if found is None and export_id is not None:
            found = self._entity(run_id)
        return RunStatus(found["Status"]) if found is not None else None

    def ids_of_export(self, export_id: str) -> list[str]:
        """Every run id of the export, newest first."""
        return [e["RowKey"] for e in self._table.query_entities(
            "PartitionKey eq @p", parameters={"p": export_id}, select=["RowKey"])]

    def list(self, export_id: str, limit: int = 50) -> list[Run]:
        """Newest first: run ids sort by creation time, inverted."""
        found = self._table.query_entities("PartitionKey eq @p", parameters={"p": export_id}, results_per_page=limit)
        runs = []
        for e in found:
            runs.append(self._with_tally(_deserialize(e)))
            if len(runs) >= limit:
                break
        return runs

    def update(self, run_id: str, mutate: Callable[[Run], bool | None], attempts: int = 50) -> Run:
        """Read-modify-write with the entity's ETag, so concurrent workers never lose an update.

        ``mutate`` changes the run in place (its counts include the live tally); returning False
        means "nothing to write".
        """
        for attempt in range(attempts):
            entity = self._entity(run_id)
            if entity is None:
                raise KeyError(run_id)
            run = self._with_tally(_deserialize(entity))
            if mutate(run) is False:
                return run
            try:
                self._table.update_entity(_serialize(run), mode=UpdateMode.REPLACE, etag=entity.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
                return run
            except (ResourceModifiedError, HttpResponseError) as e:
                if getattr(e, "status_code", None) != 412:
                    raise
                time.sleep(min(0.005 * (attempt + 1), 0.1))
        raise ConcurrencyError(f"Run {run_id} changed {attempts} times while being updated.")

    def delete(self, export_id: str, run_id: str) -> None:
        """The run's record and its index entry (its batches, tally and files are deleted apart)."""
        for partition in (export_id, INDEX_PARTITION):
            try:
                self._table.delete_entity(partition, run_id)
            except ResourceNotFoundError:
                pass
        self._run_exports.pop(run_id, None)
