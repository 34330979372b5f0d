"""The ensemble's temperature: fitted on what is served, the mean of member softmaxes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.calibration import (
    ensemble_nll,
    ensemble_softmax,
    fit_ensemble_temperature,
    fit_temperature,
    golden_section_minimum,
    softmax,
)


def draw_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row, drawn from that row's probabilities."""
    uniform = rng.random((int(probs.shape[0]), 1))
    labels: np.ndarray = np.minimum(
        (np.cumsum(probs, axis=1) < uniform).sum(axis=1), probs.shape[1] - 1
    )
    return labels


def noisy_ensemble(n: int, members: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Members that share a signal and disagree by noise; labels from the shared signal."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(scale=1.5, size=(n, classes))
    labels = draw_labels(softmax(signal), rng)
    member_logits = 2.0 * signal + rng.normal(scale=0.7, size=(members, n, classes))
    return member_logits, labels


def scanned_minimum(member_logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Brute force: (log T, NLL) at the best of 6,001 points on [-3, 3]."""
    grid = np.linspace(-3.0, 3.0, 6_001)
    losses = [ensemble_nll(member_logits, labels, math.exp(u)) for u in grid]
    best = int(np.argmin(losses))
    return float(grid[best]), losses[best]


def test_ensemble_softmax_is_the_mean_of_member_softmaxes() -> None:
    member_logits, _ = noisy_ensemble(50, 3, 4, seed=1)
    expected = np.mean([softmax(m, 1.7) for m in member_logits], axis=0)
    assert np.abs(ensemble_softmax(member_logits, 1.7) - expected).max() < 1e-15


def test_ensemble_nll_matches_a_direct_computation() -> None:
    member_logits, labels = noisy_ensemble(200, 5, 3, seed=2)
    probs = ensemble_softmax(member_logits, 0.8)
    expected = -np.log(probs[np.arange(labels.size), labels]).mean()
    assert ensemble_nll(member_logits, labels, 0.8) == pytest.approx(expected, rel=1e-12)


def test_ensemble_nll_stays_finite_when_every_member_is_certain_and_wrong() -> None:
    member_logits = np.array([[[0.0, 2_000.0]], [[0.0, 1_000.0]]])
    loss = ensemble_nll(member_logits, np.array([0]))
    assert math.isfinite(loss)
    assert loss == pytest.approx(1_000.0 + math.log(2.0))


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=5),
        elements=st.floats(-30.0, 30.0),
    ),
    st.floats(0.05, 20.0),
    st.integers(0, 2**32 - 1),
)
# A served probability that underflows to 0 (e^-820), and one that is subnormal (e^-740,
# a few significant bits): the log of the row cannot be the loss there, the NLL still is.
@example(np.array([[[15.0, -26.0]]]), 0.0546875, 0)
@example(np.array([[[7.0, -30.0]]]), 0.05, 0)
def test_served_rows_are_distributions_and_the_nll_is_their_log_loss(
    member_logits: np.ndarray, temperature: float, seed: int
) -> None:
    probs = ensemble_softmax(member_logits, temperature)
    assert probs.shape == member_logits.shape[1:]
    assert np.all(probs >= 0.0)
    assert probs.sum(axis=1) == pytest.approx(np.ones(probs.shape[0]))
    labels = np.random.default_rng(seed).integers(0, probs.shape[1], probs.shape[0])
    loss = ensemble_nll(member_logits, labels, temperature)
    assert math.isfinite(loss)
    chosen = probs[np.arange(labels.size), labels]
    if np.all(chosen >= np.finfo(np.float64).tiny):  # normal floats: full precision
        assert loss == pytest.approx(-np.log(chosen).mean(), rel=1e-9)


def test_one_member_or_identical_members_fit_the_single_model_temperature() -> None:
    member_logits, labels = noisy_ensemble(5_000, 1, 4, seed=3)
    single = fit_temperature(member_logits[0], labels)
    assert fit_ensemble_temperature(member_logits, labels) == pytest.approx(single, rel=1e-5)
    copies = np.repeat(member_logits, 4, axis=0)
    assert fit_ensemble_temperature(copies, labels) == pytest.approx(single, rel=1e-5)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_fit_matches_a_brute_force_scan_of_the_served_nll(seed: int) -> None:
    member_logits, labels = noisy_ensemble(3_000, 5, 2, seed=seed)
    fitted = fit_ensemble_temperature(member_logits, labels)
    best_log_temperature, best_loss = scanned_minimum(member_logits, labels)
    assert math.log(fitted) == pytest.approx(best_log_temperature, abs=2e-3)
    assert ensemble_nll(member_logits, labels, fitted) <= best_loss + 1e-12


def test_the_served_temperature_differs_from_fitting_members_one_by_one() -> None:
    # Averaging already softens: the mean of disagreeing members needs less softening
    # than each member does on its own.
    member_logits, labels = noisy_ensemble(20_000, 5, 3, seed=7)
    per_member = np.mean([fit_temperature(m, labels) for m in member_logits])
    served = fit_ensemble_temperature(member_logits, labels)
    assert served < per_member - 0.05


def bimodal_ensemble() -> tuple[np.ndarray, np.ndarray]:
    """Two members, one right and one wrong, on rows at two logit scales: the served NLL
    has a local minimum near log T = -1.8 and the global one near log T = 1.8."""
    rows = []
    for scale in (1.0, 40.0):
        block = np.zeros((2, 50, 2))
        block[0, :, 0] = 3.0 * scale
        block[1, :, 0] = -1.0 * scale
        rows.append(block)
    return np.concatenate(rows, axis=1) * math.exp(-2.0), np.zeros(100, dtype=np.int64)


def test_the_fit_finds_the_global_minimum_when_the_served_nll_is_bimodal() -> None:
    member_logits, labels = bimodal_ensemble()

    def loss(log_temperature: float) -> float:
        return ensemble_nll(member_logits, labels, math.exp(log_temperature))

    # golden-section alone, over the whole interval, settles in the local minimum
    local = golden_section_minimum(loss, -3.0, 3.0, 1e-6)
    best_log_temperature, best_loss = scanned_minimum(member_logits, labels)
    assert local == pytest.approx(-1.815, abs=1e-2)
    assert loss(local) > best_loss + 1e-3
    fitted = fit_ensemble_temperature(member_logits, labels)
    assert math.log(fitted) == pytest.approx(best_log_temperature, abs=2e-3)
    assert loss(math.log(fitted)) <= best_loss + 1e-12


def test_golden_section_finds_the_minimum_of_a_parabola() -> None:
    assert golden_section_minimum(lambda u: (u - 0.3) ** 2, -3.0, 3.0, 1e-9) == pytest.approx(
        0.3, abs=1e-8
    )


@pytest.mark.parametrize("shape", [(4, 2), (0, 4, 2), (2, 0, 2), (2, 4, 0), (1, 2, 3, 2)], ids=str)
def test_rejects_member_logits_that_are_not_members_by_rows_by_classes(
    shape: tuple[int, ...],
) -> None:
    with pytest.raises(ValueError, match="logits"):
        ensemble_softmax(np.zeros(shape))


def test_rejects_labels_that_do_not_match_the_rows() -> None:
    with pytest.raises(ValueError, match="labels"):
        fit_ensemble_temperature(np.zeros((2, 3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        ensemble_nll(np.zeros((2, 3, 2)), np.array([0, 1, 2]))
