"""The benchmarks end to end at CI size (``python -m benchmarks --smoke``), so that their code cannot rot.

Only that they complete, give sane non-zero numbers and that every count adds up: timings on a
shared machine are noise, so none is asserted.
"""

from __future__ import annotations


def test_the_benchmarks_run_end_to_end_and_their_counts_add_up(azurite_storage, tmp_path):
    from benchmarks.__main__ import markdown, parse, run, tables
    from benchmarks.planning import services
    from tests.conftest import clear_app_state

    storage = services().clients
    clear_app_state(storage)  # the app's tables and queues have fixed names: start from what other tests left
    try:
        args = parse(["--smoke", "--out", str(tmp_path / "benchmarks.md")])
        res = run(args, "python -m benchmarks --smoke", log=lambda *a: None)
    finally:
        clear_app_state(storage)

    # 1. planning: a first run and a re-run after 1% churn, each in its own process
    first, again = res.planning
    assert (first.kind, again.kind) == ("first run", "re-run") and first.rows == again.rows == 20_000
    for r in (first, again):
        c = r.counts
        assert r.status == "uploading" and r.balanced and c["read"] == 20_000
        assert r.wall > 0 and r.cpu > 0 and r.peak_rss_mb >= r.rss_before_mb > 0 and 0 <= r.enqueue < r.wall
        assert c["rejected"] > 0 and c["duplicates"] > 0  # the segment has its share of bad rows
    assert first.counts["skipped"] == 0 and first.counts["batches"] * 100 >= first.counts["queued"] > 19_000
    # 1% changed and 1% new are sent again, 1% left, everyone else is skipped
    assert 300 < again.counts["queued"] < 500 and again.counts["left"] > 150
    assert again.counts["skipped"] + again.counts["queued"] == 20_000 - again.counts["rejected"] - again.counts["duplicates"]

    # 2.-4. whole runs without and with the (scaled) rate limit, then after 1% churn
    assert len(res.ceiling) == 1
    for full, rerun in (res.upload, res.ceiling[0]):
        assert full.status == rerun.status == "partiallySucceeded"  # the rejected rows did not reach Omnisend
        assert full.balanced and rerun.balanced and full.counts["read"] == rerun.counts["read"] == 2_000
        assert full.counts["failed"] == rerun.counts["failed"] == 0
        assert full.counts["confirmed"] == full.counts["tagged"] > 1_900 and full.counts["skipped"] == 0
        assert full.requests["byPath"]["POST /batches"] == full.counts["batches"] == full.requests["batchesCreated"]
        assert rerun.counts["skipped"] > 1_800 and 0 < rerun.counts["confirmed"] < 100 and rerun.counts["untagged"] > 0
        assert full.requests["requests"] > rerun.requests["requests"] > 0
        assert full.contacts_per_s > 0 and full.wall > full.planning > 0
        assert full.cpu["app"] > 0 and full.cpu["sandbox"] > 0 and full.cpu["machine_busy"] > 0
        assert full.samples and full.windows("contacts")["requests"] > 0
    assert res.ceiling[0][0].limits.window_seconds == 3
    assert res.ceiling[0][0].requests["rateLimited"] <= res.ceiling[0][0].requests["requests"]

    text = markdown(res, tables(res))
    for title in ("## 1. Planning", "## 2. Upload overhead", "## 3. Ceiling", "## 4. Incremental"):
        assert title in text
    assert "python -m benchmarks --smoke" in text and "cores (nproc)" in text
