"""The label join and the arm counts the rollout controller reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from models.conformal import CalibrationScores
from models.feedback import ArmTracker, ConformalTracker, join_label, join_prediction, parse_label
from models.lifecycle import ModelState


def prediction(
    request_id: str, version: str, route: str, predicted: int, sequence: int = 3
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "model": {"name": "m", "version": version, "sequence": sequence},
        "route": route,
        "predicted": predicted,
        "probabilities": [1.0 - predicted, float(predicted)],
        "latency_ms": {"batch_score": 1.5},
        "scored_at": 10,
    }


def label(request_id: str, value: int, at: int = 100) -> dict[str, Any]:
    return {"request_id": request_id, "label": value, "label_time": at, "source": "test"}


def test_prediction_then_label_gives_one_outcome() -> None:
    entry, outcomes = join_prediction(None, prediction("r1", "v1", "champion", 1), 0)
    assert outcomes == []
    entry, outcomes = join_label(entry, label("r1", 0), 1)
    [outcome] = outcomes
    assert outcome["error"] is True
    assert outcome["superseded_error"] is None
    assert (outcome["version"], outcome["route"], outcome["label"]) == ("v1", "champion", 0)


def test_label_then_prediction_and_its_shadow_give_two_outcomes() -> None:
    entry, outcomes = join_label(None, label("r1", 1), 0)
    assert outcomes == []
    entry, first = join_prediction(entry, prediction("r1", "v1", "champion", 1), 1)
    entry, second = join_prediction(entry, prediction("r1", "v2", "shadow", 0), 2)
    assert [o["error"] for o in first + second] == [False, True]


def test_a_redelivered_prediction_changes_nothing() -> None:
    entry, _ = join_label(None, label("r1", 1), 0)
    entry, first = join_prediction(entry, prediction("r1", "v1", "champion", 1), 1)
    again, repeated = join_prediction(entry, prediction("r1", "v1", "champion", 1), 2)
    assert len(first) == 1
    assert repeated == []
    assert again["predictions"] == entry["predictions"]


def test_a_correction_supersedes_and_an_older_label_does_not() -> None:
    entry, _ = join_prediction(None, prediction("r1", "v1", "champion", 1), 0)
    entry, _ = join_label(entry, label("r1", 0, at=100), 1)
    entry, corrected = join_label(entry, label("r1", 1, at=200), 2)
    [outcome] = corrected
    assert (outcome["error"], outcome["superseded_error"]) == (False, True)
    entry, stale = join_label(entry, label("r1", 0, at=150), 3)
    assert stale == []
    assert entry["label"]["label"] == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"label": 1}', "request_id"),
        (b'{"request_id": "r", "label": true}', "class index"),
        (b'{"request_id": "r", "label": -1}', "class index"),
        (b'{"request_id": "r", "label": 1, "label_time": "x"}', "label_time"),
    ],
)
def test_a_bad_label_says_why(raw: bytes, reason: str) -> None:
    parsed = parse_label(raw)
    assert isinstance(parsed, str)
    assert reason in parsed


def test_a_good_label_parses() -> None:
    raw = orjson.dumps({"request_id": "r", "label": 1, "label_time": 5})
    assert parse_label(raw) == {"request_id": "r", "label": 1, "label_time": 5, "source": ""}


def outcome(version: str, route: str, *, error: bool, sequence: int) -> dict[str, Any]:
    entry, _ = join_label(None, label("r", 0 if error else 1), 0)
    _, [joined] = join_prediction(entry, prediction("r", version, route, 1, sequence), 0)
    return joined


def test_arm_tracker_counts_each_arm_since_its_step() -> None:
    tracker = ArmTracker()
    state = ModelState("m", sequence=4, champion="v1", canary="v2", canary_percent=5.0)
    tracker.observe_state(state)
    tracker.add(outcome("v2", "canary", error=True, sequence=3))  # before the canary: ignored
    tracker.add(outcome("v2", "canary", error=True, sequence=4))
    tracker.add(outcome("v1", "champion", error=False, sequence=4))
    tracker.add(outcome("v2", "shadow", error=True, sequence=4))  # shadows never count
    champion, canary = tracker.stats()
    assert (champion.n, champion.errors, canary.n, canary.errors) == (1, 0, 1, 1)
    tracker.observe_state(
        ModelState("m", sequence=5, champion="v1", canary="v2", canary_percent=25)
    )
    tracker.add(outcome("v2", "canary", error=False, sequence=4))  # the old step: ignored
    tracker.add(outcome("v2", "canary", error=False, sequence=5))
    tracker.add(outcome("v1", "champion", error=True, sequence=5))
    champion, canary = tracker.stats()
    assert (champion.n, champion.errors) == (2, 1)  # the champion keeps counting
    assert (canary.n, canary.errors) == (1, 0)  # the canary restarts at each step


def test_a_shadow_is_compared_with_the_champion_over_the_same_stretch() -> None:
    tracker = ArmTracker()
    tracker.observe_state(ModelState("m", sequence=2, champion="v1"))
    for _ in range(10):  # the champion was right before the shadow started
        tracker.add(outcome("v1", "champion", error=False, sequence=2))
    tracker.observe_state(ModelState("m", sequence=3, champion="v1", shadow="v2"))
    tracker.add(outcome("v1", "champion", error=True, sequence=3))
    tracker.add(outcome("v2", "shadow", error=False, sequence=3))
    champion, shadow = tracker.shadow_stats()
    assert (champion.n, champion.errors, shadow.n, shadow.errors) == (1, 1, 1, 0)
    assert tracker.stats()[0].n == 11  # the champion's own arm keeps its history


def test_arm_tracker_takes_back_a_superseded_error() -> None:
    tracker = ArmTracker()
    tracker.observe_state(ModelState("m", sequence=4, champion="v1", canary="v2", canary_percent=5))
    entry, _ = join_prediction(None, prediction("r", "v2", "canary", 1, 4), 0)
    entry, first = join_label(entry, label("r", 0, at=1), 0)
    _, corrected = join_label(entry, label("r", 1, at=2), 0)
    for joined in first + corrected:
        tracker.add(joined)
    _, canary = tracker.stats()
    assert (canary.n, canary.errors) == (1, 0)


def test_the_outcome_says_whether_the_served_set_held_the_label() -> None:
    served = {
        **prediction("r", "v1", "champion", 1),
        "uncertainty": {"conformal_set": [1], "conformal_alpha": 0.1},
    }
    entry, _ = join_prediction(None, served, 0)
    _, [missed] = join_label(entry, label("r", 0), 0)
    assert (missed["covered"], missed["conformal_alpha"]) == (False, 0.1)


def conformal_outcome(covered: bool, version: str = "v1") -> dict[str, Any]:
    return {
        "version": version,
        "route": "champion",
        "covered": covered,
        "conformal_alpha": 0.1,
        "superseded_error": None,
    }


def test_adaptive_conformal_lowers_alpha_after_misses_and_waits_between_changes() -> None:
    calibration = CalibrationScores(method="lac", scores=np.linspace(0.0, 1.0, 1_001))
    tracker = ConformalTracker(gamma=0.005, min_step=0.01, min_interval_ms=1_000)
    proposals = [
        tracker.add(conformal_outcome(covered=False), calibration, now_ms=i) for i in range(4)
    ]
    # Each miss moves alpha_t by 0.005 * (0.1 - 1) = -0.0045: the third passes 0.01.
    assert proposals == [None, None, pytest.approx(0.1 - 3 * 0.0045), None]
    later = [
        tracker.add(conformal_outcome(covered=False), calibration, now_ms=500 + i) for i in range(3)
    ]
    assert later == [None, None, None]  # moved enough, but within the interval
    assert tracker.add(
        conformal_outcome(covered=False), calibration, now_ms=2_000
    ) == pytest.approx(0.1 - 8 * 0.0045)
    assert tracker.coverage("v1") == 0.0
    assert (
        tracker.add({**conformal_outcome(covered=True), "route": "shadow"}, calibration, 3_000)
        is None
    )
    assert tracker.add(conformal_outcome(covered=True), None, 3_000) is None  # no scores kept
