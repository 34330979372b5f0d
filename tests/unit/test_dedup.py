from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.dedup import (
    DUPLICATE,
    REJECTED_LATE,
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
    store: dict[str, list[int]] = {}
    dedup = Deduplicator(1_000, store)
    dedup.remember("a", 0)
    dedup.remember("b", 500)
    dedup.remember("c", 1_200)
    assert dedup.expire() == ["a"]
    assert set(store) == {"b", "c"}
    assert not dedup.is_duplicate("a")


def test_rebuild_restores_expiry_from_the_store() -> None:
    store = {"a": [0, 1], "b": [5_000, 2]}
    dedup = Deduplicator(1_000, store)
    dedup.rebuild(store.items())
    assert dedup.watermark == 5_000
    assert dedup.expire() == ["a"]
    assert store == {"b": [5_000, 2]}


def test_the_same_message_read_again_is_not_a_duplicate() -> None:
    dedup = Deduplicator(1_000, {})
    dedup.remember("a", 10, offset=7)
    assert not dedup.is_duplicate("a", offset=7)  # redelivery after a restart
    assert dedup.is_duplicate("a", offset=8)  # the producer sent it twice
    assert dedup.is_duplicate("a")


def test_recall_answers_every_case_in_one_lookup() -> None:
    reads: list[str] = []

    class CountingStore(dict[str, list[int]]):
        def get(self, key: str) -> list[int] | None:  # type: ignore[override]
            reads.append(key)
            return super().get(key)

    dedup = Deduplicator(1_000, CountingStore())
    dedup.remember("ok", 10, offset=1)
    dedup.remember("late", 10, offset=2, outcome=REJECTED_LATE)
    assert dedup.recall("new", 3) is None
    assert dedup.recall("ok", 1) is None  # redelivered: downstream state decides
    assert dedup.recall("ok", 4) == DUPLICATE
    assert dedup.recall("ok") == DUPLICATE
    assert dedup.recall("late", 2) == REJECTED_LATE  # the same message, same answer
    assert dedup.recall("late", 5) is None  # sent again: judged afresh
    assert len(reads) == 6


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
    store: dict[str, list[int]] = {}
    zero = Deduplicator(1_000, store, partition_key_prefix(0))
    one = Deduplicator(1_000, store, partition_key_prefix(1))
    zero.remember("x", 1)
    assert zero.is_duplicate("x")
    assert not one.is_duplicate("x")
    one.remember("x", 2)
    assert sorted(store) == ["0:x", "1:x"]
    zero.remember("y", 5_000)
    assert zero.expire() == ["x"]
    assert store == {"1:x": [2, -1], "0:y": [5_000, -1]}
    assert split_partition_key("12:ev:1") == (12, "ev:1")
