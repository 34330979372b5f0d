"""Properties: no input crashes the validator, codecs round-trip, valid events pass."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.codecs import decode_envelope, decode_rejection, encode_rejection, encode_valid
from streams.envelope import Accepted, Envelope, Reason, Rejected, SourcePosition
from streams.spec import DomainSpec, FieldSpec, FieldType
from streams.validation import EventValidator

json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=8,
)


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    from streams.settings import DEFAULT_SPEC
    from streams.spec import load_spec

    outcome = EventValidator(load_spec(DEFAULT_SPEC)).check(raw)
    assert isinstance(outcome, Accepted | Rejected)


# Generation time varies on shared CI machines; what is checked does not depend on it.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.dictionaries(
        st.sampled_from(["amount", "currency", "mcc", "country", "channel", "x"]),
        json_values,
        max_size=8,
    ),
    version=st.integers(min_value=0, max_value=4),
)
def test_arbitrary_payloads_never_raise(
    payments_spec: DomainSpec, payload: dict[str, Any], version: int
) -> None:
    doc = {
        "event_id": "e",
        "schema": "payment",
        "schema_version": version,
        "entity_id": "c",
        "event_time": 1,
        "payload": payload,
    }
    raw = json.dumps(doc).encode()  # NaN and inf are written as the non-JSON tokens
    outcome = EventValidator(payments_spec).check(raw)
    assert isinstance(outcome, Accepted | Rejected)


def _value_for(field: FieldSpec) -> st.SearchStrategy[Any]:
    if field.allowed is not None:
        return st.sampled_from(sorted(field.allowed, key=str))
    match field.type:
        case FieldType.FLOAT:
            return st.floats(
                min_value=field.minimum,
                max_value=field.maximum,
                allow_nan=False,
                allow_infinity=False,
            )
        case FieldType.INT:
            return st.integers(
                min_value=None if field.minimum is None else int(field.minimum),
                max_value=None if field.maximum is None else int(field.maximum),
            )
        case FieldType.STR:
            return st.text(
                alphabet=st.characters(codec="utf-8"),
                min_size=field.min_length or 0,
                max_size=min(field.max_length or 30, 30),
            )
        case FieldType.BOOL:
            return st.booleans()


@st.composite
def valid_events(draw: st.DrawFn, spec: DomainSpec) -> dict[str, Any]:
    schema = spec.schemas["payment"]
    version = draw(st.sampled_from(sorted(schema.versions)))
    payload = {}
    for field in schema.versions[version].fields:
        if field.required or draw(st.booleans()):
            payload[field.name] = draw(_value_for(field))
    return {
        "event_id": draw(st.text(min_size=1, max_size=40)),
        "schema": "payment",
        "schema_version": version,
        "entity_id": draw(st.text(min_size=1, max_size=40)),
        "event_time": draw(st.integers(min_value=0, max_value=4_102_444_800_000)),
        "payload": payload,
    }


@settings(max_examples=300)
@given(data=st.data())
def test_events_drawn_from_the_spec_are_accepted_and_upcast(
    payments_spec: DomainSpec, data: st.DataObject
) -> None:
    doc = data.draw(valid_events(payments_spec))
    outcome = EventValidator(payments_spec).check(json.dumps(doc).encode())
    assert isinstance(outcome, Accepted), outcome
    assert outcome.original_version == doc["schema_version"]
    assert outcome.envelope.schema_version == payments_spec.schemas["payment"].current_version
    current = {f.name for f in payments_spec.schemas["payment"].current.fields}
    assert set(outcome.envelope.payload) <= current
    # the upcast event is itself valid at the current version
    again = EventValidator(payments_spec).check(json.dumps(outcome.envelope.to_dict()).encode())
    assert isinstance(again, Accepted)
    assert again.envelope == outcome.envelope


@settings(max_examples=200)
@given(data=st.data())
def test_valid_event_codec_round_trip(payments_spec: DomainSpec, data: st.DataObject) -> None:
    doc = data.draw(valid_events(payments_spec))
    outcome = EventValidator(payments_spec).check(json.dumps(doc).encode())
    assert isinstance(outcome, Accepted)
    assert decode_envelope(encode_valid(outcome)) == outcome.envelope


@given(
    reason=st.sampled_from(list(Reason)),
    detail=st.text(),
    original=st.binary(),
    event_id=st.none() | st.text(),
    partition=st.integers(min_value=0, max_value=1000),
    offset=st.integers(min_value=0, max_value=2**62),
)
def test_rejection_codec_round_trip(
    reason: Reason,
    detail: str,
    original: bytes,
    event_id: str | None,
    partition: int,
    offset: int,
) -> None:
    rejection = Rejected(reason, detail, event_id, None)
    record = decode_rejection(
        encode_rejection(
            rejection,
            original,
            SourcePosition("events.raw", partition, offset),
            rejected_at_ms=5,
        ),
    )
    assert record["original"] == original
    assert (record["reason"], record["detail"], record["event_id"]) == (
        reason.value,
        detail,
        event_id,
    )
    assert record["source"] == {"topic": "events.raw", "partition": partition, "offset": offset}


def test_envelope_is_immutable() -> None:
    envelope = Envelope("e", "payment", 3, "c", 1, {})
    with pytest.raises(AttributeError):
        envelope.event_id = "x"  # type: ignore[misc]
