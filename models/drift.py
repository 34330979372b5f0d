"""Drift statistics: serving distributions against reference histograms, and River detectors.

Histograms. The live model version carries a reference ``Histogram`` of every feature and
of its confidence (``models.artifact``). ``SlidingHistogram`` counts the last ``window``
serving values of one feature in the reference's bins: a value below the first edge goes
to the first bin, one above the last edge to the last bin (the reference's range is its
training data's, so the end bins also hold what lies beyond it); inside, bin ``i`` is
``[edges[i], edges[i + 1])`` with the last bin closed, as ``numpy.histogram`` counts. None
and NaN are counted as missing, in one more bin after the others, on both sides, so a
change in missingness moves the statistics like any other change.

Statistics over the same bins, serving share ``q_i`` against reference share ``p_i``::

    PSI = sum_i (q_i - p_i) * ln(q_i / p_i)
    KL  = sum_i  q_i        * ln(q_i / p_i)      (KL(serving || reference))

A share is count / total. An empty bin (count 0) takes the share ``epsilon`` instead
(default 1e-4; the others keep count / total, nothing is renormalised), so a bin that
empties or fills from nothing adds a large but finite term, and bins empty on both sides
add nothing. With no empty bin the figures are the textbook ones. PSI is the symmetrised
KL (KL(q||p) + KL(p||q)), so KL <= PSI. The usual reading of PSI: below 0.1 stable, 0.1 to
0.25 a moderate shift, above 0.25 a large one; 0.1 is the default alert threshold.

``FeatureDriftMonitor`` keeps one sliding histogram per feature and one for the
confidence. Each event costs O(features) (a binary search per feature and two counter
changes); every ``report_every`` events, once a window holds ``min_count`` values, it
reports PSI and KL per feature, O(features * bins).

River detectors, for what histograms cannot see (River 0.26):

* ``ConfidenceDrift``: ADWIN on the model's confidence, a change in its mean. About 0.5 us
  a value through this wrapper (River's Rust core; the cut is checked every 32 values).
* ``ErrorDrift``: on the 0/1 error stream once labels arrive. ADWIN (delta 0.002) by
  default; DDM and HDDM_A are there for comparison. Both of those compare the running
  error rate since their last reset with its best point so far, so their delay grows with
  the length of the quiet period before the change; ADWIN tests every split of its recent
  window, and its delay depends on the size of the change only. ``headrace bench drift``
  measures the three on SEA: ADWIN has the shortest delay and no false alarm.
* ``SampledKSWIN``: River's KSWIN (a two-sample Kolmogorov-Smirnov test of the latest
  ``stat_size`` values against a random sample of the older part of a ``window_size``
  window), fed only every ``every``-th value (the ``every``-th, the 2 * ``every``-th, ...).
  One test is a scipy ``ks_2samp`` call, about 0.25 ms; at ``every=20`` that is 12 to 15 us
  a value amortised, and no value costs more than one test. It sees changes of shape that
  leave the mean alone. ``alpha`` is 1e-4 rather than River's 0.005: a test runs on every
  fed value, and at 0.005 a stationary stream raises an alarm every few thousand tests.

River has no state API for its detectors. They pickle (ADWIN's Rust core included), so
``to_state`` stores the pickle, base64-encoded, with the River version; ``from_state``
refuses another River version (a pickle is tied to the classes that wrote it) and unpickles
with an allow-list of classes (River's own, ``collections.deque``, ``random.Random`` and
numpy scalars), so a tampered checkpoint cannot name an arbitrary callable.
"""

from __future__ import annotations

import base64
import bisect
import importlib.metadata
import io
import itertools
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal, Self

from river import drift as river_drift
from river.drift import binary as river_binary

from models.artifact import Histogram

DEFAULT_EPSILON = 1e-4
DEFAULT_THRESHOLD = 0.1
CONFIDENCE_FEATURE = "model.confidence"  # the confidence's name in reports

Statistic = Literal["psi", "kl"]
ErrorMethod = Literal["adwin", "ddm", "hddm_a"]


def _shares(counts: Sequence[float], epsilon: float) -> list[float]:
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon!r}")
    if any(not math.isfinite(c) or c < 0 for c in counts):
        raise ValueError("counts must be finite and non-negative")
    total = math.fsum(counts)
    if total <= 0:
        raise ValueError("counts must not all be zero")
    return [c / total if c > 0 else epsilon for c in counts]


def _pair(
    reference_counts: Sequence[float], serving_counts: Sequence[float], epsilon: float
) -> tuple[list[float], list[float]]:
    if len(reference_counts) != len(serving_counts) or not reference_counts:
        raise ValueError(
            f"need the same non-zero number of bins, got {len(reference_counts)} "
            f"and {len(serving_counts)}"
        )
    return _shares(reference_counts, epsilon), _shares(serving_counts, epsilon)


def psi(
    reference_counts: Sequence[float],
    serving_counts: Sequence[float],
    *,
    epsilon: float = DEFAULT_EPSILON,
) -> float:
    """Population stability index: sum (q - p) ln(q / p); empty bins take share epsilon."""
    reference, serving = _pair(reference_counts, serving_counts, epsilon)
    return math.fsum((q - p) * math.log(q / p) for p, q in zip(reference, serving, strict=True))


def kl_divergence(
    reference_counts: Sequence[float],
    serving_counts: Sequence[float],
    *,
    epsilon: float = DEFAULT_EPSILON,
) -> float:
    """KL(serving || reference) = sum q ln(q / p); empty bins take share epsilon."""
    reference, serving = _pair(reference_counts, serving_counts, epsilon)
    return math.fsum(q * math.log(q / p) for p, q in zip(reference, serving, strict=True))


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")
    return value


class SlidingHistogram:
    """The last ``window`` values of one feature, counted in a reference histogram's bins.

    ``counts()`` and ``reference_counts()`` list the bins and then the missing values. A
    ring buffer of bin indices keeps the window: ``add`` is a binary search and two counter
    changes.
    """

    def __init__(self, reference: Histogram, window: int) -> None:
        edges = [float(edge) for edge in reference.edges]
        if len(edges) < 2 or len(reference.counts) != len(edges) - 1:
            raise ValueError("a histogram needs n + 1 edges for its n counts")
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("histogram edges must increase")
        self.reference = reference
        self.window = _positive("window", window)
        self._edges = edges
        self._bins = len(edges) - 1
        self._reference_counts = [*reference.counts, reference.missing]
        if sum(self._reference_counts) <= 0:
            raise ValueError("the reference histogram counts nothing")
        self._counts = [0] * (self._bins + 1)
        self._ring: list[int] = []
        self._next = 0  # where the next value goes once the ring is full

    @property
    def missing_bin(self) -> int:
        return self._bins

    def __len__(self) -> int:
        return len(self._ring)

    def bin_of(self, value: float | None) -> int:
        if value is None or math.isnan(value):
            return self._bins
        index = bisect.bisect_right(self._edges, value) - 1
        return min(max(index, 0), self._bins - 1)

    def add(self, value: float | None) -> None:
        self._add_bin(self.bin_of(value))

    def _add_bin(self, index: int) -> None:
        self._counts[index] += 1
        if len(self._ring) < self.window:
            self._ring.append(index)
            return
        self._counts[self._ring[self._next]] -= 1
        self._ring[self._next] = index
        self._next = (self._next + 1) % self.window

    def counts(self) -> list[int]:
        """The window's counts per bin, then its missing values."""
        return list(self._counts)

    def reference_counts(self) -> list[int]:
        return list(self._reference_counts)

    def psi(self, epsilon: float = DEFAULT_EPSILON) -> float:
        return psi(self._reference_counts, self._counts, epsilon=epsilon)

    def kl(self, epsilon: float = DEFAULT_EPSILON) -> float:
        return kl_divergence(self._reference_counts, self._counts, epsilon=epsilon)

    def to_state(self) -> dict[str, Any]:
        """JSON-ready: the reference, the window size and the window's bins, oldest first."""
        chronological = self._ring[self._next :] + self._ring[: self._next]
        return {
            "reference": asdict(self.reference),
            "window": self.window,
            "bins": chronological,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SlidingHistogram:
        histogram = cls(Histogram(**state["reference"]), int(state["window"]))
        for index in state["bins"]:
            if not 0 <= int(index) <= histogram.missing_bin:
                raise ValueError(f"bin index {index!r} out of range")
            histogram._add_bin(int(index))
        return histogram


@dataclass(frozen=True, slots=True)
class DriftReport:
    """One statistic of one feature (or of the confidence) over the serving window."""

    feature: str
    statistic: Statistic
    value: float
    threshold: float
    window: int  # values in the serving window
    events: int  # events the monitor had seen when it reported
    alert: bool  # value > threshold
    event_time_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeatureDriftMonitor:
    """PSI and KL of every feature and of the confidence against the model's reference."""

    def __init__(  # noqa: PLR0913 - each knob is a documented setting of the drift agent
        self,
        reference: Mapping[str, Histogram],
        confidence_reference: Histogram,
        *,
        window: int = 5_000,
        threshold: float = DEFAULT_THRESHOLD,
        min_count: int = 500,
        report_every: int = 1_000,
        epsilon: float = DEFAULT_EPSILON,
    ) -> None:
        if CONFIDENCE_FEATURE in reference:
            raise ValueError(f"{CONFIDENCE_FEATURE!r} is reserved for the confidence")
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be finite and positive, got {threshold!r}")
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"epsilon must lie in (0, 1), got {epsilon!r}")
        self.window = _positive("window", window)
        self.min_count = _positive("min_count", min_count)
        self.report_every = _positive("report_every", report_every)
        self.threshold = threshold
        self.epsilon = epsilon
        self.events = 0
        self.histograms = {name: SlidingHistogram(h, window) for name, h in reference.items()}
        self.confidence = SlidingHistogram(confidence_reference, window)

    def update(
        self,
        features: Mapping[str, float | None],
        confidence: float | None,
        *,
        event_time_ms: int | None = None,
    ) -> list[DriftReport]:
        """Count one event; every ``report_every`` events, the reports (else nothing).

        A reference feature absent from ``features`` counts as missing; features without a
        reference are ignored.
        """
        get = features.get
        for name, histogram in self.histograms.items():
            histogram.add(get(name))
        self.confidence.add(confidence)
        self.events += 1
        if self.events % self.report_every:
            return []
        return self.reports(event_time_ms=event_time_ms)

    def reports(self, *, event_time_ms: int | None = None) -> list[DriftReport]:
        """PSI and KL of every window holding at least ``min_count`` values, now."""
        reports: list[DriftReport] = []
        named = [*self.histograms.items(), (CONFIDENCE_FEATURE, self.confidence)]
        for name, histogram in named:
            size = len(histogram)
            if size < self.min_count:
                continue
            statistics: tuple[tuple[Statistic, float], ...] = (
                ("psi", histogram.psi(self.epsilon)),
                ("kl", histogram.kl(self.epsilon)),
            )
            for statistic, value in statistics:
                reports.append(
                    DriftReport(
                        feature=name,
                        statistic=statistic,
                        value=value,
                        threshold=self.threshold,
                        window=size,
                        events=self.events,
                        alert=value > self.threshold,
                        event_time_ms=event_time_ms,
                    )
                )
        return reports

    def to_state(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "threshold": self.threshold,
            "min_count": self.min_count,
            "report_every": self.report_every,
            "epsilon": self.epsilon,
            "events": self.events,
            "features": {name: h.to_state() for name, h in self.histograms.items()},
            "confidence": self.confidence.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FeatureDriftMonitor:
        features = {
            name: SlidingHistogram.from_state(raw) for name, raw in state["features"].items()
        }
        confidence = SlidingHistogram.from_state(state["confidence"])
        monitor = cls(
            {name: h.reference for name, h in features.items()},
            confidence.reference,
            window=int(state["window"]),
            threshold=float(state["threshold"]),
            min_count=int(state["min_count"]),
            report_every=int(state["report_every"]),
            epsilon=float(state["epsilon"]),
        )
        monitor.histograms = features
        monitor.confidence = confidence
        monitor.events = int(state["events"])
        return monitor


@dataclass(frozen=True, slots=True)
class DriftSignal:
    """A River detector flagged a change."""

    detector: str  # "adwin", "ddm", "hddm_a" or "kswin"
    stream: str  # "confidence" or "error"
    index: int  # 1-based position of the value in the stream offered to the detector
    window: int  # values the test that fired looked at
    detections: int  # signals of this detector so far, this one included
    event_time_ms: int | None = None
    # ADWIN's mean over the part of its window it dropped (the older side) and over the
    # part it kept (the recent side): a rise or a fall. None for the other detectors.
    mean_before: float | None = None
    mean_after: float | None = None
    mean_window: float | None = None  # ADWIN's mean over its whole window before the cut

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ALLOWED_GLOBALS = frozenset(
    {
        ("collections", "deque"),
        ("random", "Random"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"),
    }
)


class _RiverUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("river.") or (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a detector state")


# River's constructors are untyped; through this table they are plain callables.
_DETECTORS: dict[str, Callable[..., Any]] = {
    "adwin": river_drift.ADWIN,
    "kswin": river_drift.KSWIN,
    "ddm": river_binary.DDM,
    "hddm_a": river_binary.HDDMA,
}
RIVER_VERSION = importlib.metadata.version("river")


def _adwin_sides(detector: Any, total: float, width: int) -> dict[str, float | None]:
    """The means of what ADWIN dropped and of what it kept, from the window's sum before
    the cut (``total`` over ``width`` values, the new one included)."""
    kept = int(detector.width)
    kept_mean = float(detector.estimation)
    dropped = width - kept
    before = (total - kept_mean * kept) / dropped if dropped > 0 else None
    return {"mean_before": before, "mean_after": kept_mean, "mean_window": total / width}


class _RiverDetector:
    """One River detector on one stream, fed every ``every``-th value offered."""

    kinds: ClassVar[frozenset[str]]
    stream: ClassVar[str]

    def __init__(self, kind: str, params: Mapping[str, Any], every: int = 1) -> None:
        if kind not in self.kinds:
            raise ValueError(
                f"{type(self).__name__} runs one of {sorted(self.kinds)}, not {kind!r}"
            )
        self.kind = kind
        self.params = dict(params)
        self.every = _positive("every", every)
        self.seen = 0  # values offered
        self.detections = 0
        self._since_reset = 0  # values fed since the detector last signalled
        self._detector = _DETECTORS[kind](**self.params)

    def _window_with_next(self) -> int:
        if self.kind == "adwin":
            return int(self._detector.width) + 1
        if self.kind == "kswin":
            return min(len(self._detector.window) + 1, int(self._detector.window_size))
        return self._since_reset + 1

    def _offer(self, value: float, event_time_ms: int | None) -> DriftSignal | None:
        self.seen += 1
        if self.seen % self.every:
            return None
        window = self._window_with_next()
        adwin = self.kind == "adwin"
        total = float(self._detector.estimation) * self._detector.width if adwin else 0.0
        self._detector.update(value)
        self._since_reset += 1
        if not self._detector.drift_detected:
            return None
        self.detections += 1
        self._since_reset = 0
        return DriftSignal(
            detector=self.kind,
            stream=self.stream,
            index=self.seen,
            window=window,
            detections=self.detections,
            event_time_ms=event_time_ms,
            **(_adwin_sides(self._detector, total + value, window) if adwin else {}),
        )

    def to_state(self) -> dict[str, Any]:
        """JSON-ready; the River object travels as a base64 pickle (see the module notes)."""
        return {
            "kind": self.kind,
            "params": self.params,
            "every": self.every,
            "seen": self.seen,
            "detections": self.detections,
            "since_reset": self._since_reset,
            "river_version": RIVER_VERSION,
            "pickle": base64.b64encode(pickle.dumps(self._detector)).decode("ascii"),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        if state["river_version"] != RIVER_VERSION:
            raise ValueError(
                f"detector state written by River {state['river_version']}, "
                f"this is River {RIVER_VERSION}"
            )
        restored = cls.__new__(cls)
        _RiverDetector.__init__(restored, str(state["kind"]), state["params"], int(state["every"]))
        restored.load_state(state)
        return restored

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Take over a checkpoint's River object and counters (same kind and parameters)."""
        if (state["kind"], dict(state["params"]), int(state["every"])) != (
            self.kind,
            self.params,
            self.every,
        ):
            raise ValueError("the state is of another detector kind or other parameters")
        detector = _RiverUnpickler(io.BytesIO(base64.b64decode(state["pickle"]))).load()
        if type(detector) is not type(self._detector):
            raise ValueError(f"the pickled detector is a {type(detector).__name__}")
        self._detector = detector
        self.seen = int(state["seen"])
        self.detections = int(state["detections"])
        self._since_reset = int(state["since_reset"])


class ConfidenceDrift(_RiverDetector):
    """ADWIN on the stream of model confidence (the top class's probability)."""

    kinds = frozenset({"adwin"})
    stream = "confidence"

    def __init__(self, delta: float = 0.002) -> None:
        super().__init__("adwin", {"delta": delta})

    def update(self, confidence: float, *, event_time_ms: int | None = None) -> DriftSignal | None:
        return self._offer(float(confidence), event_time_ms)


class ErrorDrift(_RiverDetector):
    """A detector on the 0/1 error stream (1: the decision was wrong), fed as labels arrive.

    ``method="adwin"`` (the default, with ``delta``), or River's ``"ddm"`` or ``"hddm_a"``
    with their own defaults; ``params`` overrides any of them.
    """

    kinds = frozenset({"adwin", "ddm", "hddm_a"})
    stream = "error"

    def __init__(
        self,
        method: ErrorMethod = "adwin",
        *,
        delta: float = 0.002,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        defaults: dict[str, Any] = {"delta": delta} if method == "adwin" else {}
        super().__init__(method, {**defaults, **(params or {})})

    def update(self, error: bool, *, event_time_ms: int | None = None) -> DriftSignal | None:
        return self._offer(1.0 if error else 0.0, event_time_ms)


class SampledKSWIN(_RiverDetector):
    """River's KSWIN fed every ``every``-th value: bounded cost, changes of shape."""

    kinds = frozenset({"kswin"})
    stream = "confidence"

    def __init__(
        self,
        *,
        every: int = 20,
        alpha: float = 1e-4,
        window_size: int = 300,
        stat_size: int = 100,
        seed: int = 0,
    ) -> None:
        params = {"alpha": alpha, "window_size": window_size, "stat_size": stat_size, "seed": seed}
        super().__init__("kswin", params, every)

    def update(self, value: float, *, event_time_ms: int | None = None) -> DriftSignal | None:
        return self._offer(float(value), event_time_ms)
