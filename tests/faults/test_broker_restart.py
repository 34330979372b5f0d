"""Restart the broker in the middle of a run: the worker recovers on its own, nothing is lost.

20,000 events are queued; when 6,000 have come out the broker is stopped (a controlled
shutdown) and started again with the same data, while the worker is busy with the rest.
The same worker process then finishes the backlog and serves 10,000 events more, produced
after the broker is back, and every event is accounted for. The time the broker was away
and the time from its return to the worker's next output are reported.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from headrace import infra, scenario
from headrace.kafka_io import produce
from streams.synthetic import MixSpec, PaymentGenerator
from tests.faults.ledger import (
    ACCOUNTED_WITHIN_S,
    Expected,
    Follower,
    healthy,
    shortfall,
    write_report,
)
from tests.integration.conftest import IsolatedRun

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BEFORE = 20_000
AFTER = 10_000
RESTART_AFTER_OUTPUTS = 6_000
RATE_AFTER = 1_000


def test_worker_recovers_from_a_broker_restart(scoring: IsolatedRun) -> None:
    settings = scoring.settings
    messages = list(PaymentGenerator(MixSpec(count=BEFORE + AFTER, seed=91)))
    expected = Expected.of(messages)
    asyncio.run(scenario.prepare_topics(settings))
    worker = scoring.start_worker("worker")
    asyncio.run(scenario.wait_until_serving(settings, worker))
    pid = worker.pid
    started = time.monotonic()

    async def run() -> dict[str, Any]:
        async with Follower(settings) as follower:
            ledger = follower.ledger
            await produce(
                settings.bootstrap_servers,
                settings.topics.raw,
                [(m.key, m.value) for m in messages[:BEFORE]],
            )
            await follower.until(
                lambda ledger: ledger.outputs >= RESTART_AFTER_OUTPUTS,
                timeout_s=300,
                alive=healthy(worker),
                what=f"{RESTART_AFTER_OUTPUTS} outputs",
            )
            outputs_at_stop = ledger.outputs
            stopping_ms = int(time.time() * 1000)
            restart = await asyncio.to_thread(infra.restart_kafka, infra.default_state_dir())
            ready_ms = int(time.time() * 1000)
            assert worker.alive, worker.log_tail()
            await produce(
                settings.bootstrap_servers,
                settings.topics.raw,
                [(m.key, m.value) for m in messages[BEFORE:]],
                rate=RATE_AFTER,
            )
            drained_s = await follower.until(
                lambda ledger: ledger.complete(expected),
                timeout_s=ACCOUNTED_WITHIN_S,
                alive=healthy(worker),
                what="every event accounted for",
                explain=shortfall(ledger, expected, worker),
            )
            await follower.settle()
            after = [t for t in ledger.output_times_ms if t >= ready_ms]
            assert after, "no output after the broker came back"
            resumed_ms = min(after)
            return {
                **ledger.summary(expected),
                "outputs_before_stop": outputs_at_stop,
                "broker_stop_s": round(restart.stop_s, 2),
                "broker_start_s": round(restart.start_s, 2),
                "broker_away_s": round((ready_ms - stopping_ms) / 1000, 2),
                "broker_ready_to_first_output_s": round((resumed_ms - ready_ms) / 1000, 2),
                "longest_output_stall_s": round(
                    ledger.longest_gap_ms(stopping_ms, resumed_ms) / 1000, 2
                ),
                "events_per_s_after_recovery": round(
                    ledger.rate_between(resumed_ms, resumed_ms + 10_000), 1
                ),
                "drain_after_restart_s": round(drained_s, 1),
            }

    figures = asyncio.run(run())
    figures["wall_s"] = round(time.monotonic() - started, 1)
    write_report("broker_restart", figures)
    assert worker.alive, worker.log_tail()
    assert worker.pid == pid  # the same process recovered; nothing restarted it
    assert len(figures["predictions_by_worker"]) == 1
    assert figures["unpredicted"] == 0
    assert figures["missing_rejections"] == 0
    assert figures["predictions_unique"] == figures["valid_expected"]
    assert figures["rejections_unique"] == figures["rejections_expected"]
    assert figures["conflicting_rejections"] == 0
