"""The two work queues, sending typed messages (``exporter.messages``)."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from ..messages import BatchMessage, RunMessage


def _delay(seconds: float) -> int | None:
    """A message's initial invisibility in whole seconds; None (visible at once) for none."""
    return int(max(0, round(seconds))) or None


class WorkQueue:
    def __init__(self, client: QueueClient):
        self._client = client

    @property
    def name(self) -> str:
        return self._client.queue_name

    def send_text(self, text: str, delay_seconds: float = 0) -> None:
        """A message already encoded (the planner's spooled batches)."""
        self._client.send_message(text, visibility_timeout=_delay(delay_seconds))

    def length(self) -> int:
        """Approximate number of messages in the queue (0 when it does not exist)."""
        try:
            return self._client.get_queue_properties().approximate_message_count or 0
        except ResourceNotFoundError:
            return 0


class RunQueue(WorkQueue):
    def send(self, message: RunMessage, delay_seconds: float = 0) -> None:
        self.send_text(message.encode(), delay_seconds)


class BatchQueue(WorkQueue):
    def send(self, message: BatchMessage, delay_seconds: float = 0) -> None:
        self.send_text(message.encode(), delay_seconds)
