"""What the handlers need, built once per process from the settings.

Handlers call ``get_services()``; tests and the local runner install their own with ``set_services``.
Collaborators a test may want to replace (the clock, the backoff of transient retries) are fields.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from . import config
from .config import Settings, load_settings
from .domain import Connection, utcnow
from .omnisend import OmnisendClient
from .omnisend.client import key_id
from .omnisend.pacing import Budget, RateLimiter
from .state.batches import BatchRepository
from .state.changes import ChangesRepository
from .state.clients import StorageClients
from .state.connections import ConnectionRepository
from .state.exports import ExportRepository
from .state.heartbeat import Heartbeat
from .state.locks import RunLocks
from .state.membership import StateStore
from .state.queues import BatchQueue, RunQueue, WorkQueue
from .state.rate_budgets import RateBudgets
from .state.reports import ReportRepository
from .state.runs import RunRepository
from .state.samples import SampleRepository
from .state.secrets import SecretStore, SecretStoreError, secret_store_from_settings
from .state.spools import Spools
from .state.tally import TallyRepository


def jittered_backoff(attempt: int, base: float = 2.0, cap: float = 300.0) -> float:
    """Seconds before transient retry ``attempt``: exponential, with full jitter."""
    return random.uniform(base / 2, min(cap, base * 2**attempt))


@dataclass
class Services:
    settings: Settings
    clients: StorageClients
    secrets: SecretStore
    limiter: RateLimiter | None = None  # None: requests are not paced (Omnisend's 429s still are handled)
    clock: Callable[[], datetime] = utcnow
    backoff: Callable[[int], float] = jittered_backoff
    # When this app started (its services were built): the timer's first tick is due after it (/api/health)
    started_at: datetime | None = None
    # Whether this app has a timer: under the Functions host it always has; the local runner without its
    # timer (``serve --no-timer``) says it has not, and /api/health then does not wait for ticks
    timer_enabled: bool = True
    _omnisend_clients: threading.local = field(default_factory=threading.local, repr=False)
    _connections: dict = field(default_factory=dict, repr=False)  # id -> (connection, read at)
    # the repositories, one per table or container (exporter/state), made from ``clients``
    connections: ConnectionRepository = field(init=False, repr=False)
    exports: ExportRepository = field(init=False, repr=False)
    tallies: TallyRepository = field(init=False, repr=False)
    batches: BatchRepository = field(init=False, repr=False)
    runs: RunRepository = field(init=False, repr=False)
    locks: RunLocks = field(init=False, repr=False)
    heartbeat: Heartbeat = field(init=False, repr=False)
    run_queue: RunQueue = field(init=False, repr=False)
    batch_queue: BatchQueue = field(init=False, repr=False)
    reports: ReportRepository = field(init=False, repr=False)
    changes: ChangesRepository = field(init=False, repr=False)
    samples: SampleRepository = field(init=False, repr=False)
    spools: Spools = field(init=False, repr=False)
    states: StateStore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.started_at is None:
            self.started_at = self.clock()
        c = self.clients
        self.connections = ConnectionRepository(c.table(config.TABLE_CONNECTIONS))
        self.exports = ExportRepository(c.table(config.TABLE_EXPORTS))
        self.tallies = TallyRepository(c.table(config.TABLE_BATCHES))
        self.batches = BatchRepository(c.table(config.TABLE_BATCHES), self.tallies)
        self.runs = RunRepository(c.table(config.TABLE_RUNS), self.tallies)
        self.locks = RunLocks(c.table(config.TABLE_RUNS))
        self.heartbeat = Heartbeat(c.table(config.TABLE_RUNS))
        self.run_queue = RunQueue(c.queue(config.QUEUE_RUNS))
        self.batch_queue = BatchQueue(c.queue(config.QUEUE_BATCHES))
        self.reports = ReportRepository(c.artifacts, self.batches)
        self.changes = ChangesRepository(c.artifacts)
        self.samples = SampleRepository(c.artifacts)
        self.spools = Spools(c.artifacts)
        self.states = StateStore(c.artifacts)

    def queue_length(self, name: str) -> int:
        """Approximate number of messages in a queue, poison queues included (0 when it does not exist)."""
        return WorkQueue(self.clients.queue(name)).length()

    def connection(self, connection_id: str, max_age: float = 0.0) -> Connection | None:
        """The connection, read at most ``max_age`` seconds ago by this process. Only reading results
        may use an older read: sending must see a removal at once."""
        now = time.monotonic()
        hit = self._connections.get(connection_id)
        if hit is not None and now - hit[1] <= max_age:
            return hit[0]
        found = self.connections.get(connection_id)
        if found is not None:
            self._connections[connection_id] = (found, now)
        else:
            self._connections.pop(connection_id, None)
        return found

    def connection_for_results(self, connection_id: str, max_age: float = 0.0) -> Connection | None:
        """The connection a batch was sent with, for reading its result: also a removed one whose key
        is kept until its batches in flight are counted (``lifecycle.connections``)."""
        found = self.connection(connection_id, max_age)
        if found is None:
            retired = self.connections.retired.get(connection_id)
            found = retired[0] if retired is not None else None
        return found

    def omnisend(self, connection: Connection) -> OmnisendClient:
        """A client for the connection's key; one per thread and key, so sessions are reused."""
        key = self.secrets.get(connection.secret_name)
        cache = getattr(self._omnisend_clients, "by_key", None)
        if cache is None:
            cache = self._omnisend_clients.by_key = {}
        slot = hashlib.sha256(f"{connection.id}:{key}".encode()).hexdigest()  # never the key itself
        client = cache.get(slot)
        if client is None:
            client = cache[slot] = OmnisendClient(
                key, base_url=self.settings.omnisend_api_url, timeout=self.settings.omnisend_timeout_seconds,
                pacer=self.limiter.pacer(connection.id) if self.limiter else None,
            )
        return client

    def key_rotated(self, connection_id: str, used_key_id: str) -> bool:
        """Whether the store now holds another key for the connection than the one a call used (read
        afresh, past the cache): a 401 right after a key was replaced is the old key's, not the new."""
        conn = self.connections.get(connection_id)
        if conn is None:
            return False
        self.secrets.forget(conn.secret_name)
        try:
            return key_id(self.secrets.get(conn.secret_name)) != used_key_id
        except SecretStoreError:
            return False

    def omnisend_with_key(self, api_key: str) -> OmnisendClient:
        """A one-off client for a key that is not stored yet (the connect check)."""
        return OmnisendClient(api_key, base_url=self.settings.omnisend_api_url, timeout=self.settings.omnisend_timeout_seconds)


_lock = threading.Lock()
_services: Services | None = None


def build_services(settings: Settings | None = None) -> Services:
    settings = settings or load_settings()
    clients = StorageClients(settings)
    limiter = RateLimiter(
        RateBudgets(clients.table(config.TABLE_RATE_LIMITS)),
        Budget(settings.omnisend_rate_limit, settings.omnisend_rate_window_seconds),
        Budget(settings.omnisend_tags_rate_limit, settings.omnisend_rate_window_seconds),
    )
    return Services(settings=settings, clients=clients, secrets=secret_store_from_settings(settings), limiter=limiter)


def get_services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = build_services()
            _services.clients.ensure_resources()
        return _services


def set_services(services: Services | None) -> None:
    global _services
    with _lock:
        _services = services
