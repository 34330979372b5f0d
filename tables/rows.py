"""The feature row: what the online store serves and the offline store keeps.

One row per valid event: the entity, the event's time and id, the version of the feature
definitions that produced it (a hash of the spec's feature section), and the feature
values in the order the spec declares them. A value is None where a window holds nothing
to compute it from (the mean of no events, the time since a first event).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson


class FeatureRow(NamedTuple):
    entity_id: str
    event_time: int  # epoch milliseconds of the event that produced the row
    event_id: str
    feature_version: str
    values: Mapping[str, float | None]  # insertion-ordered as the spec declares

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity_id": self.entity_id,
            "event_time": self.event_time,
            "event_id": self.event_id,
            "feature_version": self.feature_version,
            "values": dict(self.values),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> FeatureRow:
        return cls(
            entity_id=str(record["entity_id"]),
            event_time=int(record["event_time"]),
            event_id=str(record["event_id"]),
            feature_version=str(record["feature_version"]),
            values=dict(record["values"]),
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> FeatureRow:
        return cls.from_dict(orjson.loads(data))
