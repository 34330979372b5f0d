"""The review queue: unsure predictions, ranked per slot, one per entity, rate-limited."""

from __future__ import annotations

from typing import Any

import pytest

from models.review import ReviewPolicy, ReviewSelector, priority

POLICY = ReviewPolicy(slot_ms=1_000, per_slot=2, entity_cooldown_ms=5_000)


def prediction(
    request_id: str, entity: str, confidence: float, mi: float = 0.0, route: str = "champion"
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "entity_id": entity,
        "route": route,
        "model": {"name": "m", "version": "v1"},
        "probabilities": [confidence, 1 - confidence],
        "uncertainty": {"confidence": confidence, "mutual_information": mi, "conformal_set": [0]},
    }


def test_confident_agreeing_predictions_and_shadows_are_not_candidates() -> None:
    assert priority(prediction("a", "e", 0.95), POLICY) is None
    assert priority(prediction("a", "e", 0.55, route="shadow"), POLICY) is None
    assert priority(prediction("a", "e", 0.95, mi=0.2), POLICY) == pytest.approx(0.45)
    assert priority(prediction("a", "e", 0.6), POLICY) == pytest.approx(0.4)


def test_a_slot_releases_its_best_candidates_ranked_when_the_next_begins() -> None:
    selector = ReviewSelector(POLICY)
    assert selector.offer(prediction("r1", "e1", 0.60), 100) == []
    assert selector.offer(prediction("r2", "e2", 0.52), 200) == []
    assert selector.offer(prediction("r3", "e3", 0.65), 300) == []
    released = selector.offer(prediction("r4", "e4", 0.99), 1_100)
    assert [(i["request_id"], i["rank"]) for i in released] == [("r2", 1), ("r1", 2)]
    assert all(i["queued_at"] == 1_000 for i in released)


def test_an_entity_is_queued_once_per_cooldown_and_a_request_once_ever() -> None:
    selector = ReviewSelector(POLICY)
    selector.offer(prediction("r1", "e1", 0.55), 0)
    assert [i["request_id"] for i in selector.poll(1_000)] == ["r1"]
    selector.offer(prediction("r2", "e1", 0.51), 1_500)  # same entity, within the cooldown
    selector.offer(prediction("r1", "e9", 0.51), 1_600)  # the same request again
    assert selector.poll(2_000) == []
    selector.offer(prediction("r3", "e1", 0.55), 7_000)  # cooldown over
    assert [i["request_id"] for i in selector.poll(8_000)] == ["r3"]
