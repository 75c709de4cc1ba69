"""A run's tally: sharded so that workers commit batches side by side, summed exactly on read."""

from __future__ import annotations

import threading

from exporter import config
from exporter.domain import Batch, BatchStatus, TagPlanning, Tally
from exporter.messages import SendBatch
from exporter.state.tally import HEAD_KEY as TALLY_KEY
from exporter.state.tally import NEAR_END_BATCHES


def finished(run_id: str, number: int, size: int = 10) -> Batch:
    return Batch(run_id=run_id, number=number, size=size, status=BatchStatus.FINISHED, confirmed=size,
                 payload=SendBatch(run_id, "export", "connection", number=number))


def count_done(size: int):
    def mutate(t: Tally) -> None:
        t.confirmed += size
        t.sent += size
        t.batches_sent += 1
        t.batches_done += 1
    return mutate


def test_concurrent_commits_add_up_exactly_and_the_last_one_sees_the_run_complete(services, unique):
    st, run_id, planned = services, f"tally{unique}", 200
    st.tallies.update(run_id, lambda t: setattr(t, "planned", planned))
    seen: list[Tally] = []
    lock = threading.Lock()

    def worker(numbers):
        for n in numbers:
            tally = st.batches.commit(finished(run_id, n), None, count_done(10))
            with lock:
                seen.append(tally)

    threads = [threading.Thread(target=worker, args=(range(i + 1, planned + 1, 8),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    total = st.tallies.get(run_id)
    assert (total.batches_done, total.confirmed, total.sent, total.planned) == (planned, 10 * planned, 10 * planned, planned)
    assert total.complete
    # commits near the end read the whole tally again: whichever committed last saw every commit
    assert sum(1 for t in seen if t.complete) >= 1
    assert all(t.batches_done <= planned for t in seen)
    # the counts are spread over shards beside the head, not piled on one entity
    keys = [e["RowKey"] for e in st.clients.table(config.TABLE_BATCHES).query_entities(
        "PartitionKey eq @p and RowKey ge @lo", parameters={"p": run_id, "lo": TALLY_KEY})]
    assert TALLY_KEY in keys and len(keys) > 2


def test_a_commit_far_from_the_end_may_not_see_others_but_never_overstates(services, unique):
    st, run_id = services, f"tally{unique}"
    st.tallies.update(run_id, lambda t: setattr(t, "planned", 1000))
    for n in range(1, 11):
        st.batches.commit(finished(run_id, n), None, count_done(10))
    after = st.batches.commit(finished(run_id, 11), None, count_done(10))
    assert after.batches_done == 11 and 1000 - 11 > NEAR_END_BATCHES  # read before its own commit: all 10 seen


def test_the_head_keeps_what_was_planned_and_counts_added_there_add_up(services, unique):
    st, run_id = services, f"tally{unique}"
    st.batches.commit(finished(run_id, 1), None, count_done(10))

    def planned(t: Tally) -> None:
        t.planned = 3
        t.plan_tags(0)
        t.add_failures({"not sent: the run had ended": 20})

    total = st.tallies.update(run_id, planned)
    assert (total.planned, total.tags_planned, total.batches_done, total.confirmed) == (3, 0, 1, 10)
    assert total.failed_by_reason == {"not sent: the run had ended": 20}
    # a retry takes a batch's counts back out of the shard it was added to
    batch, etag = st.batches.get(run_id, 1)
    batch.status = BatchStatus.QUEUED

    def uncount(t: Tally) -> None:
        t.confirmed -= 10
        t.sent -= 10
        t.batches_sent -= 1
        t.batches_done -= 1

    assert st.batches.commit(batch, etag, uncount) is not None
    total = st.tallies.get(run_id)
    assert (total.batches_done, total.confirmed, total.failed) == (0, 0, 20)


def test_tags_are_requested_once_however_many_workers_see_the_run_complete_at_once(services, unique):
    """A mutate function runs again when another writer got in first; only its last run may decide."""
    from exporter.lifecycle import tag_planning as tags

    queue = services.clients.queue(config.QUEUE_RUNS)
    queue.clear_messages()
    for attempt in range(4):
        run_id = f"tags{unique}{attempt}"
        services.tallies.update(run_id, lambda t: setattr(t, "planned", 0))
        start = threading.Barrier(8)

        def worker():
            start.wait()
            tags.request_tags(services, run_id)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert services.tallies.get(run_id).tag_planning is TagPlanning.PLANNING
    sent = [m.content for m in queue.receive_messages(messages_per_page=32, visibility_timeout=5)]
    assert len(sent) == 4  # one request per run
