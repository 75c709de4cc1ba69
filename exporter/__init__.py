"""Exports customer-data-platform segments to Omnisend (see README.md)."""

__version__ = "0.21.0"  # this codebase's version, as ``python -m exporter --version`` shows it
