"""A cascade: a cheap triage model answers the cases it is sure of; the rest escalate.

The triage model is logistic regression on the ensemble's standardised inputs, fitted by
full-batch gradient descent in numpy (a few hundred steps over tens of thousands of rows
take well under a second). An event escalates to the ensemble when the triage model's top
probability is below ``threshold``; the threshold is chosen on validation data as the
lowest value at which the triage answers agree with the ensemble on ``agreement`` of the
cases they answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LogisticTriage:
    weights: np.ndarray  # (n_features,)
    bias: float
    mean: np.ndarray
    scale: np.ndarray

    def positive_probability(self, x: np.ndarray) -> np.ndarray:
        z = x - self.mean
        z /= self.scale
        z[np.isnan(z)] = 0.0  # a missing feature sits at its training mean
        logits = z @ self.weights + self.bias
        out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "weights": self.weights.tolist(),
            "bias": self.bias,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LogisticTriage:
        return cls(
            weights=np.array(state["weights"], dtype=np.float64),
            bias=float(state["bias"]),
            mean=np.array(state["mean"], dtype=np.float64),
            scale=np.array(state["scale"], dtype=np.float64),
        )


def fit_triage(  # noqa: PLR0913 - the data, then keyword-only tuning knobs
    x: np.ndarray,
    y: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    *,
    steps: int = 400,
    learning_rate: float = 0.5,
    l2: float = 1e-3,
) -> LogisticTriage:
    z = np.where(np.isnan((x - mean) / scale), 0.0, (x - mean) / scale)
    weights = np.zeros(z.shape[1])
    bias = 0.0
    n = len(y)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ weights + bias, -30.0, 30.0)))
        error = p - y
        weights -= learning_rate * (z.T @ error / n + l2 * weights)
        bias -= learning_rate * float(error.mean())
    return LogisticTriage(weights, bias, mean.astype(np.float64), scale.astype(np.float64))


@dataclass(frozen=True)
class Cascade:
    triage: LogisticTriage
    threshold: float  # top triage probability at or above which triage answers

    def escalate(self, x: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows the ensemble must score."""
        return self.escalating(self.triage.positive_probability(x))

    def escalating(self, positive: np.ndarray) -> np.ndarray:
        """:meth:`escalate` from the triage's positive probabilities, already computed."""
        mask: np.ndarray = np.maximum(positive, 1.0 - positive) < self.threshold
        return mask

    def to_state(self) -> dict[str, Any]:
        return {"triage": self.triage.to_state(), "threshold": self.threshold}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Cascade:
        return cls(LogisticTriage.from_state(state["triage"]), float(state["threshold"]))


def choose_threshold(
    triage: LogisticTriage,
    x: np.ndarray,
    ensemble_predicted: np.ndarray,
    agreement: float = 0.99,
) -> float:
    """The lowest threshold at which triage agrees with the ensemble on ``agreement`` of
    the rows it would answer (1.0, i.e. always escalate, when none reaches it)."""
    positive = triage.positive_probability(x)
    top = np.maximum(positive, 1.0 - positive)
    agrees = (positive >= 0.5).astype(np.int64) == ensemble_predicted
    order = np.argsort(-top)
    cumulative = np.cumsum(agrees[order]) / np.arange(1, len(order) + 1)
    good = np.nonzero(cumulative >= agreement)[0]
    if good.size == 0:
        return 1.0
    return float(top[order][good.max()])
