"""Mergeable moments of one field over one step of a window.

A step holds ``[count, mean, m2, min, max, sum]`` (a list, so that it is JSON as it is and
cheap to copy). Steps merge with Chan et al.'s parallel update of the mean and the sum of
squared deviations, which stays accurate where sum-of-squares formulas cancel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Moments = list[float]  # [count, mean, m2, min, max, sum]

COUNT, MEAN, M2, MIN, MAX, SUM = range(6)


def moments_of(value: float) -> Moments:
    return [1.0, value, 0.0, value, value, value]


def add_value(moments: Moments, value: float) -> None:
    """Welford's update, in place."""
    count = moments[COUNT] + 1.0
    delta = value - moments[MEAN]
    mean = moments[MEAN] + delta / count
    moments[M2] += delta * (value - mean)
    moments[COUNT] = count
    moments[MEAN] = mean
    moments[MIN] = min(moments[MIN], value)
    moments[MAX] = max(moments[MAX], value)
    moments[SUM] += value


def merge(parts: Iterable[Moments]) -> Moments | None:
    total: Moments | None = None
    for part in parts:
        if total is None:
            total = list(part)
            continue
        count = total[COUNT] + part[COUNT]
        delta = part[MEAN] - total[MEAN]
        total[MEAN] += delta * part[COUNT] / count
        total[M2] += part[M2] + delta * delta * total[COUNT] * part[COUNT] / count
        total[COUNT] = count
        total[MIN] = min(total[MIN], part[MIN])
        total[MAX] = max(total[MAX], part[MAX])
        total[SUM] += part[SUM]
    return total


def std(moments: Moments) -> float:
    """Population standard deviation."""
    return math.sqrt(max(moments[M2], 0.0) / moments[COUNT])
