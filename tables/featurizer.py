"""Per-partition event-time bookkeeping around the entity states.

The featurizer keeps a watermark per source partition (the highest accepted event time),
rejects events older than the watermark minus the grace as late, folds accepted events
into their entity's state, and deletes entities whose newest event fell out of every
window. States live in a mapping the caller provides: a changelogged Faust table on RocksDB
in the worker, a dict in tests and benchmarks.

Writes are held back until the caller flushes the partition (:meth:`Featurizer.flush`,
once a batch in the worker): an entity seen several times in a batch costs one write, and
the caller decides what reaches the store first. The worker writes the batch's seen ids
before its states, so a state never holds a message whose outcome the deduplicator could
forget in a crash (``streams.pipeline``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, MutableMapping
from typing import NamedTuple

from streams.envelope import Envelope
from tables.entity_state import (
    EntityState,
    FeaturePlan,
    apply_event,
    expire_steps,
    features_of,
    new_state,
)
from tables.feature_spec import FeatureSpec
from tables.rows import FeatureRow


class Featured(NamedTuple):
    """A feature row; ``redelivered`` when the entity's state already holds the message's
    offset (read again after a restart). A redelivered message changes no state; its row is
    computed from the current state and flagged, so consumers key on ``event_id``. A message
    that was late the first time may come back as redelivered once later events of its
    entity were applied."""

    row: FeatureRow
    redelivered: bool


class Late(NamedTuple):
    detail: str


class Unread:
    """The entity's state was not read by the caller."""


UNREAD = Unread()


class Featurizer:
    expire_every = 1_000  # events per partition between sweeps of idle entities

    def __init__(self, spec: FeatureSpec, states: MutableMapping[str, EntityState]) -> None:
        self.spec = spec
        self._plan = FeaturePlan(spec)
        self._states = states
        # entity -> (the partition of its last event, its state not yet written; None: to
        # be deleted), and how many of them each partition holds
        self._unwritten: dict[str, tuple[int, EntityState | None]] = {}
        self._unwritten_in: dict[int, int] = {}
        self._watermarks: dict[int, int] = {}
        self._expiry: dict[int, list[tuple[int, str]]] = {}
        self._since_sweep: dict[int, int] = {}
        self.expired_entities = 0

    def watermark(self, partition: int) -> int | None:
        return self._watermarks.get(partition)

    def late_detail(self, partition: int, event_time: int) -> str | None:
        """Why an event is late, or None when it is within the grace."""
        watermark = self._watermarks.get(partition)
        if watermark is None or event_time >= watermark - self.spec.grace_ms:
            return None
        return (
            f"event_time {event_time} is {watermark - event_time} ms behind the watermark "
            f"{watermark}; grace is {self.spec.grace_ms} ms"
        )

    def state_of(self, entity_id: str) -> EntityState | None:
        """The entity's state, written or not: a caller that needs it before ``process``
        reads it once and passes it in (each read of the store is a RocksDB get and a
        decode in the worker)."""
        unwritten = self._unwritten.get(entity_id)
        if unwritten is not None:
            return unwritten[1]
        return self._states.get(entity_id)

    def unwritten(self, partition: int) -> int:
        """How many entities the partition's events changed since its last flush."""
        return self._unwritten_in.get(partition, 0)

    def _hold(self, entity_id: str, partition: int, state: EntityState | None) -> None:
        before = self._unwritten.get(entity_id)
        self._unwritten[entity_id] = (partition, state)
        if before is None or before[0] != partition:
            self._unwritten_in[partition] = self._unwritten_in.get(partition, 0) + 1
            if before is not None:
                self._unwritten_in[before[0]] -= 1

    def flush(self, partition: int) -> int:
        """Write the states the partition's events changed to the store (and delete the
        expired ones); how many keys were written."""
        if not self._unwritten_in.pop(partition, 0):
            return 0
        held = [(k, state) for k, (p, state) in self._unwritten.items() if p == partition]
        states = self._states
        for entity_id, state in held:
            del self._unwritten[entity_id]
            if state is None:
                states.pop(entity_id, None)
            else:
                states[entity_id] = state
        return len(held)

    def process(
        self,
        envelope: Envelope,
        partition: int,
        offset: int,
        state: EntityState | Unread | None = UNREAD,
    ) -> Featured | Late:
        """Fold the event into its entity's state; ``state`` as read by ``state_of``
        just before, or read here."""
        entity_id, event_id = envelope.entity_id, envelope.event_id
        event_time, payload = envelope.event_time, envelope.payload
        if isinstance(state, Unread):
            state = self.state_of(entity_id)
        if state is not None and state["off"] >= offset:
            previous = (state["pt"], state["pv"])
            values = features_of(state, self._plan, event_time, payload, previous)
            return Featured(self._row(entity_id, event_id, event_time, values), redelivered=True)
        late = self.late_detail(partition, event_time)
        if late is not None:
            return Late(late)
        created = state is None
        if state is None:
            state = new_state(partition)
        previous = (state["pt"], dict(state["pv"]))
        if self.spec.include_current:
            apply_event(state, self._plan, event_time, payload, offset)
            values = features_of(state, self._plan, event_time, payload, previous)
        else:
            values = features_of(state, self._plan, event_time, payload, previous)
            apply_event(state, self._plan, event_time, payload, offset)
        watermark = max(self._watermarks.get(partition, event_time), event_time)
        self._watermarks[partition] = watermark
        expire_steps(state, self._plan, watermark)
        self._hold(entity_id, partition, state)
        if created:
            heapq.heappush(self._expiry.setdefault(partition, []), (state["lt"], entity_id))
        count = self._since_sweep.get(partition, 0) + 1
        self._since_sweep[partition] = count
        if count >= self.expire_every:
            self.sweep(partition)
        return Featured(self._row(entity_id, event_id, event_time, values), redelivered=False)

    def _row(
        self, entity_id: str, event_id: str, event_time: int, values: dict[str, float | None]
    ) -> FeatureRow:
        return FeatureRow(entity_id, event_time, event_id, self.spec.version, values)

    def sweep(self, partition: int) -> list[str]:
        """Delete the partition's entities whose newest event left every window."""
        self._since_sweep[partition] = 0
        watermark = self._watermarks.get(partition)
        heap = self._expiry.get(partition)
        if watermark is None or not heap:
            return []
        cutoff = watermark - self.spec.grace_ms - self.spec.max_window_ms
        expired: list[str] = []
        # One entry per entity, holding the newest event time known when it was pushed:
        # an entity updated since goes back in with its current newest time.
        while heap and heap[0][0] < cutoff:
            _, entity_id = heapq.heappop(heap)
            state = self.state_of(entity_id)
            if state is None or state["p"] != partition:
                continue
            if state["lt"] < cutoff:
                self._hold(entity_id, partition, None)
                expired.append(entity_id)
            else:
                heapq.heappush(heap, (state["lt"], entity_id))
        self.expired_entities += len(expired)
        return expired

    def rebuild(self, states: Iterable[tuple[str, EntityState]]) -> None:
        """Re-index watermarks and expiry from stored states, e.g. after recovery; what
        was not written is dropped."""
        self._unwritten.clear()
        self._unwritten_in.clear()
        self._watermarks.clear()
        self._expiry.clear()
        for entity_id, state in states:
            partition, newest = state["p"], state["lt"]
            if newest is None:
                continue
            self._expiry.setdefault(partition, []).append((newest, entity_id))
            self._watermarks[partition] = max(self._watermarks.get(partition, newest), newest)
        for heap in self._expiry.values():
            heapq.heapify(heap)
