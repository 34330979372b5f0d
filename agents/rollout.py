"""The rollout controller: labelled outcomes in; canaries started from a shadow, canary
steps, promotions and rollbacks out.

Outcomes are keyed by model name, so one worker reads all of a model's outcomes. It
follows the model state the fleet serves, counts the champion's and the canary's
outcomes (``models.feedback.ArmTracker``) and asks ``models.rollout.decide`` after each
one. A decision goes through the lifecycle command path, as an event carrying its
evidence; until it has folded back into the state (the champion, canary or share has
changed), no other decision is taken.
The counters live in memory: after a restart the controller counts afresh, which only
makes it wait longer. The same agent runs adaptive conformal inference per version on the
outcomes (``models.feedback.ConformalTracker``) and logs a ``calibration_changed`` event
when a version's level has moved; every worker then serves its sets at that level. It
also keeps River's online metrics per version and route (accuracy, precision, recall,
F1, rolling ROC AUC, log loss, ECE) and the error-stream drift detector, and publishes the
metrics to ``drift.reports`` every 1,000 outcomes.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import structlog

from agents.drift import watch_outcome
from agents.lifecycle import commands, fleet
from models.conformal import CalibrationScores
from models.feedback import ArmTracker, ConformalTracker
from models.fleet import ServingSet
from models.online_metrics import OnlineMetrics
from models.rollout import RolloutPolicy, decide, decide_shadow
from streams import topics
from streams.app import app, settings
from streams.metrics import METRICS

log = structlog.get_logger(__name__)

CHECKPOINT_EVERY = 1_000  # outcomes between checkpoints of the error detectors

policy = RolloutPolicy(
    min_samples=settings.rollout_min_samples,
    max_samples=settings.rollout_max_samples,
    margin=settings.rollout_margin_pct / 100,
    p99_slo_ms=settings.rollout_p99_slo_ms,
)


_calibrations: dict[str, CalibrationScores | None] = {}  # a version's calibration scores


async def adapt_conformal(
    conformal: ConformalTracker, outcome: dict[str, Any], serving: ServingSet
) -> None:
    """Adaptive conformal inference: log a version's new level when it has moved."""
    if commands is None:
        return
    version = str(outcome["version"])
    scorer = serving.scorers.get(version)
    if version not in _calibrations and scorer is not None:  # once per version: sorting
        scores = scorer.model.metadata.conformal_scores
        _calibrations[version] = CalibrationScores.from_state(scores) if scores else None
    proposal = conformal.add(outcome, _calibrations.get(version), int(time.time() * 1000))
    if proposal is None:
        return
    coverage = conformal.coverage(version)
    log.info("conformal.adapted", version=version, alpha=proposal, coverage=coverage)
    await commands.change_calibration(
        version,
        {"conformal_alpha": proposal},
        reason=f"adaptive conformal: coverage {coverage:.3f} over the latest outcomes",
    )


if fleet is not None and commands is not None and settings.rollout_controller:
    served, lifecycle = fleet, commands

    @app.agent(topics.outcomes)
    async def control(stream: Any) -> None:
        tracker = ArmTracker()
        conformal = ConformalTracker()
        metrics = OnlineMetrics()  # per version and route, over the latest outcomes
        seen = 0
        # The slots the last decision was taken on: no new decision until they change
        # (a calibration event moves the sequence, not the slots).
        decided_on: tuple[object, ...] | None = None
        async for value in stream:
            serving = served.current
            if serving is None:
                continue
            state = serving.state
            outcome = orjson.loads(value)
            tracker.observe_state(state)
            tracker.add(outcome)
            await adapt_conformal(conformal, outcome, serving)
            seen += 1
            await watch_outcome(outcome, checkpoint=seen % CHECKPOINT_EVERY == 0)
            probabilities = outcome.get("probabilities")
            if probabilities and outcome.get("superseded_error") is None:
                metrics.update(
                    outcome["version"], outcome["route"], probabilities[-1], outcome["label"]
                )
            if seen % CHECKPOINT_EVERY == 0:
                online = metrics.snapshot()
                METRICS.online_metrics(online)
                snapshot = {"kind": "online_metrics", "outcomes": seen, "metrics": online}
                await topics.drift_reports.send(key=b"online_metrics", value=orjson.dumps(snapshot))
            slots = (state.champion, state.canary, state.canary_percent, state.shadow)
            if decided_on == slots or (state.canary is None and state.shadow is None):
                continue
            champion, canary = tracker.stats()
            decision = (
                decide(state, champion, canary, policy)
                if state.canary is not None
                else decide_shadow(state, *tracker.shadow_stats(), policy)
            )
            if decision is None:
                continue
            decided_on = slots
            reason = f"rollout controller: {decision.evidence['rule']}"
            evidence = dict(decision.evidence)
            log.info("rollout.decision", kind=decision.kind, version=decision.version, **evidence)
            if decision.kind == "canary_started" and decision.percent is not None:
                await lifecycle.canary(
                    decision.version, percent=decision.percent, evidence=evidence, reason=reason
                )
            elif decision.kind == "traffic_shifted" and decision.percent is not None:
                await lifecycle.shift(
                    decision.version, percent=decision.percent, evidence=evidence, reason=reason
                )
            elif decision.kind == "promoted":
                await lifecycle.promote(decision.version, evidence=evidence, reason=reason)
            else:
                await lifecycle.rollback(decision.version, evidence=evidence, reason=reason)
