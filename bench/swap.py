"""A hot swap under load: throughput before, during and after a promotion, nothing lost.

Two workers serve from ``model.events`` (one consumer group, the partitions split
between them). v1 is champion; payments are produced at a steady rate; at ``promote_at_s``
v2 is promoted through the lifecycle command path. From the prediction records (each
says which worker scored it, with which version, when) the benchmark reports:

* ``events_per_s_before``, ``_during``, ``_after``: predictions per second scored in the
  windows before the promote event, from it until every worker routes to v2, and after;
* ``swap_s``: from the promote event's timestamp to the first v2 prediction of the last
  worker to switch (every worker reads the log and loads v2 on its own);
* ``lost_events``: valid payments produced without a decision (must be 0);
* ``v1_after_swap``: decisions by v1 scored after that worker had switched (must be 0).
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
from headrace.lifecycle_commands import LifecycleCommands
from headrace.worker_process import free_port, isolated_env
from models.dataset import demo_training_set
from models.registry import MlflowRegistry
from models.scoring import model_version
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import Settings
from streams.spec import load_spec
from streams.synthetic import VALID, MixSpec, PaymentGenerator


def _train(spec_path: Path, directory: Path, seed: int) -> Path:
    data = demo_training_set(load_spec(spec_path), 4_000, seed=seed)
    train_model(data, directory, TrainingConfig(members=3, hidden=32, epochs=2, seed=seed))
    return directory


def swap_figures(
    spec_path: Path, *, rate: float = 150.0, seconds: float = 45.0, promote_at_s: float = 15.0
) -> dict[str, Any]:
    infra.up(infra.default_state_dir())  # idempotent: reuses what runs
    count = int(rate * seconds)
    generated = list(PaymentGenerator(MixSpec(count=count, seed=61)))
    wanted = {m.event_id for m in generated if m.expected == VALID and m.event_id}
    with tempfile.TemporaryDirectory(prefix="headrace-bench-swap-") as scratch:
        base = Path(scratch)
        env = isolated_env(base, name=f"bench-swap-{uuid.uuid4().hex[:8]}")
        env.update(HEADRACE_SERVE_REGISTRY="1", HEADRACE_ROLLOUT_CONTROLLER="0")
        settings = Settings.from_env({**os.environ, **env})
        Path(settings.mlflow_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True)
        registry = MlflowRegistry(settings.mlflow_uri, settings.mlflow_artifacts)
        commands = LifecycleCommands(settings, registry, actor="bench-swap")
        v1_dir = _train(spec_path, base / "v1", seed=1)
        v2_dir = _train(spec_path, base / "v2", seed=2)
        v1, v2 = model_version(v1_dir), model_version(v2_dir)

        async def setup() -> None:
            await scenario.prepare_topics(settings)
            await commands.register(v1_dir)
            await commands.register(v2_dir)
            await commands.promote(v1)

        asyncio.run(setup())
        second = {
            **env,
            "HEADRACE_DATA_DIR": str(base / "second"),
            "HEADRACE_WEB_PORT": str(free_port()),
        }
        workers = [
            scenario.start_worker(env, base, "worker-1"),
            scenario.start_worker(second, base, "worker-2"),
        ]
        try:
            for worker in workers:
                asyncio.run(scenario.wait_until_serving(settings, worker))

            async def run() -> float:
                messages = [(m.key, m.value) for m in generated]
                sending = asyncio.create_task(
                    produce(settings.bootstrap_servers, settings.topics.raw, messages, rate=rate)
                )
                await asyncio.sleep(promote_at_s)
                event = await commands.promote(v2, reason="bench swap")
                await sending
                return event.timestamp_ms / 1000

            promoted_s = asyncio.run(run())

            decided: set[str] = set()
            looked_at = 0

            def done(records: list[Any]) -> bool:
                """Every valid payment has its decision (shadows and repeats aside)."""
                nonlocal looked_at
                for record in records[looked_at:]:
                    prediction = orjson.loads(record.value)
                    if prediction["route"] != "shadow":
                        decided.add(prediction["request_id"])
                looked_at = len(records)
                return wanted <= decided

            records = asyncio.run(
                collect(
                    settings.bootstrap_servers,
                    [settings.topics.predictions],
                    until=done,
                    timeout_s=300,
                    idle_s=60,
                )
            )
        finally:
            for worker in workers:
                worker.stop()
    predictions = [orjson.loads(r.value) for r in records]
    return _figures(predictions, wanted, v1, v2, promoted_s)


def _figures(
    predictions: list[dict[str, Any]], wanted: set[str], v1: str, v2: str, promoted_s: float
) -> dict[str, Any]:
    decisions = [p for p in predictions if p["route"] != "shadow"]
    first_v2: dict[str, float] = {}
    for p in decisions:
        if p["model"]["version"] == v2:
            at = p["scored_at"] / 1000
            first_v2[p["worker"]] = min(first_v2.get(p["worker"], at), at)
    workers = {p["worker"] for p in decisions}
    switched_s = max(first_v2.values()) if first_v2 and set(first_v2) == workers else None
    times = sorted(p["scored_at"] / 1000 for p in decisions)
    start, end = times[0], times[-1]
    swap_end = switched_s if switched_s is not None else end

    def rate(low: float, high: float) -> float | None:
        n = sum(low <= t < high for t in times)
        return round(n / (high - low), 1) if high - low >= 1.0 else None

    v1_after = sum(
        1
        for p in decisions
        if p["model"]["version"] == v1
        and p["worker"] in first_v2
        and p["scored_at"] / 1000 > first_v2[p["worker"]]
    )
    return {
        "workers": len(workers),
        "events_per_s_before": rate(start, promoted_s),
        "events_per_s_during": rate(promoted_s, max(swap_end, promoted_s + 1.0)),
        "events_per_s_after": rate(swap_end, end),
        "swap_s": None if switched_s is None else round(switched_s - promoted_s, 3),
        "lost_events": len(wanted - {p["request_id"] for p in decisions}),
        "v1_after_swap": v1_after,
        "decisions": len({p["request_id"] for p in decisions}),
        "duplicate_decisions": len(decisions) - len({p["request_id"] for p in decisions}),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
