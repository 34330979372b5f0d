"""Soak: a worker serving a moderate, steady load for 15 minutes keeps its memory flat.

The worker's resident set size is sampled from ``/proc`` every few seconds. After the
warm-up (the bounded structures fill: the prediction cache, the dedup horizon, each card's
windows, the drift window), the median RSS of the last minute may exceed the median of the
minute after the warm-up by less than 10 %. Every event is accounted for at the end.

The label join is off by default (``HEADRACE_SOAK_FEEDBACK=1`` turns it on): it keeps every
prediction for seven days waiting for its label, so without labels its state grows with
every event by design, for far longer than a soak runs.

The load is moderate: 150 events/s, about half of what one worker sustains here with the
broker, this test's producer and its reader on the same two cores (a slow hour brought that
down to 200-230/s, and 300/s then left the worker minutes behind at the end of the load).
A soak tests that the worker stays flat and loses nothing, not how fast it is; ``headrace
bench e2e`` measures that.

``HEADRACE_SOAK_S`` (default 900), ``HEADRACE_SOAK_RATE`` (events/s, default 150) and
``HEADRACE_SOAK_WARMUP_S`` (default a third of the soak) shorten it while developing.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import pytest

from headrace import scenario
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

SOAK_S = int(os.environ.get("HEADRACE_SOAK_S", "900"))
RATE = int(os.environ.get("HEADRACE_SOAK_RATE", "150"))
WARMUP_S = int(os.environ.get("HEADRACE_SOAK_WARMUP_S", str(SOAK_S // 3)))
FEEDBACK = os.environ.get("HEADRACE_SOAK_FEEDBACK", "0")
SAMPLE_EVERY_S = 5.0
WINDOW_S = 60.0  # RSS is compared as the median of one window against another
MAX_GROWTH = 0.10
# Event time advances 30 s per second of load whatever the rate, so the one-hour dedup
# horizon is passed within the warm-up and the remembered event ids stop growing, as they do
# in production once the service has run for longer than the horizon.
EVENT_SECONDS_PER_SECOND = 30
MEAN_GAP_MS = max(1, EVENT_SECONDS_PER_SECOND * 1_000 // RATE)


def median_rss_mb(samples: list[tuple[float, int]], start_s: float, end_s: float) -> float:
    inside = [rss for t, rss in samples if start_s <= t < end_s]
    if not inside:
        raise AssertionError(f"no RSS samples within {start_s:.0f}..{end_s:.0f} s")
    return statistics.median(inside) / 2**20


@pytest.mark.timeout(SOAK_S + 900)
def test_soak_memory_stays_flat(scoring: IsolatedRun) -> None:
    assert WARMUP_S + 2 * WINDOW_S <= SOAK_S, "the soak is too short for its warm-up"
    scoring.env["HEADRACE_FEEDBACK"] = FEEDBACK
    settings = scoring.settings
    count = SOAK_S * RATE
    expected = Expected.of(
        PaymentGenerator(MixSpec(count=count, seed=61, mean_gap_ms=MEAN_GAP_MS)),
    )
    asyncio.run(scenario.prepare_topics(settings))
    worker = scoring.start_worker("worker")
    asyncio.run(scenario.wait_until_serving(settings, worker))
    samples: list[tuple[float, int]] = []  # (seconds since the load started, RSS bytes)
    lags: list[tuple[float, int]] = []  # (seconds, events produced but not yet out)
    done: list[int] = []  # outputs so far, at each sample

    async def run() -> dict[str, Any]:
        async with Follower(settings) as follower:
            ledger = follower.ledger
            sent = 0

            def progress(done: int) -> None:
                nonlocal sent
                sent = done

            generator = PaymentGenerator(MixSpec(count=count, seed=61, mean_gap_ms=MEAN_GAP_MS))
            started = time.monotonic()
            sending = asyncio.create_task(
                produce(
                    settings.bootstrap_servers,
                    settings.topics.raw,
                    ((m.key, m.value) for m in generator),
                    rate=RATE,
                    on_progress=progress,
                ),
            )
            next_sample = started
            while not sending.done():
                if not worker.alive:
                    raise AssertionError(f"the worker died:\n{worker.log_tail()}")
                now = time.monotonic()
                if now >= next_sample:
                    samples.append((now - started, worker.rss_bytes()))
                    lags.append((now - started, sent - ledger.outputs))
                    done.append(ledger.outputs)
                    next_sample += SAMPLE_EVERY_S
                await follower.poll()
            report = await sending
            load_s = time.monotonic() - started
            drained_s = await follower.until(
                lambda ledger: ledger.complete(expected),
                timeout_s=ACCOUNTED_WITHIN_S,
                alive=healthy(worker),
                what="every event accounted for",
                explain=shortfall(ledger, expected, worker),
            )
            assert worker.alive, worker.log_tail()
            return {
                **ledger.summary(expected),
                "offered_events_per_s": RATE,
                "achieved_send_events_per_s": round(report.events_per_s, 1),
                "load_s": round(load_s, 1),
                "drain_after_load_s": round(drained_s, 1),
            }

    figures = asyncio.run(run())
    after_warmup = median_rss_mb(samples, WARMUP_S, WARMUP_S + WINDOW_S)
    at_end = median_rss_mb(samples, SOAK_S - WINDOW_S, SOAK_S + 1)
    growth = (at_end - after_warmup) / after_warmup
    figures |= {
        "soak_s": SOAK_S,
        "feedback_join": FEEDBACK == "1",
        "warmup_s": WARMUP_S,
        "rss_start_mb": round(samples[0][1] / 2**20, 1),
        "rss_after_warmup_mb": round(after_warmup, 1),
        "rss_end_mb": round(at_end, 1),
        "rss_max_mb": round(max(rss for _, rss in samples) / 2**20, 1),
        "rss_growth_after_warmup_pct": round(100 * growth, 2),
        "max_backlog_events": max(lag for _, lag in lags),
        # every 30 s: [seconds, RSS MiB, outputs so far]
        "rss_samples_mb": [
            [round(t), round(rss / 2**20, 1), outputs]
            for (t, rss), outputs in list(zip(samples, done, strict=True))[::6]
        ],
    }
    write_report("soak", figures)
    assert figures["unpredicted"] == 0
    assert figures["missing_rejections"] == 0
    assert figures["predictions_unique"] == figures["valid_expected"]
    assert growth < MAX_GROWTH, f"RSS grew {100 * growth:.1f} % after the warm-up"
