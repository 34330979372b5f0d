"""The second domain: River's SEA stream under its own spec, with a drift at a known event."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from bench.drift import SEA_THRESHOLDS, sea_event, sea_stream
from streams.envelope import Accepted, Reason, Rejected
from streams.spec import DomainSpec, FieldType, load_spec
from streams.validation import EventValidator

SEA_SPEC = Path(__file__).parents[2] / "streams" / "domains" / "sea.toml"


@pytest.fixture(scope="module")
def sea_spec() -> DomainSpec:
    return load_spec(SEA_SPEC)


def test_the_sea_spec_loads(sea_spec: DomainSpec) -> None:
    point = sea_spec.schemas["sea_point"].current
    assert sea_spec.name == "sea"
    assert [(f.name, f.type) for f in point.fields] == [
        ("x1", FieldType.FLOAT),
        ("x2", FieldType.FLOAT),
        ("x3", FieldType.FLOAT),
        ("label", FieldType.INT),
    ]
    assert sea_spec.features is not None
    assert sea_spec.features.passthrough == ("x1", "x2", "x3")  # the label is not a feature


def test_generated_sea_events_are_accepted(sea_spec: DomainSpec) -> None:
    validator = EventValidator(sea_spec)
    x, y = sea_stream(300, seed=1, drift_at=150)
    for i in range(300):
        outcome = validator.check(orjson.dumps(sea_event(i, x[i], int(y[i]))))
        assert isinstance(outcome, Accepted), outcome
    unlabelled = validator.check(orjson.dumps(sea_event(0, x[0], None)))
    assert isinstance(unlabelled, Accepted)


def test_a_point_outside_the_range_is_rejected(sea_spec: DomainSpec) -> None:
    event = sea_event(0, np.array([11.0, 1.0, 1.0]), 1)
    outcome = EventValidator(sea_spec).check(orjson.dumps(event))
    assert isinstance(outcome, Rejected)
    assert outcome.reason is Reason.OUT_OF_RANGE


def test_the_concept_changes_at_the_drift_point() -> None:
    x, y = sea_stream(2_000, seed=3, drift_at=1_000, noise=0.0)
    total = x[:, 0] + x[:, 1]
    assert np.array_equal(y[:1_000], (total[:1_000] > SEA_THRESHOLDS[0]).astype(np.int64))
    assert np.array_equal(y[1_000:], (total[1_000:] > SEA_THRESHOLDS[1]).astype(np.int64))
    assert np.array_equal(sea_stream(2_000, seed=3, drift_at=1_000, noise=0.0)[0], x)
