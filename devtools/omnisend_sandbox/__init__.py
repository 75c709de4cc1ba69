"""A local Omnisend API 2026-03-15 sandbox for tests and the demo: see ``server.SandboxServer``.

Run it with ``python -m devtools.omnisend_sandbox --api-key KEY:BRAND``.
"""

from .server import SAFE_TAG_PATTERN, FaultAction, Faults, OmnisendSandbox, SandboxServer

__all__ = ["SAFE_TAG_PATTERN", "FaultAction", "Faults", "OmnisendSandbox", "SandboxServer"]
