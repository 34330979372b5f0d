"""The validation pipeline: stateless checks, then deduplication, then outlier screening.

It holds the per-partition state the validation agent needs and nothing of Kafka: the
agent passes the raw bytes and the partition they came from.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field

from streams.dedup import Deduplicator
from streams.envelope import Accepted, Reason, Rejected
from streams.outliers import OutlierScreen
from streams.spec import DomainSpec
from streams.validation import EventValidator


@dataclass
class PipelineCounters:
    accepted: int = 0
    upcast: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class ValidationPipeline:
    def __init__(self, spec: DomainSpec, seen_ids: MutableMapping[str, int]) -> None:
        self.spec = spec
        self.validator = EventValidator(spec)
        self.dedup = Deduplicator(spec.dedup_horizon_ms, seen_ids)
        self._screens: dict[tuple[int, str], OutlierScreen] = {}
        self.counters = PipelineCounters()

    def screen_for(self, partition: int, schema: str) -> OutlierScreen:
        key = (partition, schema)
        screen = self._screens.get(key)
        if screen is None:
            screen = self._screens[key] = OutlierScreen.for_schema(self.spec, schema)
        return screen

    def process(self, raw: bytes, partition: int) -> Accepted | Rejected:
        outcome = self._process(raw, partition)
        if isinstance(outcome, Accepted):
            self.counters.accepted += 1
            if outcome.original_version != outcome.envelope.schema_version:
                self.counters.upcast += 1
        else:
            rejected = self.counters.rejected
            rejected[outcome.reason] = rejected.get(outcome.reason, 0) + 1
        return outcome

    def _process(self, raw: bytes, partition: int) -> Accepted | Rejected:
        outcome = self.validator.check(raw)
        if isinstance(outcome, Rejected):
            return outcome
        envelope = outcome.envelope
        if self.dedup.is_duplicate(envelope.event_id):
            return Rejected(
                Reason.DUPLICATE,
                f"event_id seen within the last {self.spec.dedup_horizon_ms} ms",
                envelope.event_id,
                envelope.entity_id,
            )
        screen = self.screen_for(partition, envelope.schema)
        verdict = screen.screen(envelope.payload)
        if verdict is not None:
            return Rejected(
                Reason.OUTLIER,
                f"field {verdict.field!r} = {verdict.value} has robust z {verdict.zscore:.1f} "
                f"> {screen.threshold}",
                envelope.event_id,
                envelope.entity_id,
            )
        screen.learn(envelope.payload)
        self.dedup.remember(envelope.event_id, envelope.event_time)
        return outcome

    def partition_states(self) -> dict[str, bytes]:
        """Outlier statistics per (partition, schema), for checkpointing in a table."""
        return {
            f"{partition}:{schema}": screen.to_state()
            for (partition, schema), screen in self._screens.items()
        }

    def restore_partition_state(self, key: str, state: bytes) -> None:
        partition, schema = key.split(":", 1)
        if schema in self.spec.schemas:
            self.screen_for(int(partition), schema).restore(state)
