"""Model lifecycle events, and the fold that turns them into serving state.

Every change to what serves a model is an event on ``model.events``, keyed by the model
name, numbered per model by ``sequence`` (1, 2, 3, ...). The serving state of a model is
a pure fold of its events, ``state = reduce(apply, events, ModelState(model))``, so
replaying the log to an offset or a time gives the state that was live then.

A version is *servable* while its status is ``registered`` (not ``failed``, not
``retired``). ``check(state, event)`` gives the reason an event is not a valid next event
(None when it is valid). Every event must carry the state's model, the next sequence
number (``state.sequence + 1``), a timestamp no earlier than the last applied event's,
and a non-empty event id, version and actor. Then, by kind:

* ``registered`` (data: ``artifact_hash`` sha256 hex, ``artifact_uri``,
  ``registry_version``): the version is new, or failed or retired and registered again
  with the same artifact hash (a retry). It becomes servable.
* ``load_failed`` (``error``, ``worker``): the version is known and not retired. It
  becomes failed and leaves the canary or shadow slot. A failed champion stays
  champion: a worker that cannot load it keeps serving what it had loaded, until
  another version is promoted.
* ``shadow_started`` (``fraction`` in (0, 1]): servable, neither champion nor canary.
  While a shadow runs only its own version may start again, to change the fraction.
* ``shadow_stopped``: the version is the shadow.
* ``canary_started`` (``percent`` in (0, 100]): servable, not the champion, and no
  canary runs. A shadow that becomes canary stops being the shadow.
* ``traffic_shifted`` (``percent`` in (0, 100]): the version is the canary. 100 percent
  sends all traffic to the canary but does not promote it: promotion is its own event.
* ``promoted``: servable and not the champion; while a canary runs, only the canary may
  be promoted. The canary (or shadow) slot the version held ends. The previous champion
  stays registered, so promoting it again is the way back.
* ``rolled_back`` (``evidence``, a mapping): the version is the canary or the shadow;
  that slot ends and the champion stays.
* ``retired``: known, not retired, and neither champion, canary nor shadow (roll back or
  stop it first).
* ``threshold_changed`` (``low_confidence`` in [0, 1]): the version, known, is the one
  the threshold was chosen against; the threshold holds for the model.
* ``calibration_changed`` (finite numbers, e.g. ``temperature`` > 0, ``conformal_alpha``
  in (0, 1)): the version is known and not retired; the numbers are merged into that
  version's overrides.

The fold never raises on a log written by someone else. ``apply`` ignores an event whose
sequence number is not above the state's (a redelivery, or the loser of a race between
two writers) and an event that fails ``check``; the caller detects the latter by calling
``check`` itself. An ignored event does not use up its sequence number, so the first
*valid* event of each sequence number wins. Writers build events with ``next_event``,
which clamps a clock that runs behind the log to the last event's time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeGuard, get_args

import orjson

__all__ = [
    "EVENT_KINDS",
    "EVENT_SCHEMA_VERSION",
    "EventKind",
    "ModelEvent",
    "ModelState",
    "VersionInfo",
    "VersionStatus",
    "apply",
    "check",
    "decode_event",
    "encode_event",
    "fold",
    "fold_until",
    "next_event",
]

EVENT_SCHEMA_VERSION = 1

EventKind = Literal[
    "registered",
    "load_failed",
    "shadow_started",
    "shadow_stopped",
    "canary_started",
    "traffic_shifted",
    "promoted",
    "rolled_back",
    "retired",
    "threshold_changed",
    "calibration_changed",
]
EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))

VersionStatus = Literal["registered", "retired", "failed"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """One lifecycle event; ``data`` holds the kind's fields (see the module doc)."""

    event_id: str
    model: str
    kind: EventKind
    version: str  # our content id of the model version
    sequence: int  # per model, from 1
    timestamp_ms: int
    actor: str
    reason: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    artifact_hash: str
    artifact_uri: str
    registry_version: str  # MLflow's version number
    registered_ms: int
    status: VersionStatus = "registered"


@dataclass(frozen=True, slots=True)
class ModelState:
    """What serves one model after the events up to ``sequence``; never mutated."""

    model: str
    sequence: int = 0
    versions: Mapping[str, VersionInfo] = field(default_factory=dict)
    champion: str | None = None
    canary: str | None = None
    canary_percent: float = 0.0
    shadow: str | None = None
    shadow_fraction: float = 0.0
    low_confidence: float | None = None
    calibration: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # by version
    last_event_ms: int | None = None

    def servable(self, version: str) -> bool:
        info = self.versions.get(version)
        return info is not None and info.status == "registered"


# -- check ----------------------------------------------------------------------------------


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number_error(data: Mapping[str, Any], key: str, low: float, high: float) -> str | None:
    """Why ``data[key]`` is not a number in ``(low, high]``, if it is not."""
    value = data.get(key)
    if not _is_number(value) or not low < value <= high:
        return f"data.{key} must be a number in ({low:g}, {high:g}], not {value!r}"
    return None


def _text_error(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        return f"data.{key} must be a non-empty string, not {value!r}"
    return None


def _unknown_error(state: ModelState, event: ModelEvent) -> str | None:
    if event.version not in state.versions:
        return f"version {event.version} is not registered"
    return None


def _unservable_error(state: ModelState, event: ModelEvent) -> str | None:
    info = state.versions.get(event.version)
    if info is None or info.status != "registered":
        status = "not registered" if info is None else info.status
        return f"version {event.version} is {status}"
    return None


def _check_registered(state: ModelState, event: ModelEvent) -> str | None:
    for key in ("artifact_uri", "registry_version"):
        if error := _text_error(event.data, key):
            return error
    artifact_hash = event.data.get("artifact_hash")
    if not isinstance(artifact_hash, str) or not _SHA256_HEX.fullmatch(artifact_hash):
        return f"data.artifact_hash must be 64 lowercase hex digits, not {artifact_hash!r}"
    info = state.versions.get(event.version)
    if info is None:
        return None
    if info.status == "registered":
        return f"version {event.version} is already registered"
    if info.artifact_hash != artifact_hash:
        return f"version {event.version} was registered with another artifact"
    return None


def _check_load_failed(state: ModelState, event: ModelEvent) -> str | None:
    for key in ("error", "worker"):
        if error := _text_error(event.data, key):
            return error
    if error := _unknown_error(state, event):
        return error
    if state.versions[event.version].status == "retired":
        return f"version {event.version} is retired"
    return None


def _check_shadow_started(state: ModelState, event: ModelEvent) -> str | None:
    if error := _number_error(event.data, "fraction", 0.0, 1.0):
        return error
    if error := _unservable_error(state, event):
        return error
    if event.version in {state.champion, state.canary}:
        return f"version {event.version} already serves as champion or canary"
    if state.shadow not in {None, event.version}:
        return f"version {state.shadow} is the shadow; stop it first"
    return None


def _check_shadow_stopped(state: ModelState, event: ModelEvent) -> str | None:
    if state.shadow != event.version:
        return f"version {event.version} is not the shadow"
    return None


def _check_canary_started(state: ModelState, event: ModelEvent) -> str | None:
    if error := _number_error(event.data, "percent", 0.0, 100.0):
        return error
    if error := _unservable_error(state, event):
        return error
    if state.champion == event.version:
        return f"version {event.version} is the champion"
    if state.canary is not None:
        return f"version {state.canary} is the canary; promote or roll it back first"
    return None


def _check_traffic_shifted(state: ModelState, event: ModelEvent) -> str | None:
    if error := _number_error(event.data, "percent", 0.0, 100.0):
        return error
    if state.canary != event.version:
        return f"version {event.version} is not the canary"
    return None


def _check_promoted(state: ModelState, event: ModelEvent) -> str | None:
    if error := _unservable_error(state, event):
        return error
    if state.champion == event.version:
        return f"version {event.version} is already the champion"
    if state.canary not in {None, event.version}:
        return f"version {state.canary} is the canary; promote or roll it back first"
    return None


def _check_rolled_back(state: ModelState, event: ModelEvent) -> str | None:
    if not isinstance(event.data.get("evidence"), Mapping):
        return "data.evidence must be a mapping"
    if event.version not in {state.canary, state.shadow}:
        return f"version {event.version} is neither the canary nor the shadow"
    return None


def _check_retired(state: ModelState, event: ModelEvent) -> str | None:
    if error := _unknown_error(state, event):
        return error
    if state.versions[event.version].status == "retired":
        return f"version {event.version} is already retired"
    if event.version in {state.champion, state.canary, state.shadow}:
        return f"version {event.version} still serves; promote another, roll back or stop it"
    return None


def _check_threshold_changed(state: ModelState, event: ModelEvent) -> str | None:
    value = event.data.get("low_confidence")
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        return f"data.low_confidence must be a number in [0, 1], not {value!r}"
    return _unknown_error(state, event)


def _calibration_values_error(data: Mapping[str, Any]) -> str | None:
    if not data:
        return "data must hold at least one calibration value"
    for key, value in data.items():
        if not _is_number(value):
            return f"data.{key} must be a finite number, not {value!r}"
    if data.get("temperature", 1.0) <= 0:
        return "data.temperature must be positive"
    if not 0 < data.get("conformal_alpha", 0.5) < 1:
        return "data.conformal_alpha must be in (0, 1)"
    return None


def _check_calibration_changed(state: ModelState, event: ModelEvent) -> str | None:
    if error := _calibration_values_error(event.data) or _unknown_error(state, event):
        return error
    if state.versions[event.version].status == "retired":
        return f"version {event.version} is retired"
    return None


_CHECKS: Mapping[str, Callable[[ModelState, ModelEvent], str | None]] = {
    "registered": _check_registered,
    "load_failed": _check_load_failed,
    "shadow_started": _check_shadow_started,
    "shadow_stopped": _check_shadow_stopped,
    "canary_started": _check_canary_started,
    "traffic_shifted": _check_traffic_shifted,
    "promoted": _check_promoted,
    "rolled_back": _check_rolled_back,
    "retired": _check_retired,
    "threshold_changed": _check_threshold_changed,
    "calibration_changed": _check_calibration_changed,
}


def check(state: ModelState, event: ModelEvent) -> str | None:
    """Why ``event`` is not a valid next event for ``state``; None when it is valid."""
    if event.model != state.model:
        return f"event of model {event.model!r} for the state of {state.model!r}"
    if event.sequence != state.sequence + 1:
        return f"sequence {event.sequence} where {state.sequence + 1} is next"
    if state.last_event_ms is not None and event.timestamp_ms < state.last_event_ms:
        return f"timestamp {event.timestamp_ms} is before the last event's {state.last_event_ms}"
    for name in ("event_id", "version", "actor"):
        if not getattr(event, name):
            return f"{name} is empty"
    kind_check = _CHECKS.get(event.kind)
    if kind_check is None:
        return f"unknown kind {event.kind!r}"
    return kind_check(state, event)


# -- apply ----------------------------------------------------------------------------------


def _set_status(state: ModelState, version: str, status: VersionStatus) -> ModelState:
    versions = dict(state.versions)
    versions[version] = replace(versions[version], status=status)
    return replace(state, versions=versions)


def _end_slots(state: ModelState, version: str) -> ModelState:
    """The state with ``version`` out of the canary and shadow slots."""
    if state.canary == version:
        state = replace(state, canary=None, canary_percent=0.0)
    if state.shadow == version:
        state = replace(state, shadow=None, shadow_fraction=0.0)
    return state


def _apply_registered(state: ModelState, event: ModelEvent) -> ModelState:
    info = VersionInfo(
        version=event.version,
        artifact_hash=event.data["artifact_hash"],
        artifact_uri=event.data["artifact_uri"],
        registry_version=event.data["registry_version"],
        registered_ms=event.timestamp_ms,
    )
    return replace(state, versions={**state.versions, event.version: info})


def _apply_load_failed(state: ModelState, event: ModelEvent) -> ModelState:
    return _end_slots(_set_status(state, event.version, "failed"), event.version)


def _apply_shadow_started(state: ModelState, event: ModelEvent) -> ModelState:
    return replace(state, shadow=event.version, shadow_fraction=float(event.data["fraction"]))


def _apply_canary_started(state: ModelState, event: ModelEvent) -> ModelState:
    state = _end_slots(state, event.version)
    return replace(state, canary=event.version, canary_percent=float(event.data["percent"]))


def _apply_traffic_shifted(state: ModelState, event: ModelEvent) -> ModelState:
    return replace(state, canary_percent=float(event.data["percent"]))


def _apply_promoted(state: ModelState, event: ModelEvent) -> ModelState:
    return replace(_end_slots(state, event.version), champion=event.version)


def _apply_ended(state: ModelState, event: ModelEvent) -> ModelState:
    return _end_slots(state, event.version)


def _apply_retired(state: ModelState, event: ModelEvent) -> ModelState:
    return _set_status(state, event.version, "retired")


def _apply_threshold_changed(state: ModelState, event: ModelEvent) -> ModelState:
    return replace(state, low_confidence=float(event.data["low_confidence"]))


def _apply_calibration_changed(state: ModelState, event: ModelEvent) -> ModelState:
    overrides = {**state.calibration.get(event.version, {})}
    overrides.update({key: float(value) for key, value in event.data.items()})
    return replace(state, calibration={**state.calibration, event.version: overrides})


_APPLY: Mapping[str, Callable[[ModelState, ModelEvent], ModelState]] = {
    "registered": _apply_registered,
    "load_failed": _apply_load_failed,
    "shadow_started": _apply_shadow_started,
    "shadow_stopped": _apply_ended,
    "canary_started": _apply_canary_started,
    "traffic_shifted": _apply_traffic_shifted,
    "promoted": _apply_promoted,
    "rolled_back": _apply_ended,
    "retired": _apply_retired,
    "threshold_changed": _apply_threshold_changed,
    "calibration_changed": _apply_calibration_changed,
}


def apply(state: ModelState, event: ModelEvent) -> ModelState:
    """The state after ``event``; ``state`` itself when the event is ignored (module doc)."""
    if event.sequence <= state.sequence or check(state, event) is not None:
        return state
    changed = _APPLY[event.kind](state, event)
    return replace(changed, sequence=event.sequence, last_event_ms=event.timestamp_ms)


def fold(
    events: Iterable[ModelEvent], initial: Mapping[str, ModelState] | None = None
) -> dict[str, ModelState]:
    """The state of every model after ``events`` (of several models, interleaved).

    A model appears once one of its events has been applied (or when ``initial`` has it).
    ``initial`` is not changed: folding a log in chunks, each from the last one's result,
    gives the state of folding it whole.
    """
    return fold_until(events, at_ms=None, initial=initial)


def fold_until(
    events: Iterable[ModelEvent],
    *,
    at_ms: int | None,
    initial: Mapping[str, ModelState] | None = None,
) -> dict[str, ModelState]:
    """The state that was live at ``at_ms``: every model as of its last applied event with
    ``timestamp_ms <= at_ms`` (all events when ``at_ms`` is None).

    Applied events of a model have non-decreasing timestamps, so once one lies past
    ``at_ms`` the model's later events are skipped: a later event cannot sneak in with
    an earlier timestamp, nor take the sequence number of the one skipped.
    """
    states = dict(initial or {})
    closed: set[str] = set()
    for event in events:
        if event.model in closed:
            continue
        state = states.get(event.model) or ModelState(event.model)
        after = apply(state, event)
        if after is state:
            continue
        if at_ms is not None and event.timestamp_ms > at_ms:
            closed.add(event.model)
        else:
            states[event.model] = after
    return states


def next_event(  # noqa: PLR0913 - the state and the kind, then keyword-only event fields
    state: ModelState,
    kind: EventKind,
    version: str,
    *,
    data: Mapping[str, Any] | None = None,
    actor: str,
    reason: str,
    now_ms: int,
    event_id: str,
) -> ModelEvent:
    """The event that makes ``kind`` happen next; ValueError with ``check``'s reason when
    it may not. A ``now_ms`` earlier than the last event's time counts as that time."""
    timestamp_ms = now_ms if state.last_event_ms is None else max(now_ms, state.last_event_ms)
    event = ModelEvent(
        event_id=event_id,
        model=state.model,
        kind=kind,
        version=version,
        sequence=state.sequence + 1,
        timestamp_ms=timestamp_ms,
        actor=actor,
        reason=reason,
        data=dict(data or {}),
    )
    if problem := check(state, event):
        raise ValueError(problem)
    return event


# -- codec ----------------------------------------------------------------------------------

# Upcasters from schema version N to N + 1, applied one step at a time by decode_event.
_UPCASTERS: Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

_TEXT_FIELDS = ("event_id", "model", "version", "actor", "reason")
_INT_FIELDS = ("sequence", "timestamp_ms")


def _require_finite(value: object, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}: JSON has no such number")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _require_finite(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _require_finite(item, f"{where}[{index}]")


def _mapping_as_dict(value: object) -> dict[Any, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(type(value).__name__)


def encode_event(event: ModelEvent) -> bytes:
    """JSON bytes for ``model.events``; ValueError when ``data`` is not JSON-encodable
    (NaN and infinities included, which orjson would quietly write as null)."""
    _require_finite(event.data, "data")
    record = {
        "schema_version": EVENT_SCHEMA_VERSION,
        **{name: getattr(event, name) for name in (*_TEXT_FIELDS, *_INT_FIELDS, "kind")},
        "data": event.data,
    }
    try:
        return orjson.dumps(record, default=_mapping_as_dict)
    except orjson.JSONEncodeError as error:
        raise ValueError(f"model event {event.event_id} is not JSON-encodable: {error}") from None


def _structure_error(record: Mapping[str, Any]) -> str | None:
    """Why a record of the current schema version is not a model event, if it is not."""
    for name in _TEXT_FIELDS:
        if not isinstance(record.get(name), str):
            return f"field {name} must be a string"
    for name in _INT_FIELDS:
        value = record.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"field {name} must be an integer"
    if record.get("kind") not in EVENT_KINDS:
        return f"unknown kind {record.get('kind')!r}"
    if not isinstance(record.get("data"), dict):
        return "field data must be a JSON object"
    return None


def decode_event(raw: bytes) -> ModelEvent:
    """The event in ``raw``; ValueError saying what is wrong when it is malformed.

    Structure only: whether the event makes sense is ``check``'s business. Unknown extra
    fields are ignored. An older schema version is upcast one step at a time.
    """
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"model event is not JSON: {error}") from None
    if not isinstance(record, dict):
        raise ValueError("model event is not a JSON object")  # noqa: TRY004 - bad input
    schema_version = record.get("schema_version")
    if type(schema_version) is not int or not 1 <= schema_version <= EVENT_SCHEMA_VERSION:
        raise ValueError(f"unknown model event schema_version {schema_version!r}")
    for version in range(schema_version, EVENT_SCHEMA_VERSION):
        record = _UPCASTERS[version](record)
    if problem := _structure_error(record):
        raise ValueError(f"malformed model event: {problem}")
    return ModelEvent(
        event_id=record["event_id"],
        model=record["model"],
        kind=record["kind"],
        version=record["version"],
        sequence=record["sequence"],
        timestamp_ms=record["timestamp_ms"],
        actor=record["actor"],
        reason=record["reason"],
        data=record["data"],
    )
