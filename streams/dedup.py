"""Deduplication by event id within an event-time horizon.

The ids within the horizon are remembered in memory, with an in-memory heap ordering them
by event time so that expiry is explicit and cheap. What makes them survive a restart is
a mapping the caller provides, under an optional key prefix (a changelogged Faust table in
the worker, a dict in tests): :meth:`Deduplicator.flush` writes the ids remembered since
the last flush as one *block*, one key, so a batch of events costs the store one write
instead of one per event (and one changelog record instead of one per event and one
tombstone per expired id). A block is deleted once every id in it has expired or been
remembered again in a later block. After a restart the memory is rebuilt from the blocks
with :meth:`Deduplicator.rebuild`; the caller flushes before the offsets of what it
remembered are committed, so nothing committed is forgotten.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, MutableMapping
from typing import Any

# What was decided for a remembered message. Rejections that depend on state (late,
# outlier) are remembered too, so the same message read again after a restart gets the
# same answer whatever the state has become since.
ACCEPTED = 0
REJECTED_LATE = 1
REJECTED_OUTLIER = 2
# Not stored: what ``recall`` says of an id accepted before from another message.
DUPLICATE = -1


# A block: the entries remembered between two flushes, in order. An entry is
# ``[event_id, event_time, offset]`` for an accepted event, with the rejection code
# appended for a rejected one.
Block = list[list[Any]]


class Deduplicator:
    """Expiry runs every ``expire_every`` remembered ids: ids may outlive the horizon by
    that many events, never the other way round. A block is flushed by the caller (the
    worker: once per partition per batch) or, at ``block_max`` entries, by ``remember``."""

    expire_every = 64
    block_max = 1_000  # entries; more are flushed at once (a caller that never flushes)

    def __init__(
        self,
        horizon_ms: int,
        store: MutableMapping[str, Block],
        key_prefix: str = "",
    ) -> None:
        if horizon_ms <= 0:
            raise ValueError("horizon_ms must be positive")
        self.horizon_ms = horizon_ms
        self._store = store
        self._prefix = key_prefix
        # event id -> ([event_time, offset(, outcome)], the block holding it; None: unflushed)
        self._memory: dict[str, tuple[list[int], str | None]] = {}
        self._pending: Block = []
        self._live: dict[str, int] = {}  # block -> entries in it still remembered
        self._expiry: list[tuple[int, str]] = []
        self._watermark: int | None = None
        self._since_expiry = 0
        self._flushes = 0  # names blocks of entries without an offset
        self._superseded: list[str] = []

    @property
    def watermark(self) -> int | None:
        """The highest event time remembered so far."""
        return self._watermark

    def __len__(self) -> int:
        return len(self._memory)

    def knows(self, event_id: str) -> bool:
        """Whether the id is remembered, whatever its outcome."""
        return event_id in self._memory

    def entries(self) -> dict[str, list[int]]:
        """Every remembered id with ``[event_time, offset(, outcome)]``, flushed or not."""
        return {event_id: list(stored) for event_id, (stored, _) in self._memory.items()}

    def recall(self, event_id: str, offset: int | None = None) -> int | None:
        """What was decided before for this id, in one lookup: ``DUPLICATE`` when it was
        accepted from another message; the rejection code when this very message (same
        ``offset``) was rejected before a restart; None for a new id or a redelivery of an
        accepted message (at-least-once after a restart: downstream state decides whether
        it was already counted)."""
        remembered = self._memory.get(event_id)
        if remembered is None:
            return None
        stored = remembered[0]
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
        """Record an event's outcome (written to the store at the next :meth:`flush`);
        return the ids that fell out of the horizon. State-dependent rejections are
        remembered too, with their code."""
        stored = [event_time, offset] if outcome == ACCEPTED else [event_time, offset, outcome]
        self._forget_block_entry(event_id)
        self._memory[event_id] = (stored, None)
        self._pending.append([event_id, *stored])
        heapq.heappush(self._expiry, (event_time, event_id))
        if self._watermark is None or event_time > self._watermark:
            self._watermark = event_time
        if len(self._pending) >= self.block_max:
            self.flush()
        self._since_expiry += 1
        if self._since_expiry < self.expire_every:
            return []
        return self.expire()

    def flush(self) -> str | None:
        """Write the ids remembered since the last flush to the store as one block; its
        key, or None when there was nothing to write."""
        for name in self._superseded:
            self._store.pop(self._prefix + name, None)
        self._superseded = []
        pending = self._pending
        if not pending:
            return None
        self._pending = []
        first_offset = pending[0][2]
        name = str(first_offset) if first_offset >= 0 else f"@{self._flushes}"
        if name in self._live:  # from the same offset again, after a restart: keep both
            name = f"{name}.{self._flushes}"
        self._flushes += 1
        block: Block = []
        for entry in pending:  # less the entries expired or superseded since
            event_id = entry[0]
            remembered = self._memory.get(event_id)
            if remembered is not None and remembered[1] is None and remembered[0] == entry[1:]:
                self._memory[event_id] = (remembered[0], name)
                block.append(entry)
        if not block:
            return None
        self._live[name] = self._live.get(name, 0) + len(block)
        self._store[self._prefix + name] = block
        return name

    def expire(self) -> list[str]:
        """Forget the ids older than the watermark minus the horizon; return them."""
        self._since_expiry = 0
        if self._watermark is None:
            return []
        cutoff = self._watermark - self.horizon_ms
        expired: list[str] = []
        while self._expiry and self._expiry[0][0] < cutoff:
            event_time, event_id = heapq.heappop(self._expiry)
            remembered = self._memory.get(event_id)
            if remembered is not None and remembered[0][0] == event_time:
                self._forget_block_entry(event_id)
                del self._memory[event_id]
                expired.append(event_id)
        return expired

    def _forget_block_entry(self, event_id: str) -> None:
        """The id's entry in its block no longer counts; a block with none left goes."""
        remembered = self._memory.get(event_id)
        if remembered is None or remembered[1] is None:
            return
        name = remembered[1]
        left = self._live[name] - 1
        if left:
            self._live[name] = left
        else:
            del self._live[name]
            del self._store[self._prefix + name]

    def rebuild(self, blocks: Iterable[tuple[str, Block]]) -> None:
        """Re-index remembered ids from the blocks of the store, e.g. a table recovered
        after a restart; a later block's entry for an id wins."""
        self._memory.clear()
        self._pending = []
        self._live.clear()
        named = sorted(blocks, key=lambda item: _block_order(item[0]))
        for name, block in named:
            for entry in block:
                self._memory[str(entry[0])] = ([int(v) for v in entry[1:]], name)
        for _stored, holder in self._memory.values():
            if holder is not None:
                self._live[holder] = self._live.get(holder, 0) + 1
        # Blocks whose every entry a later one superseded go at the next flush (a restart
        # rebuilds outside any event, where a changelogged table cannot be written).
        self._superseded = [name for name, _ in named if name not in self._live]
        self._expiry = [(stored[0], event_id) for event_id, (stored, _) in self._memory.items()]
        heapq.heapify(self._expiry)
        self._watermark = max((t for t, _ in self._expiry), default=self._watermark)
        self._flushes = max((_block_order(name)[2] for name, _ in named), default=-1) + 1


def _block_order(name: str) -> tuple[int, int, int]:
    """Blocks in the order they were written: by first offset, then by flush count (a
    block written again from the same offset, ``"<offset>.<count>"``, comes after the
    first); blocks without offsets (``"@<count>"``) after those with."""
    base, _, again = name.partition(".")
    if base.startswith("@"):
        return (1, 0, int(base[1:]))
    return (0, int(base), int(again) if again else -1)


def partition_key_prefix(partition: int) -> str:
    """Blocks are stored as ``"<partition>:<block>"``: a partition's memory can be found
    again after a restart or a rebalance, and expiry deletes only its own blocks."""
    return f"{partition}:"


def split_partition_key(key: str) -> tuple[int, str]:
    partition, _, block = key.partition(":")
    return int(partition), block
