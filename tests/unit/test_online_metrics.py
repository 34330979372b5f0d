"""Online metrics per version and route, against brute-force recomputation on the window."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.calibration import expected_calibration_error
from models.online_metrics import OnlineMetrics, SlidingCalibrationError


def _stream(seed: int, count: int) -> tuple[list[float], list[int]]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.0, 1.0, count)
    y = (rng.uniform(0.0, 1.0, count) < p**1.5).astype(int)  # miscalibrated on purpose
    return [float(v) for v in p], [int(v) for v in y]


def _auc(p: np.ndarray, y: np.ndarray) -> float:
    positives, negatives = p[y == 1], p[y == 0]
    wins = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((wins + 0.5 * ties) / (positives.size * negatives.size))


def _oracle(p_list: list[float], y_list: list[int]) -> dict[str, float]:
    p, y = np.array(p_list), np.array(y_list)
    predicted = p > 0.5
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return {
        "accuracy": float(np.mean(predicted == (y == 1))),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall),
        "roc_auc": _auc(p, y),
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
        "ece": expected_calibration_error(np.column_stack([1 - p, p]), y, bins=15),
    }


def test_metrics_match_a_recomputation_over_the_last_window() -> None:
    p, y = _stream(1, 1_700)
    metrics = OnlineMetrics(window=500)
    for probability, label in zip(p, y, strict=True):
        metrics.update("v1", "champion", probability, label)
    figures = metrics.snapshot()["v1"]["champion"]
    assert figures["count"] == 1_700
    assert figures["window"] == 500
    for name, expected in _oracle(p[-500:], y[-500:]).items():
        assert figures[name] == pytest.approx(expected, abs=1e-9), name


def test_versions_and_routes_are_kept_apart() -> None:
    metrics = OnlineMetrics(window=100)
    metrics.update("v1", "champion", 0.9, 1)
    metrics.update("v2", "canary", 0.9, 0)
    metrics.update("v2", "shadow", 0.2, 0)
    snapshot = metrics.snapshot()
    assert snapshot["v1"]["champion"]["accuracy"] == 1.0
    assert snapshot["v2"]["canary"]["accuracy"] == 0.0
    assert snapshot["v2"]["shadow"]["accuracy"] == 1.0
    assert snapshot["v2"]["canary"]["roc_auc"] is None  # one class in the window
    json.dumps(snapshot)  # JSON-ready


def test_a_probability_of_one_half_is_a_negative_decision() -> None:
    metrics = OnlineMetrics()
    metrics.update("v1", "champion", 0.5, 0)
    assert metrics.snapshot()["v1"]["champion"]["accuracy"] == 1.0


def test_sliding_ece_matches_the_batch_ece_after_reverts() -> None:
    p, y = _stream(2, 400)
    ece = SlidingCalibrationError()
    for probability, label in zip(p, y, strict=True):
        ece.update(probability, bool(label))
    for probability, label in zip(p[:150], y[:150], strict=True):
        ece.revert(probability, bool(label))
    expected = expected_calibration_error(
        np.column_stack([1 - np.array(p[150:]), np.array(p[150:])]), np.array(y[150:])
    )
    assert ece.get() == pytest.approx(expected, abs=1e-12)
    assert SlidingCalibrationError().get() is None


def test_sliding_ece_bins_and_ties_as_the_batch_ece() -> None:
    # p = 8/15 sits on a bin edge (bins are closed on the right: it joins (7/15, 8/15]); p =
    # 1/2 is a tie, so the negative class is the top label, as an argmax preferring index 0.
    # Both land in one bin: 8/15 is wrong (label 0), 1/2 is right, and the bin's gap is
    # |1 - (8/15 + 1/2)| = 1/30 over two outcomes.
    edge = float(np.linspace(0.0, 1.0, 16)[8])
    ece = SlidingCalibrationError()
    ece.update(edge, label=False)
    ece.update(0.5, label=False)
    assert ece.get() == pytest.approx(1 / 60, abs=1e-12)
    batch = expected_calibration_error(np.array([[1 - edge, edge], [0.5, 0.5]]), np.array([0, 0]))
    assert ece.get() == pytest.approx(batch, abs=1e-12)


def test_state_round_trips_through_json() -> None:
    p, y = _stream(3, 900)
    metrics = OnlineMetrics(window=300)
    for i, (probability, label) in enumerate(zip(p, y, strict=True)):
        metrics.update(f"v{i % 2}", "champion", probability, label)
    restored = OnlineMetrics.from_state(json.loads(json.dumps(metrics.to_state())))
    before, after = metrics.snapshot(), restored.snapshot()
    assert before.keys() == after.keys()
    for version, routes in before.items():
        for route, figures in routes.items():
            for name, value in figures.items():
                assert after[version][route][name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize(
    ("probability", "label"), [(1.5, 1), (-0.1, 0), (math.nan, 1), (0.5, 2), (0.5, -1)]
)
def test_bad_outcomes_are_refused(probability: float, label: int) -> None:
    with pytest.raises(ValueError, match="must"):
        OnlineMetrics().update("v1", "champion", probability, label)
