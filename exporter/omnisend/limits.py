"""Omnisend's API as this app speaks it, in one place: the version, what one request may hold, and
the request budget per brand (the app settings default to it; tests scale it down)."""

from __future__ import annotations

OMNISEND_API_VERSION = "2026-03-15"  # the Omnisend API version this app speaks
OMNISEND_DEFAULT_URL = "https://api.omnisend.com/api/"

MAX_BATCH_ITEMS = 100  # items (contacts) per POST /batches
MAX_TAGS_PER_REQUEST = 100  # tags per POST or DELETE /contacts/tags
MAX_EMAILS_PER_TAG_REQUEST = 250  # emails per POST or DELETE /contacts/tags
MAX_PAGE_SIZE = 250  # contacts per GET /contacts page

RATE_LIMIT = 400  # requests per window per brand, every endpoint and poll included
TAGS_RATE_LIMIT = 60  # requests per window to the tags endpoints (they count in RATE_LIMIT too)
RATE_WINDOW_SECONDS = 60  # a sliding window
TAGS_PATH = "contacts/tags"  # the endpoint with its own, smaller budget

DEFAULT_RETRY_AFTER = 60.0  # seconds to wait after a 429 that does not say how long
