"""Upcasters: declarative steps that turn a payload of version N into version N + 1.

A step is a frozen dataclass with a pure ``apply``. Steps never see invalid input: the
payload has passed its own version's field checks before it is upcast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class UpcastSpecError(ValueError):
    """An upcast step in a domain spec is malformed."""


@dataclass(frozen=True, slots=True)
class Rename:
    source: str
    target: str

    def apply(self, payload: dict[str, Any]) -> None:
        if self.source in payload:
            payload[self.target] = payload.pop(self.source)


@dataclass(frozen=True, slots=True)
class Default:
    field: str
    value: Any

    def apply(self, payload: dict[str, Any]) -> None:
        payload.setdefault(self.field, self.value)


@dataclass(frozen=True, slots=True)
class Scale:
    field: str
    factor: float

    def apply(self, payload: dict[str, Any]) -> None:
        value = payload.get(self.field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            payload[self.field] = value * self.factor


@dataclass(frozen=True, slots=True)
class Drop:
    field: str

    def apply(self, payload: dict[str, Any]) -> None:
        payload.pop(self.field, None)


@dataclass(frozen=True, slots=True)
class MapValues:
    field: str
    mapping: Mapping[str, Any]

    def apply(self, payload: dict[str, Any]) -> None:
        value = payload.get(self.field)
        if isinstance(value, str) and value in self.mapping:
            payload[self.field] = self.mapping[value]


UpcastStep = Rename | Default | Scale | Drop | MapValues


def parse_step(raw: Mapping[str, Any]) -> UpcastStep:
    """Build one step from its TOML table, e.g. ``{op = "rename", from = "a", to = "b"}``."""
    op = raw.get("op")
    try:
        match op:
            case "rename":
                return Rename(source=str(raw["from"]), target=str(raw["to"]))
            case "default":
                return Default(field=str(raw["field"]), value=raw["value"])
            case "scale":
                return Scale(field=str(raw["field"]), factor=float(raw["factor"]))
            case "drop":
                return Drop(field=str(raw["field"]))
            case "map":
                return MapValues(field=str(raw["field"]), mapping=dict(raw["mapping"]))
    except KeyError as missing:
        raise UpcastSpecError(f"upcast step {op!r} needs key {missing}") from None
    raise UpcastSpecError(
        f"unknown upcast op {op!r}; expected rename, default, scale, drop or map",
    )


def apply_steps(
    payload: Mapping[str, Any], chain: Sequence[Sequence[UpcastStep]]
) -> dict[str, Any]:
    """Apply each version's steps in order, returning a new payload."""
    result = dict(payload)
    for steps in chain:
        for step in steps:
            step.apply(result)
    return result
