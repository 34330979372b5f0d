"""Retraining on its own: on a drift alert, or on a schedule. Off unless asked for.

With ``HEADRACE_RETRAIN_ON_DRIFT=1`` the worker that reads an alert for the champion runs
``headrace model retrain`` (a child process: training must not stall the event loop), at
most once per ``HEADRACE_RETRAIN_COOLDOWN_S`` (a run that fails, say for want of labels,
is tried again after ``RETRY_AFTER_S``). With ``HEADRACE_RETRAIN_EVERY_S`` set, the
leader worker also runs it on that period. The candidate is registered and shadowed; the
rollout controller takes it on once a canary is started.

``HEADRACE_RETRAIN_ALERTS`` narrows the alerts that retrain to some features (say
``model.error``: a concept drift seen in the labels, not a shift in one input). With
``HEADRACE_RETRAIN_SETTLE_S`` set, a retraining on an alert waits that long and trains on
the labels of events after the alert only: the data of the new concept, not a mixture.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson
import structlog

from agents.lifecycle import fleet
from models.lifecycle import ModelState
from streams import topics
from streams.app import app, settings

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 20.0  # after a retraining that failed
_last_started: float | None = None
_retry_at: float | None = None  # after a failed run: when the next alert may retry


async def run_retrain(reason: str, *, since_ms: int | None = None) -> int | None:
    """Start ``headrace model retrain`` unless one ran within the cooldown; with
    ``since_ms``, on the labels of events at or after that time only."""
    global _last_started, _retry_at  # noqa: PLW0603 - shared by the alert agent and the timer
    now = time.monotonic()
    if _retry_at is not None:
        # The last run failed (too few labels, say): this alert's reason still holds, so
        # it waits for the retry instead of being dropped; an alert that comes once per
        # excursion would otherwise never be acted on.
        await asyncio.sleep(max(_retry_at - now, 0.0))
        _retry_at = None
    elif _last_started is not None and now - _last_started < settings.retrain_cooldown_s:
        return None
    _last_started = time.monotonic()
    log.info("retrain.started", reason=reason, since_ms=since_ms)
    window = [] if since_ms is None else ["--since-ms", str(since_ms)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "headrace", "model", "retrain", "--min-rows", "500", *window
    )
    code = await process.wait()
    log.info("retrain.finished", reason=reason, exit_code=code)
    if code != 0:  # e.g. too few labels yet: try again soon, not after a whole cooldown
        _retry_at = time.monotonic() + RETRY_AFTER_S
    return code


def retrains(alert: dict[str, Any], state: ModelState | None) -> bool:
    """Whether an alert asks for a retraining: on the champion, of a chosen feature, while
    no candidate is in shadow or canary already."""
    if state is None or state.champion is None or alert.get("version") != state.champion:
        return False
    if state.shadow is not None or state.canary is not None:
        return False
    return not settings.retrain_alerts or alert.get("feature") in settings.retrain_alerts


async def on_alerts(stream: Any) -> None:
    async for value in stream:
        alert = orjson.loads(value)
        serving = fleet.current if fleet is not None else None
        if not retrains(alert, None if serving is None else serving.state):
            continue
        reason = f"drift alert: {alert['feature']} {alert['statistic']}"
        since_ms = alert.get("event_time_ms") if settings.retrain_settle_s else None
        if since_ms is not None:
            log.info("retrain.settling", seconds=settings.retrain_settle_s, since_ms=since_ms)
            await asyncio.sleep(settings.retrain_settle_s)
        await run_retrain(reason, since_ms=since_ms)


async def on_schedule() -> None:
    await run_retrain("schedule")


if fleet is not None and settings.serve_registry:
    if settings.retrain_on_drift:
        app.agent(topics.alerts, name="retrain_on_drift")(on_alerts)
    if settings.retrain_every_s:
        app.timer(settings.retrain_every_s, on_leader=True)(on_schedule)
