"""What the handlers need, built once per process from the settings.

Handlers call ``get_services()``; tests and the local runner install their own with ``set_services``.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from .config import Settings, load_settings
from .domain import Connection, utcnow
from .omnisend import OmnisendClient
from .secrets import SecretStore, secret_store_from_settings
from .storage import Storage


@dataclass
class Services:
    settings: Settings
    storage: Storage
    secrets: SecretStore
    clock: Callable[[], datetime] = utcnow
    _clients: threading.local = field(default_factory=threading.local, repr=False)

    def omnisend(self, connection: Connection) -> OmnisendClient:
        """A client for the connection's key; one per thread and key, so sessions are reused."""
        key = self.secrets.get(connection.secret_name)
        cache = getattr(self._clients, "by_key", None)
        if cache is None:
            cache = self._clients.by_key = {}
        slot = hashlib.sha256(key.encode()).hexdigest()  # the key itself is never a dict key in memory dumps
        client = cache.get(slot)
        if client is None:
            client = cache[slot] = OmnisendClient(
                key, base_url=self.settings.omnisend_api_url, timeout=self.settings.omnisend_timeout_seconds
            )
        return client

    def omnisend_with_key(self, api_key: str) -> OmnisendClient:
        """A one-off client for a key that is not stored yet (the connect check)."""
        return OmnisendClient(api_key, base_url=self.settings.omnisend_api_url, timeout=self.settings.omnisend_timeout_seconds)


_lock = threading.Lock()
_services: Services | None = None


def build_services(settings: Settings | None = None) -> Services:
    settings = settings or load_settings()
    storage = Storage(settings)
    return Services(settings=settings, storage=storage, secrets=secret_store_from_settings(settings))


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
