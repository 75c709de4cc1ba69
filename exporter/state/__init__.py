"""Everything the app keeps, one repository per table or container, with entity conversion beside
each (``_serialize``/``_deserialize``). Only this package touches the Azure SDK's storage clients;
``clients.StorageClients`` builds them."""

from .clients import StorageClients
from .errors import ConcurrencyError

__all__ = ["ConcurrencyError", "StorageClients"]
