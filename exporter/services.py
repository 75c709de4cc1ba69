"""What the handlers need, built once per process from the settings.

Handlers call ``get_services()``; tests and the local runner install their own with ``set_services``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from .config import Settings, load_settings
from .domain import Connection, utcnow
from .membership import StateStore
from .omnisend import OmnisendClient
from .ratelimit import Budget, RateLimiter
from .secrets import SecretStore, secret_store_from_settings
from .storage import Storage


@dataclass
class Services:
    settings: Settings
    storage: Storage
    secrets: SecretStore
    limiter: RateLimiter | None = None  # None: requests are not paced (Omnisend's 429s still are handled)
    clock: Callable[[], datetime] = utcnow
    _clients: threading.local = field(default_factory=threading.local, repr=False)
    _connections: dict = field(default_factory=dict, repr=False)  # id -> (connection, read at)

    def connection(self, connection_id: str, max_age: float = 0.0) -> Connection | None:
        """The connection, read at most ``max_age`` seconds ago by this process. Only reading results
        may use an older read: sending must see a removal at once."""
        now = time.monotonic()
        hit = self._connections.get(connection_id)
        if hit is not None and now - hit[1] <= max_age:
            return hit[0]
        found = self.storage.get_connection(connection_id)
        if found is not None:
            self._connections[connection_id] = (found, now)
        else:
            self._connections.pop(connection_id, None)
        return found

    def omnisend(self, connection: Connection) -> OmnisendClient:
        """A client for the connection's key; one per thread and key, so sessions are reused."""
        key = self.secrets.get(connection.secret_name)
        cache = getattr(self._clients, "by_key", None)
        if cache is None:
            cache = self._clients.by_key = {}
        slot = hashlib.sha256(f"{connection.id}:{key}".encode()).hexdigest()  # never the key itself
        client = cache.get(slot)
        if client is None:
            client = cache[slot] = OmnisendClient(
                key, base_url=self.settings.omnisend_api_url, timeout=self.settings.omnisend_timeout_seconds,
                pacer=self.limiter.pacer(connection.id) if self.limiter else None,
            )
        return client

    @property
    def states(self) -> StateStore:
        return StateStore(self.storage.artifacts)

    def omnisend_with_key(self, api_key: str) -> OmnisendClient:
        """A one-off client for a key that is not stored yet (the connect check)."""
        return OmnisendClient(api_key, base_url=self.settings.omnisend_api_url, timeout=self.settings.omnisend_timeout_seconds)


_lock = threading.Lock()
_services: Services | None = None


def build_services(settings: Settings | None = None) -> Services:
    settings = settings or load_settings()
    storage = Storage(settings)
    limiter = RateLimiter(
        storage.rate_limits,
        Budget(settings.omnisend_rate_limit, settings.omnisend_rate_window_seconds),
        Budget(settings.omnisend_tags_rate_limit, settings.omnisend_rate_window_seconds),
    )
    return Services(settings=settings, storage=storage, secrets=secret_store_from_settings(settings), limiter=limiter)


def get_services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = build_services()
            _services.storage.ensure_resources()
        return _services


def set_services(services: Services | None) -> None:
    global _services
    with _lock:
        _services = services
