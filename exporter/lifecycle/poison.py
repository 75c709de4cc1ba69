"""The timer's report of messages waiting in the poison queues (the alert rule reads its log line).

The poison queues' own functions account for each message that reaches them, so a message that
waits there means that function is not running or fails on it too. ``GET /api/health`` counts the
same queues; the timer logs a warning each tick they are not empty, for infra/app/alerts.bicep.
"""

from __future__ import annotations

from .. import config
from ..logs import get_logger
from ..services import Services

log = get_logger(__name__)

POISON_QUEUES = (config.QUEUE_RUNS + config.POISON_SUFFIX, config.QUEUE_BATCHES + config.POISON_SUFFIX)
POISON_WAITING = "poison queue %s holds %d message(s)"  # infra/app/alerts.bicep matches this text


def report_poison(svc: Services) -> dict[str, int]:
    """The approximate number of messages in each poison queue; a warning for each that holds any."""
    counts = {}
    for queue in POISON_QUEUES:
        try:
            counts[queue] = svc.queue_length(queue)
        except Exception:  # the tick goes on: a storage hiccup here must not stop the schedule
            log.warning("could not read the length of %s", queue, exc_info=True)
            continue
        if counts[queue] > 0:
            log.warning(POISON_WAITING, queue, counts[queue])
    return counts
