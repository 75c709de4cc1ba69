"""The membership state: compact, sorted, merged correctly, and never half-written."""

import json

import pytest

from exporter.domain import fingerprint, member_key
from exporter.state.membership import MemberState, StateHeader, StateStore, Upserts, merge


def header(run_id="r1"):
    return StateHeader("e1", "c1", "sync", "VIP", run_id, 0)


def test_member_keys_are_stable_and_case_insensitive():
    assert member_key("Ana@Example.com") == member_key("ana@example.COM")
    assert member_key("a@example.com") != member_key("b@example.com")
    assert fingerprint('{"a":1}') != fingerprint('{"a":2}')


def test_merge_overwrites_adds_and_deletes():
    previous = [(1, 10, "a"), (3, 30, "c"), (5, 50, "e"), (7, 70, "g")]
    upserts = [(2, 20, "b"), (3, 31, "c"), (8, 80, "h")]
    deletes = [5, 6]
    assert list(merge(previous, upserts, deletes)) == [(1, 10, "a"), (2, 20, "b"), (3, 31, "c"), (7, 70, "g"), (8, 80, "h")]


def test_upserts_come_back_sorted_and_unique():
    u = Upserts()
    for email in ["c@example.com", "a@example.com", "b@example.com", "A@example.com"]:
        u.add(member_key(email), fingerprint(email), email)
    out = list(u.sorted())
    assert [k for k, _, _ in out] == sorted({member_key(e) for e in ["a@example.com", "b@example.com", "c@example.com"]})


def test_state_round_trip_and_lookups(blob_service, unique):
    container = blob_service.create_container(f"state{unique}")
    try:
        store = StateStore(container)
        assert store.load("e1") is None
        records = sorted((member_key(f"p{i}@example.com"), i, f"p{i}@example.com") for i in range(1000))
        assert store.write(header(), records) == 1000
        state = store.load("e1")
        assert len(state) == 1000 and state.header.count == 1000 and state.header.tag == "VIP"
        i = state.find(member_key("p7@example.com"))
        assert i >= 0 and state.fps[i] == 7 and state.find(12345) == -1
        for k in range(0, 1000, 2):
            state.present[state.find(member_key(f"p{k}@example.com"))] = 1
        leavers = {email for _, email in state.leavers()}
        assert leavers == {f"p{k}@example.com" for k in range(1, 1000, 2)}
        state.close()
    finally:
        container.delete_container()


def test_field_marks_survive_upserts_the_state_blob_and_a_load(blob_service, unique):
    container = blob_service.create_container(f"state{unique}")
    try:
        store = StateStore(container)
        u = Upserts()
        for i in range(50):
            u.add(member_key(f"p{i}@example.com"), i | (i + 1000 | i << 70) << 64, f"p{i}@example.com")
        store.write(header(), u.sorted())
        state = store.load("e1")
        i = state.find(member_key("p7@example.com"))
        assert (state.fps[i], state.marks(i)) == (7, 1007 | 7 << 70)
        assert {fp for _, fp, _ in state.records()} == {i | (i + 1000 | i << 70) << 64 for i in range(50)}
        state.close()
    finally:
        container.delete_container()


def test_a_state_of_format_1_is_read_with_unknown_marks_and_written_back_in_format_2(blob_service, unique):
    from exporter.state.membership import RECORDS

    container = blob_service.create_container(f"state{unique}")
    try:
        old = StateHeader("e1", "c1", "sync", "VIP", "r0", 2, version=1)
        body = {"version": 1, **{k: v for k, v in json.loads(old.to_json()).items() if k != "version"}}
        emails = sorted(["a@example.com", "b@example.com"], key=member_key)
        data = json.dumps(body).encode() + b"\n" + b"".join(
            RECORDS[1].pack(member_key(e), 5, len(e)) + e.encode() for e in emails)
        container.get_blob_client("state/e1/members-r0.bin").upload_blob(data)
        container.get_blob_client("state/e1/current.json").upload_blob(json.dumps({"blob": "state/e1/members-r0.bin"}))
        store = StateStore(container)
        state = store.load("e1")
        assert state.header.version == 1 and list(state.fps) == [5, 5] and [state.marks(i) for i in (0, 1)] == [0, 0]
        store.write(header("r1"), state.records())
        state.close()
        again = store.load("e1")
        assert again.header.version == 2 and list(again.fps) == [5, 5] and [again.marks(i) for i in (0, 1)] == [0, 0]
        assert [e for _, _, e in again.records()] == emails
        again.close()
    finally:
        container.delete_container()


def test_a_state_replaced_while_it_is_read_is_read_again_never_taken_for_none(blob_service, unique, monkeypatch):
    """Two workers can write the same run's state at once; one of them may be reading the state the
    other just replaced (and deleted). Seen in CI: the reader failed, and a missing blob would have
    been taken for "no state", forgetting every member."""
    container = blob_service.create_container(f"state{unique}")
    try:
        store = StateStore(container)
        records = sorted((member_key(f"p{i}@example.com"), i, f"p{i}@example.com") for i in range(50))
        store.write(header("r1"), records)
        stale = store.current_name("e1")
        store.write(header("r2"), records[:40])  # the next run's state; r1's blob is deleted
        assert not container.get_blob_client(stale).exists()
        current = store.current_name
        names = iter([stale])  # the first read of the pointer happened before the switch
        monkeypatch.setattr(store, "current_name", lambda export_id: next(names, None) or current(export_id))
        state = store.load("e1")
        assert state is not None and state.header.run_id == "r2" and len(state) == 40
        state.close()
    finally:
        container.delete_container()


def test_a_crash_while_writing_leaves_the_previous_state(blob_service, unique):
    container = blob_service.create_container(f"state{unique}")
    try:
        store = StateStore(container)
        store.write(header("r1"), [(1, 1, "a@example.com"), (2, 2, "b@example.com")])

        def dying():
            yield 3, 3, "c@example.com"
            raise RuntimeError("worker killed")

        with pytest.raises(RuntimeError):
            store.write(header("r2"), dying())
        state = store.load("e1")
        assert state.header.run_id == "r1" and len(state) == 2
        with pytest.raises(ValueError):
            store.write(header("r3"), [(2, 2, "b"), (1, 1, "a")])  # unsorted input is refused
        assert store.load("e1").header.run_id == "r1"
    finally:
        container.delete_container()


def test_key_set_behaves_like_a_set_through_growth():
    import random

    from exporter.domain import KeySet

    rng = random.Random(5)
    keys = [rng.getrandbits(64) for _ in range(5000)] + [0, 1, 2**64 - 1]
    keys += keys[:300]  # repeats
    ks, plain = KeySet(capacity=16), set()
    for k in keys:
        assert ks.add(k) == (k not in plain)
        plain.add(k)
        assert k in ks
    assert len(ks) == len(plain)
    assert all(k in ks for k in plain)
    assert not any(k in ks for k in (rng.getrandbits(64) for _ in range(1000)) if k not in plain)
    ks.clear()
    assert len(ks) == 0 and keys[0] not in ks and 0 not in ks


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000, 20_000])
def test_lookups_find_every_member_and_nobody_else(tmp_path, n):
    import random

    from exporter.state.membership import RECORD

    rng = random.Random(n)
    keys = sorted({rng.getrandbits(64) for _ in range(n)} | ({0, 2**64 - 1} if n > 8 else set()))
    path = tmp_path / "state.bin"
    with open(path, "wb") as f:
        f.write(header().to_json().encode() + b"\n")
        for k in keys:
            f.write(RECORD.pack(k, k ^ 1, k, k >> 1, 1) + b"x")
    state = MemberState(header(), str(path))
    assert list(state.keys) == keys and len(state) == len(keys)
    assert all(state.find(k) == i and state.fps[i] == k ^ 1 and state.marks(i) == k >> 1 << 64 | k
               for i, k in enumerate(keys))
    others = [rng.getrandbits(64) for _ in range(2000)] + [0, 1, 2**63, 2**64 - 1]
    assert all(state.find(k) == -1 for k in others if k not in set(keys))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_records_are_read_whole_across_read_boundaries(tmp_path, chunk, version):
    import io

    from exporter.state.membership import RECORDS, _records

    marked = version >= 2  # format 1 has no field marks: they read as 0
    records = [(i * 7919, i | ((i * 31 | (i + 5) << 64) << 64 if marked else 0), f"person{i}@exämple.com" * (i % 3))
               for i in range(200)]
    record = RECORDS[version]

    def pack(k, fp, e):
        raw = e.encode()
        marks = fp >> 64
        fields = (k, fp & (2**64 - 1), marks & (2**64 - 1), marks >> 64, len(raw)) if marked else (k, fp, len(raw))
        return record.pack(*fields) + raw

    data = b"".join(pack(*r) for r in records)
    assert list(_records(io.BytesIO(data), version, chunk=chunk)) == records
    assert list(_records(io.BytesIO(data), version, emails=False, chunk=chunk)) == [(k, fp, None) for k, fp, _ in records]
    with pytest.raises(ValueError):
        list(_records(io.BytesIO(data[:-3]), version, chunk=chunk))
    with pytest.raises(ValueError):
        list(_records(io.BytesIO(data[:-3]), version, emails=False, chunk=chunk))
