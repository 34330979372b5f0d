"""Outlier screening with robust online statistics (River's streaming quantiles).

For each screened field, a running median and a running median absolute deviation give a
robust z-score ``|x - median| / (1.4826 * MAD)``; 1.4826 makes MAD estimate the standard
deviation of a normal distribution. Rejected values never update the statistics, so a
burst of outliers cannot drag the median towards itself.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from river import stats

from streams.spec import DomainSpec, OutlierTransform

MAD_TO_SIGMA = 1.4826
_LOG1P = OutlierTransform.LOG1P


class RobustFieldStats:
    """Running median and MAD of one field.

    Every value updates both quantile sketches; the median and scale used for scoring are
    read back every ``refresh`` updates (and at every update during warm-up), which keeps
    the per-event cost flat without changing what is learned.
    """

    refresh = 16

    def __init__(self) -> None:
        self._median = stats.Quantile(0.5)
        self._deviation = stats.Quantile(0.5)
        self.count = 0
        self.median = 0.0
        self.scale = 1.0

    def update(self, value: float) -> None:
        self._median.update(value)
        self._deviation.update(abs(value - self.median))
        self.count += 1
        if self.count % self.refresh and self.count > self.refresh * 16:
            return
        median = float(self._median.get() or 0.0)
        mad = self._deviation.get() or 0.0
        self.median = median
        self.scale = max(MAD_TO_SIGMA * float(mad), 1e-9 * (abs(median) + 1.0))

    def zscore(self, value: float) -> float:
        return abs(value - self.median) / self.scale


@dataclass(frozen=True, slots=True)
class OutlierVerdict:
    field: str
    value: float
    zscore: float
    median: float


class OutlierScreen:
    """Screens the numeric fields a spec marks with ``outlier = ...``, for one partition."""

    def __init__(
        self, fields: Mapping[str, OutlierTransform], threshold: float, warmup: int
    ) -> None:
        if threshold <= 0:
            raise ValueError("threshold must be positive")
        self.threshold = threshold
        self.warmup = warmup
        self._fields = dict(fields)
        self._stats = {name: RobustFieldStats() for name in self._fields}

    @classmethod
    def for_schema(cls, spec: DomainSpec, schema: str) -> OutlierScreen:
        current = spec.schemas[schema].current
        fields = {f.name: f.outlier for f in current.fields if f.outlier is not None}
        return cls(fields, spec.outlier_threshold, spec.outlier_warmup)

    def screen_and_learn(self, payload: Mapping[str, Any]) -> OutlierVerdict | None:
        """Screen; learn from the payload only if no field is an outlier.

        One pass that transforms each value once: this runs for every accepted event.
        """
        values: list[tuple[RobustFieldStats, float]] = []
        for name, transform in self._fields.items():
            raw = payload.get(name)
            if raw is None:
                continue
            value = math.log1p(max(raw, 0.0)) if transform is _LOG1P else float(raw)
            field_stats = self._stats[name]
            if field_stats.count >= self.warmup:
                z = abs(value - field_stats.median) / field_stats.scale
                if z > self.threshold:
                    return OutlierVerdict(name, float(raw), z, field_stats.median)
            values.append((field_stats, value))
        for field_stats, value in values:
            field_stats.update(value)
        return None

    def screen(self, payload: Mapping[str, Any]) -> OutlierVerdict | None:
        """The first field whose value is an outlier, or None. Does not learn."""
        for name, transform in self._fields.items():
            field_stats = self._stats[name]
            if field_stats.count < self.warmup:
                continue
            raw = payload.get(name)
            if raw is None:
                continue
            value = math.log1p(max(raw, 0.0)) if transform is _LOG1P else float(raw)
            z = abs(value - field_stats.median) / field_stats.scale
            if z > self.threshold:
                return OutlierVerdict(name, float(raw), z, field_stats.median)
        return None

    def learn(self, payload: Mapping[str, Any]) -> None:
        for name, transform in self._fields.items():
            raw = payload.get(name)
            if raw is not None:
                value = math.log1p(max(raw, 0.0)) if transform is _LOG1P else float(raw)
                self._stats[name].update(value)

    def to_state(self) -> bytes:
        return pickle.dumps(self._stats, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, state: bytes) -> None:
        """Load statistics written by :meth:`to_state` (from the worker's own table)."""
        loaded = pickle.loads(state)  # noqa: S301 - our own changelogged state, not input
        self._stats = {name: loaded.get(name, RobustFieldStats()) for name in self._fields}
