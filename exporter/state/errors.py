"""Errors of the state layer."""

from __future__ import annotations


class ConcurrencyError(RuntimeError):
    """An entity kept changing under us; the caller may retry the whole operation."""
