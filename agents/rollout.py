"""The rollout controller: labelled outcomes in, canary steps, promotions and rollbacks out.

Outcomes are keyed by model name, so one worker reads all of a model's outcomes. It
follows the model state the fleet serves, counts the champion's and the canary's
outcomes (``models.feedback.ArmTracker``) and asks ``models.rollout.decide`` after each
one. A decision goes through the lifecycle command path, as an event carrying its
evidence; until that event has folded back into the state, no other decision is taken.
The counters live in memory: after a restart the controller counts afresh, which only
makes it wait longer.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog

from agents.lifecycle import commands, fleet
from models.feedback import ArmTracker
from models.rollout import RolloutPolicy, decide
from streams import topics
from streams.app import app, settings

log = structlog.get_logger(__name__)

policy = RolloutPolicy(
    min_samples=settings.rollout_min_samples,
    margin=settings.rollout_margin_pct / 100,
    p99_slo_ms=settings.rollout_p99_slo_ms,
)

if fleet is not None and commands is not None and settings.rollout_controller:
    served, lifecycle = fleet, commands

    @app.agent(topics.outcomes)
    async def control(stream: Any) -> None:
        tracker = ArmTracker()
        decided_at: int | None = None  # the state sequence of the last decision taken
        async for value in stream:
            serving = served.current
            if serving is None:
                continue
            state = serving.state
            tracker.observe_state(state)
            tracker.add(orjson.loads(value))
            if state.canary is None or decided_at == state.sequence:
                continue
            champion, canary = tracker.stats()
            decision = decide(state, champion, canary, policy)
            if decision is None:
                continue
            decided_at = state.sequence
            reason = f"rollout controller: {decision.evidence['rule']}"
            evidence = dict(decision.evidence)
            log.info("rollout.decision", kind=decision.kind, version=decision.version, **evidence)
            if decision.kind == "traffic_shifted" and decision.percent is not None:
                await lifecycle.shift(
                    decision.version, percent=decision.percent, evidence=evidence, reason=reason
                )
            elif decision.kind == "promoted":
                await lifecycle.promote(decision.version, evidence=evidence, reason=reason)
            else:
                await lifecycle.rollback(decision.version, evidence=evidence, reason=reason)
