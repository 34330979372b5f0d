"""Offsets a worker commits: never past a message it has not processed.

faust commits, per partition, the end of the first run of consecutive acknowledged
offsets. Two things let that pass a message nobody processed, and in a rebalance under
load each lost events (tests/faults/test_rebalance.py: two consecutive messages of a
partition, in one run of four):

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

:func:`install` puts both in front of faust's own ``Consumer.ack`` and
``Consumer._new_offset``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import structlog

from streams.metrics import METRICS

log = structlog.get_logger(__name__)

# How long a partition's head may stay unacknowledged, with no message at that offset
# being processed, before the partition is read again from its committed offset. A
# message in flight is acknowledged within its batch (milliseconds to a second or two).
REREAD_AFTER_S = 5.0


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

    consumer_class.ack = ack
    consumer_class._new_offset = _new_offset  # noqa: SLF001


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
        asyncio.get_running_loop().create_task(consumer.seek_wait({tp: missing}))
    elif first:
        log.warning(
            "commit.withheld",
            topic=tp.topic,
            partition=tp.partition,
            offset=missing,
            lowest_acked=lowest_acked,
            in_flight=in_flight,
        )
