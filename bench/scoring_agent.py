"""The scoring agent's path through the real broker, micro-batched and one event at a time.

The same model directory, backend and feature records in both runs; only
``HEADRACE_SCORE_MAX_BATCH`` differs. Each run starts a fresh worker with its own topics,
waits until it serves, produces ``count`` feature records straight onto its ``features``
topic and times from the first send to the last prediction collected. The prediction
cache is off (no record repeats here anyway) and the latency budget is generous, so every
record takes the model path in both runs.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from headrace import infra, scenario
from headrace.kafka_io import collect, produce
from headrace.worker_process import isolated_env
from streams.settings import Settings


def agent_rate(model_dir: Path, records: list[dict[str, Any]], *, max_batch: int) -> float:
    """Predictions per second out of a fresh worker's scoring agent."""
    infra.up(infra.default_state_dir())  # idempotent: reuses what runs
    messages = [(r["entity_id"].encode(), orjson.dumps(r)) for r in records]
    with tempfile.TemporaryDirectory(prefix="headrace-bench-score-") as scratch:
        env = isolated_env(Path(scratch), name=f"bench-score-{uuid.uuid4().hex[:8]}")
        env.update(
            HEADRACE_MODEL_DIR=str(model_dir),
            HEADRACE_BACKEND="onnxruntime-cpu",
            HEADRACE_SCORE_MAX_BATCH=str(max_batch),
            HEADRACE_SCORE_BUDGET_MS="600000",
            HEADRACE_PREDICTION_CACHE="off",
            HEADRACE_FEEDBACK="0",  # the scoring agent alone
            HEADRACE_DRIFT="0",
            HEADRACE_SCORE_IN_INGEST="0",  # the agent that reads features records
        )
        settings = Settings.from_env({**os.environ, **env})
        asyncio.run(scenario.prepare_topics(settings))
        worker = scenario.start_worker(env, Path(scratch))
        try:
            asyncio.run(scenario.wait_until_serving(settings, worker))
            started = time.perf_counter()
            asyncio.run(produce(settings.bootstrap_servers, settings.topics.features, messages))
            predictions = asyncio.run(
                collect(
                    settings.bootstrap_servers,
                    [settings.topics.predictions],
                    until=lambda got: len(got) >= len(records),
                    timeout_s=600,
                )
            )
            elapsed = time.perf_counter() - started
        finally:
            worker.stop()
    if len(predictions) < len(records):
        raise RuntimeError(f"only {len(predictions)} of {len(records)} records were scored")
    return len(records) / elapsed


def agent_figures(model_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    batched = agent_rate(model_dir, records, max_batch=256)
    single = agent_rate(model_dir, records, max_batch=1)
    return {
        "batched_vs_per_event_ratio": round(batched / single, 2),
        "agent_rows_per_s_batch256": round(batched),
        "agent_rows_per_s_batch1": round(single),
        "agent_rows": len(records),
    }
