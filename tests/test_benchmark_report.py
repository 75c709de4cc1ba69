"""Table 3 of docs/benchmarks.md gives each run's tags floor and its wall time's share of it (#18)."""

from __future__ import annotations

from benchmarks.report import ceiling_table, tags_floor
from benchmarks.upload import Limits, RunResult, Sample

REAL = Limits("Omnisend's limit", 400, 60, 60)


def _run(confirmed: int, already_tagged: int, wall: float) -> RunResult:
    # both counters move from the second sample to the last: busy parts longer than a window
    samples = [Sample(t, n, n, 0, n - tags, tags, {}) for t, n, tags in ((0.0, 0, 0), (1.0, 10, 1), (70.0, 700, 60),
                                                                    (140.0, 1400, 120))]
    return RunResult("full run", 100_000, REAL, wall, 4.0, "succeeded",
                     {"confirmed": confirmed, "alreadyTagged": already_tagged},
                     {"requests": 1400, "rateLimited": 0}, {}, {}, samples)


def test_the_tags_floor_is_the_tag_calls_at_the_pacers_cap_and_the_share_is_the_wall_over_it():
    # 98,500 members: 394 calls of 250, 58 of them per 60.5 s (the pacer's cap of 60 a minute)
    assert round(tags_floor(_run(98_500, 0, 458.4)), 1) == 411.0
    # members already holding the tag are not tagged again: they are not in the floor either
    assert tags_floor(_run(98_500, 98_500 - 250, 10.0)) == 60.5 / 58
    text = ceiling_table([_run(98_500, 0, 458.4)])
    header, _, contacts_row, tags_row = text.splitlines()[:4]
    assert "| contacts |" in contacts_row and "| tags " in tags_row
    assert header.rstrip(" |").endswith("tags floor s | wall / floor")
    assert tags_row.rstrip(" |").endswith("411.0        | 1.115x")
    assert contacts_row.rstrip(" |").endswith("| -            | -")
