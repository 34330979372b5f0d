"""Conformal sets: coverage on seeded synthetic data, brute-force thresholds, properties, ACI."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.conformal import (
    AdaptiveConformal,
    CalibrationScores,
    ConformalPredictor,
    ScoreMethod,
    aps_scores,
    calibrate,
    conformal_rank,
    conformal_threshold,
    empirical_coverage,
    lac_scores,
    nonconformity_scores,
)

N_CALIBRATION = 20_000
N_TEST = 20_000
CLASSES = 3


def softmax(logits: np.ndarray) -> np.ndarray:
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs: np.ndarray = weights / weights.sum(axis=1, keepdims=True)
    return probs


def draw_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row, drawn from that row's probabilities."""
    uniform = rng.random((int(probs.shape[0]), 1))
    labels: np.ndarray = np.minimum(
        (np.cumsum(probs, axis=1) < uniform).sum(axis=1), probs.shape[1] - 1
    )
    return labels


class Split(NamedTuple):
    probs: np.ndarray
    labels: np.ndarray


class Synthetic(NamedTuple):
    calibration: Split
    test: Split


@pytest.fixture(scope="module")
def synthetic() -> Synthetic:
    """A calibrated 3-class model: labels are drawn from the probabilities it reports."""
    rng = np.random.default_rng(20240601)
    probs = softmax(rng.normal(scale=2.0, size=(N_CALIBRATION + N_TEST, CLASSES)))
    labels = draw_labels(probs, rng)
    return Synthetic(
        Split(probs[:N_CALIBRATION], labels[:N_CALIBRATION]),
        Split(probs[N_CALIBRATION:], labels[N_CALIBRATION:]),
    )


VARIANTS: list[tuple[ScoreMethod, bool]] = [("lac", False), ("aps", False), ("aps", True)]


@pytest.mark.parametrize("alpha", [0.1, 0.05])
@pytest.mark.parametrize(("method", "randomised"), VARIANTS)
def test_held_out_coverage_is_nominal(
    synthetic: Synthetic, method: ScoreMethod, randomised: bool, alpha: float
) -> None:
    calibration, test = synthetic
    predictor = calibrate(*calibration, alpha, method, randomised=randomised, rng=1)
    mask = predictor.predict_mask(test.probs, rng=2)
    coverage = empirical_coverage(mask, test.labels)
    assert coverage == pytest.approx(1.0 - alpha, abs=0.015)
    assert 1.0 < mask.sum(axis=1).mean() < CLASSES  # informative, not trivial


def test_deterministic_aps_sets_are_never_empty(synthetic: Synthetic) -> None:
    predictor = calibrate(*synthetic.calibration, 0.1, "aps")
    assert predictor.set_sizes(synthetic.test.probs).min() >= 1


def test_lac_threshold_is_the_brute_force_order_statistic(synthetic: Synthetic) -> None:
    probs, labels = synthetic.calibration
    for alpha in (0.2, 0.1, 0.05, 0.01):
        scores = sorted(1.0 - probs[i, labels[i]] for i in range(N_CALIBRATION))
        rank = math.ceil((N_CALIBRATION + 1) * (1.0 - alpha))
        predictor = calibrate(probs, labels, alpha, "lac")
        assert predictor.threshold == scores[rank - 1]
        level = rank / N_CALIBRATION
        assert predictor.threshold == np.quantile(scores, level, method="inverted_cdf")


def test_threshold_on_a_tiny_example() -> None:
    scores = [0.5, 0.1, 0.4, 0.3, 0.2, 0.9, 0.8, 0.7, 0.6]  # n = 9
    assert conformal_threshold(scores, 0.2) == 0.8  # ceil(10 * 0.8) = 8th smallest
    assert conformal_threshold(scores, 0.1) == 0.9  # ceil(10 * 0.9) = 9th: exact, no round-up
    assert conformal_threshold(scores, 0.05) == math.inf  # 10th of 9: every set is full
    assert conformal_threshold(scores, 0.0) == math.inf
    assert conformal_threshold(scores, 1.0) == -math.inf


@pytest.mark.parametrize(
    ("n", "alpha", "rank"),
    [
        (8, 1 / 3, 6),
        (9, 0.1, 9),
        (9, 0.2, 8),
        (99, 0.1, 90),
        (100, 0.1, 91),
        (4, 0.5, 3),
        (9, 0.05, 10),
    ],
)
def test_rank_is_exact_when_the_product_is_an_integer(n: int, alpha: float, rank: int) -> None:
    assert conformal_rank(n, alpha) == rank


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10_000), st.integers(1, 999))
def test_rank_matches_exact_arithmetic_for_decimal_alphas(n: int, per_mille: int) -> None:
    exact = Fraction(n + 1) * (1 - Fraction(per_mille, 1000))
    assert conformal_rank(n, per_mille / 1000) == math.ceil(exact)


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 0.5, 1.0])),
    st.floats(0.001, 0.999),
)
@example(np.array([0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), 1 / 3)  # 9 * (1 - 1/3) in floats
def test_threshold_is_the_conformal_rank_even_with_ties(scores: np.ndarray, alpha: float) -> None:
    threshold = conformal_threshold(scores, alpha)
    rank = conformal_rank(scores.size, alpha)
    if rank > scores.size:
        assert threshold == math.inf
    else:
        assert np.count_nonzero(scores <= threshold) >= rank
        assert np.count_nonzero(scores < threshold) < rank


probability_rows = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 8), st.integers(1, 5)),
    elements=st.sampled_from([0.0, 0.25, 1.0]) | st.floats(0.0, 1.0),
).map(lambda w: np.where(w.sum(axis=1, keepdims=True) > 0, w, 1.0))


@settings(max_examples=200, deadline=None)
@given(
    probability_rows.map(lambda w: w / w.sum(axis=1, keepdims=True)),
    st.sampled_from(VARIANTS),
    st.floats(-0.1, 1.1),
    st.integers(0, 2**32 - 1),
)
def test_a_label_is_in_its_set_exactly_when_its_score_is_under_the_threshold(
    probs: np.ndarray, variant: tuple[ScoreMethod, bool], threshold: float, seed: int
) -> None:
    method, randomised = variant
    classes = probs.shape[1]
    predictor = ConformalPredictor(method, 0.1, threshold, randomised)
    mask = predictor.predict_mask(probs, rng=np.random.default_rng(seed))
    for label in range(classes):
        labels = np.full(probs.shape[0], label)
        scores = nonconformity_scores(
            probs, labels, method, randomised=randomised, rng=np.random.default_rng(seed)
        )
        assert np.array_equal(mask[:, label], scores <= threshold)
    if method == "aps" and not randomised and threshold >= 0.0:
        assert np.all(mask.sum(axis=1) >= 1)


def test_scores_by_hand() -> None:
    probs = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    assert lac_scores(probs, np.array([0, 1])) == pytest.approx([0.8, 0.6])
    # ranks: row 0 is 1, 2, 0; row 1 breaks the tie by class index: 0, 1, 2
    assert aps_scores(probs, np.array([0, 1])) == pytest.approx([0.8, 0.4])
    assert aps_scores(probs, np.array([1, 0])) == pytest.approx([0.0, 0.0])
    uniform = np.random.default_rng(9).random(2)
    randomised = aps_scores(probs, np.array([0, 2]), randomised=True, rng=9)
    assert randomised == pytest.approx([0.8 + uniform[0] * 0.2, 0.8 + uniform[1] * 0.2])


def test_sets_by_hand() -> None:
    probs = np.array([[0.2, 0.5, 0.3], [0.05, 0.9, 0.05]])
    lac = ConformalPredictor("lac", 0.1, 0.75, randomised=False)
    assert lac.predict_sets(probs) == [(1, 2), (1,)]
    aps = ConformalPredictor("aps", 0.1, 0.6, randomised=False)
    # row 0: mass above class 1, 2, 0 is 0, 0.5, 0.8 -> {1, 2}; row 1: 0, 0.9, 0.95 -> {1}
    assert aps.predict_sets(probs) == [(1, 2), (1,)]
    assert aps.set_sizes(probs).tolist() == [2, 1]


def test_sets_grow_as_alpha_shrinks(synthetic: Synthetic) -> None:
    for method in ("lac", "aps"):
        wide = calibrate(*synthetic.calibration, 0.05, method).predict_mask(synthetic.test.probs)
        narrow = calibrate(*synthetic.calibration, 0.1, method).predict_mask(synthetic.test.probs)
        assert np.all(wide | ~narrow)


def test_empirical_coverage_by_hand() -> None:
    mask = np.array([[True, False], [True, True], [False, True], [False, True]])
    assert empirical_coverage(mask, np.array([0, 0, 0, 1])) == 0.75


def test_randomised_sets_need_a_seed_and_only_aps_has_them() -> None:
    probs = np.array([[0.6, 0.4]])
    with pytest.raises(ValueError, match="seed"):
        ConformalPredictor("aps", 0.1, 0.5, randomised=True).predict_mask(probs)
    with pytest.raises(ValueError, match="aps"):
        ConformalPredictor("lac", 0.1, 0.5, randomised=True)
    with pytest.raises(ValueError, match="alpha"):
        calibrate(probs, np.array([0]), 1.0)


@pytest.mark.parametrize(
    "predictor",
    [
        ConformalPredictor("lac", 0.1, 0.8125),
        ConformalPredictor("aps", 0.05, 0.9375, randomised=True),
        calibrate(np.array([[0.7, 0.3]]), np.array([0]), 0.1, "aps"),  # 1 example: +inf
        ConformalPredictor("aps", 1.2, -math.inf),
    ],
)
def test_predictor_state_round_trips_through_json(predictor: ConformalPredictor) -> None:
    restored = ConformalPredictor.from_state(json.loads(json.dumps(predictor.to_state())))
    assert restored == predictor


def test_infinite_thresholds_give_full_and_empty_sets() -> None:
    probs = np.array([[0.7, 0.3, 0.0]])
    for method in ("lac", "aps"):
        assert ConformalPredictor(method, 0.0, math.inf).set_sizes(probs).tolist() == [3]
        assert ConformalPredictor(method, 1.0, -math.inf).set_sizes(probs).tolist() == [0]


def test_calibration_scores_are_sorted_read_only_and_round_trip() -> None:
    scores = CalibrationScores("aps", np.array([0.3, 0.1, 0.2]))
    assert scores.scores.tolist() == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="read-only"):
        scores.scores[0] = 1.0
    restored = CalibrationScores.from_state(json.loads(json.dumps(scores.to_state())))
    assert restored.scores.tolist() == scores.scores.tolist()
    assert restored.method == "aps"


def test_aci_update_follows_the_recursion() -> None:
    calibration = CalibrationScores("lac", np.linspace(0.0, 1.0, 101))
    outcomes = [True, False, True, True, False, True, True, True, True, False]
    stepped = AdaptiveConformal.start(calibration, alpha=0.1, gamma=0.05)
    alpha_t = 0.1
    for covered in outcomes:
        stepped = stepped.update(covered)
        alpha_t += 0.05 * (0.1 - (0 if covered else 1))
        assert stepped.alpha_t == alpha_t
    batched = AdaptiveConformal.start(calibration, alpha=0.1, gamma=0.05).update_many(
        np.array(outcomes)
    )
    assert batched.alpha_t == stepped.alpha_t
    assert (batched.steps, batched.misses) == (10, 3)
    restored = AdaptiveConformal.from_state(json.loads(json.dumps(stepped.to_state())))
    assert restored.to_state() == stepped.to_state()
    assert restored.threshold == stepped.threshold == calibration.threshold(alpha_t)


def test_aci_restores_coverage_after_the_data_turn_noisy() -> None:
    """The model keeps its confidence while the labels get noisier than it says."""
    alpha, gamma, clean, noisy = 0.1, 0.01, 2_000, 10_000
    rng = np.random.default_rng(77)
    calibration_logits = rng.normal(scale=2.0, size=(5_000, CLASSES))
    calibration_probs = softmax(calibration_logits)
    calibration_labels = draw_labels(calibration_probs, rng)
    stream_logits = rng.normal(scale=2.0, size=(clean + noisy, CLASSES))
    stream_probs = softmax(stream_logits)
    truth = np.concatenate([stream_probs[:clean], softmax(stream_logits[clean:] / 4.0)])
    stream_labels = draw_labels(truth, rng)

    scores = CalibrationScores.compute(calibration_probs, calibration_labels, "lac")
    static = scores.predictor(alpha).predict_mask(stream_probs[clean:])
    static_coverage = empirical_coverage(static, stream_labels[clean:])

    aci = AdaptiveConformal.start(scores, alpha, gamma)
    at_shift = aci
    for t in range(clean + noisy):
        if t == clean:
            at_shift = aci
        mask = aci.predict_mask(stream_probs[t : t + 1])
        aci = aci.update(bool(mask[0, stream_labels[t]]))
    assert aci.steps == clean + noisy
    aci_coverage = 1.0 - (aci.misses - at_shift.misses) / noisy
    # Gibbs and Candes: alpha_t stays in [-gamma, 1 + gamma], so over any stretch of T steps
    # |miss rate - alpha| = |alpha_end - alpha_start| / (gamma * T) <= (1 + 2 gamma) / (gamma T)
    bound = (1.0 + 2.0 * gamma) / (gamma * noisy)
    assert static_coverage < 1.0 - alpha - 0.05
    assert abs(aci_coverage - (1.0 - alpha)) <= min(bound, 0.015)
    whole_run = (max(alpha, 1.0 - alpha) + gamma) / (gamma * aci.steps)
    assert abs(aci.misses / aci.steps - alpha) <= whole_run
    assert aci.alpha_t < alpha  # it had to ask for a higher level
