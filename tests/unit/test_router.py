"""Routing: stable buckets, canary shares, independent shadow sampling, the router."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from models.lifecycle import EventKind, ModelEvent, ModelState, VersionInfo, next_event
from models.router import BUCKETS, ModelRouter, Route, bucket, route

KEYS = [f"entity-{i}" for i in range(20_000)]


def state(
    *,
    champion: str | None = "v1",
    canary: str | None = None,
    percent: float = 0.0,
    shadow: str | None = None,
    fraction: float = 0.0,
) -> ModelState:
    return ModelState(
        "fraud",
        sequence=7,
        champion=champion,
        canary=canary,
        canary_percent=percent,
        shadow=shadow,
        shadow_fraction=fraction,
    )


def share(keys: list[str], predicate: Callable[[str], bool]) -> float:
    return sum(bool(predicate(key)) for key in keys) / len(keys)


def canary_keys(current: ModelState) -> set[str]:
    return {key for key in KEYS if (r := route(current, key)) is not None and r.route == "canary"}


def test_buckets_are_pinned_so_every_process_agrees() -> None:
    # blake2b, never Python's salted hash(): these values hold in any process, on any host.
    assert bucket("user-42", salt="fraud\x00v2", person=b"headrace.canary") == 5954
    assert bucket("user-42", salt="fraud\x00v2", person=b"headrace.shadow") == 3096
    assert bucket("", salt="", person=b"headrace.canary") == 197


def test_nothing_to_route_to_without_champion_or_canary() -> None:
    assert route(state(champion=None), "k") is None
    assert route(state(champion=None, shadow="v3", fraction=1.0), "k") is None


def test_without_a_canary_the_champion_answers_every_key() -> None:
    assert {route(state(), key) for key in KEYS[:500]} == {Route("v1", "champion", None, 7)}


def test_without_a_champion_the_canary_answers_every_key() -> None:
    current = state(champion=None, canary="v2", percent=5.0)
    assert {route(current, key) for key in KEYS[:500]} == {Route("v2", "canary", None, 7)}


def test_the_canary_share_is_its_percent() -> None:
    for percent in (1.0, 5.0, 25.0, 50.0):
        routed = len(canary_keys(state(canary="v2", percent=percent))) / len(KEYS)
        assert abs(routed - percent / 100) < 0.01, (percent, routed)
    assert canary_keys(state(canary="v2", percent=100.0)) == set(KEYS)


def test_a_key_in_the_canary_stays_in_it_as_the_canary_grows() -> None:
    at_5 = canary_keys(state(canary="v2", percent=5.0))
    at_25 = canary_keys(state(canary="v2", percent=25.0))
    assert at_5 < at_25


def test_each_canary_version_draws_its_own_keys() -> None:
    v2 = canary_keys(state(canary="v2", percent=25.0))
    v3 = canary_keys(state(canary="v3", percent=25.0))
    overlap = len(v2 & v3) / len(KEYS)
    assert abs(overlap - 0.25 * 0.25) < 0.01


def test_shadow_sampling_is_independent_of_the_canary() -> None:
    current = state(canary="v2", percent=25.0, shadow="v3", fraction=0.1)
    routes = {key: route(current, key) for key in KEYS}
    in_canary = [key for key, r in routes.items() if r is not None and r.route == "canary"]
    in_champion = [key for key, r in routes.items() if r is not None and r.route == "champion"]

    def shadowed(key: str) -> bool:
        r = routes[key]
        return r is not None and r.shadow_version == "v3"

    assert abs(share(KEYS, shadowed) - 0.1) < 0.01
    assert abs(share(in_canary, shadowed) - 0.1) < 0.02
    assert abs(share(in_champion, shadowed) - 0.1) < 0.015


def test_a_full_shadow_fraction_shadows_every_key_on_both_routes() -> None:
    current = state(canary="v2", percent=50.0, shadow="v3", fraction=1.0)
    routes = [route(current, key) for key in KEYS[:2_000]]
    assert all(r is not None and r.shadow_version == "v3" for r in routes)
    assert {r.route for r in routes if r is not None} == {"champion", "canary"}


@given(
    st.text(max_size=30),
    st.floats(0.0, 100.0),
    st.floats(0.0, 100.0),
)
def test_a_larger_canary_percent_only_adds_keys(key: str, low: float, high: float) -> None:
    low, high = sorted((low, high))
    smaller = route(state(canary="v2", percent=low), key)
    larger = route(state(canary="v2", percent=high), key)
    assert smaller is not None
    assert larger is not None
    if smaller.route == "canary":
        assert larger.route == "canary"


@given(st.text(max_size=30), st.text(max_size=10))
def test_buckets_lie_in_range(key: str, salt: str) -> None:
    assert 0 <= bucket(key, salt=salt, person=b"p") < BUCKETS


def _event(current: ModelState, kind: EventKind, version: str, data: dict[str, Any]) -> ModelEvent:
    registered = {"artifact_hash": "a" * 64, "artifact_uri": "u", "registry_version": "1"}
    return next_event(
        current,
        kind,
        version,
        data=registered if kind == "registered" else data,
        actor="tester",
        reason="",
        now_ms=1_000 + current.sequence,
        event_id=f"{current.model}-{current.sequence + 1}",
    )


class TestModelRouter:
    def test_it_folds_events_and_routes_per_model(self) -> None:
        router = ModelRouter()
        assert router.route("fraud", "k") is None
        steps: list[tuple[EventKind, str, dict[str, Any]]] = [
            ("registered", "v1", {}),
            ("promoted", "v1", {}),
            ("registered", "v2", {}),
            ("canary_started", "v2", {"percent": 100.0}),
        ]
        for kind, version, data in steps:
            event = _event(router.state("fraud"), kind, version, data)
            assert router.apply(event)
            assert not router.apply(event)  # redelivered
        assert router.route("fraud", "k") == Route("v2", "canary", None, 4)
        assert router.route("churn", "k") is None
        assert set(router.states()) == {"fraud"}

    def test_it_starts_from_saved_states(self) -> None:
        info = VersionInfo("v1", "a" * 64, "u", "1", 0)
        saved = replace(state(), versions={"v1": info})
        router = ModelRouter({"fraud": saved})
        assert router.route("fraud", "k") == Route("v1", "champion", None, 7)
        assert router.state("fraud") is saved
