"""``python -m devtools.omnisend_sandbox``: serve the Omnisend sandbox until SIGINT/SIGTERM.

Example: ``python -m devtools.omnisend_sandbox --port 8089 --api-key dev-key:brand-1``, then point
the app at it with ``OMNISEND_API_URL=http://127.0.0.1:8089/api/``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .server import SandboxServer

DEFAULT_KEY = "sandbox-key"
DEFAULT_BRAND = "sandbox-brand"


def _key_brand(value: str) -> tuple[str, str]:
    key, sep, brand = value.rpartition(":")
    if not sep or not key or not brand:
        raise argparse.ArgumentTypeError("expected KEY:BRAND")
    return key, brand


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.omnisend_sandbox",
                                     description="Local stand-in for the Omnisend API 2026-03-15.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--api-key", action="append", type=_key_brand, default=[], metavar="KEY:BRAND",
                        help=f"an accepted API key and its brand (repeatable); default {DEFAULT_KEY}:{DEFAULT_BRAND}")
    parser.add_argument("--rate-limit", type=int, default=400, help="requests per window per brand")
    parser.add_argument("--window-seconds", type=float, default=60.0)
    parser.add_argument("--tags-rate-limit", type=int, default=60, help="tags requests per window per brand")
    parser.add_argument("--batch-delay-seconds", type=float, default=0.05)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keys = dict(args.api_key)
    if not keys:
        keys = {DEFAULT_KEY: DEFAULT_BRAND}
        print(f"No --api-key given: accepting key {DEFAULT_KEY!r} for brand {DEFAULT_BRAND!r}.", flush=True)
    server = SandboxServer(args.host, args.port, keys, rate_limit=args.rate_limit,
                           window_seconds=args.window_seconds, tags_rate_limit=args.tags_rate_limit,
                           batch_delay_seconds=args.batch_delay_seconds)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    brands = sorted(set(keys.values()))
    print(f"Omnisend sandbox (API 2026-03-15) listening on {server.url}", flush=True)
    print(f"Brands: {', '.join(brands)}; admin endpoints under {server.admin_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        print("Omnisend sandbox stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
