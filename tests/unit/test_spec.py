from __future__ import annotations

from pathlib import Path

import pytest

from streams.spec import DomainSpec, FieldType, SpecError, load_spec, parse_spec
from streams.upcast import (
    Default,
    MapValues,
    Rename,
    Scale,
    UpcastSpecError,
    apply_steps,
    parse_step,
)

MINIMAL = b"""
[domain]
name = "thermostats"
dedup_horizon_ms = 60000
max_message_bytes = 1024

[schemas.reading]
current_version = 2

[schemas.reading.versions.1.fields]
temp_f = { type = "float", min = -100, max = 300 }

[[schemas.reading.versions.1.upcast]]
op = "rename"
from = "temp_f"
to = "temp"

[schemas.reading.versions.2.fields]
temp = { type = "float", outlier = true }
"""


def test_the_demo_spec_loads(payments_spec: DomainSpec) -> None:
    payment = payments_spec.schemas["payment"]
    assert payment.current_version == 3
    assert [f.name for f in payment.current.fields][:2] == ["amount", "currency"]
    assert payment.current.fields[0].type is FieldType.FLOAT
    assert len(payment.upcast_chain(1)) == 2
    assert len(payments_spec.fingerprint) == 16


def test_a_new_domain_is_just_a_file(tmp_path: Path) -> None:
    path = tmp_path / "thermostats.toml"
    path.write_bytes(MINIMAL)
    spec = load_spec(path)
    assert spec.name == "thermostats"
    assert spec.schemas["reading"].current.fields[0].outlier is not None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace(b"current_version = 2", b"current_version = 3"), "current version 3"),
        (
            lambda s: s.replace(b'type = "float", outlier', b'type = "decimal", outlier'),
            "type must be",
        ),
        (lambda s: s.replace(b'op = "rename"', b'op = "explode"'), "unknown upcast op"),
        (lambda s: s.replace(b"max_message_bytes = 1024", b"max_message_bytes = -1"), "positive"),
        (lambda s: s.replace(b"min = -100", b"minimum = -100"), "unknown keys"),
        (lambda s: s + b"\n[[[", "not valid TOML"),
        (lambda s: s.replace(b'from = "temp_f"\n', b""), "needs key"),
    ],
)
def test_bad_specs_say_what_is_wrong(tmp_path: Path, edit: object, message: str) -> None:
    assert callable(edit)
    with pytest.raises(SpecError, match=message):
        parse_spec(edit(MINIMAL), source="thermostats.toml")


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.toml")


def test_upcast_steps() -> None:
    steps = [
        parse_step({"op": "rename", "from": "a", "to": "b"}),
        parse_step({"op": "scale", "field": "b", "factor": 0.5}),
        parse_step({"op": "default", "field": "c", "value": 1}),
        parse_step({"op": "map", "field": "d", "mapping": {"x": "y"}}),
        parse_step({"op": "drop", "field": "e"}),
    ]
    assert isinstance(steps[0], Rename)
    assert isinstance(steps[1], Scale)
    assert isinstance(steps[2], Default)
    assert isinstance(steps[3], MapValues)
    original = {"a": 4, "d": "x", "e": 0}
    assert apply_steps(original, [steps]) == {"b": 2.0, "c": 1, "d": "y"}
    assert original == {"a": 4, "d": "x", "e": 0}, "upcasting must not mutate its input"
    with pytest.raises(UpcastSpecError):
        parse_step({"op": "scale", "field": "b"})
