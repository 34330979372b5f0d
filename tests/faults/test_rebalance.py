"""A second worker joins under load: the partitions are shared out and nothing is lost.

60,000 events are offered faster than one worker serves them. Once 15,000 have come out, a
second worker of the same app joins the consumer group; both then predict (each prediction
names its worker), and every event is accounted for. Throughput is measured from the
broker timestamps of the outputs: one worker before the join, two after the second one's
first prediction, and the longest stall around the rebalance.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.faults.conftest import start_another_worker, start_under_load
from tests.faults.ledger import (
    ACCOUNTED_WITHIN_S,
    Follower,
    healthy,
    shortfall,
    write_report,
)
from tests.integration.conftest import IsolatedRun

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 60_000
JOIN_AFTER_OUTPUTS = 15_000
RATE = 3_000  # events/s offered, above what one worker serves on this machine


def test_second_worker_joins_under_load(scoring: IsolatedRun) -> None:
    load = start_under_load(scoring, events=EVENTS, seed=81)
    first, expected = load.first, load.expected

    async def run() -> dict[str, Any]:
        async with Follower(scoring.settings) as follower:
            ledger = follower.ledger
            sending = await load.offer_until_outputs(
                follower, rate=RATE, outputs=JOIN_AFTER_OUTPUTS
            )
            [first_name] = ledger.first_by_worker_ms
            joined_ms = int(time.time() * 1000)
            second = start_another_worker(scoring, "worker-2")
            await follower.until(
                lambda ledger: ledger.complete(expected),
                timeout_s=ACCOUNTED_WITHIN_S,
                alive=healthy(first, second),
                what="every event accounted for",
                explain=shortfall(ledger, expected, first, second),
            )
            await sending
            await follower.settle()
            [second_name] = set(ledger.first_by_worker_ms) - {first_name}
            second_first_ms = ledger.first_by_worker_ms[second_name]
            last_ms = ledger.last_output_ms or 0
            first_ms = ledger.first_output_ms or 0
            # both served at once: the first worker kept partitions after the second began
            assert ledger.last_by_worker_ms[first_name] > second_first_ms + 1_000
            assert ledger.by_worker[second_name] >= 0.1 * (EVENTS - JOIN_AFTER_OUTPUTS)
            # the two-worker window ends a second before the last output, when the backlog
            # is drained and throughput falls to the arrival rate
            return {
                **ledger.summary(expected),
                "one_worker_events_per_s": round(ledger.rate_between(first_ms, joined_ms), 1),
                "two_workers_events_per_s": round(
                    ledger.rate_between(second_first_ms, last_ms - 1_000), 1
                ),
                "join_to_second_worker_first_prediction_s": round(
                    (second_first_ms - joined_ms) / 1000, 2
                ),
                "longest_stall_during_rebalance_s": round(
                    ledger.longest_gap_ms(joined_ms, second_first_ms + 5_000) / 1000, 2
                ),
                "outputs_before_join": JOIN_AFTER_OUTPUTS,
            }

    figures = asyncio.run(run())
    figures["wall_s"] = round(time.monotonic() - load.started, 1)
    write_report("rebalance", figures)
    assert figures["unpredicted"] == 0
    assert figures["missing_rejections"] == 0
    assert figures["predictions_unique"] == figures["valid_expected"]
    assert figures["rejections_unique"] == figures["rejections_expected"]
    assert figures["conflicting_rejections"] == 0
