"""One worker end to end through the real broker: raw event in, prediction out.

``headrace bench e2e`` runs two phases, each with a fresh worker (its own topics,
consumer group and state) serving a fixed model, and one plain loop for comparison:

* **throughput**: ``drain_events`` valid payments (pre-generated, pre-encoded) are
  pre-loaded on topics of the baseline's own and drained by the plain loop
  (``bench.e2e_baseline``); then a worker is started, awaited (a probe went through) and
  the same payments are produced to it flat out (a few seconds for the producer, so a
  backlog builds at once); then the plain loop drains them once more. The baseline's
  figures are the means of its two drains, one before the worker's and one after
  (``baseline_runs_*`` has both): this machine's speed drifts over minutes. Each rate
  is outputs per second over the middle 60% of the run's span in time
  (``steady_rate``), start-up and tail left out. The worker's output times are its
  predictions' Kafka timestamps (CreateTime, set by its producer). Each side's CPU time
  per event is measured too (the worker's from ``/proc``, every thread
  and its explainer process, whose share is also reported as
  ``explainer_cpu_us_per_event``, from ready to drained): on a machine shared with other
  work it says better than the rates what each would sustain on a core of its own
  (``cpu_ratio_to_baseline``).
* **shapes**: the worker is drained in its shipped shape (``max_events_per_s``) and in
  the other one (``HEADRACE_SCORE_IN_INGEST``: scoring in the ingest agent, one Kafka hop,
  or in an agent reading ``features`` back, two), reported as ``one_hop_*`` and
  ``two_hop_*``. ``bench.faust_floor`` drains the same payments through faust alone.
* **latency**: a fresh worker, ready, is offered payments at a paced 1,000 then 5,000
  events/s for ``paced_s`` seconds each. A payment's latency is its prediction's Kafka
  timestamp minus the moment it was handed to the producer, matched by request id
  (= event id); the first ``warmup_s`` seconds of each rate are left out. The same
  figures from the collector's receive time are reported beside them, with the rate
  achieved and the share delivered by the end of the wait: a worker that cannot keep
  up has a latency that grows without bound, and the figures say so.

Feedback and drift are off in both phases (``HEADRACE_FEEDBACK=0``, ``HEADRACE_DRIFT=0``):
the figures are the serving path's. With ``with_downstream`` the throughput phase runs a
second worker with both on. The online (Redis) and offline (Parquet) feature writers run
as they do in any worker, or, with ``offline_writer_process``, the offline one as a
``headrace offline-writer`` process beside each worker, its CPU per event reported as
``offline_writer_cpu_us_per_event``. The latency budget is set far out, so every record
takes the model path in the worker and in the baseline alike (no fast-path answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.e2e_baseline import baseline_drain
from bench.e2e_stats import (
    LatencySummary,
    bracketed_baseline,
    cpu_seconds,
    due_count,
    latency_summary,
    steady_rate,
)
from headrace import infra, scenario
from headrace.kafka_io import collect, produce
from headrace.worker_process import WorkerProcess, isolated_env
from models.dataset import demo_training_set
from models.train_model import train_model
from models.training import TrainingConfig
from streams.event_loop import loop_factory
from streams.sampler import self_shares
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
    drain_events: int = 40_000
    drain_timeout_s: float = 120.0
    paced_s: float = 15.0
    warmup_s: float = 3.0
    rates: tuple[int, ...] = (1_000, 5_000)
    with_downstream: bool = False
    profile_path: Path | None = None  # the draining worker's stacks, folded (streams.sampler)
    # The offline store written by `headrace offline-writer` beside each worker (the
    # workers with HEADRACE_OFFLINE_IN_WORKER=0), not by the worker's own agent.
    offline_writer_process: bool = False


async def delete_topics(bootstrap: str, marker: str) -> int:
    """Delete every topic whose name holds ``marker`` (a run's id): thousands of idle
    partitions left behind slow a single broker down for the runs after."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if marker in name]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
    return len(names)


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


RUN_MARKER = f"bench-e2e-{uuid.uuid4().hex[:6]}"  # in every topic of this process's runs


def worker_env(
    scratch: Path, model_dir: Path, *, downstream: bool, one_hop: bool | None = None
) -> dict[str, str]:
    """A worker's settings; ``one_hop`` None keeps the shipped shape."""
    env = isolated_env(scratch, name=f"{RUN_MARKER}-{uuid.uuid4().hex[:6]}")
    env.update(
        HEADRACE_MODEL_DIR=str(model_dir),
        HEADRACE_BACKEND=BACKEND,
        HEADRACE_SCORE_BUDGET_MS=str(BUDGET_MS),
        HEADRACE_FEEDBACK="1" if downstream else "0",
        HEADRACE_DRIFT="1" if downstream else "0",
        HEADRACE_DEBUG_PROFILE="1",  # GET /debug/profile, for --profile
    )
    if one_hop is not None:
        env["HEADRACE_SCORE_IN_INGEST"] = "1" if one_hop else "0"
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


def children_cpu_s(pid: int) -> float:
    """CPU seconds the live children of a process have used so far (a worker's explainer
    process, ``models.explainer``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            line = (entry / "stat").read_text()
        except OSError:
            continue
        if int(line.rsplit(")", 1)[1].split()[1]) == pid:
            total += cpu_seconds(line, ticks)
    return total


async def _children_settled(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until a ready worker's children (its explainer process, importing and loading
    the model) stand still: half a second without 50 ms of CPU between them."""
    deadline = time.monotonic() + timeout_s
    before = children_cpu_s(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = children_cpu_s(pid)
        if now - before < 0.05:  # 10% of a core: idle
            return
        before = now


async def _take_profile(port: int, path: Path, seconds: float) -> None:
    """The worker's stacks sampled by CPU time (``GET /debug/profile``, ``streams.sampler``),
    folded, written to ``path``."""
    url = f"http://127.0.0.1:{port}/debug/profile?seconds={seconds:g}"
    timeout = aiohttp.ClientTimeout(total=seconds + 30)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as answer:
            body = await answer.text()
    except (aiohttp.ClientError, TimeoutError) as error:
        say(f"no profile: {error!r}")
        return
    if answer.status != 200:
        say(f"no profile: {answer.status} {body.strip()}")
        return
    await asyncio.to_thread(path.write_text, body)
    say(f"profile written to {path}")
    for name, share in self_shares(body, top=15):
        say(f"  {100 * share:5.1f}%  {name}")


@dataclass
class OfflineWriterProcess:
    """``headrace offline-writer`` beside a worker, with the worker's settings; its CPU is
    counted from ``mark`` (after its start-up) to its exit (its last write included)."""

    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    cpu_from_s: float = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "headrace", "offline-writer"],
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def mark(self) -> None:
        if self.process is not None:
            self.cpu_from_s = process_cpu_s(self.process.pid)

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """SIGTERM; its counts (records, rows, files) and its CPU seconds since ``mark``.
        Call it after the worker is stopped: the writer is then the only child reaped here,
        so the children's usage grows by its CPU alone."""
        if self.process is None:
            return {}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.process.terminate()
        out, _ = self.process.communicate(timeout=timeout_s)  # written, exited, reaped
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        lines = out.decode().strip().splitlines()
        counts: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        return {**counts, "cpu_s": cpu_s - self.cpu_from_s}


def _with_offline_writer(config: E2eConfig, env: dict[str, str]) -> OfflineWriterProcess | None:
    """Started beside the worker when the config asks; the worker's agent then stays off."""
    if not config.offline_writer_process:
        return None
    env["HEADRACE_OFFLINE_IN_WORKER"] = "0"
    writer = OfflineWriterProcess(env)
    writer.start()
    return writer


def throughput_phase(  # noqa: PLR0913 - the phase's inputs, then three switches
    config: E2eConfig,
    scratch: Path,
    model_dir: Path,
    batch: list[Payment],
    *,
    downstream: bool,
    baseline: bool,
    one_hop: bool | None = None,
    profiled: bool = True,
) -> dict[str, Any]:
    """Drain ``batch`` with the baseline loop (when asked), then with a worker (its stacks
    sampled when ``profiled`` and the config names a profile)."""
    figures: dict[str, Any] = {}
    if baseline:
        figures.update(_baseline(config, scratch, model_dir, batch))
        figures.update(_floor(config, scratch, model_dir, batch))
    env = worker_env(scratch, model_dir, downstream=downstream, one_hop=one_hop)
    settings = Settings.from_env({**os.environ, **env})
    asyncio.run(scenario.prepare_topics(settings))
    writer = _with_offline_writer(config, env)
    worker = scenario.start_worker(
        env,
        scratch,
        f"throughput-{'downstream' if downstream else 'serving'}",
        with_web=profiled and config.profile_path is not None,  # the profile is taken over HTTP
    )
    try:
        asyncio.run(scenario.wait_until_serving(settings, worker))
        if writer is not None:
            writer.mark()
        figures.update(asyncio.run(_drain(config, settings, worker, batch, profile=profiled)))
    finally:
        worker.stop()
        written = writer.stop() if writer is not None else {}
    if written:
        predictions = max(figures.get("worker_drain_predictions", 0), 1)
        figures["offline_writer_cpu_us_per_event"] = round(written["cpu_s"] * 1e6 / predictions)
        figures["offline_writer_rows"] = written.get("rows")
        say(
            f"offline writer: {written.get('rows')} rows, "
            f"{figures['offline_writer_cpu_us_per_event']} CPU us per event"
        )
    return figures


def _baseline(
    config: E2eConfig, scratch: Path, model_dir: Path, batch: list[Payment]
) -> dict[str, Any]:
    """Pre-load ``batch`` on topics of its own and drain it with the plain loop."""
    settings = Settings.from_env({**os.environ, **worker_env(scratch, model_dir, downstream=False)})
    names = settings.topics

    async def load() -> None:
        await scenario.prepare_topics(settings)
        await produce(settings.bootstrap_servers, names.raw, [(p.key, p.value) for p in batch])

    asyncio.run(load())
    say(f"pre-loaded {len(batch):,} payments; the baseline loop drains them")
    cpu_before = time.process_time()
    # The plain loop runs on the kind of event loop the worker does (HEADRACE_EVENT_LOOP).
    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        sent = runner.run(
            baseline_drain(
                bootstrap=settings.bootstrap_servers,
                raw_topic=names.raw,
                partition_count=settings.partitions,
                features_topic=names.features,
                predictions_topic=names.predictions,
                spec_path=settings.spec_path,
                model_dir=model_dir,
                backend=BACKEND,
                max_batch=settings.score_max_batch,
                budget_ms=BUDGET_MS,
                expected=len(batch),
                timeout_s=config.drain_timeout_s,
            )
        )
    cpu_us = round((time.process_time() - cpu_before) * 1e6 / max(len(sent), 1))
    rate = round(steady_rate(sent))
    say(f"baseline: {rate:,}/s over {len(sent):,} predictions, {cpu_us} CPU us per event")
    return {
        "baseline_events_per_s": rate,
        "baseline_predictions": len(sent),
        "baseline_cpu_us_per_event": cpu_us,
    }


FLOOR_PROBE = b"floor-probe"


def _floor(
    config: E2eConfig, scratch: Path, model_dir: Path, batch: list[Payment]
) -> dict[str, Any]:
    """Drain ``batch`` through faust alone (``bench.faust_floor``): a fresh worker's
    settings, one agent forwarding each message, nothing else."""
    env = worker_env(scratch, model_dir, downstream=False)
    settings = Settings.from_env({**os.environ, **env})
    asyncio.run(scenario.prepare_topics(settings))
    worker = WorkerProcess(
        env=env, log_path=scratch / "floor.log", module="bench.faust_floor", with_web=False
    )
    worker.start()
    try:
        asyncio.run(_wait_forwarding(settings, worker))
        say("faust floor forwarding")
        drained = asyncio.run(_drain(config, settings, worker, batch, profile=False))
    finally:
        worker.stop()
    rate = drained["worker_drain_events_per_s"]
    return {
        "faust_floor_events_per_s": rate,
        "faust_floor_cpu_us_per_event": drained["worker_cpu_us_per_event"],
    }


async def _wait_forwarding(
    settings: Settings, worker: WorkerProcess, timeout_s: float = 120.0
) -> None:
    """Send one probe through the floor app and wait for it on the other side."""
    await produce(settings.bootstrap_servers, settings.topics.raw, [(FLOOR_PROBE, b"{}")])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not worker.alive:
            raise RuntimeError(f"faust floor exited early:\n{worker.log_tail()}")
        if await collect(
            settings.bootstrap_servers,
            [settings.topics.predictions],
            until=lambda got: len(got) > 0,
            timeout_s=5.0,
        ):
            return
    raise TimeoutError(f"faust floor did not forward within {timeout_s} s")


async def _drain(
    config: E2eConfig,
    settings: Settings,
    worker: WorkerProcess,
    batch: list[Payment],
    *,
    profile: bool = True,
) -> dict[str, Any]:
    """Produce ``batch`` flat out to a ready worker and collect its predictions: the
    backlog builds within a second or two, so the steady middle is the worker's drain.
    The collector reads from the start, so output written before (a probe) counts too."""
    count = len(batch)
    collector = PredictionCollector(
        settings.bootstrap_servers, settings.topics.predictions, settings.partitions
    )
    await collector.start()
    assert worker.process is not None  # noqa: S101 - started by the caller
    pid = worker.process.pid
    profiler = (
        asyncio.create_task(_take_profile(settings.web_port, config.profile_path, 20))
        if profile and config.profile_path is not None
        else None
    )
    await _children_settled(pid)
    cpu_from = process_cpu_s(pid)
    children_from = children_cpu_s(pid)
    try:
        await produce(
            settings.bootstrap_servers, settings.topics.raw, [(p.key, p.value) for p in batch]
        )
        say(f"produced {count:,} payments; the worker drains them")
        started = time.monotonic()
        last_report = started
        while len(collector.created_ms) < count:  # a probe's output counts as one
            if time.monotonic() - started > config.drain_timeout_s:
                say(f"drain timed out after {config.drain_timeout_s:.0f} s")
                break
            if not worker.alive:
                raise RuntimeError(f"worker exited early:\n{worker.log_tail()}")
            await asyncio.sleep(0.25)
            if time.monotonic() - last_report >= 5:
                say(f"worker drained {len(collector.created_ms):,} of {count:,}")
                last_report = time.monotonic()
        cpu_s = process_cpu_s(pid) - cpu_from
        children_s = children_cpu_s(pid) - children_from
    finally:
        await collector.stop()
        if profiler is not None:
            await profiler
    times = list(collector.created_ms.values())
    rate = round(steady_rate(times))
    cpu_us = round((cpu_s + children_s) * 1e6 / len(times)) if times else None
    children_us = round(children_s * 1e6 / len(times)) if times else None
    say(
        f"worker: {rate:,}/s over {len(times):,} predictions, {cpu_us} CPU us per event"
        f" ({children_us} of them its explainer process's)"
    )
    return {
        "worker_drain_events_per_s": rate,
        "worker_drain_predictions": len(times),
        "worker_cpu_us_per_event": cpu_us,  # its explainer process's included
        "explainer_cpu_us_per_event": children_us,
    }


@dataclass(frozen=True)
class PacedRound:
    """One paced rate's sends and outputs: request id -> epoch ms."""

    rate: int
    sent_ms: dict[str, int]  # handed to the producer
    created_ms: dict[str, int]  # the prediction's Kafka timestamp
    received_ms: dict[str, int]  # the prediction read by the collector
    window: tuple[int, int]  # the sends measured: warm-up left out, [from, to)


def latency_phase(
    config: E2eConfig, scratch: Path, model_dir: Path, stream: list[Payment]
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for paced in paced_rounds(config, scratch, model_dir, stream):
        created = latency_summary(
            paced.sent_ms, paced.created_ms, from_ms=paced.window[0], to_ms=paced.window[1]
        )
        received = latency_summary(
            paced.sent_ms, paced.received_ms, from_ms=paced.window[0], to_ms=paced.window[1]
        )
        figures.update(_latency_figures(paced.rate, created, received))
        say(
            f"at {paced.rate:,}/s: p50 {created.p50_ms} ms, p99 {created.p99_ms} ms, "
            f"{created.achieved_per_s:,}/s, {created.matched}/{created.sent} delivered"
        )
    return figures


def paced_rounds(
    config: E2eConfig, scratch: Path, model_dir: Path, stream: list[Payment]
) -> list[PacedRound]:
    """A fresh worker, ready and settled, offered ``stream`` at each of ``config.rates``."""
    env = worker_env(scratch, model_dir, downstream=False)
    settings = Settings.from_env({**os.environ, **env})
    asyncio.run(scenario.prepare_topics(settings))
    writer = _with_offline_writer(config, env)
    worker = scenario.start_worker(env, scratch, "latency")
    try:
        asyncio.run(scenario.wait_until_serving(settings, worker))
        assert worker.process is not None  # noqa: S101 - started above
        # Its explainer process imports PyTorch and loads the model for some seconds after
        # the worker serves: offered load in that time would measure the start-up.
        asyncio.run(_children_settled(worker.process.pid))
        say("latency worker serving")
        return asyncio.run(_paced_runs(config, settings, stream))
    finally:
        worker.stop()
        if writer is not None:
            writer.stop()


async def _paced_runs(
    config: E2eConfig, settings: Settings, stream: list[Payment]
) -> list[PacedRound]:
    collector = PredictionCollector(
        settings.bootstrap_servers, settings.topics.predictions, settings.partitions
    )
    await collector.start()
    rounds = []
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
            rounds.append(
                PacedRound(
                    rate, sent, dict(collector.created_ms), dict(collector.received_ms), window
                )
            )
    finally:
        await collector.stop()
    return rounds


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
    bootstrap = Settings.from_env().bootstrap_servers
    with (
        tempfile.TemporaryDirectory(prefix="headrace-bench-e2e-") as scratch_name,
        contextlib.ExitStack() as cleanup,
    ):
        cleanup.callback(
            lambda: say(f"deleted {asyncio.run(delete_topics(bootstrap, RUN_MARKER))} topics")
        )
        scratch = Path(scratch_name)
        say("training the model")
        model_dir = train(spec_path, scratch / "model")
        say("generating payments")
        drained = payments(config.drain_events, seed=71)
        figures = throughput_phase(
            config, scratch, model_dir, drained, downstream=False, baseline=True
        )
        # The plain loop again right after the worker: the worker is compared with the
        # mean of the baseline drains on either side of it.
        figures.update(bracketed_baseline(figures, _baseline(config, scratch, model_dir, drained)))
        result: dict[str, Any] = {
            "max_events_per_s": figures.pop("worker_drain_events_per_s"),
            **figures,
        }
        # The other shape of the worker (HEADRACE_SCORE_IN_INGEST), drained alike.
        shipped_one_hop = Settings.from_env().score_in_ingest
        other = throughput_phase(
            config,
            scratch,
            model_dir,
            drained,
            downstream=False,
            baseline=False,
            one_hop=not shipped_one_hop,
            profiled=False,
        )
        shapes = {
            shipped_one_hop: (result["max_events_per_s"], result["worker_cpu_us_per_event"]),
            not shipped_one_hop: (
                other["worker_drain_events_per_s"],
                other["worker_cpu_us_per_event"],
            ),
        }
        for one_hop, name in ((True, "one_hop"), (False, "two_hop")):
            result[f"{name}_events_per_s"], result[f"{name}_cpu_us_per_event"] = shapes[one_hop]
        result["ratio_to_baseline"] = (
            round(result["max_events_per_s"] / result["baseline_events_per_s"], 3)
            if result["baseline_events_per_s"]
            else None
        )
        result["floor_ratio_to_baseline"] = (
            round(result["faust_floor_events_per_s"] / result["baseline_events_per_s"], 3)
            if result["baseline_events_per_s"]
            else None
        )
        # The same comparison in CPU per event: what each would sustain on a core of its
        # own, which a machine shared with other work says better than the rates.
        result["cpu_ratio_to_baseline"] = (
            round(result["baseline_cpu_us_per_event"] / result["worker_cpu_us_per_event"], 3)
            if result["worker_cpu_us_per_event"]
            else None
        )
        if config.with_downstream:
            downstream = throughput_phase(
                config, scratch, model_dir, drained, downstream=True, baseline=False, profiled=False
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
            "offline_writer_process": config.offline_writer_process,
            "event_loop": Settings.from_env().event_loop,  # the workers' and the plain loop's
            "cpu_count": os.cpu_count(),
            "bench_s": round(time.monotonic() - began, 1),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    return result
