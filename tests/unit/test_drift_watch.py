"""The worker's drift watch: one alert per excursion, and a checkpoint it carries on from."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from models.artifact import Histogram, ModelMetadata
from models.drift_watch import LabelDriftWatch, ServingDriftWatch


def metadata() -> ModelMetadata:
    rng = np.random.default_rng(0)
    return ModelMetadata(
        name="m",
        feature_names=["x"],
        feature_version="fv",
        members=1,
        hidden=1,
        classes=2,
        dropout=0.0,
        temperature=1.0,
        conformal={},
        feature_histograms={"x": Histogram.of(rng.normal(size=5_000))},
        confidence_histogram=Histogram.of(rng.uniform(0.5, 1.0, size=5_000)),
        training_data_sha256="",
        training_rows=5_000,
        first_event_time=0,
        last_event_time=0,
    )


def feed(watch: ServingDriftWatch, values: np.ndarray, confidences: np.ndarray) -> list[str]:
    alerts = []
    for value, confidence in zip(values, confidences, strict=True):
        _, raised = watch.observe({"x": float(value)}, float(confidence), None)
        alerts += [f"{a.feature}:{a.statistic}" for a in raised]
    return alerts


def test_a_shift_raises_one_psi_alert_per_excursion_and_a_checkpoint_carries_on() -> None:
    rng = np.random.default_rng(1)
    watch = ServingDriftWatch("v1", metadata(), window=1_000, report_every=250)
    steady = feed(watch, rng.normal(size=2_000), rng.uniform(0.5, 1.0, size=2_000))
    assert "x:psi" not in steady
    shifted = feed(watch, rng.normal(3.0, 1.0, size=2_000), rng.uniform(0.5, 1.0, size=2_000))
    assert shifted.count("x:psi") == 1  # one alert while it stays shifted
    state = orjson.loads(orjson.dumps(watch.to_state()))  # through JSON, as on disk
    restored = ServingDriftWatch("v1", metadata(), window=1_000, report_every=250)
    restored.load_state(state)
    assert restored.monitor.events == watch.monitor.events
    assert restored.alerting == {"x"}
    again = feed(restored, rng.normal(3.0, 1.0, size=500), rng.uniform(0.5, 1.0, size=500))
    assert "x:psi" not in again  # the excursion it was in goes on: no second alert


def test_the_error_detector_flags_a_jump_in_the_error_rate_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    watch = LabelDriftWatch()
    outcomes = [
        {"version": "v1", "route": "champion", "error": bool(e), "superseded_error": None}
        for e in np.concatenate([rng.random(3_000) < 0.05, rng.random(3_000) < 0.5])
    ]
    alerts = [a for o in outcomes[:3_000] if (a := watch.observe(o))]
    assert alerts == []
    restored = LabelDriftWatch()
    restored.load_state(orjson.loads(orjson.dumps(watch.to_state())))
    later = [a for o in outcomes[3_000:] if (a := restored.observe(o))]
    assert later
    assert later[0].feature == "model.error"


def test_the_error_detector_alerts_on_a_rise_not_on_a_fall() -> None:
    def outcomes(rates: tuple[float, float]) -> list[dict[str, object]]:
        rng = np.random.default_rng(3)
        errors = np.concatenate([rng.random(3_000) < rates[0], rng.random(3_000) < rates[1]])
        return [
            {"version": "v1", "route": "champion", "error": bool(e), "superseded_error": None}
            for e in errors
        ]

    falling = LabelDriftWatch()
    assert [a for o in outcomes((0.5, 0.05)) if (a := falling.observe(o))] == []
    assert falling.detectors["v1"].detections > 0  # the detector saw the change
    rising = LabelDriftWatch()
    alerts = [a for o in outcomes((0.05, 0.5)) if (a := rising.observe(o))]
    assert alerts
    assert alerts[0].threshold is not None
    assert alerts[0].value is not None
    assert alerts[0].threshold < alerts[0].value
    assert alerts[0].threshold == pytest.approx(0.05, abs=0.015)  # the rate before
    assert alerts[0].value == pytest.approx(0.5, abs=0.06)  # the rate after, confirmed
    slight = LabelDriftWatch(min_rise=0.05)
    slight_alerts = [slight.observe(o) for o in outcomes((0.05, 0.08))]
    assert slight.detectors["v1"].detections > 0
    assert not any(slight_alerts)
