"""How long a planned run would take: its Omnisend requests paced as ``omnisend/pacing.py`` paces them.

The model is the pacer's own rule: a window of ``Budget.window`` seconds admits ``Budget.allowed``
requests at once, so the n-th request of a run leaves ``(n - 1) // allowed`` windows after the first.
Contact writes and tag calls share the general budget, and tag calls also spend the tags endpoint's
budget; whichever of the two takes longer bounds the run. A run ends one check delay after its last
batch, when the last results are read. Planning takes as long as the preview's planning took (the
same rows, read the same way).
"""

from __future__ import annotations

from math import ceil

from ..config import Settings
from ..domain import Estimate, RunCounts
from ..omnisend.limits import MAX_EMAILS_PER_TAG_REQUEST
from ..omnisend.pacing import Budget

# POST /batches, then one GET of the batch with its items: the check waits BATCH_CHECK_DELAY_SECONDS,
# by which Omnisend has usually finished (a batch still running is read again, a request more)
REQUESTS_PER_CONTACT_BATCH = 2


def paced_seconds(requests: int, budget: Budget) -> float:
    """When the last of ``requests`` leaves, counted from the first, under the pacer's rule."""
    return ((requests - 1) // budget.allowed) * budget.window if requests > 0 else 0.0


def tag_calls(tag_additions: int, untag_batches: int) -> int:
    return ceil(tag_additions / MAX_EMAILS_PER_TAG_REQUEST) + untag_batches


def estimate(settings: Settings, counts: RunCounts, tag_additions: int, untag_batches: int,
             planning_seconds: float) -> Estimate:
    window = settings.omnisend_rate_window_seconds
    general = Budget(settings.omnisend_rate_limit, window)
    tags = Budget(settings.omnisend_tags_rate_limit, window)
    contact_requests = counts.batches * REQUESTS_PER_CONTACT_BATCH
    calls = tag_calls(tag_additions, untag_batches)
    sending = max(paced_seconds(contact_requests + calls, general), paced_seconds(calls, tags))
    tail = settings.batch_check_delay_seconds if counts.batches else 0
    return Estimate(seconds=planning_seconds + sending + tail, planning_seconds=planning_seconds,
                    contact_batches=counts.batches, contact_requests=contact_requests, tag_calls=calls,
                    requests_per_window=settings.omnisend_rate_limit,
                    tag_calls_per_window=settings.omnisend_tags_rate_limit, window_seconds=window)
