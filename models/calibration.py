"""Temperature scaling and the expected calibration error, in numpy alone.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T > 0 fitted on
held-out data by minimising the negative log-likelihood. It changes confidence, never
the predicted class.

The fit is a golden-section search on u = log T over [-3, 3] (T from about 0.05 to 20).
With beta = 1/T the NLL is convex in beta (a log-sum-exp of functions linear in beta),
and beta = exp(-u) is monotone, so the NLL is unimodal in u and the search finds the
minimiser on the interval; a minimiser beyond it comes back as the nearer end. This keeps
the module free of scipy, which is not one of the project's dependencies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

LOG_TEMPERATURE_BOUNDS = (-3.0, 3.0)
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


def _as_labels(labels: npt.ArrayLike, n: int, classes: int) -> IntArray:
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
    targets = _as_labels(labels, array.shape[0], array.shape[1])
    log_probs = log_softmax(array, temperature)
    return float(-log_probs[np.arange(targets.size), targets].mean())


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
    targets = _as_labels(labels, array.shape[0], array.shape[1])
    low, high = log_bounds
    if not low < high or tolerance <= 0.0:
        raise ValueError("need log_bounds low < high and a positive tolerance")

    def loss(log_temperature: float) -> float:
        return nll(array, targets, math.exp(log_temperature))

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
    return math.exp((low + high) / 2.0)


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
    targets = _as_labels(labels, array.shape[0], array.shape[1])
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
