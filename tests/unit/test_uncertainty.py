"""Ensemble uncertainty: known cases by hand, bounds as properties, numpy as the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.uncertainty import (
    Uncertainty,
    expected_entropy,
    mean_probabilities,
    mutual_information,
    predictive_entropy,
    summarise,
)


def test_identical_members_have_no_mutual_information() -> None:
    member = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    members = np.stack([member, member, member])
    assert mutual_information(members) == pytest.approx([0.0, 0.0], abs=1e-15)
    assert expected_entropy(members) == pytest.approx(predictive_entropy(member))


def test_members_certain_of_different_classes_disagree_by_ln_2() -> None:
    members = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert mean_probabilities(members) == pytest.approx(np.array([[0.5, 0.5]]))
    assert predictive_entropy(mean_probabilities(members)) == pytest.approx([math.log(2.0)])
    assert expected_entropy(members) == pytest.approx([0.0])
    assert mutual_information(members) == pytest.approx([math.log(2.0)])


@pytest.mark.parametrize("classes", [1, 2, 5, 10])
def test_uniform_probabilities_have_entropy_ln_classes(classes: int) -> None:
    uniform = np.full((1, 4, classes), 1.0 / classes)
    assert predictive_entropy(uniform[0]) == pytest.approx(np.full(4, math.log(classes)))
    assert mutual_information(uniform) == pytest.approx(np.zeros(4), abs=1e-15)


def test_certain_prediction_has_zero_entropy_without_warnings() -> None:
    # pytest turns numpy's log(0) RuntimeWarning into an error, so this also checks clipping
    certain = np.array([[[0.0, 1.0, 0.0]]])
    assert predictive_entropy(certain[0]).tolist() == [0.0]
    assert expected_entropy(certain).tolist() == [0.0]


def test_summary_reports_mean_confidence_and_class() -> None:
    members = np.array(
        [
            [[0.6, 0.4], [0.1, 0.9]],
            [[0.8, 0.2], [0.3, 0.7]],
        ]
    )
    summary = summarise(members)
    assert isinstance(summary, Uncertainty)
    assert summary.mean == pytest.approx(np.array([[0.7, 0.3], [0.2, 0.8]]))
    assert summary.confidence == pytest.approx([0.7, 0.8])
    assert summary.predicted.tolist() == [0, 1]
    assert summary.predicted.dtype == np.int64
    assert summary.entropy == pytest.approx(predictive_entropy(summary.mean))
    assert summary.mutual_information == pytest.approx(mutual_information(members))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 3)),  # no member axis
        -np.ones((1, 2, 2)),
        np.full((1, 1, 2), np.nan),
    ],
)
def test_rejects_malformed_member_probabilities(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="member_probs"):
        mutual_information(bad)


@st.composite
def member_probabilities(draw: st.DrawFn) -> np.ndarray:
    shape = (
        draw(st.integers(1, 5)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 6)),
    )
    # exact zeros and one-hot rows are the edge cases worth drawing often
    weights = draw(
        hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    )
    totals = weights.sum(axis=-1, keepdims=True)
    uniform = np.full_like(weights, 1.0 / shape[-1])
    safe_totals = np.where(totals > 0.0, totals, 1.0)
    return np.where(totals > 0.0, weights / safe_totals, uniform)


@settings(max_examples=200, deadline=None)
@given(member_probabilities())
def test_entropy_bounds_hold(members: np.ndarray) -> None:
    classes = members.shape[-1]
    entropy = predictive_entropy(mean_probabilities(members))
    information = mutual_information(members)
    assert np.all(information >= 0.0)
    assert np.all(information <= entropy)
    assert np.all(entropy <= math.log(classes) + 1e-12)


@settings(max_examples=100, deadline=None)
@given(member_probabilities())
def test_decomposition_matches_a_direct_computation(members: np.ndarray) -> None:
    def entropy(p: np.ndarray) -> np.ndarray:
        terms = [[-sum(x * math.log(x) for x in row if x > 0.0) for row in m] for m in p]
        return np.array(terms)

    mean = members.mean(axis=0)
    expected = entropy(members).mean(axis=0)
    assert predictive_entropy(mean) == pytest.approx(entropy(mean[np.newaxis])[0], abs=1e-12)
    assert expected_entropy(members) == pytest.approx(expected, abs=1e-12)
    direct = np.maximum(entropy(mean[np.newaxis])[0] - expected, 0.0)
    assert mutual_information(members) == pytest.approx(direct, abs=1e-12)
