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

    # 1. planning: a first run and a re-run after 1% churn, each in its own process, and each as a preview
    assert [r.kind for r in res.planning] == ["first run", "preview", "re-run", "preview re-run"]
    first, preview, again, preview_again = res.planning
    assert first.rows == again.rows == 20_000
    assert preview.sent_nothing and preview_again.sent_nothing and preview.changes_add_up
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


def test_the_planning_benchmark_previews_measure_a_real_preview_that_sends_nothing(azurite_storage):
    """The preview rows of table 1 (issue #17): planned by the app's preview path, their counts the
    real run's, the changes report written in full, nothing left for a sender, and their numbers real."""
    from benchmarks import report
    from benchmarks.planning import bench_size, services
    from tests.conftest import clear_app_state

    svc = services()
    clear_app_state(svc.clients)
    try:
        results = bench_size(svc, 3_000, log=lambda *a: None, previews=True)
    finally:
        clear_app_state(svc.clients)

    first, preview, again, preview_again = results
    assert [r.kind for r in results] == ["first run", "preview", "re-run", "preview re-run"]
    planned = ("read", "rejected", "duplicates", "queued", "skipped", "left", "joined", "changed")
    for run, pre in ((first, preview), (again, preview_again)):
        assert pre.status == "succeeded" and pre.preview is not None
        assert {k: pre.counts[k] for k in planned} == {k: run.counts[k] for k in planned}  # what the run did
        assert pre.balanced and pre.changes_add_up and run.changes_add_up
        assert pre.sent_nothing and pre.queue_messages == 0 and not pre.state_moved and pre.counts["batches"] == 0
        assert not run.sent_nothing and run.queue_messages > 0  # the check can fail: a real run leaves messages
        assert pre.peak_rss_mb >= pre.rss_before_mb > 0 and pre.wall > 0 and pre.cpu > 0 and pre.rows_per_s > 0
        assert pre.changes_bytes > 0
        assert pre.preview["estimate"]["contactBatches"] == run.counts["batches"]
    # before any run everyone valid joins: the changes report lists them all
    assert preview.changes_rows == {"joined": preview.counts["queued"]} and preview.counts["queued"] > 2_900
    assert set(preview_again.changes_rows) == {"joined", "changed", "left"}
    assert preview_again.counts["skipped"] > 2_800

    table = report.planning_table(results)
    assert "| preview " in table and "| preview re-run " in table and "found" in table and "| NO " not in table
