"""Temperature scaling and ECE: hand-computed cases, seeded synthetic checks, properties."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.calibration import (
    LOG_TEMPERATURE_BOUNDS,
    TemperatureScaler,
    expected_calibration_error,
    fit_temperature,
    log_softmax,
    nll,
    softmax,
)


def draw_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row, drawn from that row's probabilities."""
    uniform = rng.random((int(probs.shape[0]), 1))
    labels: np.ndarray = np.minimum(
        (np.cumsum(probs, axis=1) < uniform).sum(axis=1), probs.shape[1] - 1
    )
    return labels


def calibrated_logits(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian logits and labels drawn from their softmax: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, classes))
    return logits, draw_labels(softmax(logits), rng)


def test_softmax_is_stable_for_huge_logits() -> None:
    probs = softmax(np.array([[1000.0, 0.0, -1000.0], [-1e300, -1e300, -1e300]]))
    assert probs[0] == pytest.approx([1.0, 0.0, 0.0])
    assert probs[1] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert log_softmax(np.array([[1000.0, 0.0]]))[0] == pytest.approx([0.0, -1000.0])


def test_temperature_divides_the_logits() -> None:
    logits = np.array([[2.0, 1.0, -1.0]])
    assert softmax(logits, 2.0) == pytest.approx(softmax(logits / 2.0))
    assert log_softmax(logits, 0.5) == pytest.approx(np.log(softmax(logits * 2.0)))


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_rejects_temperatures_that_are_not_positive_numbers(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        softmax(np.zeros((1, 2)), temperature)
    with pytest.raises(ValueError, match="temperature"):
        TemperatureScaler(temperature)


finite_logits = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
    elements=st.floats(-500.0, 500.0),
)


@settings(max_examples=100, deadline=None)
@given(finite_logits, st.floats(0.05, 20.0), st.floats(-100.0, 100.0))
def test_softmax_rows_are_distributions_invariant_to_shifts(
    logits: np.ndarray, temperature: float, shift: float
) -> None:
    probs = softmax(logits, temperature)
    assert np.all(probs >= 0.0)
    assert probs.sum(axis=1) == pytest.approx(np.ones(logits.shape[0]))
    assert softmax(logits + shift, temperature) == pytest.approx(probs, abs=1e-12)
    assert np.all(log_softmax(logits, temperature) <= 1e-12)
    # monotone: the largest logit has the largest probability (ties in float allowed)
    rows = np.arange(logits.shape[0])
    assert np.array_equal(probs[rows, logits.argmax(axis=1)], probs.max(axis=1))


def test_nll_matches_a_direct_computation() -> None:
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    labels = np.array([2, 2])
    expected = 0.0
    for row, label in zip(logits / 1.7, labels, strict=True):
        expected -= row[label] - math.log(sum(math.exp(x) for x in row))
    assert nll(logits, labels, 1.7) == pytest.approx(expected / 2)


def test_rejects_labels_outside_the_classes() -> None:
    with pytest.raises(ValueError, match="labels"):
        nll(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(np.full((1, 2), 0.5), np.array([0.0]))


@pytest.mark.parametrize("true_temperature", [0.5, 2.0, 3.0])
def test_fit_temperature_recovers_a_known_temperature(true_temperature: float) -> None:
    logits, labels = calibrated_logits(20_000, 5, seed=11)
    fitted = fit_temperature(logits * true_temperature, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)


def test_fitted_temperature_is_a_local_minimum_of_the_nll() -> None:
    logits, labels = calibrated_logits(2_000, 4, seed=5)
    fitted = fit_temperature(logits * 2.0, labels)
    best = nll(logits * 2.0, labels, fitted)
    for factor in (0.99, 1.01):
        assert best <= nll(logits * 2.0, labels, fitted * factor)


def test_fit_temperature_stops_at_the_bound_when_sharper_is_always_better() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    fitted = fit_temperature(logits, np.array([0, 1]))
    assert fitted == pytest.approx(math.exp(LOG_TEMPERATURE_BOUNDS[0]), rel=1e-5)


def test_ece_matches_a_hand_computation() -> None:
    probs = np.array(
        [
            [0.9, 0.1],  # confidence 0.90, right   -> bin (0.8, 1.0]
            [0.3, 0.7],  # confidence 0.70, wrong   -> bin (0.6, 0.8]
            [0.65, 0.35],  # confidence 0.65, right -> bin (0.6, 0.8]
            [1.0, 0.0],  # confidence 1.00, wrong   -> bin (0.8, 1.0]
            [0.55, 0.45],  # confidence 0.55, right -> bin (0.4, 0.6]
        ]
    )
    labels = np.array([0, 0, 0, 1, 0])
    # (0.8, 1.0]: |1/2 - 0.95| * 2/5 = 0.18; (0.6, 0.8]: |1/2 - 0.675| * 2/5 = 0.07;
    # (0.4, 0.6]: |1 - 0.55| * 1/5 = 0.09
    assert expected_calibration_error(probs, labels, bins=5) == pytest.approx(0.34, abs=1e-12)
    # one bin: |accuracy - mean confidence| = |3/5 - 0.76|
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(0.16, abs=1e-12)


def test_ece_bins_are_closed_on_the_right() -> None:
    probs = np.array([[0.5, 0.5], [0.75, 0.25]])
    labels = np.array([0, 1])
    # bins=2: 0.5 falls in (0, 0.5] alone, 0.75 in (0.5, 1]: 0.5 * 1/2 + 0.75 * 1/2
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(0.625)


def test_ece_of_a_calibrated_set_is_near_zero() -> None:
    logits, labels = calibrated_logits(20_000, 5, seed=3)
    assert expected_calibration_error(softmax(logits), labels) < 0.015


def test_temperature_scaling_repairs_an_over_confident_model() -> None:
    logits, labels = calibrated_logits(20_000, 5, seed=7)
    over_confident = logits * 3.0
    before = expected_calibration_error(softmax(over_confident), labels)
    scaler = TemperatureScaler.fit(over_confident, labels)
    after = expected_calibration_error(scaler.apply(over_confident), labels)
    assert before > 0.2
    assert scaler.temperature == pytest.approx(3.0, rel=0.05)
    assert after < 0.02
    assert np.array_equal(scaler.apply(over_confident).argmax(axis=1), logits.argmax(axis=1))


def test_scaler_state_round_trips_through_json() -> None:
    scaler = TemperatureScaler(2.718281828459045)
    restored = TemperatureScaler.from_state(json.loads(json.dumps(scaler.to_state())))
    assert restored == scaler
    logits = np.array([[0.3, -1.2, 2.0]])
    assert np.array_equal(restored.apply(logits), softmax(logits, scaler.temperature))
