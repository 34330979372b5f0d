from __future__ import annotations

import json
import math
from typing import Any

import pytest

from streams.envelope import Accepted, Reason, Rejected
from streams.spec import DomainSpec
from streams.validation import EventValidator


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "schema": "payment",
        "schema_version": 3,
        "entity_id": "card-1",
        "event_time": 1_767_225_600_000,
        "payload": {
            "amount": 12.5,
            "currency": "EUR",
            "merchant_id": "m-1",
            "mcc": 5411,
            "country": "DE",
            "channel": "pos",
            "card_present": True,
            "hour_of_day": 9,
        },
    }
    payload_overrides = overrides.pop("payload", {})
    base.update(overrides)
    base["payload"].update(payload_overrides)
    return base


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


@pytest.fixture
def validator(payments_spec: DomainSpec) -> EventValidator:
    return EventValidator(payments_spec)


def test_valid_current_version_passes_unchanged(validator: EventValidator) -> None:
    doc = event()
    outcome = validator.check(encode(doc))
    assert isinstance(outcome, Accepted)
    assert outcome.original_version == 3
    assert outcome.envelope.to_dict() == doc


def test_version_1_is_upcast_step_by_step(validator: EventValidator) -> None:
    doc = event(schema_version=1)
    doc["payload"] = {
        "amount_cents": 1234,
        "currency": "USD",
        "merchant_id": "m-9",
        "mcc": 5812,
        "country": "US",
    }
    outcome = validator.check(encode(doc))
    assert isinstance(outcome, Accepted)
    assert outcome.original_version == 1
    assert outcome.envelope.schema_version == 3
    assert outcome.envelope.payload == {
        "amount": pytest.approx(12.34),
        "currency": "USD",
        "merchant_id": "m-9",
        "mcc": 5812,
        "country": "US",
        "channel": "pos",
        "card_present": False,
        "hour_of_day": 12,
    }


def test_version_2_is_upcast(validator: EventValidator) -> None:
    doc = event(schema_version=2)
    del doc["payload"]["card_present"]
    del doc["payload"]["hour_of_day"]
    outcome = validator.check(encode(doc))
    assert isinstance(outcome, Accepted)
    assert outcome.envelope.payload["card_present"] is False


def test_optional_field_may_be_absent_or_present(validator: EventValidator) -> None:
    assert isinstance(validator.check(encode(event())), Accepted)
    assert isinstance(validator.check(encode(event(payload={"device_risk": 0.3}))), Accepted)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", Reason.NOT_JSON),
        (b"\xff\xfe", Reason.NOT_JSON),
        (b"[1, 2]", Reason.BAD_ENVELOPE),
        (b"[" * 2000 + b"]" * 2000, Reason.NOT_JSON),
        (b'{"amount": NaN}', Reason.NON_FINITE),
        (b'{"amount": 1e400}', Reason.NON_FINITE),
    ],
)
def test_unparseable_input_is_rejected(
    validator: EventValidator, raw: bytes, reason: Reason
) -> None:
    outcome = validator.check(raw)
    assert isinstance(outcome, Rejected)
    assert outcome.reason is reason


def test_oversized_message_is_rejected_before_parsing(validator: EventValidator) -> None:
    outcome = validator.check(encode(event(payload={"merchant_id": "m" * 5000})))
    assert isinstance(outcome, Rejected)
    assert outcome.reason is Reason.OVERSIZED


def test_non_finite_keeps_ids_for_the_dead_letter(validator: EventValidator) -> None:
    raw = json.dumps(event(payload={"amount": math.inf})).encode()
    outcome = validator.check(raw)
    assert isinstance(outcome, Rejected)
    assert (outcome.reason, outcome.event_id, outcome.entity_id) == (
        Reason.NON_FINITE,
        "e-1",
        "card-1",
    )


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"event_id": ""}, Reason.BAD_ENVELOPE),
        ({"event_id": 5}, Reason.BAD_ENVELOPE),
        ({"entity_id": None}, Reason.BAD_ENVELOPE),
        ({"event_time": "1767225600000"}, Reason.BAD_ENVELOPE),
        ({"event_time": -1}, Reason.BAD_ENVELOPE),
        ({"event_time": 1.5}, Reason.BAD_ENVELOPE),
        ({"schema_version": "3"}, Reason.BAD_ENVELOPE),
        ({"schema_version": True}, Reason.BAD_ENVELOPE),
        ({"extra": 1}, Reason.BAD_ENVELOPE),
        ({"schema": "refund"}, Reason.UNKNOWN_SCHEMA),
        ({"schema_version": 9}, Reason.UNKNOWN_SCHEMA),
        ({"payload": {"promo": "x"}}, Reason.UNEXPECTED_FIELD),
        ({"payload": {"amount": "12.5"}}, Reason.BAD_TYPE),
        ({"payload": {"amount": True}}, Reason.BAD_TYPE),
        ({"payload": {"mcc": 5411.0}}, Reason.BAD_TYPE),
        ({"payload": {"card_present": 1}}, Reason.BAD_TYPE),
        ({"payload": {"country": 49}}, Reason.BAD_TYPE),
        ({"payload": {"amount": -0.01}}, Reason.OUT_OF_RANGE),
        ({"payload": {"amount": 1e7}}, Reason.OUT_OF_RANGE),
        ({"payload": {"hour_of_day": 24}}, Reason.OUT_OF_RANGE),
        ({"payload": {"currency": "XXX"}}, Reason.OUT_OF_RANGE),
        ({"payload": {"country": "DEU"}}, Reason.OUT_OF_RANGE),
        ({"payload": {"amount": 10**30}}, Reason.OUT_OF_RANGE),
        ({"payload": {"mcc": 10**30}}, Reason.BAD_TYPE),  # read as a float beyond 64 bits
    ],
)
def test_bad_events_get_their_reason(
    validator: EventValidator,
    overrides: dict[str, Any],
    reason: Reason,
) -> None:
    outcome = validator.check(encode(event(**overrides)))
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason is reason
    assert outcome.detail


def test_payload_must_be_an_object(validator: EventValidator) -> None:
    doc = event()
    doc["payload"] = [1]
    outcome = validator.check(encode(doc))
    assert isinstance(outcome, Rejected)
    assert outcome.reason is Reason.BAD_ENVELOPE


def test_missing_required_field(validator: EventValidator) -> None:
    doc = event()
    del doc["payload"]["currency"]
    outcome = validator.check(encode(doc))
    assert isinstance(outcome, Rejected)
    assert outcome.reason is Reason.MISSING_FIELD
    assert "currency" in outcome.detail
