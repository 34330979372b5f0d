"""Online metrics per model version and route, over the latest labelled outcomes.

Each (version, route) keeps its last ``window`` outcomes (probability of the positive class,
label) and, over exactly those, River's accuracy, precision, recall and F1 (one shared
confusion matrix), rolling ROC AUC (``RollingROCAUC`` with the same window) and log loss,
and the expected calibration error. A window rather than the whole life of a version: a
decay after a drift must show up in the figures, not be averaged away by the months before
it. Each outcome costs O(1): it updates the metrics and reverts the one leaving the window
(RollingROCAUC keeps its own window of the same length, O(log window)).

The decision is positive when the probability is above ``threshold`` (0.5: ties go to the
negative class, as an argmax that prefers the lower index). ECE is top-label, as
``models.calibration.expected_calibration_error`` computes it on [1 - p, p]: confidence is
max(p, 1 - p), ``bins`` equal-width bins closed on the right, sum of |accuracy - confidence|
* count / n. ROC AUC is None while the window holds a single class (River reports 0 then).

``to_state`` keeps each window's outcomes; ``from_state`` replays them, so the restored
metrics are those of the same window.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from river import metrics as river_metrics

DEFAULT_WINDOW = 1_000
ECE_BINS = 15

# River's metric classes are untyped; reached through Any, their calls type-check as Any.
metrics: Any = river_metrics

Snapshot = dict[str, dict[str, dict[str, float | int | None]]]


class SlidingCalibrationError:
    """Top-label ECE of binary outcomes, kept per bin so that an outcome can be taken back."""

    def __init__(self, bins: int = ECE_BINS) -> None:
        if bins < 1:
            raise ValueError("bins must be at least 1")
        self.bins = bins
        self._inner_edges = [float(e) for e in np.linspace(0.0, 1.0, bins + 1)[1:-1]]
        self._count = [0] * bins
        self._correct = [0] * bins
        self._confidence = [0.0] * bins
        self.n = 0

    def _bin(self, probability: float, label: bool) -> tuple[int, float, int]:
        positive = probability > 0.5  # the top label of two classes
        confidence = probability if positive else 1.0 - probability
        index = bisect.bisect_left(self._inner_edges, confidence)
        return index, confidence, int(positive == label)

    def update(self, probability: float, label: bool) -> None:
        index, confidence, correct = self._bin(probability, label)
        self._count[index] += 1
        self._correct[index] += correct
        self._confidence[index] += confidence
        self.n += 1

    def revert(self, probability: float, label: bool) -> None:
        index, confidence, correct = self._bin(probability, label)
        self._count[index] -= 1
        self._correct[index] -= correct
        self._confidence[index] = (
            self._confidence[index] - confidence if self._count[index] else 0.0
        )
        self.n -= 1

    def get(self) -> float | None:
        if self.n == 0:
            return None
        gaps = (
            abs(correct - confidence)
            for correct, confidence in zip(self._correct, self._confidence, strict=True)
        )
        return math.fsum(gaps) / self.n


class _ArmMetrics:
    def __init__(self, window: int, bins: int, threshold: float) -> None:
        self.threshold = threshold
        self.count = 0
        self.recent: deque[tuple[float, bool]] = deque()
        self.window = window
        self.positives = 0
        self.confusion: Any = metrics.ConfusionMatrix()
        self.accuracy = metrics.Accuracy(cm=self.confusion)
        self.precision = metrics.Precision(cm=self.confusion)
        self.recall = metrics.Recall(cm=self.confusion)
        self.f1 = metrics.F1(cm=self.confusion)
        self.log_loss = metrics.LogLoss()
        self.roc_auc = metrics.RollingROCAUC(window_size=window)
        self.ece = SlidingCalibrationError(bins)

    def update(self, probability: float, label: bool) -> None:
        if len(self.recent) == self.window:
            old_probability, old_label = self.recent.popleft()
            self.confusion.revert(old_label, old_probability > self.threshold)
            self.log_loss.revert(old_label, old_probability)
            self.ece.revert(old_probability, old_label)
            self.positives -= old_label
        self.recent.append((probability, label))
        self.count += 1
        self.positives += label
        self.confusion.update(label, probability > self.threshold)
        self.log_loss.update(label, probability)
        self.roc_auc.update(label, probability)
        self.ece.update(probability, label)

    def snapshot(self) -> dict[str, float | int | None]:
        both_classes = 0 < self.positives < len(self.recent)
        return {
            "count": self.count,
            "window": len(self.recent),
            "accuracy": float(self.accuracy.get()),
            "precision": float(self.precision.get()),
            "recall": float(self.recall.get()),
            "f1": float(self.f1.get()),
            "roc_auc": float(self.roc_auc.get()) if both_classes else None,
            "log_loss": float(self.log_loss.get()),
            "ece": self.ece.get(),
        }


def _probability(value: float) -> float:
    probability = float(value)
    if not 0.0 <= probability <= 1.0:  # NaN fails too
        raise ValueError(f"probability must lie in [0, 1], got {value!r}")
    return probability


def _label(value: bool | int) -> bool:
    if value not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {value!r}")
    return bool(value)


class OnlineMetrics:
    """Metrics per (model version, route) over each one's last ``window`` outcomes."""

    def __init__(
        self, *, window: int = DEFAULT_WINDOW, bins: int = ECE_BINS, threshold: float = 0.5
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
        self.window = window
        self.bins = bins
        self.threshold = threshold
        self._arms: dict[tuple[str, str], _ArmMetrics] = {}

    def update(
        self, version: str, route: str, probability_of_positive: float, label: bool | int
    ) -> None:
        """One labelled outcome; ValueError on a probability outside [0, 1] or a bad label."""
        probability, outcome = _probability(probability_of_positive), _label(label)
        arm = self._arms.get((version, route))
        if arm is None:
            arm = self._arms[version, route] = _ArmMetrics(self.window, self.bins, self.threshold)
        arm.update(probability, outcome)

    def snapshot(self) -> Snapshot:
        """{version: {route: {count, window, accuracy, ..., log_loss, ece}}}, JSON-ready."""
        result: Snapshot = {}
        for (version, route), arm in sorted(self._arms.items()):
            result.setdefault(version, {})[route] = arm.snapshot()
        return result

    def to_state(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "bins": self.bins,
            "threshold": self.threshold,
            "arms": [
                {
                    "version": version,
                    "route": route,
                    "count": arm.count,
                    "recent": [[p, int(y)] for p, y in arm.recent],
                }
                for (version, route), arm in sorted(self._arms.items())
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> OnlineMetrics:
        restored = cls(
            window=int(state["window"]),
            bins=int(state["bins"]),
            threshold=float(state["threshold"]),
        )
        for raw in state["arms"]:
            for probability, label in raw["recent"]:
                restored.update(raw["version"], raw["route"], probability, label)
            arm = restored._arms.get((raw["version"], raw["route"]))
            if arm is not None:
                arm.count = int(raw["count"])
        return restored
