"""Codecs at the edge: bytes on Kafka to and from the core's dataclasses (orjson)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

import orjson

from streams.envelope import Accepted, Envelope, Rejected, SourcePosition
from tables.rows import FeatureRow


class NonFiniteNumberError(ValueError):
    """The JSON text holds NaN, Infinity or a number too large for a double."""


def _reject_constant(name: str) -> Any:
    raise NonFiniteNumberError(name)


def _checked_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumberError(text)
    return value


def loads(data: bytes) -> Any:
    """Parse JSON; raise NonFiniteNumberError for NaN/inf, ValueError for anything else.

    orjson refuses NaN and Infinity as it should, but then says only "invalid JSON"; the
    standard library is asked a second time, on that rare path, to tell the two apart.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8: {error.reason}") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_checked_float)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error.msg} at {error.pos}") from None
    except RecursionError:
        raise ValueError("not JSON: nested too deeply") from None
    _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(value: Any) -> None:
    """The standard library decodes an escaped lone surrogate (``"\\ud800"``), which orjson
    refuses; such a string cannot be encoded again, so the message is not usable JSON."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: Any = (item,)
        elif isinstance(item, dict):
            strings = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("not JSON: a string holds a lone surrogate") from None


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def encode_valid(outcome: Accepted) -> bytes:
    record = outcome.envelope.to_dict()
    if outcome.original_version != outcome.envelope.schema_version:
        record["upcast_from"] = outcome.original_version
    return orjson.dumps(record)


def decode_envelope(data: bytes) -> Envelope:
    """Decode a record written by :func:`encode_valid` (trusted: it passed validation)."""
    record = orjson.loads(data)
    return Envelope(
        event_id=record["event_id"],
        schema=record["schema"],
        schema_version=record["schema_version"],
        entity_id=record["entity_id"],
        event_time=record["event_time"],
        payload=record["payload"],
    )


# A dead letter keeps at most this much of the original message: base64 makes it a third
# larger, and a letter over the producer's request limit (1 MB by default) could not be sent
# at all. A longer original is cut, and the letter says so with its size and SHA-256; the
# whole message stays on the source topic at the offset the letter names.
DEAD_LETTER_ORIGINAL_MAX = 64 * 1024


def encode_rejection(
    outcome: Rejected,
    original: bytes,
    source: SourcePosition,
    rejected_at_ms: int,
) -> bytes:
    kept = original[:DEAD_LETTER_ORIGINAL_MAX]
    record: dict[str, Any] = {
        "reason": outcome.reason.value,
        "detail": outcome.detail,
        "event_id": outcome.event_id,
        "entity_id": outcome.entity_id,
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
        },
        "rejected_at": rejected_at_ms,
        "original_b64": base64.b64encode(kept).decode("ascii"),
    }
    if len(kept) < len(original):
        record["original_truncated"] = True
        record["original_size"] = len(original)
        record["original_sha256"] = hashlib.sha256(original).hexdigest()
    return orjson.dumps(record)


def decode_rejection(data: bytes) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(data)
    record["original"] = base64.b64decode(record.pop("original_b64"))
    return record


def encode_features(outcome: Accepted, source: SourcePosition) -> bytes:
    """The ``features`` record (:func:`features_record`) as JSON bytes."""
    return orjson.dumps(features_record(outcome, source))


def features_record(outcome: Accepted, source: SourcePosition) -> dict[str, Any]:
    """The ``features`` record: the event as validated plus its feature vector.

    This topic is the replayable record of what a model saw: the envelope (upcast), the
    feature values in spec order, the feature-definition version, and where the event was
    read. ``redelivered`` marks a message read again after a restart (its state was
    already counted; consumers key on ``event_id``).
    """
    envelope = outcome.envelope
    featured = outcome.features
    record: dict[str, Any] = {
        "event_id": envelope.event_id,
        "entity_id": envelope.entity_id,
        "event_time": envelope.event_time,
        "schema": envelope.schema,
        "schema_version": envelope.schema_version,
        "payload": dict(envelope.payload),
        "feature_version": featured.row.feature_version,
        "features": featured.row.values,
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
        "redelivered": featured.redelivered,
    }
    if source.timestamp_ms is not None:  # the raw event's arrival, for end-to-end latency
        record["source"]["timestamp_ms"] = source.timestamp_ms
    if outcome.original_version != envelope.schema_version:
        record["upcast_from"] = outcome.original_version
    return record


def decode_features(data: bytes) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(data)
    return record


def feature_row_of(record: dict[str, Any]) -> FeatureRow:
    return FeatureRow(
        entity_id=record["entity_id"],
        event_time=record["event_time"],
        event_id=record["event_id"],
        feature_version=record["feature_version"],
        values=record["features"],
    )


def store_rows(values: list[bytes]) -> list[FeatureRow]:
    """The feature rows the stores keep from ``features`` records: a redelivered record is
    left out, since its original is already written and must not overwrite a newer one."""
    rows = []
    for value in values:
        record = decode_features(value)
        if not record.get("redelivered"):
            rows.append(feature_row_of(record))
    return rows
