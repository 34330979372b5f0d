"""Feature definitions: the ``[features]`` section of a domain spec.

Windows are hopping windows in event time: ``size_ms`` long, moving in steps of
``step_ms`` (tumbling when the two are equal). The window of an event at time ``t`` is the
one that ends with the step containing ``t``: it covers the steps ``t // step - size/step
+ 1`` to ``t // step``. It counts every accepted event of the entity that arrived before
this one with an event time in those steps, and this event itself when
``include_current`` is true (the default). Aggregates per window: count, sum, mean, std
(population), min, max, distinct (exact). Per entity: the previous event's values and the
time since it (previous in arrival order, within the largest window), the current event's
own values (passthrough), one-hot categories and ratios of a value to a feature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FeatureSpecError(ValueError):
    """The [features] section is malformed."""


class Op(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    STD = "std"
    MIN = "min"
    MAX = "max"
    DISTINCT = "distinct"


NUMERIC_OPS = frozenset({Op.COUNT, Op.SUM, Op.MEAN, Op.STD, Op.MIN, Op.MAX})


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    size_ms: int
    step_ms: int

    @property
    def steps(self) -> int:
        return self.size_ms // self.step_ms

    def first_step(self, event_time: int) -> int:
        """The first step index of the window that ends with ``event_time``'s step."""
        return event_time // self.step_ms - self.steps + 1


@dataclass(frozen=True, slots=True)
class Aggregate:
    field: str
    ops: tuple[Op, ...]
    windows: tuple[str, ...]

    @property
    def numeric(self) -> bool:
        return any(op in NUMERIC_OPS for op in self.ops)

    @property
    def distinct(self) -> bool:
        return Op.DISTINCT in self.ops


@dataclass(frozen=True, slots=True)
class Ratio:
    name: str
    numerator: str  # a field of the current event
    denominator: str  # a feature name


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    grace_ms: int
    include_current: bool
    windows: tuple[WindowSpec, ...]
    aggregates: tuple[Aggregate, ...]
    passthrough: tuple[str, ...]
    previous: tuple[str, ...]  # fields whose previous value is a feature
    onehot: Mapping[str, tuple[str, ...]]
    ratios: tuple[Ratio, ...]
    names: tuple[str, ...]  # every feature, in output order
    version: str  # hash of the section: models are tied to it

    @property
    def max_window_ms(self) -> int:
        return max(w.size_ms for w in self.windows)

    def window(self, name: str) -> WindowSpec:
        for window in self.windows:
            if window.name == name:
                return window
        raise KeyError(name)


def feature_name(field: str, op: Op, window: str) -> str:
    return f"{field}_{op.value}_{window}"


TIME_SINCE_PREVIOUS = "time_since_prev_ms"


def parse_feature_spec(raw: Mapping[str, Any], numeric_fields: set[str]) -> FeatureSpec:
    """Build a FeatureSpec from the TOML table; ``numeric_fields`` of the current schema."""
    try:
        windows = tuple(_window(name, body) for name, body in raw["windows"].items())
        known = {w.name for w in windows}
        aggregates = tuple(_aggregate(a, known, numeric_fields) for a in raw.get("aggregate", []))
        ratios = tuple(
            Ratio(str(r["name"]), str(r["numerator"]), str(r["denominator"]))
            for r in raw.get("ratio", [])
        )
        onehot = {
            str(k): tuple(str(v) for v in values) for k, values in raw.get("onehot", {}).items()
        }
        passthrough = tuple(str(f) for f in raw.get("passthrough", []))
        previous = tuple(str(f) for f in raw.get("previous", []))
        grace_ms = int(raw.get("grace_ms", 60_000))
        include_current = bool(raw.get("include_current", True))
    except (KeyError, TypeError, ValueError) as error:
        raise FeatureSpecError(f"[features]: {type(error).__name__}: {error}") from None
    if not windows:
        raise FeatureSpecError("[features.windows] declares no window")
    if grace_ms < 0:
        raise FeatureSpecError("[features] grace_ms must be >= 0")
    names: list[str] = list(passthrough)
    names += [f"{field}_is_{value}" for field, values in onehot.items() for value in values]
    names += [f"{field}_prev" for field in previous]
    names.append(TIME_SINCE_PREVIOUS)
    for aggregate in aggregates:
        names += [
            feature_name(aggregate.field, op, w) for w in aggregate.windows for op in aggregate.ops
        ]
    for ratio in ratios:
        if ratio.denominator not in names:
            raise FeatureSpecError(f"ratio {ratio.name!r}: no feature {ratio.denominator!r}")
        names.append(ratio.name)
    if len(set(names)) != len(names):
        raise FeatureSpecError("[features] declares a feature name twice")
    canonical = json.dumps(raw, sort_keys=True, default=str).encode()
    return FeatureSpec(
        grace_ms=grace_ms,
        include_current=include_current,
        windows=windows,
        aggregates=aggregates,
        passthrough=passthrough,
        previous=previous,
        onehot=onehot,
        ratios=ratios,
        names=tuple(names),
        version=hashlib.sha256(canonical).hexdigest()[:12],
    )


def _window(name: str, body: Mapping[str, Any]) -> WindowSpec:
    size, step = int(body["size_ms"]), int(body.get("step_ms", body["size_ms"]))
    if size <= 0 or step <= 0 or size % step:
        raise FeatureSpecError(f"window {name!r}: size_ms must be a positive multiple of step_ms")
    return WindowSpec(name, size, step)


def _aggregate(raw: Mapping[str, Any], windows: set[str], numeric_fields: set[str]) -> Aggregate:
    field = str(raw["field"])
    try:
        ops = tuple(Op(op) for op in raw["ops"])
    except ValueError as error:
        raise FeatureSpecError(f"aggregate of {field!r}: {error}") from None
    unknown = [w for w in raw["windows"] if w not in windows]
    if unknown:
        raise FeatureSpecError(f"aggregate of {field!r}: unknown windows {unknown}")
    if any(op in NUMERIC_OPS for op in ops) and field not in numeric_fields:
        raise FeatureSpecError(f"aggregate of {field!r}: numeric ops need a numeric field")
    return Aggregate(field, ops, tuple(str(w) for w in raw["windows"]))
