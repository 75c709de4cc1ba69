"""A run's tally: the upload side of its counts, kept beside its batches so both change in one step."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from . import fields as counts
from .fields import COUNTER, CURSOR, PLAN, api_field
from .runs import RunCounts


class TagPlanning(str, Enum):
    """Where the run's last tag planning stands (tag waves may have planned some tag batches before)."""

    NOT_PLANNED = "notPlanned"  # its contacts are not all counted yet, or nobody asked yet
    PLANNING = "planning"  # asked for on the runs queue; the planner has not recorded it yet
    PLANNED = "planned"  # ``tags_planned`` tag batches in all


@dataclass
class Tally:
    """The run's upload counts: a head (planned counts, the waves' cursor) plus shards of counters."""

    planned: int = -1  # contact batches the planner enqueued; -1 until planning ends
    sent: int = api_field()
    batches_sent: int = api_field()
    confirmed: int = api_field()
    failed: int = api_field()
    failed_by_reason: dict[str, int] = api_field(dict)
    batches_done: int = api_field()
    # membership tags: untag batches are planned with the contacts; tag batches once the contacts are
    # confirmed (by waves while the run uploads, and by the run's last tag planning)
    untags_planned: int = api_field(role=PLAN)
    untags_done: int = api_field()
    tag_planning: TagPlanning = TagPlanning.NOT_PLANNED
    tags_planned: int = api_field(role=PLAN)  # meaningful once tag_planning is PLANNED
    tags_done: int = api_field()
    tagged: int = api_field()
    untagged: int = api_field()
    tag_failures: int = api_field()
    # tag waves (lifecycle/tag_planning.py): contact batches' tags planned while the upload goes on
    waves: int = api_field(role=CURSOR)  # waves of WAVE_BATCHES contact batches whose tag batches are planned
    tags_numbered: int = api_field(role=CURSOR)  # tag batch numbers those waves used (1..tags_numbered)
    wave_tick: int = api_field(role=CURSOR)  # ticks of the wave planner done; the next tick carries wave_tick + 1
    tag_retry: bool = api_field(False, role=CURSOR)  # failed batches were sent again: tag what is confirmed, not tagged yet
    updated_at: datetime | None = None  # last change: how a stuck run is noticed

    @property
    def complete(self) -> bool:
        """Every contact batch is counted."""
        return self.planned >= 0 and self.batches_done >= self.planned

    @property
    def tags_are_planned(self) -> bool:
        return self.tag_planning is TagPlanning.PLANNED

    @property
    def tags_complete(self) -> bool:
        return self.tags_are_planned and self.tags_done >= self.tags_planned and self.untags_done >= self.untags_planned

    def plan_tags(self, batches: int) -> None:
        """The run's last tag planning is done: ``batches`` tag batches in all."""
        self.tag_planning, self.tags_planned = TagPlanning.PLANNED, batches

    def add_failures(self, by_reason: dict[str, int]) -> None:
        for reason, n in by_reason.items():
            if n:
                self.failed += n
                self.failed_by_reason[reason] = self.failed_by_reason.get(reason, 0) + n

    def plus(self, other: "Tally") -> "Tally":
        """This tally (the head, with the planned counts) with another shard's counters added."""
        total = replace(self, failed_by_reason=dict(self.failed_by_reason))  # the head's fields as they are
        for f in counts.counts_of(self, COUNTER):
            if f.name != "failed_by_reason":
                setattr(total, f.name, getattr(self, f.name) + getattr(other, f.name))
        for reason, n in other.failed_by_reason.items():
            total.failed_by_reason[reason] = total.failed_by_reason.get(reason, 0) + n
        total.failed_by_reason = {k: v for k, v in total.failed_by_reason.items() if v}
        if other.updated_at and (total.updated_at is None or other.updated_at > total.updated_at):
            total.updated_at = other.updated_at
        return total

    def batches_left(self) -> int:
        """Contact, untag and tag batches not counted yet (planned ones only)."""
        left = max(0, self.planned - self.batches_done) + max(0, self.untags_planned - self.untags_done)
        return left + max(0, (self.tags_planned if self.tags_are_planned else self.tags_numbered) - self.tags_done)

    @property
    def wave_tags_in_flight(self) -> bool:
        """Tag batches of waves not counted yet, before the run's last tag planning."""
        return not self.tags_are_planned and self.tags_done < self.tags_numbered

    def apply_to(self, run_counts: RunCounts) -> None:
        """The run's counts that the tally keeps: every counter the run shows under the same name."""
        shown = {f.name for f in counts.counts_of(RunCounts)}
        for f in counts.counts_of(self, COUNTER):
            if f.name in shown:
                value = getattr(self, f.name)
                setattr(run_counts, f.name, dict(value) if isinstance(value, dict) else value)
        if self.planned >= 0:
            run_counts.batches = self.planned
