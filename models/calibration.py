"""Temperature scaling and the expected calibration error, in numpy alone.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T > 0 fitted on
held-out data by minimising the negative log-likelihood. It changes confidence, never
the predicted class.

The fit is a golden-section search on u = log T over [-3, 3] (T from about 0.05 to 20).
With beta = 1/T the NLL is convex in beta (a log-sum-exp of functions linear in beta),
and beta = exp(-u) is monotone, so the NLL is unimodal in u and the search finds the
minimiser on the interval; a minimiser beyond it comes back as the nearer end. This keeps
the module free of scipy, which is not one of the project's dependencies.

An ensemble serves the mean over its members of softmax(logits_k / T), and its temperature
is fitted on that mean (:func:`fit_ensemble_temperature`), not member by member. The NLL of
a mean of softmaxes is not convex in beta and need not be unimodal in u, so that fit scans
a grid on u first and refines the best grid point by golden-section within its neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

LOG_TEMPERATURE_BOUNDS = (-3.0, 3.0)
LOG_TEMPERATURE_GRID_STEP = 0.05
_INVERSE_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _check_temperature(temperature: float) -> float:
    value = float(temperature)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"temperature must be finite and positive, got {temperature!r}")
    return value


def _as_logits(logits: npt.ArrayLike) -> FloatArray:
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim < 1 or array.shape[-1] < 1:
        raise ValueError(f"logits need a class axis with at least one class, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("logits must be finite")
    return array


def as_labels(labels: npt.ArrayLike, n: int, classes: int) -> IntArray:
    """``labels`` as ``n`` class indices in ``[0, classes)``; ValueError otherwise."""
    array = np.asarray(labels)
    if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be {n} integers, got {array.dtype} {array.shape}")
    if n and (array.min() < 0 or array.max() >= classes):
        raise ValueError(f"labels must lie in [0, {classes})")
    return array.astype(np.int64)


def log_softmax(logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    """log softmax(logits / T) over the last axis, shifted by the row maximum (no overflow)."""
    scaled = _as_logits(logits) / _check_temperature(temperature)
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    result: FloatArray = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return result


def softmax(logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    """softmax(logits / T) over the last axis; the row maximum is subtracted first."""
    scaled = _as_logits(logits) / _check_temperature(temperature)
    weights = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    result: FloatArray = weights / weights.sum(axis=-1, keepdims=True)
    return result


def nll(logits: npt.ArrayLike, labels: npt.ArrayLike, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer labels under softmax(logits / T)."""
    array = _as_logits(logits)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"logits must have shape (n, classes) with n > 0, got {array.shape}")
    targets = as_labels(labels, array.shape[0], array.shape[1])
    log_probs = log_softmax(array, temperature)
    return float(-log_probs[np.arange(targets.size), targets].mean())


def golden_section_minimum(
    loss: Callable[[float], float], low: float, high: float, tolerance: float
) -> float:
    """The midpoint of the final bracket, no wider than ``tolerance``, around a minimiser of
    ``loss`` on [low, high]: exact for a unimodal loss, a local minimum otherwise."""
    if not low < high or tolerance <= 0.0:
        raise ValueError("need low < high and a positive tolerance")
    left = high - _INVERSE_GOLDEN * (high - low)
    right = low + _INVERSE_GOLDEN * (high - low)
    loss_left, loss_right = loss(left), loss(right)
    while high - low > tolerance:
        if loss_left <= loss_right:
            high, right, loss_right = right, left, loss_left
            left = high - _INVERSE_GOLDEN * (high - low)
            loss_left = loss(left)
        else:
            low, left, loss_left = left, right, loss_right
            right = low + _INVERSE_GOLDEN * (high - low)
            loss_right = loss(right)
    return (low + high) / 2.0


def fit_temperature(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    log_bounds: tuple[float, float] = LOG_TEMPERATURE_BOUNDS,
    tolerance: float = 1e-6,
) -> float:
    """The temperature minimising :func:`nll`, by golden-section search on log T.

    ``tolerance`` is the width of the final bracket in log T, so the relative error in T
    is about ``tolerance / 2``. See the module docstring for why the search is exact.
    """
    array = _as_logits(logits)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"logits must have shape (n, classes) with n > 0, got {array.shape}")
    targets = as_labels(labels, array.shape[0], array.shape[1])
    low, high = log_bounds
    if not low < high or tolerance <= 0.0:
        raise ValueError("need log_bounds low < high and a positive tolerance")

    def loss(log_temperature: float) -> float:
        return nll(array, targets, math.exp(log_temperature))

    return math.exp(golden_section_minimum(loss, low, high, tolerance))


def _as_member_logits(member_logits: npt.ArrayLike) -> FloatArray:
    array = _as_logits(member_logits)
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(
            f"member logits must have shape (members, n, classes), all > 0, got {array.shape}"
        )
    return array


def ensemble_softmax(member_logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    """What an ensemble serves: the mean over members (axis 0) of softmax(logits / T)."""
    result: FloatArray = softmax(_as_member_logits(member_logits), temperature).mean(axis=0)
    return result


def ensemble_nll(
    member_logits: npt.ArrayLike, labels: npt.ArrayLike, temperature: float = 1.0
) -> float:
    """Mean negative log-likelihood of integer labels under :func:`ensemble_softmax`.

    The log of the member mean is a log-sum-exp of member log-probabilities, so a row
    every member thinks impossible costs a large finite amount, not infinity.
    """
    array = _as_member_logits(member_logits)
    targets = as_labels(labels, array.shape[1], array.shape[2])
    log_probs = log_softmax(array, temperature)[:, np.arange(targets.size), targets]
    top = log_probs.max(axis=0)
    log_mean = top + np.log(np.exp(log_probs - top).mean(axis=0))
    return float(-log_mean.mean())


def fit_ensemble_temperature(
    member_logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    log_bounds: tuple[float, float] = LOG_TEMPERATURE_BOUNDS,
    grid_step: float = LOG_TEMPERATURE_GRID_STEP,
    tolerance: float = 1e-6,
) -> float:
    """The temperature minimising :func:`ensemble_nll`: the NLL of the served mean.

    A scan of log T in steps of ``grid_step`` over ``log_bounds`` finds the best grid
    point; golden-section search then refines it between that point's neighbours. A
    minimiser beyond the bounds comes back as the nearer end.
    """
    array = _as_member_logits(member_logits)
    targets = as_labels(labels, array.shape[1], array.shape[2])
    low, high = log_bounds
    if not low < high or tolerance <= 0.0 or grid_step <= 0.0:
        raise ValueError("need log_bounds low < high, a positive grid_step and tolerance")

    def loss(log_temperature: float) -> float:
        return ensemble_nll(array, targets, math.exp(log_temperature))

    grid = np.linspace(low, high, max(2, math.ceil((high - low) / grid_step)) + 1)
    best = int(np.argmin([loss(float(u)) for u in grid]))
    bracket_low, bracket_high = (
        float(grid[max(best - 1, 0)]),
        float(grid[min(best + 1, grid.size - 1)]),
    )
    return math.exp(golden_section_minimum(loss, bracket_low, bracket_high, tolerance))


def expected_calibration_error(
    probs: npt.ArrayLike, labels: npt.ArrayLike, bins: int = 15
) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - confidence| * count / n.

    Confidence is the largest probability and the prediction its class (lowest index on
    ties). Bins are closed on the right, (k/bins, (k+1)/bins], as in Guo et al.'s code; a
    confidence of exactly 0 joins the first bin.
    """
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"probs must have shape (n, classes) with n > 0, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("probs must be finite")
    if bins < 1:
        raise ValueError("bins must be at least 1")
    targets = as_labels(labels, array.shape[0], array.shape[1])
    confidence = array.max(axis=1)
    correct = (array.argmax(axis=1) == targets).astype(np.float64)
    inner_edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    bin_index = np.searchsorted(inner_edges, confidence, side="left")
    correct_per_bin = np.bincount(bin_index, weights=correct, minlength=bins)
    confidence_per_bin = np.bincount(bin_index, weights=confidence, minlength=bins)
    return float(np.abs(correct_per_bin - confidence_per_bin).sum() / array.shape[0])


@dataclass(frozen=True)
class TemperatureScaler:
    """One fitted temperature; ``apply`` turns logits into calibrated probabilities."""

    temperature: float = 1.0

    def __post_init__(self) -> None:
        _check_temperature(self.temperature)

    @classmethod
    def fit(cls, logits: npt.ArrayLike, labels: npt.ArrayLike) -> TemperatureScaler:
        return cls(fit_temperature(logits, labels))

    def apply(self, logits: npt.ArrayLike) -> FloatArray:
        return softmax(logits, self.temperature)

    def to_state(self) -> dict[str, Any]:
        return {"temperature": float(self.temperature)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TemperatureScaler:
        return cls(float(state["temperature"]))
