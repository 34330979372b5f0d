"""Offsets a worker commits: never past a message it has not processed.

faust commits, per partition, the end of the first run of consecutive acknowledged
offsets. Three things let that pass a message nobody processed, and in a rebalance under
load each lost events or could (tests/faults/test_rebalance.py: two consecutive messages
of a partition, in one run of four; one event in each of two clean-clone CI runs):

1. The stream *acknowledges the messages it skips*: those it takes from its queue while a
   rebalance holds the flow, or that were fetched for the assignment before
   (``faust/streams.py``: "We want to ack the filtered out message otherwise the lag would
   increase"). Their offsets then count as done. Revoking a partition also forgets its
   committed offset, so the commit made while the rebalance waits for the streams to
   drain takes the first acknowledged run as it is, skipped messages included, and the
   partition's next owner starts after them. :func:`counts_as_processed` leaves such
   acknowledgements out: the message stays uncommitted and is read again once the
   partitions are assigned.
2. The guard against a hole between the committed offset and that run lets a hole of
   exactly one message through (``min(acked) - committed > 1``; faust-streaming #606).
   :func:`first_unacknowledged` is the rule without the hole; a partition whose head stays
   unacknowledged, with no message at that offset being processed, is read again from
   the committed offset after ``REREAD_AFTER_S``. Its successors are then read twice,
   which at-least-once allows and the ingest agent recognises (``streams.pipeline``: a
   message its entity's state already holds is redelivered).
3. A seek races the fetcher. faust's fetch loop keeps the records of its last fetch while
   it hands them on one by one, and sets each partition's read offset from the last one
   handed on. A seek made meanwhile (the commit-time seek of a rebalance, or a reread
   above) sets the read offset back, and the next record of the old batch then looks
   like a jump in the log: faust records the offsets in between as a *gap* (as if
   compaction had removed them) and counts them as done, though nobody read them; and
   the records fetched again from the seek fall below the read offset the old batch left
   and are dropped, so a reread could fail for a minute under load (seen in
   tests/faults/test_rebalance.py: eleven rereads of one head before it came).
   :class:`SeekGuard` makes every seek of ours happen between two fetches (the reread is
   queued, not run at once), and checks the first record handed on after any seek: one
   past the seek's offset is stale and held back, and the partition is sought again
   before the next fetch; after a seek of ours, which no old record can follow, a record
   past the offset is a real hole in the log (compaction, transaction markers) and is
   recorded as a gap from the seek's offset.

:func:`install` puts these in front of faust's own ``Consumer.ack``,
``Consumer._new_offset``, ``Consumer.getmany`` and ``Consumer.perform_seek``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from enum import Enum
from typing import Any

import structlog

from streams.metrics import METRICS

log = structlog.get_logger(__name__)

# How long a partition's head may stay unacknowledged, with no message at that offset
# being processed, before the partition is read again from its committed offset. A
# message in flight is acknowledged within its batch (milliseconds to a second or two).
REREAD_AFTER_S = 5.0
_END = 2**63  # past any offset


def counts_as_processed(
    *, tracked: bool, flow_active: bool, generation: int | None, current_generation: int
) -> bool:
    """Whether an acknowledgement may let the message's offset be committed.

    A stream tracks each message it takes for processing; it acknowledges without
    tracking the messages it skips, while the flow is held for a rebalance or when they
    were fetched for an earlier generation of the group. Those were not processed. (A
    message that could not be decoded is acknowledged untracked too, in normal flow: it
    still counts, as faust intends.)"""
    if tracked:
        return True
    return flow_active and (generation is None or generation == current_generation)


def first_unacknowledged(
    committed: int | None, lowest_acked: int, gaps: Iterable[tuple[int, int]] = ()
) -> int | None:
    """The first offset from ``committed`` up to ``lowest_acked`` that was neither
    acknowledged nor is a known hole in the log (``gaps``: ``[begin, end)`` ranges the
    fetcher skipped, e.g. compacted records); None when nothing stands in the way.
    ``committed`` is the next offset to read, as Kafka stores it."""
    if committed is None:
        return None
    offset = committed
    for begin, end in sorted(gaps):
        if begin > offset:
            break
        offset = max(offset, end)
    return offset if offset < lowest_acked else None


class HeadWatch:
    """Partitions whose commits are held back, and since when, per unacknowledged offset;
    what it did, in ``counters`` (the worker's metrics: ``commits_withheld``,
    ``commit_rereads``, ``skipped_acks_left_out``)."""

    def __init__(
        self, reread_after_s: float = REREAD_AFTER_S, counters: dict[str, int] | None = None
    ) -> None:
        self.reread_after_s = reread_after_s
        self.held: dict[Any, tuple[int, float]] = {}  # tp -> (offset, since)
        self.counters = (
            counters
            if counters is not None
            else {"commits_withheld": 0, "commit_rereads": 0, "skipped_acks_left_out": 0}
        )

    def hold(self, tp: Any, offset: int, now: float, *, in_flight: bool) -> bool:
        """Note a commit held back at ``offset``; True when the partition should be read
        again (held long enough, and no message at that offset is being processed)."""
        self.counters["commits_withheld"] += 1
        known = self.held.get(tp)
        if known is None or known[0] != offset:
            self.held[tp] = (offset, now)
            return False
        if in_flight or now - known[1] < self.reread_after_s:
            return False
        self.held[tp] = (offset, now)  # once per wait: the reread takes a moment to arrive
        self.counters["commit_rereads"] += 1
        return True

    def clear(self, tp: Any) -> None:
        self.held.pop(tp, None)


WATCH = HeadWatch(counters=METRICS.counters)


class Admit(Enum):
    """What the guard does with a record about to be handed on after a seek."""

    HAND_ON = "hand_on"  # the record the seek asked for, or no seek waiting: hand it on
    STALE = "stale"  # past the seek's offset, fetched before it: hold back, seek again
    EARLIER = "earlier"  # below the seek's offset, from an old batch: drop it
    HOLE = "hole"  # past the offset of a seek of ours: the log has nothing in between


class SeekGuard:
    """Where each partition was sought to, until its first record arrives
    (``expected``: tp -> (offset, whether the seek was ours, made between fetches)); the
    seeks to make before the next fetch (``pending``), and how many stale records each
    of them follows (``held_back``)."""

    def __init__(self, counters: dict[str, int] | None = None) -> None:
        self.expected: dict[Any, tuple[int, bool]] = {}
        self.pending: dict[Any, int] = {}
        self.held_back: dict[Any, tuple[int, int]] = {}  # tp -> (how many, first offset)
        self.counters = counters if counters is not None else {}
        self.counters.setdefault("stale_records_held_back", 0)

    def sought(self, tp: Any, offset: int, *, between_fetches: bool) -> None:
        self.expected[tp] = (offset, between_fetches)

    def request(self, tp: Any, offset: int) -> None:
        """Seek ``tp`` to ``offset`` before the next fetch."""
        self.pending[tp] = offset

    def take_pending(self, assigned: set[Any]) -> dict[Any, tuple[int, tuple[int, int]]]:
        """The seeks to make now, for partitions still assigned, each with the stale
        records held back before it (how many, the first one's offset); the rest are
        dropped (their next owner reads from the committed offset)."""
        pending = {
            tp: (offset, self.held_back.get(tp, (0, -1)))
            for tp, offset in self.pending.items()
            if tp in assigned
        }
        self.pending = {}
        self.held_back = {}
        return pending

    def superseded(self) -> None:
        """Every partition was just sought to its committed offset (a rebalance): the
        queued seeks are moot."""
        self.pending = {}
        self.held_back = {}

    def admit(self, tp: Any, offset: int) -> tuple[Admit, int]:
        """What to do with a record of ``tp`` at ``offset`` about to be handed on, and
        the offset the partition was sought to (``offset`` when none was)."""
        expected = self.expected.get(tp)
        if expected is None:
            return Admit.HAND_ON, offset
        wanted, ours = expected
        if offset == wanted:
            del self.expected[tp]
            return Admit.HAND_ON, wanted
        if offset < wanted:
            return Admit.EARLIER, wanted
        if ours:
            del self.expected[tp]
            return Admit.HOLE, wanted
        self.counters["stale_records_held_back"] += 1
        self.pending[tp] = wanted
        count, first = self.held_back.get(tp, (0, offset))
        self.held_back[tp] = (count + 1, first)
        return Admit.STALE, wanted


GUARD = SeekGuard(counters=METRICS.counters)


def install(consumer_class: Any) -> None:
    """Check acknowledgements and each partition's head before faust uses them."""
    faust_ack = consumer_class.ack
    faust_new_offset = consumer_class._new_offset  # noqa: SLF001

    def ack(consumer: Any, message: Any) -> bool:
        if not message.tracked:  # the common case, a processed message, checks nothing more
            app = consumer.app
            if not counts_as_processed(
                tracked=False,
                flow_active=app.flow_control.is_active(),
                generation=message.generation_id,
                current_generation=app.consumer_generation_id,
            ):
                WATCH.counters["skipped_acks_left_out"] += 1
                return False
        result: bool = faust_ack(consumer, message)
        return result

    def _new_offset(consumer: Any, tp: Any) -> int | None:
        acked = consumer._acked[tp]  # noqa: SLF001
        if acked:
            gaps = ((gap.begin, gap.end) for gap in consumer._gap[tp])  # noqa: SLF001
            missing = first_unacknowledged(consumer._committed_offset[tp], min(acked), gaps)  # noqa: SLF001
            if missing is not None:
                _hold(consumer, tp, missing, lowest_acked=min(acked))
                return None
        WATCH.clear(tp)
        result: int | None = faust_new_offset(consumer, tp)
        return result

    faust_add_gap = consumer_class._add_gap  # noqa: SLF001

    async def _add_gap(consumer: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        log.warning(
            "commit.gap",
            topic=tp.topic,
            partition=tp.partition,
            offset_from=offset_from,
            offset_to=offset_to,
            committed=consumer._committed_offset[tp],  # noqa: SLF001
        )
        await faust_add_gap(consumer, tp, offset_from, offset_to)

    consumer_class.ack = ack
    consumer_class._new_offset = _new_offset  # noqa: SLF001
    consumer_class._add_gap = _add_gap  # noqa: SLF001
    _install_seek_guard(consumer_class)


def _install_seek_guard(consumer_class: Any) -> None:
    faust_getmany = consumer_class.getmany
    faust_perform_seek = consumer_class.perform_seek

    async def getmany(  # faust calls it with timeout=
        consumer: Any,
        timeout: float,  # noqa: ASYNC109
    ) -> AsyncIterator[tuple[Any, Any]]:
        if GUARD.pending and consumer.flow_active:
            await _seek_between_fetches(consumer)
        async for tp, message in faust_getmany(consumer, timeout):
            if not GUARD.expected:  # the common case: no seek waiting for its record
                yield tp, message
                continue
            verdict, sought = GUARD.admit(tp, message.offset)
            if verdict is Admit.HOLE:
                consumer._gap[tp].addi(sought, message.offset)  # noqa: SLF001
                log.warning(
                    "commit.hole",
                    topic=tp.topic,
                    partition=tp.partition,
                    begin=sought,
                    end=message.offset,
                )
            if verdict is Admit.HAND_ON or verdict is Admit.HOLE:
                yield tp, message

    async def perform_seek(consumer: Any) -> None:
        await faust_perform_seek(consumer)
        GUARD.superseded()
        read_offset = consumer._read_offset  # noqa: SLF001
        acks_enabled_for = consumer.app.topics.acks_enabled_for  # the streams' topics:
        for tp in consumer.assignment():  # table recovery seeks changelogs itself
            offset = read_offset.get(tp)
            if offset is not None and acks_enabled_for(tp.topic):
                GUARD.sought(tp, offset, between_fetches=False)

    consumer_class.getmany = getmany
    consumer_class.perform_seek = perform_seek


async def _seek_between_fetches(consumer: Any) -> None:
    """Make the queued seeks: each partition's read offset set back with it, the gaps
    recorded from there on forgotten (its records come again, and any real hole with
    them), and its first record checked (:meth:`SeekGuard.admit`)."""
    pending = GUARD.take_pending(consumer.assignment())
    if not pending:
        return
    await consumer.seek_wait({tp: offset for tp, (offset, _) in pending.items()})
    for tp, (offset, (held_back, first_held_back)) in pending.items():
        consumer._read_offset[tp] = offset  # noqa: SLF001 - seek_wait leaves 0 unset
        consumer._gap[tp].chop(offset, _END)  # noqa: SLF001
        GUARD.sought(tp, offset, between_fetches=True)
        if held_back:
            log.warning(
                "commit.sought_again",
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                stale_records_held_back=held_back,
                first_held_back=first_held_back,
            )


def _in_flight(consumer: Any, tp: Any, offset: int) -> bool:
    unacked = list(consumer._unacked_messages)  # noqa: SLF001
    return any(m.tp == tp and m.offset == offset for m in unacked)


def _hold(consumer: Any, tp: Any, missing: int, *, lowest_acked: int) -> None:
    if tp not in consumer.assignment():
        # Revoked: faust commits nothing of it, and its next owner reads from the
        # committed offset.
        WATCH.clear(tp)
        return
    in_flight = _in_flight(consumer, tp, missing)
    first = WATCH.held.get(tp, (None, 0.0))[0] != missing
    if WATCH.hold(tp, missing, time.monotonic(), in_flight=in_flight):
        log.warning("commit.reread", topic=tp.topic, partition=tp.partition, offset=missing)
        GUARD.request(tp, missing)
    elif first:
        log.warning(
            "commit.withheld",
            topic=tp.topic,
            partition=tp.partition,
            offset=missing,
            lowest_acked=lowest_acked,
            in_flight=in_flight,
        )
