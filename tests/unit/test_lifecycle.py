"""The lifecycle fold: each rule of ``check``, the anomaly policy, the codec, and
properties of the fold over random logs that mix valid and invalid events."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, get_args

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.lifecycle import (
    EVENT_KINDS,
    EVENT_SCHEMA_VERSION,
    EventKind,
    ModelEvent,
    ModelState,
    apply,
    check,
    decode_event,
    encode_event,
    fold,
    fold_until,
    next_event,
)

HASHES = {f"v{i}": f"{i:x}" * 64 for i in range(1, 5)}


def registration(version: str) -> dict[str, Any]:
    return {
        "artifact_hash": HASHES[version],
        "artifact_uri": f"s3://models/fraud/{version}",
        "registry_version": version[1:],
    }


def _fields(event: ModelEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in ModelEvent.__dataclass_fields__}


class Log:
    """A writer: builds each event with ``next_event`` and folds it in."""

    def __init__(self, model: str = "fraud") -> None:
        self.state = ModelState(model)
        self.events: list[ModelEvent] = []
        self.now_ms = 1_000

    def event(self, kind: EventKind, version: str, **data: Any) -> ModelEvent:
        """The next event, not applied."""
        return next_event(
            self.state,
            kind,
            version,
            data=data,
            actor="tester",
            reason="test",
            now_ms=self.now_ms,
            event_id=f"{self.state.model}-{len(self.events) + 1}",
        )

    def emit(self, kind: EventKind, version: str, **data: Any) -> ModelEvent:
        event = self.event(kind, version, **data)
        after = apply(self.state, event)
        assert after is not self.state, f"{kind} {version} was ignored"
        self.state = after
        self.events.append(event)
        self.now_ms += 10
        return event

    def rejects(self, kind: EventKind, version: str, **data: Any) -> str:
        with pytest.raises(ValueError, match=r".") as raised:
            self.event(kind, version, **data)
        return str(raised.value)

    def register(self, *versions: str) -> Log:
        for version in versions:
            self.emit("registered", version, **registration(version))
        return self


def with_champion() -> Log:
    log = Log().register("v1", "v2")
    log.emit("promoted", "v1")
    return log


class TestRollout:
    def test_a_version_goes_from_shadow_to_canary_to_champion(self) -> None:
        log = with_champion()
        log.emit("shadow_started", "v2", fraction=0.1)
        assert (log.state.shadow, log.state.shadow_fraction) == ("v2", 0.1)
        log.emit("canary_started", "v2", percent=5)
        assert (log.state.shadow, log.state.shadow_fraction) == (None, 0.0)
        assert (log.state.canary, log.state.canary_percent) == ("v2", 5.0)
        log.emit("traffic_shifted", "v2", percent=25)
        log.emit("traffic_shifted", "v2", percent=100)
        assert log.state.champion == "v1"  # 100 percent is not a promotion
        assert log.state.canary_percent == 100.0
        log.emit("promoted", "v2")
        assert log.state.champion == "v2"
        assert (log.state.canary, log.state.canary_percent) == (None, 0.0)
        assert log.state.versions["v1"].status == "registered"
        assert log.state.sequence == 8
        assert log.state.last_event_ms == log.events[-1].timestamp_ms

    def test_registration_records_the_artifact(self) -> None:
        log = Log().register("v1")
        info = log.state.versions["v1"]
        assert info.artifact_hash == HASHES["v1"]
        assert info.artifact_uri == "s3://models/fraud/v1"
        assert info.registry_version == "1"
        assert info.registered_ms == log.events[0].timestamp_ms
        assert info.status == "registered"

    def test_the_first_champion_is_promoted_without_a_canary(self) -> None:
        log = Log().register("v1")
        log.emit("promoted", "v1")
        assert log.state.champion == "v1"
        assert "already the champion" in log.rejects("promoted", "v1")

    def test_the_old_champion_can_be_promoted_back(self) -> None:
        log = with_champion()
        log.emit("promoted", "v2")
        log.emit("promoted", "v1")
        assert log.state.champion == "v1"

    def test_only_the_running_canary_may_be_promoted(self) -> None:
        log = with_champion().register("v3")
        log.emit("canary_started", "v2", percent=5)
        assert "canary" in log.rejects("promoted", "v3")
        assert "canary" in log.rejects("canary_started", "v3", percent=5)

    def test_a_rollback_ends_the_canary_and_keeps_the_champion(self) -> None:
        log = with_champion()
        log.emit("canary_started", "v2", percent=25)
        assert "evidence" in log.rejects("rolled_back", "v2")
        log.emit("rolled_back", "v2", evidence={"rule": "error_ratio"})
        assert (log.state.champion, log.state.canary, log.state.canary_percent) == (
            "v1",
            None,
            0.0,
        )
        assert log.state.versions["v2"].status == "registered"
        assert "neither" in log.rejects("rolled_back", "v1", evidence={})

    def test_a_rollback_ends_a_shadow(self) -> None:
        log = with_champion()
        log.emit("shadow_started", "v2", fraction=0.5)
        log.emit("rolled_back", "v2", evidence={})
        assert (log.state.shadow, log.state.shadow_fraction) == (None, 0.0)

    def test_traffic_shifts_only_for_the_canary_and_within_range(self) -> None:
        log = with_champion()
        assert "not the canary" in log.rejects("traffic_shifted", "v2", percent=5)
        log.emit("canary_started", "v2", percent=5)
        for bad in (0, -1, 100.5, math.nan, math.inf, True, "50", None):
            assert "percent" in log.rejects("traffic_shifted", "v2", percent=bad)
        log.emit("traffic_shifted", "v2", percent=1)
        assert log.state.canary_percent == 1.0

    def test_the_champion_is_neither_canary_nor_shadow(self) -> None:
        log = with_champion()
        assert "champion" in log.rejects("canary_started", "v1", percent=5)
        assert "champion" in log.rejects("shadow_started", "v1", fraction=0.5)
        log.emit("canary_started", "v2", percent=5)
        assert "canary" in log.rejects("shadow_started", "v2", fraction=0.5)

    def test_one_shadow_at_a_time_which_may_change_its_fraction(self) -> None:
        log = with_champion().register("v3")
        log.emit("shadow_started", "v2", fraction=0.2)
        assert "stop it first" in log.rejects("shadow_started", "v3", fraction=0.2)
        log.emit("shadow_started", "v2", fraction=1)
        assert log.state.shadow_fraction == 1.0
        assert "fraction" in log.rejects("shadow_started", "v2", fraction=1.5)
        assert "not the shadow" in log.rejects("shadow_stopped", "v3")
        log.emit("shadow_stopped", "v2")
        assert (log.state.shadow, log.state.shadow_fraction) == (None, 0.0)
        log.emit("shadow_started", "v3", fraction=0.2)

    def test_unregistered_versions_cannot_serve(self) -> None:
        log = with_champion()
        cases: list[tuple[EventKind, dict[str, Any]]] = [
            ("promoted", {}),
            ("canary_started", {"percent": 5}),
            ("shadow_started", {"fraction": 0.5}),
        ]
        for kind, data in cases:
            assert "not registered" in log.rejects(kind, "v9", **data)


class TestRegistration:
    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("artifact_hash", "AB" * 32, "artifact_hash"),
            ("artifact_hash", "ab" * 31, "artifact_hash"),
            ("artifact_hash", None, "artifact_hash"),
            ("artifact_uri", "", "artifact_uri"),
            ("registry_version", 3, "registry_version"),
        ],
    )
    def test_the_artifact_fields_are_checked(self, field: str, value: Any, message: str) -> None:
        assert message in Log().rejects("registered", "v1", **{**registration("v1"), field: value})

    def test_a_version_registers_once(self) -> None:
        log = Log().register("v1")
        assert "already registered" in log.rejects("registered", "v1", **registration("v1"))

    def test_a_failed_version_registers_again_with_its_own_artifact_only(self) -> None:
        log = with_champion()
        log.emit("load_failed", "v2", error="CUDA out of memory", worker="w3")
        other = {**registration("v2"), "artifact_hash": HASHES["v3"]}
        assert "another artifact" in log.rejects("registered", "v2", **other)
        log.emit("registered", "v2", **registration("v2"))
        assert log.state.versions["v2"].status == "registered"
        log.emit("canary_started", "v2", percent=5)


class TestLoadFailureAndRetirement:
    def test_a_failed_canary_leaves_its_slot_and_cannot_serve(self) -> None:
        log = with_champion()
        log.emit("canary_started", "v2", percent=5)
        log.emit("load_failed", "v2", error="bad graph", worker="w1")
        assert log.state.versions["v2"].status == "failed"
        assert (log.state.champion, log.state.canary) == ("v1", None)
        assert "failed" in log.rejects("promoted", "v2")
        assert "failed" in log.rejects("shadow_started", "v2", fraction=0.1)

    def test_a_failed_shadow_leaves_its_slot(self) -> None:
        log = with_champion()
        log.emit("shadow_started", "v2", fraction=0.3)
        log.emit("load_failed", "v2", error="bad graph", worker="w1")
        assert (log.state.shadow, log.state.shadow_fraction) == (None, 0.0)

    def test_a_failed_champion_stays_champion_until_another_is_promoted(self) -> None:
        log = with_champion()
        log.emit("load_failed", "v1", error="disk full", worker="w2")
        log.emit("load_failed", "v1", error="disk full", worker="w4")
        assert log.state.champion == "v1"
        assert log.state.versions["v1"].status == "failed"
        log.emit("promoted", "v2")
        assert log.state.champion == "v2"

    def test_load_failure_needs_a_known_version_and_its_fields(self) -> None:
        log = with_champion()
        assert "not registered" in log.rejects("load_failed", "v9", error="x", worker="w")
        assert "worker" in log.rejects("load_failed", "v2", error="x")

    def test_retirement_rules(self) -> None:
        log = with_champion().register("v3")
        assert "still serves" in log.rejects("retired", "v1")
        log.emit("canary_started", "v2", percent=5)
        assert "still serves" in log.rejects("retired", "v2")
        log.emit("shadow_started", "v3", fraction=0.1)
        assert "still serves" in log.rejects("retired", "v3")
        log.emit("shadow_stopped", "v3")
        log.emit("retired", "v3")
        assert log.state.versions["v3"].status == "retired"
        assert "already retired" in log.rejects("retired", "v3")
        assert "retired" in log.rejects("load_failed", "v3", error="x", worker="w")
        assert "retired" in log.rejects("canary_started", "v3", percent=5)
        log.emit("registered", "v3", **registration("v3"))
        log.emit("shadow_started", "v3", fraction=0.1)


class TestThresholdAndCalibration:
    def test_the_threshold_is_the_models(self) -> None:
        log = with_champion()
        log.emit("threshold_changed", "v1", low_confidence=0.65)
        log.emit("promoted", "v2")
        assert log.state.low_confidence == 0.65
        for bad in (-0.1, 1.1, math.nan, "0.5"):
            assert "low_confidence" in log.rejects("threshold_changed", "v1", low_confidence=bad)
        assert "not registered" in log.rejects("threshold_changed", "v9", low_confidence=0.5)

    def test_calibration_overrides_merge_per_version(self) -> None:
        log = with_champion()
        log.emit("calibration_changed", "v1", temperature=1.5)
        log.emit("calibration_changed", "v1", conformal_alpha=0.1)
        log.emit("calibration_changed", "v2", temperature=0.8)
        log.emit("calibration_changed", "v1", temperature=1.25)
        assert log.state.calibration == {
            "v1": {"temperature": 1.25, "conformal_alpha": 0.1},
            "v2": {"temperature": 0.8},
        }

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({}, "at least one"),
            ({"temperature": 0}, "temperature"),
            ({"temperature": -1.0}, "temperature"),
            ({"conformal_alpha": 1.0}, "conformal_alpha"),
            ({"conformal_alpha": 0}, "conformal_alpha"),
            ({"temperature": math.inf}, "temperature"),
            ({"note": "refit"}, "note"),
        ],
    )
    def test_calibration_values_are_checked(self, data: dict[str, Any], message: str) -> None:
        assert message in with_champion().rejects("calibration_changed", "v1", **data)


class TestAnomalies:
    def test_the_sequence_must_be_the_next_one(self) -> None:
        log = Log().register("v1")
        event = log.event("promoted", "v1")
        for sequence in (1, 3):
            moved = ModelEvent(**{**_fields(event), "sequence": sequence})
            assert "sequence" in str(check(log.state, moved))
            assert apply(log.state, moved) is log.state

    def test_a_redelivered_event_is_ignored(self) -> None:
        log = with_champion()
        before = log.state
        for event in log.events:
            assert apply(before, event) is before

    def test_the_first_writer_of_a_sequence_number_wins(self) -> None:
        log = with_champion()
        first = log.event("canary_started", "v2", percent=5)
        second = ModelEvent(**{**_fields(first), "event_id": "other", "data": {"percent": 50}})
        state = fold([*log.events, first, second])["fraud"]
        assert (state.canary_percent, state.sequence) == (5.0, 4)

    def test_an_invalid_event_does_not_use_up_its_sequence_number(self) -> None:
        log = with_champion()
        bad = ModelEvent(**{**_fields(log.event("promoted", "v2")), "version": "v9"})
        good = log.event("promoted", "v2")
        assert bad.sequence == good.sequence
        assert check(log.state, bad) == "version v9 is not registered"
        assert fold([*log.events, bad, good])["fraud"].champion == "v2"

    def test_time_may_not_go_back_and_next_event_clamps_it(self) -> None:
        log = Log().register("v1")
        event = log.event("promoted", "v1")
        earlier = ModelEvent(**{**_fields(event), "timestamp_ms": event.timestamp_ms - 11})
        assert "before the last event" in str(check(log.state, earlier))
        log.now_ms = 5  # a writer whose clock is behind the log
        assert log.emit("promoted", "v1").timestamp_ms == log.events[0].timestamp_ms

    def test_empty_identifiers_and_other_models_are_refused(self) -> None:
        log = Log().register("v1")
        event = log.event("promoted", "v1")
        for name in ("event_id", "actor"):
            assert check(log.state, ModelEvent(**{**_fields(event), name: ""})) == (
                f"{name} is empty"
            )
        assert "model" in str(check(ModelState("other"), event))
        unknown = ModelEvent(**{**_fields(event), "kind": "deleted"})
        assert check(log.state, unknown) == "unknown kind 'deleted'"
        assert apply(log.state, unknown) is log.state


class TestFold:
    def test_models_are_folded_apart(self) -> None:
        fraud, churn = with_champion(), Log("churn").register("v3")
        churn.emit("promoted", "v3")
        interleaved = [e for pair in zip(fraud.events, churn.events, strict=False) for e in pair]
        interleaved += fraud.events[len(churn.events) :]
        assert fold(interleaved) == {"fraud": fraud.state, "churn": churn.state}

    def test_a_model_without_an_applied_event_is_absent(self) -> None:
        log = with_champion()
        assert fold(log.events[1:]) == {}

    def test_fold_until_gives_the_state_live_at_a_time(self) -> None:
        log = with_champion()
        states = [ModelState("fraud")]
        for event in log.events:
            states.append(apply(states[-1], event))
        times = [event.timestamp_ms for event in log.events]
        assert fold_until(log.events, at_ms=times[0] - 1) == {}
        assert fold_until(log.events, at_ms=times[1]) == {"fraud": states[2]}
        assert fold_until(log.events, at_ms=times[1] + 5) == {"fraud": states[2]}
        assert fold_until(log.events, at_ms=None) == {"fraud": states[3]}

    def test_fold_until_does_not_let_a_race_loser_in(self) -> None:
        log = with_champion()
        winner = log.event("canary_started", "v2", percent=5)
        loser = ModelEvent(**{**_fields(winner), "event_id": "loser", "data": {"percent": 50}})
        events = [*log.events, ModelEvent(**{**_fields(winner), "timestamp_ms": 9_000}), loser]
        assert fold_until(events, at_ms=8_000) == {"fraud": log.state}


class TestCodec:
    def test_the_wire_format(self) -> None:
        event = with_champion().event("canary_started", "v2", percent=5)
        assert orjson.loads(encode_event(event)) == {
            "schema_version": EVENT_SCHEMA_VERSION,
            "event_id": "fraud-4",
            "model": "fraud",
            "kind": "canary_started",
            "version": "v2",
            "sequence": 4,
            "timestamp_ms": 1_030,
            "actor": "tester",
            "reason": "test",
            "data": {"percent": 5},
        }
        assert decode_event(encode_event(event)) == event

    def test_read_only_mappings_encode(self) -> None:
        event = ModelEvent(
            "e", "m", "rolled_back", "v", 1, 0, "a", "", MappingProxyType({"evidence": {}})
        )
        assert decode_event(encode_event(event)).data == {"evidence": {}}

    @pytest.mark.parametrize("bad", [math.nan, math.inf, [1.0, -math.inf]])
    def test_non_finite_numbers_do_not_encode(self, bad: Any) -> None:
        event = ModelEvent("e", "m", "rolled_back", "v", 1, 0, "a", "", {"evidence": {"x": bad}})
        with pytest.raises(ValueError, match=r"data\.evidence\.x"):
            encode_event(event)

    def test_unencodable_data_is_a_value_error(self) -> None:
        event = ModelEvent("e", "m", "rolled_back", "v", 1, 0, "a", "", {"evidence": {1: 2}})
        with pytest.raises(ValueError, match="not JSON-encodable"):
            encode_event(event)

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b"{", "not JSON"),
            (b"[]", "not a JSON object"),
            (b'{"schema_version": 2}', "schema_version 2"),
            (b'{"schema_version": true}', "schema_version True"),
            (b'{"schema_version": 1.0}', "schema_version 1.0"),
            (b'{"schema_version": 1}', "event_id"),
        ],
    )
    def test_malformed_bytes_are_refused(self, raw: bytes, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            decode_event(raw)

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("sequence", "4", "sequence"),
            ("sequence", True, "sequence"),
            ("timestamp_ms", 1.5, "timestamp_ms"),
            ("kind", "deleted", "unknown kind"),
            ("data", [], "data"),
            ("reason", None, "reason"),
        ],
    )
    def test_malformed_fields_are_refused(self, field: str, value: Any, message: str) -> None:
        record = orjson.loads(encode_event(with_champion().events[0]))
        record[field] = value
        with pytest.raises(ValueError, match=message):
            decode_event(orjson.dumps(record))

    def test_unknown_extra_fields_are_ignored(self) -> None:
        event = with_champion().events[0]
        record = {**orjson.loads(encode_event(event)), "trace_id": "abc"}
        assert decode_event(orjson.dumps(record)) == event


# -- properties -----------------------------------------------------------------------------

KINDS: tuple[EventKind, ...] = get_args(EventKind)
VALUES = [0.0, 0.1, 0.5, 1.0, 5.0, 25.0, 100.0, 150.0]


def _data(kind: EventKind, version: str, value: float) -> dict[str, Any]:
    """Kind-specific data: valid for most values, out of range for some."""
    if kind == "registered":
        artifact = HASHES[version] if value != 0.0 else "not-a-hash"
        return {**registration(version), "artifact_hash": artifact}
    by_kind: dict[str, dict[str, Any]] = {
        "load_failed": {"error": "oom", "worker": "w1"},
        "shadow_started": {"fraction": value},
        "canary_started": {"percent": value},
        "traffic_shifted": {"percent": value},
        "rolled_back": {"evidence": {"value": value}},
        "threshold_changed": {"low_confidence": value},
        "calibration_changed": {"temperature": value},
    }
    return by_kind.get(kind, {})


MODELS = ["fraud", "churn"]


def _candidate(
    state: ModelState, kind: EventKind, version: str, value: float, now_ms: int
) -> ModelEvent:
    return ModelEvent(
        event_id=f"{state.model}-{state.sequence + 1}-{now_ms}",
        model=state.model,
        kind=kind,
        version=version,
        sequence=state.sequence + 1,
        timestamp_ms=now_ms,
        actor="writer",
        reason="",
        data=_data(kind, version, value),
    )


@st.composite
def logs(draw: st.DrawFn) -> list[ModelEvent]:
    """Logs of two models as writers that read the log would write them, mostly valid
    events, with anomalies mixed in: any kind for any version, races for a sequence
    number, gaps, clocks that step back."""
    view: dict[str, ModelState] = {}
    events: list[ModelEvent] = []
    now_ms = 0
    for _ in range(draw(st.integers(0, 50))):
        model = draw(st.sampled_from(MODELS))
        state = view.get(model, ModelState(model))
        value = draw(st.sampled_from(VALUES))
        now_ms += draw(st.integers(0, 40))
        valid = [
            event
            for kind in KINDS
            for version in sorted(HASHES)
            if check(state, event := _candidate(state, kind, version, value, now_ms)) is None
        ]
        pick_valid = draw(st.integers(0, 4)) > 0
        if valid and pick_valid:  # a valid event, its kind drawn first
            kind = draw(st.sampled_from(sorted({event.kind for event in valid})))
            event = draw(st.sampled_from([event for event in valid if event.kind == kind]))
        else:
            kind, version = draw(st.sampled_from(KINDS)), draw(st.sampled_from(sorted(HASHES)))
            event = _candidate(state, kind, version, value, now_ms)
            jitter = draw(st.sampled_from([0, 0, -1, 1]))
            back_ms = draw(st.sampled_from([0, 0, 50]))
            fields = {"sequence": event.sequence + jitter, "timestamp_ms": now_ms - back_ms}
            event = ModelEvent(**{**_fields(event), **fields})
        events.append(event)
        view[model] = apply(state, event)
    return events


def assert_invariants(state: ModelState) -> None:
    servable = {v for v, info in state.versions.items() if info.status == "registered"}
    assert all(info.version == version for version, info in state.versions.items())
    if state.canary is None:
        assert state.canary_percent == 0.0
    else:
        assert state.canary in servable
        assert state.canary != state.champion
        assert 0.0 < state.canary_percent <= 100.0
    if state.shadow is None:
        assert state.shadow_fraction == 0.0
    else:
        assert state.shadow in servable
        assert state.shadow not in {state.champion, state.canary}
        assert 0.0 < state.shadow_fraction <= 1.0
    if state.champion is not None:
        assert state.versions[state.champion].status != "retired"
    assert set(state.calibration) <= set(state.versions)


@given(logs())
def test_fold_equals_incremental_application_on_every_prefix(events: list[ModelEvent]) -> None:
    states: dict[str, ModelState] = {}
    applied: dict[str, list[ModelEvent]] = {}
    for index, event in enumerate(events):
        before = states.get(event.model, ModelState(event.model))
        reason = check(before, event)
        after = apply(before, event)
        assert (after is not before) == (reason is None)
        if reason is None:
            states[event.model] = after
            applied.setdefault(event.model, []).append(event)
            assert_invariants(after)
            assert after.sequence == len(applied[event.model])
            assert after.last_event_ms == event.timestamp_ms
        assert fold(events[: index + 1]) == states


@given(logs(), st.data())
def test_the_fold_does_not_depend_on_chunking(
    events: list[ModelEvent], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(events)))
    first = fold(events[:cut])
    kept = dict(first)
    assert fold(events[cut:], initial=first) == fold(events)
    assert first == kept


@given(logs(), st.data())
def test_redelivered_events_change_nothing(events: list[ModelEvent], data: st.DataObject) -> None:
    whole = fold(events)
    # Ignored events are no-ops: dropping them leaves a log whose every event applies.
    valid = [e for e in events if check(fold_state(events, e), e) is None]
    assert fold(valid) == whole
    start = data.draw(st.integers(0, len(valid)))
    end = data.draw(st.integers(start, len(valid)))
    replay_at = data.draw(st.integers(end, len(valid)))
    redelivered = [*valid[:replay_at], *valid[start:end], *valid[replay_at:]]
    assert fold(redelivered) == whole
    assert fold(valid + valid) == whole
    # Any event, valid or not, delivered twice in a row changes nothing either.
    assert fold([e for event in events for e in (event, event)]) == whole


def fold_state(events: list[ModelEvent], target: ModelEvent) -> ModelState:
    """The state of ``target``'s model just before ``target`` in ``events``."""
    index = next(i for i, event in enumerate(events) if event is target)
    return fold(events[:index]).get(target.model, ModelState(target.model))


@given(logs(), st.integers(-5, 2_000))
def test_fold_until_is_the_last_applied_state_at_that_time(
    events: list[ModelEvent], at_ms: int
) -> None:
    expected: dict[str, ModelState] = {}
    states: dict[str, ModelState] = {}
    for event in events:
        before = states.get(event.model, ModelState(event.model))
        after = apply(before, event)
        if after is not before:
            states[event.model] = after
            if event.timestamp_ms <= at_ms:
                expected[event.model] = after
    assert fold_until(events, at_ms=at_ms) == expected


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), children, max_size=3)
    ),
    max_leaves=10,
)
safe_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


@given(
    st.builds(
        ModelEvent,
        event_id=safe_text,
        model=safe_text,
        kind=st.sampled_from(KINDS),
        version=safe_text,
        sequence=st.integers(-(2**63), 2**63 - 1),
        timestamp_ms=st.integers(-(2**63), 2**63 - 1),
        actor=safe_text,
        reason=safe_text,
        data=st.dictionaries(safe_text, json_values, max_size=4),
    )
)
def test_encoding_round_trips(event: ModelEvent) -> None:
    assert decode_event(encode_event(event)) == event


@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_raises_only_value_error(raw: bytes) -> None:
    try:
        event = decode_event(raw)
    except ValueError:
        return
    assert event.kind in EVENT_KINDS
