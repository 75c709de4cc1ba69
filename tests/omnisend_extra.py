"""Reads of Omnisend that only the tests make: the production client sends batches, checks them with
``get_batch_result`` and tags; the tests also read batches, write single contacts and list contacts
(to check the sandbox behaves as Omnisend does), through the production client's own request path."""

from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import quote

from exporter.omnisend import BatchInfo, BatchItemResult, OmnisendClient, OmnisendError
from exporter.omnisend.limits import MAX_PAGE_SIZE


def _segment(batch_id: str) -> str:
    if not isinstance(batch_id, str) or not batch_id:
        raise ValueError("A batch id is required.")
    return quote(batch_id, safe="")


class ReadingClient(OmnisendClient):
    def get_batch(self, batch_id: str) -> BatchInfo:
        """``GET /batches/{batchID}``."""
        data = self._call("GET", f"batches/{_segment(batch_id)}", what="read a batch")
        return BatchInfo.from_api(data if isinstance(data, dict) else {})

    def get_batch_items(self, batch_id: str) -> list[BatchItemResult]:
        """``GET /batches/{batchID}/items``: per-item outcomes from ``responses`` and ``errors``, in item
        order. Items with a non-2xx ``response_code`` did NOT land. Lists arriving under another key
        are read too (and a warning is logged, naming only the keys)."""
        return self.get_batch_result(batch_id)[1]

    def upsert_contact(self, contact: dict) -> dict:
        """``POST /contacts``: creates the contact or updates the one with that email. Returns the
        ContactResponse. Mind that ``tags`` in the body REPLACE the contact's tags."""
        data = self._call("POST", "contacts", json_body=contact, what="write a contact")
        return data if isinstance(data, dict) else {}

    def iter_contacts(self, *, email: str | None = None, tag: str | None = None,
                      page_size: int = MAX_PAGE_SIZE) -> Iterator[dict]:
        """``GET /contacts``, following ``paging.cursors.after`` while ``hasMore``. Each page is one
        request against the rate limit."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}.")
        params: dict[str, Any] = {"limit": page_size}
        if email is not None:
            params["email"] = email
        if tag is not None:
            params["tag"] = tag
        seen_cursors: set[str] = set()
        while True:
            data = self._call("GET", "contacts", params=params, what="list contacts")
            if not isinstance(data, dict):
                raise OmnisendError("Omnisend answered the contact list with something that is not a JSON object.")
            yield from (c for c in data.get("contacts") or [] if isinstance(c, dict))
            paging = data.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("hasMore") or not after:
                return
            if after in seen_cursors:
                raise OmnisendError("Omnisend returned the same paging cursor twice; stopped listing contacts "
                                    "to avoid an endless loop.")
            seen_cursors.add(after)
            params["after"] = after
