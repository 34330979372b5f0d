"""The state of one entity and the pure function that folds an event into it.

The state is a plain JSON-able dict, stored as it is in a changelogged table:

``p``      the source partition (so that a restart can re-index it)
``off``    the offset of the last event applied: a redelivered event is not counted twice
``lt``     the highest event time seen
``pt``     the event time of the previous event in arrival order, ``pv`` its values
``w``      per window name, per step index (a string: JSON keys), per field: moments
           ``[count, mean, m2, min, max, sum]``, or for distinct counts a list of values
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tables import aggregates
from tables.feature_spec import TIME_SINCE_PREVIOUS, FeatureSpec, Op, feature_name

EntityState = dict[str, Any]
DISTINCT_SUFFIX = "#distinct"


RATIO_EPSILON = 1e-9  # |denominator| at or below this: no ratio


def new_state(partition: int) -> EntityState:
    return {"p": partition, "off": -1, "lt": None, "pt": None, "pv": {}, "w": {}}


_COUNT, _SUM, _MEAN, _STD, _MIN, _MAX, _DISTINCT = range(7)
_OPCODES = {
    Op.COUNT: _COUNT,
    Op.SUM: _SUM,
    Op.MEAN: _MEAN,
    Op.STD: _STD,
    Op.MIN: _MIN,
    Op.MAX: _MAX,
    Op.DISTINCT: _DISTINCT,
}


@dataclass(frozen=True, slots=True)
class _WindowAggregate:
    field: str
    distinct_key: str
    window: str
    step_ms: int
    steps: int
    numeric: bool
    distinct: bool
    outputs: tuple[tuple[str, int], ...]  # (feature name, opcode)


class FeaturePlan:
    """A FeatureSpec flattened for the per-event loops: names and opcodes worked out once."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.max_window_ms = spec.max_window_ms
        self.grace_ms = spec.grace_ms
        self.include_current = spec.include_current
        self.previous = spec.previous
        self.windows = spec.windows
        self.cells = tuple(
            _WindowAggregate(
                field=aggregate.field,
                distinct_key=aggregate.field + DISTINCT_SUFFIX,
                window=window.name,
                step_ms=window.step_ms,
                steps=window.steps,
                numeric=aggregate.numeric,
                distinct=aggregate.distinct,
                outputs=tuple(
                    (feature_name(aggregate.field, op, window.name), _OPCODES[op])
                    for op in aggregate.ops
                ),
            )
            for aggregate in spec.aggregates
            for window in (spec.window(name) for name in aggregate.windows)
        )


def apply_event(
    state: EntityState,
    plan: FeaturePlan,
    event_time: int,
    payload: Mapping[str, Any],
    offset: int,
) -> None:
    """Fold one accepted event into the state, in place."""
    windows = state["w"]
    for item in plan.cells:
        value = payload.get(item.field)
        if value is None:
            continue
        steps = windows.get(item.window)
        if steps is None:
            steps = windows[item.window] = {}
        key = str(event_time // item.step_ms)
        cell = steps.get(key)
        if cell is None:
            cell = steps[key] = {}
        if item.numeric:
            moments = cell.get(item.field)
            if moments is None:
                cell[item.field] = aggregates.moments_of(float(value))
            else:
                aggregates.add_value(moments, float(value))
        if item.distinct:
            seen = cell.get(item.distinct_key)
            if seen is None:
                cell[item.distinct_key] = [value]
            elif value not in seen:
                seen.append(value)
    state["off"] = offset
    newest = state["lt"]
    state["lt"] = event_time if newest is None or event_time > newest else newest
    state["pt"] = event_time
    state["pv"] = {field: payload.get(field) for field in plan.previous}


def features_of(
    state: EntityState,
    plan: FeaturePlan,
    event_time: int,
    payload: Mapping[str, Any],
    previous: tuple[int | None, Mapping[str, Any]],
) -> dict[str, float | None]:
    """The feature vector of an event at ``event_time`` from the state's windows.

    ``previous`` is (event time, values) of the entity's previous event in arrival order,
    read before this event was applied.
    """
    spec = plan.spec
    values: dict[str, float | None] = {}
    for field in spec.passthrough:
        values[field] = _number(payload.get(field))
    for field, categories in spec.onehot.items():
        current = payload.get(field)
        for category in categories:
            values[f"{field}_is_{category}"] = 1.0 if current == category else 0.0
    previous_time, previous_values = previous
    recent = previous_time is not None and previous_time > event_time - plan.max_window_ms
    for field in plan.previous:
        values[f"{field}_prev"] = _number(previous_values.get(field)) if recent else None
    values[TIME_SINCE_PREVIOUS] = (
        float(event_time - previous_time) if recent and previous_time is not None else None
    )
    windows = state["w"]
    in_window: dict[str, list[dict[str, Any]]] = {}  # window -> its cells (aggregates share)
    for item in plan.cells:
        cells = in_window.get(item.window)
        if cells is None:
            steps = windows.get(item.window)
            last = event_time // item.step_ms
            first = last - item.steps + 1
            cells = [c for key, c in steps.items() if first <= int(key) <= last] if steps else []
            in_window[item.window] = cells
        _window_features(values, item, cells)
    for ratio in spec.ratios:
        numerator = _number(payload.get(ratio.numerator))
        denominator = values.get(ratio.denominator)
        # A denominator within rounding of zero (a mean of +x and -x) has no ratio.
        usable = denominator is not None and abs(denominator) > RATIO_EPSILON
        values[ratio.name] = (
            numerator / denominator
            if numerator is not None and denominator is not None and usable
            else None
        )
    return values


def _window_features(
    values: dict[str, float | None],
    item: _WindowAggregate,
    cells: list[dict[str, Any]],
) -> None:
    field = item.field
    moments = (
        aggregates.merge([cell[field] for cell in cells if field in cell]) if item.numeric else None
    )
    for name, opcode in item.outputs:
        if opcode == _DISTINCT:
            key = item.distinct_key
            union: set[Any] = set()
            for cell in cells:
                union.update(cell.get(key, ()))
            values[name] = float(len(union))
        elif opcode == _COUNT:
            values[name] = 0.0 if moments is None else moments[aggregates.COUNT]
        elif moments is None:
            values[name] = None
        elif opcode == _SUM:
            values[name] = moments[aggregates.SUM]
        elif opcode == _MEAN:
            values[name] = moments[aggregates.MEAN]
        elif opcode == _STD:
            values[name] = aggregates.std(moments)
        elif opcode == _MIN:
            values[name] = moments[aggregates.MIN]
        else:
            values[name] = moments[aggregates.MAX]


def expire_steps(state: EntityState, plan: FeaturePlan, watermark: int) -> int:
    """Drop the steps no event that is not late can still need; return how many."""
    oldest_time = watermark - plan.grace_ms
    dropped = 0
    for window in plan.windows:
        steps = state["w"].get(window.name)
        if not steps:
            continue
        first = window.first_step(oldest_time)
        for key in [key for key in steps if int(key) < first]:
            del steps[key]
            dropped += 1
        if not steps:
            del state["w"][window.name]
    return dropped


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    return float(value)
