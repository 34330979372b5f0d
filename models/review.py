"""The review queue: which predictions a person should label, ranked, rate-limited.

A decision is a candidate when the model is unsure of it: its top probability is below
``max_confidence``, or the ensemble's members disagree (mutual information, BALD, at
least ``min_disagreement`` nats), or its conformal set holds more than one class. Its
priority is ``(1 - confidence) + disagreement_weight * mutual_information``.

Candidates are collected per time slot of ``slot_ms`` (on the prediction's scoring
time); when a later slot begins, the slot's best ``per_slot`` candidates are released,
ranked 1, 2, ... by priority. That is the rate limit: at most ``per_slot`` items a slot.
An entity gets at most one item per ``entity_cooldown_ms``, and a request at most one
ever (a redelivered prediction is not queued twice). Time is an argument.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_REMEMBERED = 100_000  # request ids and entities remembered for de-duplication


@dataclass(frozen=True)
class ReviewPolicy:
    max_confidence: float = 0.7
    min_disagreement: float = 0.05
    disagreement_weight: float = 2.0
    slot_ms: int = 10_000
    per_slot: int = 20
    entity_cooldown_ms: int = 3_600_000


def priority(prediction: Mapping[str, Any], policy: ReviewPolicy) -> float | None:
    """The candidate's priority, or None when the model is sure enough."""
    uncertainty = prediction.get("uncertainty")
    if prediction.get("route") == "shadow" or not isinstance(uncertainty, Mapping):
        return None
    confidence = float(uncertainty["confidence"])
    disagreement = float(uncertainty["mutual_information"])
    unsure = (
        confidence < policy.max_confidence
        or disagreement >= policy.min_disagreement
        or len(uncertainty.get("conformal_set", ())) > 1
    )
    if not unsure:
        return None
    return (1.0 - confidence) + policy.disagreement_weight * disagreement


class ReviewSelector:
    def __init__(self, policy: ReviewPolicy | None = None) -> None:
        self.policy = policy or ReviewPolicy()
        self._slot: int | None = None
        self._candidates: list[tuple[float, str, dict[str, Any]]] = []
        self._queued_requests: OrderedDict[str, None] = OrderedDict()
        self._entity_last_ms: OrderedDict[str, int] = OrderedDict()

    def offer(self, prediction: Mapping[str, Any], now_ms: int) -> list[dict[str, Any]]:
        """Consider one prediction; the items of a slot that just closed, ranked."""
        released = self.poll(now_ms)
        score = priority(prediction, self.policy)
        request_id = str(prediction["request_id"])
        if score is not None and request_id not in self._queued_requests:
            item = {
                "request_id": request_id,
                "entity_id": prediction.get("entity_id"),
                "model": prediction.get("model"),
                "route": prediction.get("route"),
                "probabilities": prediction.get("probabilities"),
                "uncertainty": prediction.get("uncertainty"),
                "priority": round(score, 6),
            }
            candidate = (score, request_id, item)
            if len(self._candidates) < self.policy.per_slot * 4:
                heapq.heappush(self._candidates, candidate)
            else:  # keep a bounded pool of the best candidates
                heapq.heappushpop(self._candidates, candidate)
        return released

    def poll(self, now_ms: int) -> list[dict[str, Any]]:
        """Release the open slot's best candidates once ``now_ms`` is in a later slot."""
        slot = now_ms // self.policy.slot_ms
        if self._slot is None:
            self._slot = slot
        if slot <= self._slot:
            return []
        closed_at = (self._slot + 1) * self.policy.slot_ms
        self._slot = slot
        ranked = sorted(self._candidates, key=lambda c: (-c[0], c[1]))
        self._candidates = []
        released: list[dict[str, Any]] = []
        for _, request_id, item in ranked:
            if len(released) == self.policy.per_slot:
                break
            entity = str(item["entity_id"])
            last = self._entity_last_ms.get(entity)
            if last is not None and closed_at - last < self.policy.entity_cooldown_ms:
                continue
            self._remember(self._entity_last_ms, entity, closed_at)
            self._remember(self._queued_requests, request_id, None)
            released.append({**item, "rank": len(released) + 1, "queued_at": closed_at})
        return released

    @staticmethod
    def _remember(seen: OrderedDict[str, Any], key: str, value: Any) -> None:
        seen[key] = value
        seen.move_to_end(key)
        while len(seen) > MAX_REMEMBERED:
            seen.popitem(last=False)
