"""The simulation of a first run (benchmarks/simulate.py) keeps Omnisend's limits and its counts add up.

It projects runs nobody can measure here (1,000,000 and 5,000,000 members), so what it reports must
hold by its own accounts: every contact batch sent and checked, every member tagged once, no window
of Omnisend's length over either limit (the simulated Omnisend answers 429 instead of admitting one),
and no run shorter than the tags endpoint allows.
"""

from __future__ import annotations

from bisect import bisect_left

from benchmarks.simulate import Omnisend, Params, Simulation, simulate


def _most_in_a_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((bisect_left(times, t + 1e-9) - bisect_left(times, t - window + 1e-9) for t in times), default=0)


def test_a_small_run_at_omnisends_limits_adds_up_and_keeps_every_window_within_them():
    sim = Simulation(Params(members=12_345))
    r = sim.run()
    batches, tag_calls = -(-12_345 // 100), -(-12_345 // 250)
    assert r.contact_batches == batches
    assert r.confirmed == 12_345 and r.tagged == 12_345  # everyone confirmed, everyone tagged once
    # a send and a check per batch (the batch is done at Omnisend before its first check), a tag call
    # per 250 emails of each wave of 10 batches (1,000 emails: 4 calls)
    assert r.requests == {"contacts": 2 * batches, "tags": tag_calls}
    log = sim.omnisend.log
    assert _most_in_a_window(log["contacts"] + log["tags"], 60) <= 400
    assert _most_in_a_window(log["tags"], 60) <= 60
    assert r.over_limit_windows == 0 and r.answered_429 == 0  # the pacer keeps under both
    # never faster than the tags endpoint allows: all but one window's worth of tag calls wait for it
    assert r.wall_seconds >= (tag_calls - 60) * 60 / 60
    assert r.wall_seconds >= r.planning_seconds + r.busy_seconds["tags"]
    assert r.share_of_floor == r.wall_seconds / r.tags_floor_seconds
    assert r.cpu_seconds < 5


def test_the_simulated_omnisend_answers_429_over_either_limit_and_does_not_count_it():
    omnisend = Omnisend(Params(members=1))
    assert all(omnisend.request(0.001 * i, is_tags=False) is None for i in range(400))
    assert omnisend.request(0.5, is_tags=False) == 60  # the window's first request leaves it at 60.0 s
    assert omnisend.request(60.001, is_tags=False) is None  # the first one left the window
    tags = Omnisend(Params(members=1))
    assert all(tags.request(float(i), is_tags=True) is None for i in range(60))
    assert tags.request(59.5, is_tags=True) == 1  # the tags' limit, though the general one has room
    assert tags.answered_429 == 1 and len(tags.log["tags"]) == 60


def test_the_same_seed_gives_the_same_run_and_the_counts_do_not_depend_on_the_seed():
    a, b, c = (simulate(3_000, seed=s) for s in (1, 1, 2))
    assert a.wall_seconds == b.wall_seconds and a.requests == b.requests
    assert c.requests == a.requests  # the counts do not depend on chance, the timing may
