"""The ingest pipeline: validation, deduplication, lateness, outlier screening, features.

It holds the per-partition state the ingest agent needs and nothing of Kafka: the agent
passes the raw bytes with the partition and offset they came from. In order:

1. stateless checks and upcasting (``EventValidator``);
2. duplicate ``event_id`` within the horizon (the same message read again after a restart
   is a redelivery, not a duplicate);
3. late: older than the partition's watermark minus the grace (with a featurizer);
4. outliers, which learn only from accepted values;
5. the event is remembered and folded into its entity's windows (``Featurizer``).

Nothing reaches the stores until :meth:`ValidationPipeline.flush` (the worker: once per
partition per batch, before the batch's offsets are committed), and then in an order that
survives a crash between any two writes: first the seen ids with each message's outcome,
then the entity states. A restarted worker that finds a message in an entity's state
therefore also finds its outcome; one whose outcome was kept but whose state was not
simply applies it again.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field

from streams.dedup import (
    DUPLICATE,
    REJECTED_LATE,
    REJECTED_OUTLIER,
    Block,
    Deduplicator,
    partition_key_prefix,
    split_partition_key,
)
from streams.envelope import Accepted, Reason, Rejected
from streams.outliers import OutlierScreen
from streams.spec import DomainSpec
from streams.validation import EventValidator
from tables.entity_state import EntityState
from tables.featurizer import Featurizer


@dataclass
class PipelineCounters:
    accepted: int = 0
    upcast: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class ValidationPipeline:
    # Changed entity states per partition held back before they are flushed anyway (a
    # caller that never flushes; the worker flushes every batch, a few hundred events).
    flush_max = 1_000

    def __init__(
        self,
        spec: DomainSpec,
        seen_ids: MutableMapping[str, Block],
        entity_states: MutableMapping[str, EntityState] | None = None,
    ) -> None:
        self.spec = spec
        self.validator = EventValidator(spec)
        self.featurizer = (
            Featurizer(spec.features, entity_states)
            if spec.features is not None and entity_states is not None
            else None
        )
        self._seen_ids = seen_ids
        self._dedups: dict[int, Deduplicator] = {}
        self._screens: dict[tuple[int, str], OutlierScreen] = {}
        self.counters = PipelineCounters()

    def dedup_for(self, partition: int) -> Deduplicator:
        dedup = self._dedups.get(partition)
        if dedup is None:
            dedup = self._dedups[partition] = Deduplicator(
                self.spec.dedup_horizon_ms,
                self._seen_ids,
                partition_key_prefix(partition),
            )
        return dedup

    def rebuild(
        self,
        seen_ids: Iterable[tuple[str, Block]],
        screen_states: Iterable[tuple[str, bytes]],
        entity_states: Iterable[tuple[str, EntityState]] = (),
    ) -> None:
        """Reload per-partition state from the stores, e.g. after recovery or a rebalance."""
        self._dedups.clear()
        self._screens.clear()
        by_partition: dict[int, list[tuple[str, Block]]] = {}
        for key, block in seen_ids:
            partition, name = split_partition_key(key)
            by_partition.setdefault(partition, []).append((name, block))
        for partition, items in by_partition.items():
            self.dedup_for(partition).rebuild(items)
        for key, state in screen_states:
            self.restore_partition_state(key, state)
        if self.featurizer is not None:
            self.featurizer.rebuild(entity_states)

    def flush(self, partition: int) -> None:
        """Write what the partition's messages changed since its last flush: first the
        ids remembered (one block), then the entity states. Due before the offsets of the
        messages are committed."""
        dedup = self._dedups.get(partition)
        if dedup is not None:
            dedup.flush()
        if self.featurizer is not None:
            self.featurizer.flush(partition)

    def screen_for(self, partition: int, schema: str) -> OutlierScreen:
        key = (partition, schema)
        screen = self._screens.get(key)
        if screen is None:
            screen = self._screens[key] = OutlierScreen.for_schema(self.spec, schema)
        return screen

    def process(self, raw: bytes, partition: int, offset: int = -1) -> Accepted | Rejected:
        outcome = self.validator.check(raw)
        if isinstance(outcome, Accepted):
            outcome = self._screen(outcome, partition, offset)
        counters = self.counters
        if isinstance(outcome, Accepted):
            counters.accepted += 1
            if outcome.original_version != outcome.envelope.schema_version:
                counters.upcast += 1
        else:
            reason = outcome.reason
            counters.rejected[reason] = counters.rejected.get(reason, 0) + 1
        return outcome

    def _screen(
        self,
        outcome: Accepted,
        partition: int,
        offset: int,
    ) -> Accepted | Rejected:
        """The stateful checks in order; state learns only from accepted events."""
        envelope = outcome.envelope
        dedup = self._dedups.get(partition)
        if dedup is None:
            dedup = self.dedup_for(partition)
        recalled = dedup.recall(envelope.event_id, offset if offset >= 0 else None)
        if recalled is not None:
            return self._rejected_again(outcome, recalled)
        featurizer = self.featurizer
        state = featurizer.state_of(envelope.entity_id) if featurizer is not None else None
        if featurizer is not None and state is not None and state["off"] >= offset:
            return self._redelivered(
                outcome,
                dedup,
                featurizer=featurizer,
                partition=partition,
                offset=offset,
                state=state,
            )
        if featurizer is not None:
            late = featurizer.late_detail(partition, envelope.event_time)
            if late is not None:
                dedup.remember(envelope.event_id, envelope.event_time, offset, REJECTED_LATE)
                return Rejected(Reason.LATE, late, envelope.event_id, envelope.entity_id)
        screen = self._screens.get((partition, envelope.schema))
        if screen is None:
            screen = self.screen_for(partition, envelope.schema)
        verdict = screen.screen_and_learn(envelope.payload)
        if verdict is not None:
            dedup.remember(envelope.event_id, envelope.event_time, offset, REJECTED_OUTLIER)
            return Rejected(
                Reason.OUTLIER,
                f"field {verdict.field!r} = {verdict.value} has robust z {verdict.zscore:.1f} "
                f"> {screen.threshold}",
                envelope.event_id,
                envelope.entity_id,
            )
        dedup.remember(envelope.event_id, envelope.event_time, offset)
        if featurizer is None:
            return outcome
        featured = featurizer.process(envelope, partition, offset, state)
        if featurizer.unwritten(partition) >= self.flush_max:
            self.flush(partition)
        return outcome._replace(features=featured)

    def _rejected_again(self, outcome: Accepted, recalled: int) -> Rejected:
        """A copy of an accepted event, or a message rejected before a restart."""
        envelope = outcome.envelope
        if recalled == DUPLICATE:
            return Rejected(
                Reason.DUPLICATE,
                f"event_id seen within the last {self.spec.dedup_horizon_ms} ms",
                envelope.event_id,
                envelope.entity_id,
            )
        reason = Reason.LATE if recalled == REJECTED_LATE else Reason.OUTLIER
        return Rejected(
            reason, f"rejected as {reason} before a restart", envelope.event_id, envelope.entity_id
        )

    @staticmethod
    def _redelivered(  # noqa: PLR0913 - what _screen has in hand
        outcome: Accepted,
        dedup: Deduplicator,
        *,
        featurizer: Featurizer,
        partition: int,
        offset: int,
        state: EntityState,
    ) -> Accepted:
        """A message its entity's state already holds: featured again, changing nothing."""
        envelope = outcome.envelope
        if not dedup.knows(envelope.event_id):
            # The state was stored without the outcome (stores that lost the order of the
            # writes): remember it now, so that a copy of it is still a duplicate.
            dedup.remember(envelope.event_id, envelope.event_time, offset)
        featured = featurizer.process(envelope, partition, offset, state)
        return outcome._replace(features=featured, redelivered=True)

    def partition_states(self, partition: int) -> dict[str, bytes]:
        """One partition's outlier statistics per schema, for checkpointing in a table."""
        return {
            f"{screen_partition}:{schema}": screen.to_state()
            for (screen_partition, schema), screen in self._screens.items()
            if screen_partition == partition
        }

    def restore_partition_state(self, key: str, state: bytes) -> None:
        partition, schema = key.split(":", 1)
        if schema in self.spec.schemas:
            self.screen_for(int(partition), schema).restore(state)
