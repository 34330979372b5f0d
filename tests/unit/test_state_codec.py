"""The entity-state codec: the states a pipeline builds come back equal, floats bit for
bit; states written as JSON before it are still read; other values round-trip too, the
integer 123 (the byte that starts a JSON object) among them; a key that is not a string
is refused, not changed."""

from __future__ import annotations

import math
import struct
from typing import Any

import orjson
import ormsgpack
import pytest
from faust.serializers import codecs

from streams import state_codec
from streams.pipeline import ValidationPipeline
from streams.settings import Settings
from streams.spec import load_spec
from streams.synthetic import MixSpec, PaymentGenerator
from tables.entity_state import EntityState


def _pipeline_states(count: int) -> dict[str, EntityState]:
    states: dict[str, EntityState] = {}
    pipeline = ValidationPipeline(load_spec(Settings.from_env().spec_path), {}, states)
    mix = MixSpec(count=count, seed=5, malformed_share=0.0, duplicate_share=0.0)
    for offset, message in enumerate(PaymentGenerator(mix)):
        pipeline.process(message.value, 0, offset)
        if offset % 64 == 0:
            pipeline.flush(0)
    pipeline.flush(0)
    return states


def _float_bits(value: Any) -> Any:
    """The value with every float replaced by its IEEE bits, so equal means bit for bit."""
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, dict):
        return {key: _float_bits(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_float_bits(item) for item in value]
    return value


@pytest.fixture(scope="module")
def states() -> dict[str, EntityState]:
    built = _pipeline_states(3_000)
    assert len(built) > 100
    return built


def test_states_round_trip_bit_for_bit(states: dict[str, EntityState]) -> None:
    codec = codecs.get_codec(state_codec.NAME)
    windows = 0
    for state in states.values():
        encoded = codec.dumps(state)
        assert encoded[:1] != b"{"  # MessagePack, not JSON
        decoded = codec.loads(encoded)
        assert _float_bits(decoded) == _float_bits(state)
        windows += len(state["w"])
    assert windows > len(states)  # the states hold windows, not just their headers


def test_states_are_smaller_than_as_json(states: dict[str, EntityState]) -> None:
    codec = codecs.get_codec(state_codec.NAME)
    packed = sum(len(codec.dumps(state)) for state in states.values())
    as_json = sum(len(orjson.dumps(state)) for state in states.values())
    assert packed < as_json


def test_states_written_as_json_are_read(states: dict[str, EntityState]) -> None:
    codec = codecs.get_codec(state_codec.NAME)
    json_codec = codecs.get_codec("json")  # faust's default: what the table used before
    for state in list(states.values())[:200]:
        assert codec.loads(json_codec.dumps(state)) == state


def test_extreme_floats_round_trip() -> None:
    codec = codecs.get_codec(state_codec.NAME)
    state = {"w": {"1": {"x": [5e-324, 1.7976931348623157e308, -0.0, 0.1 + 0.2, 1e16 + 1]}}}
    decoded = codec.loads(codec.dumps(state))
    assert _float_bits(decoded) == _float_bits(state)
    assert math.copysign(1.0, decoded["w"]["1"]["x"][2]) == -1.0


def test_a_key_that_is_not_a_string_is_refused() -> None:
    codec = codecs.get_codec(state_codec.NAME)
    with pytest.raises(ormsgpack.MsgpackEncodeError):
        codec.dumps({"w": {1: {"x": [1.0]}}})


@pytest.mark.parametrize("value", [123, 0, -1, 1.5, "{", "", [], {}, [123, {"a": None}], True])
def test_other_values_round_trip(value: Any) -> None:
    codec = codecs.get_codec(state_codec.NAME)
    assert codec.loads(codec.dumps(value)) == value


def test_an_empty_json_object_is_read() -> None:
    assert codecs.get_codec(state_codec.NAME).loads(b"{}") == {}
