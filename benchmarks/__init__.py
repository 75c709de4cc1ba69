"""Benchmarks of the exporter on the local stack (Azurite and the Omnisend sandbox as its own process).

    python -m benchmarks [--rows 1000000] [--upload-rows 200000] [--smoke]

See ``benchmarks/__main__.py`` for what is measured and README.md ("Benchmarks") for how to read it.
"""
