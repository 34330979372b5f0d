from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.dedup import (
    DUPLICATE,
    REJECTED_LATE,
    Block,
    Deduplicator,
    partition_key_prefix,
    split_partition_key,
)


def test_duplicate_within_horizon_is_seen() -> None:
    dedup = Deduplicator(1_000, {})
    assert not dedup.is_duplicate("a")
    dedup.remember("a", 10)
    assert dedup.is_duplicate("a")


def test_ids_expire_once_the_watermark_passes_the_horizon() -> None:
    store: dict[str, Block] = {}
    dedup = Deduplicator(1_000, store)
    dedup.remember("a", 0, offset=0)
    dedup.remember("b", 500, offset=1)
    assert dedup.flush() == "0"
    dedup.remember("c", 1_200, offset=2)
    assert dedup.flush() == "2"
    assert store == {"0": [["a", 0, 0], ["b", 500, 1]], "2": [["c", 1_200, 2]]}
    assert dedup.expire() == ["a"]
    assert not dedup.is_duplicate("a")
    assert dedup.is_duplicate("b")
    assert set(store) == {"0", "2"}  # "b" still needs its block
    dedup.remember("d", 1_600, offset=3)
    assert dedup.expire() == ["b"]
    assert set(store) == {"2"}  # every entry of block "0" expired: the block went


def test_a_flush_writes_one_block_and_nothing_when_nothing_is_new() -> None:
    store: dict[str, Block] = {}
    dedup = Deduplicator(1_000, store, partition_key_prefix(3))
    assert dedup.flush() is None
    for offset in range(5):
        dedup.remember(f"e{offset}", 10 * offset, offset=offset)
    assert dedup.flush() == "0"
    assert list(store) == ["3:0"]
    assert len(store["3:0"]) == 5
    assert dedup.flush() is None
    assert list(store) == ["3:0"]


def test_remember_flushes_by_itself_at_the_block_size() -> None:
    store: dict[str, Block] = {}
    dedup = Deduplicator(10**9, store)
    dedup.block_max = 4
    for i in range(10):
        dedup.remember(f"e{i}", i)
    assert sorted(len(block) for block in store.values()) == [4, 4]
    assert dedup.flush() is not None
    assert sum(len(block) for block in store.values()) == 10


def test_an_id_remembered_again_leaves_its_old_block() -> None:
    store: dict[str, Block] = {}
    dedup = Deduplicator(1_000, store)
    dedup.remember("x", 10, offset=0, outcome=REJECTED_LATE)
    dedup.flush()
    dedup.remember("x", 20, offset=1)  # sent again and accepted this time
    assert set(store) == set()  # block "0" held only the superseded entry
    dedup.flush()
    assert store == {"1": [["x", 20, 1]]}
    assert dedup.is_duplicate("x", offset=2)


def test_rebuild_restores_memory_and_expiry_from_the_blocks() -> None:
    store: dict[str, Block] = {}
    first = Deduplicator(1_000, store)
    first.remember("a", 0, offset=0)
    first.remember("late", 10, offset=1, outcome=REJECTED_LATE)
    first.flush()
    first.remember("b", 5_000, offset=2)
    first.flush()
    first.remember("unflushed", 5_001, offset=3)  # the worker died before its flush
    restarted = Deduplicator(1_000, store)
    restarted.rebuild(store.items())
    assert len(restarted) == 3
    assert restarted.watermark == 5_000
    assert restarted.recall("late", 1) == REJECTED_LATE
    assert restarted.recall("b", 2) is None  # redelivered
    assert restarted.recall("b", 9) == DUPLICATE
    assert restarted.recall("unflushed", 3) is None
    assert restarted.expire() == ["a", "late"]
    assert set(store) == {"2"}


def test_rebuild_drops_blocks_that_later_blocks_superseded() -> None:
    store: dict[str, Block] = {
        "0": [["x", 10, 0, REJECTED_LATE]],
        "5": [["x", 20, 5], ["y", 21, 6]],
    }
    dedup = Deduplicator(1_000, store)
    dedup.rebuild(list(store.items()))
    assert dedup.recall("x", 0) == DUPLICATE  # the later, accepted entry wins
    assert set(store) == {"0", "5"}  # a table is written at the next flush, in an event
    dedup.flush()
    assert set(store) == {"5"}


def test_the_same_message_read_again_is_not_a_duplicate() -> None:
    dedup = Deduplicator(1_000, {})
    dedup.remember("a", 10, offset=7)
    assert not dedup.is_duplicate("a", offset=7)  # redelivery after a restart
    assert dedup.is_duplicate("a", offset=8)  # the producer sent it twice
    assert dedup.is_duplicate("a")


def test_recall_answers_every_case_from_memory() -> None:
    class WriteOnlyStore(dict[str, Block]):
        def get(self, *_args: object) -> Block | None:  # type: ignore[override]
            raise AssertionError("recall read the store")

        def __getitem__(self, _key: str) -> Block:
            raise AssertionError("recall read the store")

    dedup = Deduplicator(1_000, WriteOnlyStore())
    dedup.remember("ok", 10, offset=1)
    dedup.remember("late", 10, offset=2, outcome=REJECTED_LATE)
    dedup.flush()
    assert dedup.recall("new", 3) is None
    assert dedup.recall("ok", 1) is None  # redelivered: downstream state decides
    assert dedup.recall("ok", 4) == DUPLICATE
    assert dedup.recall("ok") == DUPLICATE
    assert dedup.recall("late", 2) == REJECTED_LATE  # the same message, same answer
    assert dedup.recall("late", 5) is None  # sent again: judged afresh


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 10_000)), max_size=200))
def test_matches_a_brute_force_oracle(events: list[tuple[str, int]]) -> None:
    """After each step (with expiry forced), an id is remembered exactly when the oracle
    says it was accepted within the horizon of the highest event time seen so far."""
    horizon = 1_500
    dedup = Deduplicator(horizon, {})
    accepted: dict[str, int] = {}
    high = None
    for event_id, event_time in events:
        oracle_duplicate = event_id in accepted
        assert dedup.is_duplicate(event_id) == oracle_duplicate
        if not oracle_duplicate:
            dedup.remember(event_id, event_time)
            dedup.expire()
            accepted[event_id] = event_time
            high = event_time if high is None else max(high, event_time)
            accepted = {k: t for k, t in accepted.items() if t >= high - horizon}


def test_partitions_keep_apart_in_one_store() -> None:
    store: dict[str, Block] = {}
    zero = Deduplicator(1_000, store, partition_key_prefix(0))
    one = Deduplicator(1_000, store, partition_key_prefix(1))
    zero.remember("x", 1, offset=0)
    zero.flush()
    assert zero.is_duplicate("x")
    assert not one.is_duplicate("x")
    one.remember("x", 2, offset=0)
    one.flush()
    assert sorted(store) == ["0:0", "1:0"]
    zero.remember("y", 5_000, offset=1)
    zero.flush()
    assert zero.expire() == ["x"]
    assert store == {"1:0": [["x", 2, 0]], "0:1": [["y", 5_000, 1]]}
    assert split_partition_key("12:40") == (12, "40")


@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 10_000), st.booleans()),
        max_size=200,
    ),
    st.sets(st.integers(0, 199)),
)
def test_a_restart_after_any_flush_remembers_what_was_flushed(
    events: list[tuple[str, int, bool]], restarts: set[int]
) -> None:
    """Flushing after some events and restarting (rebuild from the store) after some of
    those flushes, the deduplicator answers as one that never restarted; after every
    flush the store holds each remembered entry, in exactly one block each block of
    which is still needed."""
    horizon = 1_500
    store: dict[str, Block] = {}
    dedup = Deduplicator(horizon, store)
    steady = Deduplicator(horizon, {})
    for offset, (event_id, event_time, flush) in enumerate(events):
        assert dedup.recall(event_id, offset) == steady.recall(event_id, offset)
        if dedup.recall(event_id) is None:
            for each in (dedup, steady):
                each.remember(event_id, event_time, offset)
                each.expire()  # expiry at once in both: their memories are comparable
        if flush:
            dedup.flush()
            _check_store(store, dedup)
            if offset in restarts:
                dedup = Deduplicator(horizon, store)
                dedup.rebuild(list(store.items()))
                dedup.flush()
                _check_store(store, dedup)
        assert dedup.entries() == steady.entries()


def _check_store(store: dict[str, Block], dedup: Deduplicator) -> None:
    current = dedup.entries()
    holders: dict[str, list[str]] = {}
    for name, block in store.items():
        needed = False
        for event_id, *stored in block:
            if current.get(event_id) == stored:
                holders.setdefault(event_id, []).append(name)
                needed = True
        assert needed, f"block {name} holds nothing remembered"
    assert sorted(holders) == sorted(current)


def test_a_block_written_again_from_the_same_offset_keeps_the_first() -> None:
    """After a restart, events from an offset already flushed can be remembered again
    (their entity state had not reached the changelog): the new block must not replace
    the old one while the old one still holds ids no later block has."""
    store: dict[str, Block] = {}
    first = Deduplicator(10**9, store)
    first.remember("a", 1, offset=10)
    first.remember("b", 2, offset=11)
    first.flush()
    restarted = Deduplicator(10**9, store)
    restarted.rebuild(list(store.items()))
    # processed again (late this time); "b" was redelivered
    restarted.remember("a", 1, offset=10, outcome=REJECTED_LATE)
    assert restarted.flush() == "10.0"
    assert sorted(store) == ["10", "10.0"]
    again = Deduplicator(10**9, store)
    again.rebuild(list(store.items()))
    assert again.entries() == {"a": [1, 10, REJECTED_LATE], "b": [2, 11]}  # the later wins
