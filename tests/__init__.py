"""The tests: a package, so that they import their helpers as tests.<module> (no sys.path edits)."""
