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
from typing import Any

from tables import aggregates
from tables.feature_spec import TIME_SINCE_PREVIOUS, FeatureSpec, Op

EntityState = dict[str, Any]
DISTINCT_SUFFIX = "#distinct"


def new_state(partition: int) -> EntityState:
    return {"p": partition, "off": -1, "lt": None, "pt": None, "pv": {}, "w": {}}


def apply_event(
    state: EntityState,
    spec: FeatureSpec,
    event_time: int,
    payload: Mapping[str, Any],
    offset: int,
) -> None:
    """Fold one accepted event into the state, in place."""
    for aggregate in spec.aggregates:
        value = payload.get(aggregate.field)
        if value is None:
            continue
        for window_name in aggregate.windows:
            window = spec.window(window_name)
            steps = state["w"].setdefault(window_name, {})
            cell = steps.setdefault(str(event_time // window.step_ms), {})
            if aggregate.numeric:
                moments = cell.get(aggregate.field)
                number = float(value)
                if moments is None:
                    cell[aggregate.field] = aggregates.moments_of(number)
                else:
                    aggregates.add_value(moments, number)
            if aggregate.distinct:
                seen = cell.setdefault(aggregate.field + DISTINCT_SUFFIX, [])
                if value not in seen:
                    seen.append(value)
    state["off"] = offset
    state["lt"] = event_time if state["lt"] is None else max(state["lt"], event_time)
    state["pt"] = event_time
    state["pv"] = {field: payload.get(field) for field in spec.previous}


def features_of(
    state: EntityState,
    spec: FeatureSpec,
    event_time: int,
    payload: Mapping[str, Any],
    previous: tuple[int | None, Mapping[str, Any]],
) -> dict[str, float | None]:
    """The feature vector of an event at ``event_time`` from the state's windows.

    ``previous`` is (event time, values) of the entity's previous event in arrival order,
    read before this event was applied.
    """
    values: dict[str, float | None] = {}
    for field in spec.passthrough:
        values[field] = _number(payload.get(field))
    for field, categories in spec.onehot.items():
        current = payload.get(field)
        for category in categories:
            values[f"{field}_is_{category}"] = 1.0 if current == category else 0.0
    previous_time, previous_values = previous
    recent = previous_time is not None and previous_time > event_time - spec.max_window_ms
    for field in spec.previous:
        values[f"{field}_prev"] = _number(previous_values.get(field)) if recent else None
    values[TIME_SINCE_PREVIOUS] = (
        float(event_time - previous_time) if recent and previous_time is not None else None
    )
    windows = state["w"]
    for aggregate in spec.aggregates:
        for window_name in aggregate.windows:
            window = spec.window(window_name)
            steps = windows.get(window_name, {})
            first, last = window.first_step(event_time), event_time // window.step_ms
            cells = [cell for key, cell in steps.items() if first <= int(key) <= last]
            _window_features(values, aggregate.field, aggregate.ops, window_name, cells)
    for ratio in spec.ratios:
        numerator = _number(payload.get(ratio.numerator))
        denominator = values.get(ratio.denominator)
        values[ratio.name] = (
            numerator / denominator if numerator is not None and denominator else None
        )
    return values


def _window_features(
    values: dict[str, float | None],
    field: str,
    ops: tuple[Op, ...],
    window_name: str,
    cells: list[dict[str, Any]],
) -> None:
    moments = aggregates.merge(cell[field] for cell in cells if field in cell)
    for op in ops:
        name = f"{field}_{op.value}_{window_name}"
        if op is Op.DISTINCT:
            key = field + DISTINCT_SUFFIX
            union: set[Any] = set()
            for cell in cells:
                union.update(cell.get(key, ()))
            values[name] = float(len(union))
        elif op is Op.COUNT:
            values[name] = 0.0 if moments is None else moments[aggregates.COUNT]
        elif moments is None:
            values[name] = None
        elif op is Op.SUM:
            values[name] = moments[aggregates.SUM]
        elif op is Op.MEAN:
            values[name] = moments[aggregates.MEAN]
        elif op is Op.STD:
            values[name] = aggregates.std(moments)
        elif op is Op.MIN:
            values[name] = moments[aggregates.MIN]
        else:
            values[name] = moments[aggregates.MAX]


def expire_steps(state: EntityState, spec: FeatureSpec, watermark: int) -> int:
    """Drop the steps no event that is not late can still need; return how many."""
    oldest_time = watermark - spec.grace_ms
    dropped = 0
    for window in spec.windows:
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
