"""SIGKILL the worker in the middle of 50,000 events and start it again.

Every event is accounted for, by a prediction (valid) or a dead letter with the reason
the generator expects; what the restarted worker emits a second time (redelivered since
the last committed offset) is counted and reported, and no event is predicted that should
have been rejected.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.faults.conftest import start_under_load
from tests.faults.ledger import (
    ACCOUNTED_WITHIN_S,
    Follower,
    healthy,
    shortfall,
    write_report,
)
from tests.integration.conftest import IsolatedRun

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 50_000
KILL_AFTER_OUTPUTS = 20_000
RATE = 3_000  # events/s offered: more than one worker serves here, so a backlog builds


def test_sigkill_mid_stream_every_event_is_accounted_for(scoring: IsolatedRun) -> None:
    load = start_under_load(scoring, events=EVENTS, seed=51)
    first, expected = load.first, load.expected

    async def run() -> dict[str, Any]:
        async with Follower(scoring.settings) as follower:
            ledger = follower.ledger
            sending = await load.offer_until_outputs(
                follower, rate=RATE, outputs=KILL_AFTER_OUTPUTS
            )
            first.kill()
            killed_at = time.time()
            outputs_at_kill = ledger.outputs
            workers_before = set(ledger.first_by_worker_ms)
            await sending
            second = scoring.start_worker("worker-2")
            restarted_at = time.time()
            await follower.until(
                lambda ledger: ledger.complete(expected),
                timeout_s=ACCOUNTED_WITHIN_S,
                alive=healthy(second),
                what="every event accounted for",
                explain=shortfall(ledger, expected, second),
            )
            await follower.settle()
            assert second.alive, second.log_tail()
            new_workers = set(ledger.first_by_worker_ms) - workers_before
            assert len(new_workers) == 1, ledger.first_by_worker_ms
            first_prediction_ms = ledger.first_by_worker_ms[new_workers.pop()]
            return {
                **ledger.summary(expected),
                "outputs_before_kill": outputs_at_kill,
                "kill_to_restart_s": round(restarted_at - killed_at, 2),
                "restart_to_first_prediction_s": round(
                    first_prediction_ms / 1000 - restarted_at, 2
                ),
                "extra_outputs": ledger.outputs - expected.total,
            }

    figures = asyncio.run(run())
    figures["wall_s"] = round(time.monotonic() - load.started, 1)
    write_report("sigkill", figures)
    assert figures["unpredicted"] == 0
    assert figures["missing_rejections"] == 0
    assert figures["predictions_unique"] == figures["valid_expected"]  # nothing rejected scored
    assert figures["rejections_unique"] == figures["rejections_expected"]
    assert figures["conflicting_rejections"] == 0
