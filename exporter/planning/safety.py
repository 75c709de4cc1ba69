"""The membership safety thresholds: the last look at a plan before anything leaves.

A refresh the platform got wrong (an encoding, swapped columns, a half-written export) looks like a
segment whose members all left, or whose rows are all invalid. Sending it would strip the tag from
real members, and the next good refresh would send and tag them all again. So a plan that would
remove more than ``max_removal_percent`` of the current members, or whose rejected share is above
``max_rejected_percent``, stops before its first request (as Hightouch's and Census's row and
deletion thresholds do), unless the run was started with ``confirm``. A refresh without one valid
row stops whatever the thresholds say: it could only remove tags.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from ..domain import Export, Run, RunCounts


class Stop(NamedTuple):
    error: str  # the run's error: what was found and how to proceed
    held: bool  # a threshold held the run: the same refresh with ``confirm`` goes through


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}".removesuffix(".0")


def _proceed(export: Export) -> str:
    return (f"If the refresh is right, start the run with POST /api/exports/{export.id}/runs?confirm=true "
            "(console: \"Run anyway\"; CLI: run --confirm), or raise the threshold on the export.")


def _top_reasons(counts: RunCounts) -> str:
    top = Counter(counts.rejected_by_reason).most_common(3)
    return ", ".join(f"{n} {reason}" for reason, n in top)


def threshold_stop(export: Export, run: Run, counts: RunCounts, members: int) -> Stop | None:
    """Why the plan must not be sent, or None. ``members``: the current members, as the last confirmed
    run left them (0 for a first run)."""
    if counts.read > 0 and counts.queued + counts.skipped == 0:
        return Stop(f"All {counts.read} rows of the refresh were rejected ({_top_reasons(counts)}); nothing was sent "
                    "and no member lost the tag. The refresh or the mapping is wrong: see the run's report.", held=False)
    if run.confirm:
        return None
    if counts.read > 0 and counts.rejected * 100 > export.max_rejected_percent * counts.read:
        share = _percent(counts.rejected, counts.read)
        return Stop(f"{counts.rejected} of {counts.read} rows ({share}%) were rejected ({_top_reasons(counts)}), more "
                    f"than the export's maxRejectedPercent ({export.max_rejected_percent}%). Nothing was sent and no "
                    f"member lost the tag. {_proceed(export)}", held=True)
    if members > 0 and counts.left * 100 > export.max_removal_percent * members:
        share = _percent(counts.left, members)
        return Stop(f"{counts.left} of the {members} members ({share}%) would leave the segment and lose the tag "
                    f"{export.effective_tag!r}, more than the export's maxRemovalPercent ({export.max_removal_percent}%)."
                    f" Nothing was sent and no member lost the tag. {_proceed(export)}", held=True)
    return None
