"""Split conformal prediction sets for classification, and adaptive conformal inference.

A score measures how badly a label conforms to the predicted probabilities. On a
calibration split of n labelled examples the threshold is the k-th smallest score with
k = ceil((n + 1)(1 - alpha)): the empirical quantile at level k / n, taken as an order
statistic, as numpy's ``method="inverted_cdf"`` gives it (``"higher"`` interpolates on
(n - 1) and can land one order statistic above: 92nd of 100 instead of 91st at alpha 0.1).
For a new exchangeable example the set of labels scoring at most the threshold then
contains the true label with probability at least 1 - alpha. If k > n the threshold is
+inf and every set is full. For every method below, label y is in the set exactly when
its score is at most the threshold, so ``empirical_coverage`` of the sets and the share
of test scores under the threshold are the same number.

Scores:

``"lac"``
    1 - p_y (least ambiguous set-valued classifier, Sadinle et al., 2019). Smallest sets
    on average; a set can be empty when no class is likely enough.
``"aps"``
    Adaptive prediction sets (Romano et al., 2020). Rank the classes by probability
    (ties by class index); the score is the mass ranked strictly above y plus u * p_y.
    The default is deterministic with u = 0: the set takes classes in rank order until
    their mass exceeds the threshold, the class that crosses it included, so it always
    holds the top class. (The u = 1 score, the mass up to and including y, covers far
    above nominal with few classes: a label ranked last scores exactly 1, so with three
    classes the 90% threshold is often 1 and every set is full.) ``randomised=True``
    draws u ~ U(0, 1) per example from a seeded Generator, at calibration and at
    prediction time; coverage is then exact up to the order statistic, but a set can be
    empty.

``AdaptiveConformal`` follows Gibbs and Candes (2021) for data that drift away from the
calibration split: after each example, alpha_t += gamma * (alpha - err_t), err_t = 1 when
the set missed the label. Whatever the data, the long-run miss rate over T steps is within
(max(alpha_1, 1 - alpha_1) + gamma) / (gamma * T) of alpha.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models.calibration import as_labels

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ScoreMethod = Literal["lac", "aps"]
RandomSource = np.random.Generator | int | None

DEFAULT_GAMMA = 0.005  # the step size used by Gibbs and Candes


def _as_probs(probs: npt.ArrayLike) -> FloatArray:
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"probs must have shape (n, classes), got {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0.0):
        raise ValueError("probs must be finite and non-negative")
    return array


def _method(value: object) -> ScoreMethod:
    if value == "lac":
        return "lac"
    if value == "aps":
        return "aps"
    raise ValueError(f"method must be 'lac' or 'aps', got {value!r}")


def _check_randomised(method: ScoreMethod, randomised: bool) -> None:
    if randomised and method != "aps":
        raise ValueError("only 'aps' has a randomised variant")


def _generator(rng: RandomSource) -> np.random.Generator:
    if rng is None:
        raise ValueError("randomised APS needs a seed or a numpy Generator")
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _mass_ranked_before(probs: FloatArray) -> FloatArray:
    """For each class, the total probability of the classes ranked above it."""
    order = np.argsort(-probs, axis=1, kind="stable")
    ranked = np.take_along_axis(probs, order, axis=1)
    ranked_before = np.zeros_like(ranked)
    ranked_before[:, 1:] = np.cumsum(ranked[:, :-1], axis=1)
    before = np.empty_like(probs)
    np.put_along_axis(before, order, ranked_before, axis=1)
    return before


def lac_scores(probs: npt.ArrayLike, labels: npt.ArrayLike) -> FloatArray:
    """1 - p_y for each example."""
    array = _as_probs(probs)
    targets = as_labels(labels, *array.shape)
    scores: FloatArray = 1.0 - array[np.arange(targets.size), targets]
    return scores


def aps_scores(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    randomised: bool = False,
    rng: RandomSource = None,
) -> FloatArray:
    """Mass ranked strictly above y, plus u * p_y with u ~ U(0, 1) when randomised."""
    array = _as_probs(probs)
    targets = as_labels(labels, *array.shape)
    rows = np.arange(targets.size)
    before = _mass_ranked_before(array)[rows, targets]
    if not randomised:
        return before
    uniform = _generator(rng).random(targets.size)
    scores: FloatArray = before + uniform * array[rows, targets]
    return scores


def nonconformity_scores(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    method: ScoreMethod = "lac",
    *,
    randomised: bool = False,
    rng: RandomSource = None,
) -> FloatArray:
    checked = _method(method)
    _check_randomised(checked, randomised)
    if checked == "lac":
        return lac_scores(probs, labels)
    return aps_scores(probs, labels, randomised=randomised, rng=rng)


def conformal_rank(n: int, alpha: float) -> int:
    """k = ceil((n + 1)(1 - alpha)), the product taken to 9 decimals first.

    Floating point makes an exact integer product a hair too large (9 * (1 - 1/3) is
    6.000000000000001, 10 * (1 - 0.1) is 9.000000000000002); taken raw, ceil would move
    the threshold one order statistic up for such alphas.
    """
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha!r}")
    return math.ceil(round((n + 1) * (1.0 - alpha), 9))


def _threshold_from_sorted(sorted_scores: FloatArray, alpha: float) -> float:
    n = sorted_scores.size
    rank = conformal_rank(n, alpha)
    if rank > n:
        return math.inf
    if rank < 1:
        return -math.inf
    return float(sorted_scores[rank - 1])


def _as_scores(scores: npt.ArrayLike) -> FloatArray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError("scores must be a non-empty 1-D array of finite numbers")
    return array


def conformal_threshold(scores: npt.ArrayLike, alpha: float) -> float:
    """The k-th smallest score, k = ceil((n + 1)(1 - alpha)); +inf when k > n, -inf when k < 1."""
    return _threshold_from_sorted(np.sort(_as_scores(scores)), alpha)


def _encode_threshold(threshold: float) -> float | str:
    # JSON has no infinities (orjson would write null): keep them as "inf" / "-inf"
    return threshold if math.isfinite(threshold) else str(threshold)


@dataclass(frozen=True)
class ConformalPredictor:
    """Prediction sets at one threshold. ``alpha`` records the level it was fitted for."""

    method: ScoreMethod
    alpha: float
    threshold: float
    randomised: bool = False

    def __post_init__(self) -> None:
        _check_randomised(_method(self.method), self.randomised)
        if math.isnan(self.threshold) or math.isnan(self.alpha):
            raise ValueError("alpha and threshold must be numbers")

    def predict_mask(self, probs: npt.ArrayLike, rng: RandomSource = None) -> BoolArray:
        """Boolean (n, classes): True where the class is in the example's set."""
        array = _as_probs(probs)
        if self.method == "lac":
            lac: BoolArray = (1.0 - array) <= self.threshold
            return lac
        before = _mass_ranked_before(array)
        if not self.randomised:
            deterministic: BoolArray = before <= self.threshold
            return deterministic
        uniform = _generator(rng).random((int(array.shape[0]), 1))
        randomised: BoolArray = before + uniform * array <= self.threshold
        return randomised

    def predict_sets(self, probs: npt.ArrayLike, rng: RandomSource = None) -> list[tuple[int, ...]]:
        """Each example's set as class indices in ascending order."""
        mask = self.predict_mask(probs, rng)
        return [tuple(int(label) for label in np.flatnonzero(row)) for row in mask]

    def set_sizes(self, probs: npt.ArrayLike, rng: RandomSource = None) -> IntArray:
        sizes: IntArray = self.predict_mask(probs, rng).sum(axis=1).astype(np.int64)
        return sizes

    def to_state(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "alpha": float(self.alpha),
            "threshold": _encode_threshold(self.threshold),
            "randomised": self.randomised,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ConformalPredictor:
        return cls(
            method=_method(state["method"]),
            alpha=float(state["alpha"]),
            threshold=float(state["threshold"]),
            randomised=bool(state.get("randomised", False)),
        )


@dataclass(frozen=True, eq=False)
class CalibrationScores:
    """A calibration split's scores, sorted and read-only: a threshold at any level."""

    method: ScoreMethod
    scores: FloatArray
    randomised: bool = False

    def __post_init__(self) -> None:
        _check_randomised(_method(self.method), self.randomised)
        ordered = np.sort(_as_scores(self.scores))
        ordered.setflags(write=False)
        object.__setattr__(self, "scores", ordered)

    @classmethod
    def compute(
        cls,
        probs: npt.ArrayLike,
        labels: npt.ArrayLike,
        method: ScoreMethod = "lac",
        *,
        randomised: bool = False,
        rng: RandomSource = None,
    ) -> CalibrationScores:
        scores = nonconformity_scores(probs, labels, method, randomised=randomised, rng=rng)
        return cls(method=method, scores=scores, randomised=randomised)

    def threshold(self, alpha: float) -> float:
        """Any finite alpha: alpha <= 0 gives +inf (full sets), alpha near 1 -inf (empty)."""
        return _threshold_from_sorted(self.scores, alpha)

    def predictor(self, alpha: float) -> ConformalPredictor:
        return ConformalPredictor(self.method, alpha, self.threshold(alpha), self.randomised)

    def to_state(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "randomised": self.randomised,
            "scores": [float(score) for score in self.scores],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CalibrationScores:
        return cls(
            method=_method(state["method"]),
            scores=np.asarray(state["scores"], dtype=np.float64),
            randomised=bool(state.get("randomised", False)),
        )


def calibrate(  # noqa: PLR0913 - the randomised variant needs its flag and its seed
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    alpha: float,
    method: ScoreMethod = "lac",
    *,
    randomised: bool = False,
    rng: RandomSource = None,
) -> ConformalPredictor:
    """Split conformal calibration at miscoverage ``alpha`` in (0, 1)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    scores = CalibrationScores.compute(probs, labels, method, randomised=randomised, rng=rng)
    return scores.predictor(alpha)


def empirical_coverage(sets_mask: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Share of examples whose set holds the true label."""
    mask = np.asarray(sets_mask)
    if mask.dtype != np.bool_ or mask.ndim != 2 or mask.shape[0] == 0:
        raise ValueError(f"sets_mask must be a non-empty boolean (n, classes), got {mask.shape}")
    targets = as_labels(labels, *mask.shape)
    return float(mask[np.arange(targets.size), targets].mean())


@dataclass(frozen=True, eq=False)
class AdaptiveConformal:
    """Adaptive conformal inference: the working level alpha_t moves after each outcome.

    Immutable: ``update`` returns the next state, so the state is a fold over outcomes.
    ``steps`` and ``misses`` count the outcomes seen; misses / steps tends to ``alpha``.
    """

    calibration: CalibrationScores
    alpha: float
    gamma: float
    alpha_t: float
    steps: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha!r}")
        if not (math.isfinite(self.gamma) and self.gamma > 0.0):
            raise ValueError(f"gamma must be finite and positive, got {self.gamma!r}")
        if not math.isfinite(self.alpha_t):
            raise ValueError(f"alpha_t must be finite, got {self.alpha_t!r}")

    @classmethod
    def start(
        cls, calibration: CalibrationScores, alpha: float, gamma: float = DEFAULT_GAMMA
    ) -> AdaptiveConformal:
        return cls(calibration=calibration, alpha=alpha, gamma=gamma, alpha_t=alpha)

    @property
    def threshold(self) -> float:
        return self.calibration.threshold(self.alpha_t)

    def predictor(self) -> ConformalPredictor:
        return self.calibration.predictor(self.alpha_t)

    def predict_mask(self, probs: npt.ArrayLike, rng: RandomSource = None) -> BoolArray:
        return self.predictor().predict_mask(probs, rng)

    def update(self, covered: bool) -> AdaptiveConformal:
        """The state after one outcome: was the true label in the set?"""
        return self.update_many((covered,))

    def update_many(self, covered: Iterable[bool | np.bool_]) -> AdaptiveConformal:
        """The state after several outcomes, applied in order (sets of one micro-batch)."""
        alpha_t, steps, misses = self.alpha_t, self.steps, self.misses
        for outcome in covered:
            error = 0 if outcome else 1
            alpha_t += self.gamma * (self.alpha - error)
            steps += 1
            misses += error
        return replace(self, alpha_t=alpha_t, steps=steps, misses=misses)

    def to_state(self) -> dict[str, Any]:
        return {
            "alpha": float(self.alpha),
            "gamma": float(self.gamma),
            "alpha_t": float(self.alpha_t),
            "steps": self.steps,
            "misses": self.misses,
            "calibration": self.calibration.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> AdaptiveConformal:
        return cls(
            calibration=CalibrationScores.from_state(state["calibration"]),
            alpha=float(state["alpha"]),
            gamma=float(state["gamma"]),
            alpha_t=float(state["alpha_t"]),
            steps=int(state["steps"]),
            misses=int(state["misses"]),
        )
