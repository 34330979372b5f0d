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


class RobustFieldStats:
    def __init__(self) -> None:
        self._median = stats.Quantile(0.5)
        self._deviation = stats.Quantile(0.5)
        self.count = 0

    def update(self, value: float) -> None:
        self._median.update(value)
        median = self._median.get()
        self._deviation.update(abs(value - median))
        self.count += 1

    @property
    def median(self) -> float:
        value = self._median.get()
        return 0.0 if value is None else float(value)

    @property
    def scale(self) -> float:
        mad = self._deviation.get()
        sigma = 0.0 if mad is None else MAD_TO_SIGMA * float(mad)
        return max(sigma, 1e-9 * (abs(self.median) + 1.0))

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

    def __init__(self, fields: Mapping[str, OutlierTransform], threshold: float, warmup: int) -> None:
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

    def screen(self, payload: Mapping[str, Any]) -> OutlierVerdict | None:
        """The first field whose value is an outlier, or None. Does not learn."""
        for name, transform in self._fields.items():
            field_stats = self._stats[name]
            if field_stats.count < self.warmup:
                continue
            raw = payload.get(name)
            if raw is None:
                continue
            value = _transform(float(raw), transform)
            z = field_stats.zscore(value)
            if z > self.threshold:
                return OutlierVerdict(name, float(raw), z, field_stats.median)
        return None

    def learn(self, payload: Mapping[str, Any]) -> None:
        for name, transform in self._fields.items():
            raw = payload.get(name)
            if raw is not None:
                self._stats[name].update(_transform(float(raw), transform))

    def to_state(self) -> bytes:
        return pickle.dumps(self._stats, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, state: bytes) -> None:
        """Load statistics written by :meth:`to_state` (from the worker's own table)."""
        loaded = pickle.loads(state)  # noqa: S301 - our own changelogged state, not input
        self._stats = {name: loaded.get(name, RobustFieldStats()) for name in self._fields}


def _transform(value: float, transform: OutlierTransform) -> float:
    if transform is OutlierTransform.LOG1P:
        return math.log1p(max(value, 0.0))
    return value
