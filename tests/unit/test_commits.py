"""Commits never pass a message that was not acknowledged (faust-streaming #606)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from intervaltree import IntervalTree
from prometheus_client import CollectorRegistry

from streams import commits
from streams.commits import (
    Admit,
    HeadWatch,
    SeekGuard,
    counts_as_processed,
    first_unacknowledged,
)
from streams.metrics import WorkerCollector, WorkerMetrics

RAW_0 = TP("events.raw", 0)


@pytest.mark.parametrize(
    ("committed", "lowest", "gaps", "missing"),
    [
        (None, 7, [], None),  # nothing committed yet: faust's own rule
        (2585, 2585, [], None),  # the head is acknowledged
        (2585, 2586, [], 2585),  # one message missing: the case faust lets through
        (2585, 2590, [], 2585),
        (0, 1, [], 0),  # offset 0 is an offset
        (10, 14, [(10, 14)], None),  # a known hole in the log (compaction)
        (10, 14, [(10, 12)], 12),
        (10, 14, [(11, 14)], 10),
        (10, 14, [(10, 11), (11, 13)], 13),
    ],
)
def test_first_unacknowledged(
    committed: int | None, lowest: int, gaps: list[tuple[int, int]], missing: int | None
) -> None:
    assert first_unacknowledged(committed, lowest, gaps) == missing


class Unacked(list[Any]):
    def discard(self, message: Any) -> None:
        if message in self:
            self.remove(message)


@dataclass
class FakeApp:
    """What faust's ``Consumer.ack`` asks of the app."""

    flow_active: bool = True
    consumer_generation_id: int = 2

    @property
    def flow_control(self) -> Any:
        return SimpleNamespace(is_active=lambda: self.flow_active)

    @property
    def topics(self) -> Any:
        return SimpleNamespace(acks_enabled_for=lambda _topic: True)


@dataclass
class FakeConsumer:
    """The state faust's ``Consumer.ack`` and ``Consumer._new_offset`` read and write,
    with faust's own methods."""

    committed: int | None
    acked: list[int]
    gaps: list[tuple[int, int]] = field(default_factory=list)
    unacked: list[Any] = field(default_factory=list)
    seeks: list[dict[Any, int]] = field(default_factory=list)
    app: FakeApp = field(default_factory=FakeApp)
    # what each fetch returns: (offset, ...) of RAW_0, one tuple a fetch
    fetches: list[tuple[int, ...]] = field(default_factory=list)
    flow_active: bool = True

    def __post_init__(self) -> None:
        self._n_acked = 0
        self._waiting_for_ack = None
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self._committed_offset[RAW_0] = self.committed
        self._acked: dict[Any, list[int]] = defaultdict(list, {RAW_0: list(self.acked)})
        self._acked_index: dict[Any, set[int]] = defaultdict(set, {RAW_0: set(self.acked)})
        self._gap: dict[Any, IntervalTree] = defaultdict(IntervalTree)
        for begin, end in self.gaps:
            self._gap[RAW_0].addi(begin, end)
        self._unacked_messages = Unacked(self.unacked)
        self._read_offset: dict[Any, int | None] = defaultdict(lambda: None)

    ack: ClassVar[Any] = Consumer.ack
    _new_offset: ClassVar[Any] = Consumer._new_offset
    _add_gap: ClassVar[Any] = Consumer._add_gap

    assigned: bool = True

    def assignment(self) -> set[Any]:
        return {RAW_0} if self.assigned else set()

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        self.seeks.append(partitions)
        self._read_offset.update(partitions)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:  # noqa: ARG002
        for offset in self.fetches.pop(0) if self.fetches else ():
            yield RAW_0, SimpleNamespace(offset=offset)

    async def perform_seek(self) -> None:
        """As faust's: the read offset set to the committed one."""
        self._read_offset[RAW_0] = self._committed_offset[RAW_0]


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> type[FakeConsumer]:
    class Patched(FakeConsumer):
        pass

    monkeypatch.setattr(commits, "WATCH", HeadWatch(reread_after_s=0.0))
    monkeypatch.setattr(commits, "GUARD", SeekGuard())
    commits.install(Patched)
    return Patched


def test_faust_alone_commits_over_a_single_missing_message() -> None:
    """The hole this module closes: the message at 2585 was never acknowledged."""
    assert FakeConsumer(2585, [2586, 2587, 2588, 2589])._new_offset(RAW_0) == 2590


def test_a_missing_head_holds_the_commit_back(patched: type[FakeConsumer]) -> None:
    consumer = patched(2585, [2586, 2587, 2588, 2589])
    assert consumer._new_offset(RAW_0) is None
    assert consumer._acked[RAW_0] == [2586, 2587, 2588, 2589]  # kept for when the head comes
    consumer._acked[RAW_0].insert(0, 2585)
    assert consumer._new_offset(RAW_0) == 2590


def test_a_contiguous_run_commits_as_faust_does(patched: type[FakeConsumer]) -> None:
    assert patched(100, [100, 101, 102, 104])._new_offset(RAW_0) == 103
    assert patched(100, [103, 104], gaps=[(100, 103)])._new_offset(RAW_0) == 105


def test_a_head_left_unacknowledged_is_read_again(patched: type[FakeConsumer]) -> None:
    consumer = patched(2585, [2586, 2587])

    async def commits_twice() -> None:
        assert consumer._new_offset(RAW_0) is None  # noted
        assert consumer._new_offset(RAW_0) is None  # still missing after the wait: read again
        await asyncio.sleep(0)

    asyncio.run(commits_twice())
    assert commits.GUARD.pending == {RAW_0: 2585}  # sought before the next fetch
    consumer.fetches = [(2585, 2586, 2587)]
    assert asyncio.run(_fetch(consumer)) == [2585, 2586, 2587]
    assert consumer.seeks == [{RAW_0: 2585}]


async def _commits_twice_withheld(consumer: Any) -> None:
    """Two commits in a row find nothing to commit; then the loop turns once."""
    assert consumer._new_offset(RAW_0) is None
    assert consumer._new_offset(RAW_0) is None
    await asyncio.sleep(0)


def test_a_head_still_being_processed_is_not_read_again(
    patched: type[FakeConsumer],
) -> None:
    @dataclass
    class Message:
        tp: Any
        offset: int

    consumer = patched(2585, [2586, 2587], unacked=[Message(RAW_0, 2585)])

    asyncio.run(_commits_twice_withheld(consumer))
    assert commits.GUARD.pending == {}


def test_a_revoked_partition_is_neither_read_again_nor_counted(
    patched: type[FakeConsumer],
) -> None:
    consumer = patched(2585, [2586, 2587])
    consumer.assigned = False

    asyncio.run(_commits_twice_withheld(consumer))
    assert commits.GUARD.pending == {}
    assert commits.WATCH.counters["commits_withheld"] == 0


def test_the_watch_waits_before_a_reread() -> None:
    watch = HeadWatch(reread_after_s=5.0)
    assert not watch.hold(RAW_0, 10, now=0.0, in_flight=False)
    assert not watch.hold(RAW_0, 10, now=4.0, in_flight=False)
    assert watch.hold(RAW_0, 10, now=5.0, in_flight=False)
    assert not watch.hold(RAW_0, 10, now=6.0, in_flight=False)  # once per wait
    assert not watch.hold(RAW_0, 11, now=11.0, in_flight=False)  # a new head starts again
    assert watch.counters["commit_rereads"] == 1


@pytest.mark.parametrize(
    ("tracked", "flow_active", "generation", "counts"),
    [
        (True, True, 2, True),  # processed by a stream
        (True, False, 1, True),  # processed, acknowledged while a rebalance holds the flow
        (False, True, 2, True),  # not decodable: acknowledged by the conductor, as faust means
        (False, True, None, True),
        (False, False, 2, False),  # skipped: taken from the queue while the flow is held
        (False, True, 1, False),  # skipped: fetched for the assignment before
    ],
)
def test_counts_as_processed(
    *, tracked: bool, flow_active: bool, generation: int | None, counts: bool
) -> None:
    assert (
        counts_as_processed(
            tracked=tracked, flow_active=flow_active, generation=generation, current_generation=2
        )
        is counts
    )


def _message(offset: int, generation: int = 2) -> ConsumerMessage:
    message = ConsumerMessage(
        RAW_0.topic, RAW_0.partition, offset, 0.0, 0, None, b"k", b"v", None,
        generation_id=generation,
    )  # fmt: skip
    message.incref()  # one channel, as the conductor counts it
    return message


def _ack(message: ConsumerMessage, consumer: Any) -> bool:
    """As the stream does (``Event.ack``): faust's ``Message.ack``, then ``Consumer.ack``."""
    return message.ack(consumer)


def _revoked_mid_batch(consumer: FakeConsumer) -> None:
    """What the rebalance that failed the test left: the partition was revoked (faust
    forgot its committed offset and acknowledgements), the batch in flight (10-12) was
    processed and acknowledged, and the stream skipped 13 and 14, taken from its queue
    while the flow was held, acknowledging them as faust does."""
    consumer._committed_offset[RAW_0] = None
    consumer._acked[RAW_0] = []
    consumer._acked_index[RAW_0] = set()
    consumer.app.flow_active = False
    for offset in (10, 11, 12):
        message = _message(offset)
        message.tracked = True  # taken by the stream and processed
        _ack(message, consumer)
    for offset in (13, 14):
        _ack(_message(offset), consumer)  # skipped: never tracked


def test_faust_alone_commits_the_messages_a_rebalance_skipped() -> None:
    consumer = FakeConsumer(None, [])
    _revoked_mid_batch(consumer)
    assert consumer._new_offset(RAW_0) == 15  # 13 and 14 are never read again


def test_skipped_messages_stay_uncommitted(patched: type[FakeConsumer]) -> None:
    consumer = patched(None, [])
    _revoked_mid_batch(consumer)
    assert consumer._new_offset(RAW_0) == 13  # the next owner reads 13 and 14
    assert commits.WATCH.counters["skipped_acks_left_out"] == 2


def test_a_message_of_an_older_generation_stays_uncommitted(patched: type[FakeConsumer]) -> None:
    consumer = patched(20, [])
    stale = _message(20, generation=1)
    assert not _ack(stale, consumer)
    assert consumer._new_offset(RAW_0) is None
    fresh = _message(20)
    fresh.tracked = True
    assert _ack(fresh, consumer)
    assert consumer._new_offset(RAW_0) == 21


async def _fetch(consumer: Any) -> list[int]:
    """One turn of faust's fetch loop: the offsets handed on, the read offset set from
    each as faust does."""
    offsets = []
    async for tp, message in consumer.getmany(timeout=1.0):
        offsets.append(message.offset)
        consumer._read_offset[tp] = message.offset
    return offsets


def test_the_commit_counters_reach_a_scrape() -> None:
    metrics = WorkerMetrics()
    guard = SeekGuard(counters=metrics.counters)
    guard.sought(RAW_0, 10, between_fetches=False)
    guard.admit(RAW_0, 12)
    registry = CollectorRegistry()
    registry.register(WorkerCollector(metrics))
    assert registry.get_sample_value("headrace_stale_records_held_back_total") == 1.0
    for name in ("commit_rereads", "commits_withheld", "skipped_acks_left_out"):
        assert registry.get_sample_value(f"headrace_{name}_total") == 0.0


def test_the_guard_hands_on_what_a_seek_asked_for() -> None:
    guard = SeekGuard()
    assert guard.admit(RAW_0, 5) == (Admit.HAND_ON, 5)  # no seek: nothing to check
    guard.sought(RAW_0, 10, between_fetches=False)
    assert guard.admit(RAW_0, 9) == (Admit.EARLIER, 10)
    assert guard.admit(RAW_0, 12) == (Admit.STALE, 10)
    assert guard.admit(RAW_0, 13) == (Admit.STALE, 10)
    assert guard.pending == {RAW_0: 10}
    assert guard.counters["stale_records_held_back"] == 2
    assert guard.take_pending({RAW_0}) == {RAW_0: (10, (2, 12))}
    assert guard.pending == {}
    guard.sought(RAW_0, 10, between_fetches=True)
    assert guard.admit(RAW_0, 10) == (Admit.HAND_ON, 10)
    assert guard.admit(RAW_0, 14) == (Admit.HAND_ON, 14)  # checked once, then trusted
    guard.sought(RAW_0, 20, between_fetches=True)
    assert guard.admit(RAW_0, 23) == (Admit.HOLE, 20)  # nothing at 20..22 in the log
    assert guard.expected == {}


def test_seeks_for_revoked_partitions_are_dropped() -> None:
    guard = SeekGuard()
    guard.request(RAW_0, 7)
    assert guard.take_pending(set()) == {}
    guard.request(RAW_0, 7)
    guard.superseded()
    assert guard.pending == {}


def test_records_fetched_before_a_rebalance_seek_are_held_back(
    patched: type[FakeConsumer],
) -> None:
    consumer = patched(100, [], fetches=[(103, 104), (100, 101, 102, 103, 104)])
    asyncio.run(consumer.perform_seek())
    assert asyncio.run(_fetch(consumer)) == []  # the rest of the old batch
    assert commits.GUARD.pending == {RAW_0: 100}
    assert asyncio.run(_fetch(consumer)) == [100, 101, 102, 103, 104]  # sought again first
    assert consumer.seeks == [{RAW_0: 100}]
    assert not consumer._gap[RAW_0]


def test_a_hole_found_after_a_seek_of_ours_counts_as_a_gap(patched: type[FakeConsumer]) -> None:
    consumer = patched(100, [103, 104], fetches=[(103, 104, 105)])
    consumer._gap[RAW_0].addi(101, 103)  # recorded earlier from a stale record: forgotten
    commits.GUARD.request(RAW_0, 100)
    assert asyncio.run(_fetch(consumer)) == [103, 104, 105]  # the log starts at 103 now
    assert sorted((gap.begin, gap.end) for gap in consumer._gap[RAW_0]) == [(100, 103)]
    assert consumer._new_offset(RAW_0) == 105


def test_no_seek_is_made_while_the_flow_is_held(patched: type[FakeConsumer]) -> None:
    consumer = patched(100, [], fetches=[()], flow_active=False)
    commits.GUARD.request(RAW_0, 100)
    asyncio.run(_fetch(consumer))
    assert consumer.seeks == []
    assert commits.GUARD.pending == {RAW_0: 100}  # left for after the rebalance
