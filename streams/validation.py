"""Stateless validation: bytes in, an Accepted (upcast) or a Rejected with a reason out.

The checks of each schema version are compiled once into flat tuples, so the hot loop is
a handful of type and range comparisons per field. Nothing here raises on bad input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from streams.codecs import NonFiniteNumberError, loads
from streams.envelope import Accepted, Envelope, Reason, Rejected
from streams.spec import DomainSpec, FieldSpec, FieldType, Schema
from streams.upcast import UpcastStep, apply_steps

ENVELOPE_KEYS = frozenset(
    {"event_id", "schema", "schema_version", "entity_id", "event_time", "payload"},
)
MAX_ID_LENGTH = 256
MAX_EVENT_TIME_MS = 4_102_444_800_000  # 2100-01-01
_MISSING = object()
_FLOAT, _INT, _STR = FieldType.FLOAT, FieldType.INT, FieldType.STR


# One field's checks as a flat tuple: unpacking it is cheaper than attribute access.
_FieldCheck = tuple[
    str,  # name
    FieldType,
    bool,  # required
    float | None,  # minimum
    float | None,  # maximum
    frozenset[Any] | None,  # allowed
    int | None,  # min_length
    int | None,  # max_length
]


def _compile_field(spec: FieldSpec) -> _FieldCheck:
    return (
        spec.name,
        spec.type,
        spec.required,
        spec.minimum,
        spec.maximum,
        spec.allowed,
        spec.min_length,
        spec.max_length,
    )


@dataclass(frozen=True, slots=True)
class _CompiledVersion:
    fields: tuple[_FieldCheck, ...]
    names: frozenset[str]
    chain: tuple[tuple[UpcastStep, ...], ...]
    current_version: int


class EventValidator:
    """Checks one raw message against a domain spec. Pure: no state between calls."""

    def __init__(self, spec: DomainSpec) -> None:
        self._max_bytes = spec.max_message_bytes
        self._versions: dict[tuple[str, int], _CompiledVersion] = {}
        for schema in spec.schemas.values():
            self._compile(schema)

    def _compile(self, schema: Schema) -> None:
        for version, declared in schema.versions.items():
            self._versions[schema.name, version] = _CompiledVersion(
                fields=tuple(_compile_field(f) for f in declared.fields),
                names=frozenset(f.name for f in declared.fields),
                chain=schema.upcast_chain(version),
                current_version=schema.current_version,
            )

    def check(self, raw: bytes) -> Accepted | Rejected:
        if len(raw) > self._max_bytes:
            return Rejected(
                Reason.OVERSIZED,
                f"{len(raw)} bytes, limit {self._max_bytes}",
            )
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._check_slow_path(raw)
        return self._check_document(doc)

    def _check_slow_path(self, raw: bytes) -> Accepted | Rejected:
        """The strict parser refused the bytes: say why, or accept what it was too strict on."""
        try:
            doc = loads(raw)
        except NonFiniteNumberError as error:
            event_id, entity_id = _ids_of_lenient(raw)
            return Rejected(
                Reason.NON_FINITE,
                f"non-finite number {error}",
                event_id,
                entity_id,
            )
        except ValueError as error:
            return Rejected(Reason.NOT_JSON, str(error))
        return self._check_document(doc)

    def _check_document(self, doc: Any) -> Accepted | Rejected:
        if type(doc) is not dict:
            return Rejected(Reason.BAD_ENVELOPE, f"top level is {type(doc).__name__}, not object")
        envelope_or_rejection = _envelope(doc)
        if isinstance(envelope_or_rejection, Rejected):
            return envelope_or_rejection
        envelope = envelope_or_rejection
        compiled = self._versions.get((envelope.schema, envelope.schema_version))
        if compiled is None:
            return Rejected(
                Reason.UNKNOWN_SCHEMA,
                f"schema {envelope.schema!r} version {envelope.schema_version} is not declared",
                envelope.event_id,
                envelope.entity_id,
            )
        problem = _check_fields(envelope.payload, compiled)
        if problem is not None:
            reason, detail = problem
            return Rejected(reason, detail, envelope.event_id, envelope.entity_id)
        if not compiled.chain:
            return Accepted(envelope, envelope.schema_version)
        upcast = Envelope(
            event_id=envelope.event_id,
            schema=envelope.schema,
            schema_version=compiled.current_version,
            entity_id=envelope.entity_id,
            event_time=envelope.event_time,
            payload=apply_steps(envelope.payload, compiled.chain),
        )
        return Accepted(upcast, envelope.schema_version)


def _envelope(doc: dict[str, Any]) -> Envelope | Rejected:
    """The envelope of a well-formed event in one pass; a diagnosis for anything else."""
    get = doc.get
    event_id, entity_id, event_time = get("event_id"), get("entity_id"), get("event_time")
    schema, version, payload = get("schema"), get("schema_version"), get("payload")
    if (
        type(event_id) is str
        and type(entity_id) is str
        and type(schema) is str
        and type(version) is int
        and type(event_time) is int
        and type(payload) is dict
        and 0 < len(event_id) <= MAX_ID_LENGTH
        and 0 < len(entity_id) <= MAX_ID_LENGTH
        and 0 <= event_time <= MAX_EVENT_TIME_MS
        and doc.keys() <= ENVELOPE_KEYS
    ):
        return Envelope(event_id, schema, version, entity_id, event_time, payload)
    return _diagnose_envelope(doc)


def _diagnose_envelope(doc: dict[str, Any]) -> Envelope | Rejected:  # noqa: PLR0911 - a check each
    event_id = doc.get("event_id")
    entity_id = doc.get("entity_id")
    ids = (
        event_id if isinstance(event_id, str) else None,
        entity_id if isinstance(entity_id, str) else None,
    )
    if not doc.keys() <= ENVELOPE_KEYS:
        extra = sorted(doc.keys() - ENVELOPE_KEYS)
        return Rejected(Reason.BAD_ENVELOPE, f"unexpected envelope keys {extra}", *ids)
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_LENGTH:
        return Rejected(Reason.BAD_ENVELOPE, "event_id must be a non-empty string", *ids)
    if type(entity_id) is not str or not 0 < len(entity_id) <= MAX_ID_LENGTH:
        return Rejected(Reason.BAD_ENVELOPE, "entity_id must be a non-empty string", *ids)
    schema = doc.get("schema")
    if type(schema) is not str:
        return Rejected(Reason.BAD_ENVELOPE, "schema must be a string", *ids)
    version = doc.get("schema_version")
    if type(version) is not int:
        return Rejected(Reason.BAD_ENVELOPE, "schema_version must be an integer", *ids)
    event_time = doc.get("event_time")
    if type(event_time) is not int or not 0 <= event_time <= MAX_EVENT_TIME_MS:
        return Rejected(
            Reason.BAD_ENVELOPE,
            "event_time must be integer epoch milliseconds",
            *ids,
        )
    payload = doc.get("payload")
    if type(payload) is not dict:
        return Rejected(Reason.BAD_ENVELOPE, "payload must be an object", *ids)
    return Envelope(event_id, schema, version, entity_id, event_time, payload)


def _check_fields(  # noqa: C901, PLR0911, PLR0912 - one flat loop is the fast path
    payload: Mapping[str, Any],
    compiled: _CompiledVersion,
) -> tuple[Reason, str] | None:
    if not payload.keys() <= compiled.names:
        extra = sorted(payload.keys() - compiled.names)
        return Reason.UNEXPECTED_FIELD, f"unexpected fields {extra}"
    for name, field_type, required, minimum, maximum, allowed, min_len, max_len in compiled.fields:
        value = payload.get(name, _MISSING)
        if value is _MISSING:
            if required:
                return Reason.MISSING_FIELD, f"field {name!r} is required"
            continue
        kind = type(value)
        if field_type is _FLOAT:
            if kind is float:
                if not math.isfinite(value):
                    return Reason.NON_FINITE, f"field {name!r} is {value}"
            elif kind is not int:
                return Reason.BAD_TYPE, f"field {name!r} must be a number, got {kind.__name__}"
        elif field_type is _INT:
            if kind is not int:
                return Reason.BAD_TYPE, f"field {name!r} must be an integer, got {kind.__name__}"
        elif field_type is _STR:
            if kind is not str:
                return Reason.BAD_TYPE, f"field {name!r} must be a string, got {kind.__name__}"
            length = len(value)
            if (min_len is not None and length < min_len) or (
                max_len is not None and length > max_len
            ):
                return (
                    Reason.OUT_OF_RANGE,
                    f"field {name!r} has length {length}, allowed {min_len}..{max_len}",
                )
        elif kind is not bool:
            return Reason.BAD_TYPE, f"field {name!r} must be a boolean, got {kind.__name__}"
        if minimum is not None and value < minimum:
            return Reason.OUT_OF_RANGE, f"field {name!r} = {value} below {minimum}"
        if maximum is not None and value > maximum:
            return Reason.OUT_OF_RANGE, f"field {name!r} = {value} above {maximum}"
        if allowed is not None and value not in allowed:
            return Reason.OUT_OF_RANGE, f"field {name!r} = {value!r} is not allowed"
    return None


def _ids_of_lenient(raw: bytes) -> tuple[str | None, str | None]:
    """Recover the ids of a message the strict parser refused, for the dead letter."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    event_id, entity_id = doc.get("event_id"), doc.get("entity_id")
    return (
        event_id if isinstance(event_id, str) else None,
        entity_id if isinstance(entity_id, str) else None,
    )
