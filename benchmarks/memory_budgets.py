"""The rate budget store in memory: the same read/write-under-ETag contract as ``RateBudgets`` (Table
Storage), for runs of the real pacer on a virtual clock (``benchmarks/simulate.py``, pacing tests).

A virtual-clock run makes millions of reservations in seconds; Azurite would make them real time.
The pacer only ever reads and conditionally writes one entity per budget, so a dict of (times, ETag)
is that contract exactly, minus the network.
"""

from __future__ import annotations

from exporter.state.rate_budgets import BudgetChanged, RateBudgets


class MemoryRateBudgets(RateBudgets):
    """One process's budgets: a write must name the ETag it read, as on Table Storage."""

    def __init__(self) -> None:  # no table: nothing of RateBudgets' state is used
        self._entities: dict[str, tuple[bytes, str]] = {}
        self._writes = 0

    def read(self, key: str) -> tuple[bytes, str | None]:
        found = self._entities.get(key)
        return (found[0], found[1]) if found is not None else (b"", None)

    def write(self, key: str, times: bytes, etag: str | None) -> str | None:
        found = self._entities.get(key)
        if (found[1] if found is not None else None) != etag:
            raise BudgetChanged(key)
        self._writes += 1
        written = f"W/{self._writes}"
        self._entities[key] = (times, written)
        return written
