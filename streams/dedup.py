"""Deduplication by event id within an event-time horizon.

The remembered ids live in a mapping the caller provides, under an optional key prefix: a
changelogged Faust table in the worker (so the memory survives a restart), a dict in tests.
An in-memory heap orders the ids by event time so that expiry is explicit and cheap; after
a restart it is rebuilt from the mapping with :meth:`Deduplicator.rebuild`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, MutableMapping

# What was decided for a remembered message. Rejections that depend on state (late,
# outlier) are remembered too, so the same message read again after a restart gets the
# same answer whatever the state has become since.
ACCEPTED = 0
REJECTED_LATE = 1
REJECTED_OUTLIER = 2
# Not stored: what ``recall`` says of an id accepted before from another message.
DUPLICATE = -1


class Deduplicator:
    """Expiry runs every ``expire_every`` remembered ids: ids may outlive the horizon by
    that many events, never the other way round."""

    expire_every = 64

    def __init__(
        self,
        horizon_ms: int,
        store: MutableMapping[str, list[int]],
        key_prefix: str = "",
    ) -> None:
        if horizon_ms <= 0:
            raise ValueError("horizon_ms must be positive")
        self.horizon_ms = horizon_ms
        self._store = store
        self._prefix = key_prefix
        self._expiry: list[tuple[int, str]] = []
        self._watermark: int | None = None
        self._since_expiry = 0

    @property
    def watermark(self) -> int | None:
        """The highest event time remembered so far."""
        return self._watermark

    def __len__(self) -> int:
        return len(self._expiry)

    def recall(self, event_id: str, offset: int | None = None) -> int | None:
        """What was decided before for this id, in one lookup: ``DUPLICATE`` when it was
        accepted from another message; the rejection code when this very message (same
        ``offset``) was rejected before a restart; None for a new id or a redelivery of an
        accepted message (at-least-once after a restart: downstream state decides whether
        it was already counted)."""
        stored = self._store.get(self._prefix + event_id)
        if stored is None:
            return None
        if len(stored) == 2:  # [event_time, offset]: accepted
            return DUPLICATE if offset is None or stored[1] != offset else None
        return stored[2] if offset is not None and stored[1] == offset else None

    def is_duplicate(self, event_id: str, offset: int | None = None) -> bool:
        """Whether the id was accepted before from another message."""
        return self.recall(event_id, offset) == DUPLICATE

    def rejected_before(self, event_id: str, offset: int) -> int | None:
        """The rejection code of this very message before a restart, if it was rejected."""
        code = self.recall(event_id, offset)
        return None if code == DUPLICATE else code

    def remember(
        self,
        event_id: str,
        event_time: int,
        offset: int = -1,
        outcome: int = ACCEPTED,
    ) -> list[str]:
        """Record an event's outcome; return the ids that fell out of the horizon.

        State-dependent rejections are remembered too, with their code.
        """
        self._store[self._prefix + event_id] = (
            [event_time, offset] if outcome == ACCEPTED else [event_time, offset, outcome]
        )
        heapq.heappush(self._expiry, (event_time, event_id))
        if self._watermark is None or event_time > self._watermark:
            self._watermark = event_time
        self._since_expiry += 1
        if self._since_expiry < self.expire_every:
            return []
        return self.expire()

    def expire(self) -> list[str]:
        """Forget the ids older than the watermark minus the horizon; return them."""
        self._since_expiry = 0
        if self._watermark is None:
            return []
        cutoff = self._watermark - self.horizon_ms
        expired: list[str] = []
        while self._expiry and self._expiry[0][0] < cutoff:
            event_time, event_id = heapq.heappop(self._expiry)
            key = self._prefix + event_id
            stored = self._store.get(key)
            if stored is not None and stored[0] == event_time:
                del self._store[key]
                expired.append(event_id)
        return expired

    def rebuild(self, items: Iterable[tuple[str, list[int]]]) -> None:
        """Re-index remembered ids, e.g. from a table recovered after a restart."""
        self._expiry = [(stored[0], event_id) for event_id, stored in items]
        heapq.heapify(self._expiry)
        self._watermark = max((t for t, _ in self._expiry), default=self._watermark)


def partition_key_prefix(partition: int) -> str:
    """Keys are stored as ``"<partition>:<event_id>"``: a partition's memory can be found
    again after a restart or a rebalance, and expiry deletes only its own keys."""
    return f"{partition}:"


def split_partition_key(key: str) -> tuple[int, str]:
    partition, _, event_id = key.partition(":")
    return int(partition), event_id
