"""Benchmarks of the validation stage: the pure logic alone, and through the real agent."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
import zlib
from pathlib import Path

from headrace import infra, scenario
from headrace.worker_process import isolated_env
from streams.pipeline import ValidationPipeline
from streams.settings import Settings
from streams.spec import load_spec
from streams.synthetic import MixSpec, PaymentGenerator


def pure_events_per_s(spec_path: Path, count: int = 50_000, repeats: int = 5) -> dict[str, float]:
    """Validation logic alone on one core: parse, check, upcast, dedup, outlier screening.

    The same synthetic mix as the integration test (10% malformed, 2% duplicates, 5% old
    versions). Each repeat starts from empty state; the median of the repeats is reported.
    """
    spec = load_spec(spec_path)
    messages = list(PaymentGenerator(MixSpec(count=count, seed=11)))
    partitions = [zlib.crc32(m.key) % 4 for m in messages]
    rates: list[float] = []
    for _ in range(repeats):
        pipeline = ValidationPipeline(spec, {})
        process = pipeline.process
        started = time.perf_counter()
        for message, partition in zip(messages, partitions, strict=True):
            process(message.value, partition)
        rates.append(len(messages) / (time.perf_counter() - started))
    return {
        "pure_events_per_s": round(statistics.median(rates)),
        "pure_events_per_s_min": round(min(rates)),
        "pure_events_per_s_max": round(max(rates)),
        "pure_events": count,
        "pure_repeats": repeats,
    }


def agent_events_per_s(count: int = 20_000) -> dict[str, float]:
    """Through the validation agent with the real broker: produce to downstream topics.

    A fresh worker with its own topics is started and awaited (a probe message comes out
    as a dead letter); then ``count`` messages are produced as fast as the producer goes,
    and the rate is ``count`` over the time from the first send to the last output
    collected. The worker runs on the same two cores as the producer and the collector.
    """
    infra.up(infra.default_state_dir())  # idempotent: reuses what runs
    with tempfile.TemporaryDirectory(prefix="headrace-bench-") as scratch:
        env = isolated_env(Path(scratch), name=f"bench-{uuid.uuid4().hex[:8]}")
        run_settings = Settings.from_env({**os.environ, **env})
        messages = [(m.key, m.value) for m in PaymentGenerator(MixSpec(count=count, seed=13))]
        asyncio.run(scenario.prepare_topics(run_settings))
        worker = scenario.start_worker(env, Path(scratch))
        try:
            asyncio.run(scenario.wait_until_serving(run_settings, worker))
            started = time.perf_counter()
            produce_s = asyncio.run(scenario.produce_messages(run_settings, messages))
            outputs = asyncio.run(scenario.collect_outputs(run_settings, count, timeout_s=600))
            elapsed = time.perf_counter() - started
        finally:
            worker.stop()
    if outputs.total < count:
        raise RuntimeError(f"only {outputs.total} of {count} events came out of the agent")
    return {
        "agent_events_per_s": round(count / elapsed),
        "agent_events": count,
        "agent_produce_s": round(produce_s, 3),
        "agent_total_s": round(elapsed, 3),
    }
