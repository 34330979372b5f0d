"""Ensemble uncertainty from member probabilities: entropy and its BALD decomposition.

The input is every member's class probabilities, shape (members, n, classes), as the
scoring backends return them. Entropies use the natural logarithm, so they lie in
[0, ln C]. The predictive entropy of the mean splits into the expected entropy of the
members (aleatoric: noise each member sees) and the mutual information between the
prediction and the member (epistemic: disagreement between members, BALD).

Zero probabilities contribute nothing (0 log 0 = 0); they are clipped inside the
logarithm only, so numpy never sees log(0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_SMALLEST = np.finfo(np.float64).tiny


def _as_probabilities(values: npt.ArrayLike, ndim: int, what: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {array.shape}")
    if array.shape[-1] < 1:
        raise ValueError(f"{what} needs at least one class")
    if not np.all(np.isfinite(array)) or np.any(array < 0.0):
        raise ValueError(f"{what} must be finite and non-negative")
    return array


def _entropy(probs: FloatArray) -> FloatArray:
    """Entropy over the last axis; terms with p = 0 are exactly 0."""
    logs = np.log(np.clip(probs, _SMALLEST, 1.0))
    entropy: FloatArray = -np.sum(probs * logs, axis=-1)
    # -0.0 and rounding below zero both read as zero
    return np.maximum(entropy, 0.0)


def mean_probabilities(member_probs: npt.ArrayLike) -> FloatArray:
    """The ensemble's predictive distribution, shape (n, classes)."""
    members = _as_probabilities(member_probs, 3, "member_probs")
    mean: FloatArray = members.mean(axis=0)
    return mean


def predictive_entropy(probs: npt.ArrayLike) -> FloatArray:
    """Entropy of each row of (n, classes) probabilities, in nats; pass the ensemble mean."""
    return _entropy(_as_probabilities(probs, 2, "probs"))


def expected_entropy(member_probs: npt.ArrayLike) -> FloatArray:
    """Mean over members of each member's entropy, shape (n,): the aleatoric part."""
    members = _as_probabilities(member_probs, 3, "member_probs")
    expected: FloatArray = _entropy(members).mean(axis=0)
    return expected


def mutual_information(member_probs: npt.ArrayLike) -> FloatArray:
    """BALD: entropy of the mean minus the mean member entropy, shape (n,), clipped at 0.

    Jensen makes it non-negative in exact arithmetic; the clip removes rounding below 0.
    It never exceeds the predictive entropy, since the expected entropy is non-negative.
    """
    members = _as_probabilities(member_probs, 3, "member_probs")
    information: FloatArray = _entropy(members.mean(axis=0)) - _entropy(members).mean(axis=0)
    return np.maximum(information, 0.0)


@dataclass(frozen=True, eq=False)
class Uncertainty:
    """Per-example summary of an ensemble's prediction; every field has n rows."""

    mean: FloatArray  # (n, classes) ensemble mean probabilities
    entropy: FloatArray  # (n,) predictive entropy of the mean, nats
    mutual_information: FloatArray  # (n,) epistemic part of the entropy, nats
    confidence: FloatArray  # (n,) largest mean probability
    predicted: IntArray  # (n,) class of the largest mean probability (lowest index on ties)


def summarise(member_probs: npt.ArrayLike) -> Uncertainty:
    members = _as_probabilities(member_probs, 3, "member_probs")
    mean: FloatArray = members.mean(axis=0)
    entropy = _entropy(mean)
    information = np.maximum(entropy - _entropy(members).mean(axis=0), 0.0)
    return Uncertainty(
        mean=mean,
        entropy=entropy,
        mutual_information=information,
        confidence=mean.max(axis=-1),
        predicted=mean.argmax(axis=-1).astype(np.int64),
    )
