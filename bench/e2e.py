"""One worker end to end through the real broker: raw event in, prediction out.

``headrace bench e2e`` runs two phases, each with a fresh worker (its own topics,
consumer group and state) serving a fixed model, and one plain loop for comparison:

* **throughput**: ``events.raw`` is pre-loaded with ``drain_events`` valid payments
  (pre-generated, pre-encoded). The baseline loop (``bench.e2e_baseline``) drains them
  first, then the worker starts and drains them too. Each rate is outputs per second
  over the middle 60% of its outputs (``steady_rate``): a backlog was waiting, so that
  is the most one worker sustains, start-up and tail left out. The worker's output times
  are its predictions' Kafka timestamps (CreateTime, set by the worker's producer).
* **latency**: a fresh worker, ready (a probe went through), is offered payments at a
  paced 1,000 then 5,000 events/s for ``paced_s`` seconds each. A payment's latency is its
  prediction's Kafka timestamp minus the moment it was handed to the producer, matched
  by request id (= event id); the first ``warmup_s`` seconds of each rate are left out.
  The same figures from the collector's receive time are reported beside them.

Feedback and drift are off in both phases (``HEADRACE_FEEDBACK=0``, ``HEADRACE_DRIFT=0``):
the figures are the serving path's. With ``with_downstream`` the throughput phase runs a
third time with both on. The online (Redis) and offline (Parquet) feature writers run
as they do in any worker. The latency budget is set far out, so every record takes the
model path in the worker and in the baseline alike (no fast-path answers).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.e2e_baseline import baseline_drain
from bench.e2e_stats import (
    LatencySummary,
    cpu_seconds,
    due_count,
    latency_summary,
    steady_rate,
)
from headrace import infra, scenario
from headrace.kafka_io import ensure_topics, produce
from headrace.worker_process import WorkerProcess, isolated_env
from models.dataset import demo_training_set
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import Settings
from streams.spec import load_spec
from streams.synthetic import MixSpec, PaymentGenerator

BACKEND = "onnxruntime-cpu"
BUDGET_MS = 600_000


@dataclass(frozen=True)
class Payment:
    key: bytes
    value: bytes
    event_id: str


@dataclass(frozen=True)
class E2eConfig:
    drain_events: int = 60_000
    drain_timeout_s: float = 90.0
    paced_s: float = 15.0
    warmup_s: float = 3.0
    rates: tuple[int, ...] = (1_000, 5_000)
    with_downstream: bool = False
    profile_path: Path | None = None  # a py-spy flame graph of the throughput worker


def say(message: str) -> None:
    print(f"[bench e2e] {message}", file=sys.stderr, flush=True)


def payments(count: int, seed: int) -> list[Payment]:
    """Valid payments only, encoded once, in event-time order."""
    mix = MixSpec(count=count, seed=seed, malformed_share=0.0, duplicate_share=0.0)
    return [
        Payment(m.key, m.value, m.event_id or "")
        for m in PaymentGenerator(mix)
        if m.event_id is not None
    ]


def train(spec_path: Path, directory: Path) -> Path:
    data = demo_training_set(load_spec(spec_path), 4_000, seed=3)
    train_model(data, directory, TrainingConfig(members=3, hidden=32, epochs=2, seed=3))
    return directory


def worker_env(scratch: Path, model_dir: Path, *, downstream: bool) -> dict[str, str]:
    env = isolated_env(scratch, name=f"bench-e2e-{uuid.uuid4().hex[:8]}")
    env.update(
        HEADRACE_MODEL_DIR=str(model_dir),
        HEADRACE_BACKEND=BACKEND,
        HEADRACE_SCORE_BUDGET_MS=str(BUDGET_MS),
        HEADRACE_FEEDBACK="1" if downstream else "0",
        HEADRACE_DRIFT="1" if downstream else "0",
    )
    return env


@dataclass
class PredictionCollector:
    """Reads a predictions topic from its start in the background: per request id, the
    first prediction's Kafka timestamp and receive time (epoch ms)."""

    bootstrap: str
    topic: str
    partitions: int
    created_ms: dict[str, int] = field(default_factory=dict)
    received_ms: dict[str, int] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        partitions = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while not self._stop.is_set():
                fetched = await consumer.getmany(timeout_ms=50)
                now_ms = int(time.time() * 1000)
                for messages in fetched.values():
                    for message in messages:
                        key = message.key.decode()
                        if key not in self.created_ms:
                            self.created_ms[key] = message.timestamp
                            self.received_ms[key] = now_ms
        finally:
            await consumer.stop()

    async def wait_for(self, count: int, timeout_s: float) -> bool:
        for _ in range(max(1, int(timeout_s / 0.2))):
            if len(self.created_ms) >= count:
                return True
            await asyncio.sleep(0.2)
        return len(self.created_ms) >= count

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def paced_produce(
    bootstrap: str, topic: str, batch: Sequence[Payment], rate: float
) -> dict[str, int]:
    """Send at ``rate`` per second (in 1 ms ticks); each payment's send time (epoch ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=1)
    await producer.start()
    sent_ms: dict[str, int] = {}
    try:
        started = time.perf_counter()
        index = 0
        while index < len(batch):
            due = due_count(time.perf_counter() - started, rate, len(batch))
            now_ms = int(time.time() * 1000)
            while index < due:
                payment = batch[index]
                await producer.send(topic, payment.value, payment.key)
                sent_ms[payment.event_id] = now_ms
                index += 1
            await asyncio.sleep(0.001)
        await producer.flush()
    finally:
        await producer.stop()
    return sent_ms


def process_cpu_s(pid: int) -> float:
    """CPU seconds a process has used so far (0.0 where /proc cannot tell)."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    return cpu_seconds(line, os.sysconf("SC_CLK_TCK"))


def _start_profile(pid: int, path: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        say("py-spy is not installed; no profile")
        return None
    return subprocess.Popen(  # noqa: S603 - the virtualenv's own py-spy
        [
            str(spy),
            "record",
            "-o",
            str(path),
            "--pid",
            str(pid),
            "-d",
            str(int(seconds)),
            "-r",
            "50",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def throughput_phase(  # noqa: PLR0913 - the phase's inputs, then two switches
    config: E2eConfig,
    scratch: Path,
    model_dir: Path,
    batch: list[Payment],
    *,
    downstream: bool,
    baseline: bool,
) -> dict[str, Any]:
    """Pre-load ``batch``; drain it with the baseline loop (when asked), then with a worker."""
    env = worker_env(scratch, model_dir, downstream=downstream)
    settings = Settings.from_env({**os.environ, **env})
    names = settings.topics
    base_features = names.features.replace("features", "baseline.features")
    base_predictions = names.predictions.replace("predictions", "baseline.predictions")

    async def load() -> float:
        await scenario.prepare_topics(settings)
        await ensure_topics(
            settings.bootstrap_servers, [base_features, base_predictions], settings.partitions
        )
        report = await produce(
            settings.bootstrap_servers, names.raw, [(p.key, p.value) for p in batch]
        )
        return report.events_per_s

    loaded_rate = asyncio.run(load())
    say(f"pre-loaded {len(batch)} payments at {loaded_rate:,.0f}/s")
    figures: dict[str, Any] = {}
    if baseline:
        say("baseline loop draining")
        cpu_before = time.process_time()
        sent = asyncio.run(
            baseline_drain(
                bootstrap=settings.bootstrap_servers,
                raw_topic=names.raw,
                partition_count=settings.partitions,
                features_topic=base_features,
                predictions_topic=base_predictions,
                spec_path=settings.spec_path,
                model_dir=model_dir,
                backend=BACKEND,
                max_batch=settings.score_max_batch,
                budget_ms=BUDGET_MS,
                expected=len(batch),
                timeout_s=config.drain_timeout_s,
            )
        )
        figures["baseline_cpu_us_per_event"] = round(
            (time.process_time() - cpu_before) * 1e6 / max(len(sent), 1)
        )
        figures["baseline_events_per_s"] = round(steady_rate(sent))
        figures["baseline_predictions"] = len(sent)
        say(f"baseline: {figures['baseline_events_per_s']:,}/s over {len(sent)} predictions")
    worker = scenario.start_worker(
        env, scratch, f"throughput-{'downstream' if downstream else 'serving'}"
    )
    try:
        figures.update(asyncio.run(_drain(config, settings, worker, len(batch))))
    finally:
        worker.stop()
    return figures


async def _drain(
    config: E2eConfig, settings: Settings, worker: WorkerProcess, count: int
) -> dict[str, Any]:
    collector = PredictionCollector(
        settings.bootstrap_servers, settings.topics.predictions, settings.partitions
    )
    await collector.start()
    profiler = None
    assert worker.process is not None  # noqa: S101 - started by the caller
    pid = worker.process.pid
    cpu_from: tuple[int, float] | None = None  # predictions seen, CPU seconds then
    try:
        started = time.monotonic()
        last_report = started
        while len(collector.created_ms) < count:
            if time.monotonic() - started > config.drain_timeout_s:
                say(f"drain timed out after {config.drain_timeout_s:.0f} s")
                break
            if not worker.alive:
                raise RuntimeError(f"worker exited early:\n{worker.log_tail()}")
            await asyncio.sleep(0.5)
            got = len(collector.created_ms)
            if cpu_from is None and got > 0:
                cpu_from = (got, process_cpu_s(pid))
            if profiler is None and config.profile_path is not None and got > 0:
                profiler = _start_profile(pid, config.profile_path, 20)
            if time.monotonic() - last_report >= 5:
                say(f"worker drained {got:,} of {count:,}")
                last_report = time.monotonic()
        cpu_to = (len(collector.created_ms), process_cpu_s(pid))
    finally:
        await collector.stop()
        if profiler is not None:
            profiler.wait(60)
            say(f"profile written to {config.profile_path}")
    times = list(collector.created_ms.values())
    rate = round(steady_rate(times))
    cpu_us = None
    if cpu_from is not None and cpu_to[0] > cpu_from[0]:
        cpu_us = round((cpu_to[1] - cpu_from[1]) * 1e6 / (cpu_to[0] - cpu_from[0]))
    say(f"worker: {rate:,}/s over {len(times)} predictions, {cpu_us} CPU us per event")
    return {
        "worker_drain_events_per_s": rate,
        "worker_drain_predictions": len(times),
        "worker_cpu_us_per_event": cpu_us,
    }


def latency_phase(
    config: E2eConfig, scratch: Path, model_dir: Path, stream: list[Payment]
) -> dict[str, Any]:
    env = worker_env(scratch, model_dir, downstream=False)
    settings = Settings.from_env({**os.environ, **env})
    asyncio.run(scenario.prepare_topics(settings))
    worker = scenario.start_worker(env, scratch, "latency")
    try:
        asyncio.run(scenario.wait_until_serving(settings, worker))
        say("latency worker serving")
        return asyncio.run(_paced_runs(config, settings, stream))
    finally:
        worker.stop()


async def _paced_runs(
    config: E2eConfig, settings: Settings, stream: list[Payment]
) -> dict[str, Any]:
    collector = PredictionCollector(
        settings.bootstrap_servers, settings.topics.predictions, settings.partitions
    )
    await collector.start()
    figures: dict[str, Any] = {}
    offset = 0
    try:
        for rate in config.rates:
            count = int(rate * config.paced_s)
            batch = stream[offset : offset + count]
            offset += count
            say(f"offering {rate:,}/s for {config.paced_s:.0f} s")
            started_ms = int(time.time() * 1000)
            sent = await paced_produce(settings.bootstrap_servers, settings.topics.raw, batch, rate)
            ended_ms = int(time.time() * 1000)
            await collector.wait_for(offset, timeout_s=max(10.0, config.paced_s))
            window = (started_ms + int(config.warmup_s * 1000), ended_ms)
            created = latency_summary(
                sent, collector.created_ms, from_ms=window[0], to_ms=window[1]
            )
            received = latency_summary(
                sent, collector.received_ms, from_ms=window[0], to_ms=window[1]
            )
            figures.update(_latency_figures(rate, created, received))
            say(
                f"at {rate:,}/s: p50 {created.p50_ms} ms, p99 {created.p99_ms} ms, "
                f"{created.achieved_per_s:,}/s, {created.matched}/{created.sent} delivered"
            )
    finally:
        await collector.stop()
    return figures


def _latency_figures(
    rate: int, created: LatencySummary, received: LatencySummary
) -> dict[str, Any]:
    return {
        f"p50_ms_at_{rate}": created.p50_ms,
        f"p99_ms_at_{rate}": created.p99_ms,
        f"max_ms_at_{rate}": created.max_ms,
        f"achieved_events_per_s_at_{rate}": created.achieved_per_s,
        f"delivered_fraction_at_{rate}": round(created.delivered_fraction, 4),
        f"p50_ms_at_{rate}_received": received.p50_ms,
        f"p99_ms_at_{rate}_received": received.p99_ms,
    }


def e2e_figures(spec_path: Path, config: E2eConfig) -> dict[str, Any]:
    """Every figure of ``headrace bench e2e``."""
    infra.up(infra.default_state_dir())  # idempotent: reuses what runs
    began = time.monotonic()
    paced_total = sum(int(rate * config.paced_s) for rate in config.rates)
    with tempfile.TemporaryDirectory(prefix="headrace-bench-e2e-") as scratch_name:
        scratch = Path(scratch_name)
        say("training the model")
        model_dir = train(spec_path, scratch / "model")
        say("generating payments")
        drained = payments(config.drain_events, seed=71)
        figures = throughput_phase(
            config, scratch, model_dir, drained, downstream=False, baseline=True
        )
        result: dict[str, Any] = {
            "max_events_per_s": figures.pop("worker_drain_events_per_s"),
            **figures,
        }
        result["ratio_to_baseline"] = (
            round(result["max_events_per_s"] / result["baseline_events_per_s"], 3)
            if result["baseline_events_per_s"]
            else None
        )
        if config.with_downstream:
            downstream = throughput_phase(
                config, scratch, model_dir, drained, downstream=True, baseline=False
            )
            result["max_events_per_s_feedback_drift"] = downstream["worker_drain_events_per_s"]
        result.update(latency_phase(config, scratch, model_dir, payments(paced_total, seed=72)))
    result.update(
        {
            "drain_events": config.drain_events,
            "paced_s": config.paced_s,
            "warmup_s": config.warmup_s,
            "feedback": False,
            "drift": False,
            "cpu_count": os.cpu_count(),
            "bench_s": round(time.monotonic() - began, 1),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    return result
