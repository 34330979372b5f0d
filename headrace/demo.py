"""``headrace demo``: the whole loop on one machine, in about four minutes.

It starts the servers, trains and registers v1 and makes it champion, starts a worker in
registry mode (with its dashboard), and streams synthetic payments with a progress line.
Labels follow each scored payment a second later. At ``drift_at`` of the stream the
meaning of the payments changes (a concept drift: the same inputs, another fraud rule);
the worker's error-stream detector raises an alert, the worker retrains a candidate on
the labels after the alert, shadows it, and the rollout controller takes it through a
canary to promotion (or rolls it back). The stream goes on until that has happened (or a
time cap), and the demo ends with a summary read back from the topics. Ctrl-C stops the
worker, and the servers if the demo started them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from headrace import demo_report, infra, scenario
from headrace.demo_world import Labeler
from headrace.kafka_io import Record, collect, read_topic
from headrace.lifecycle_commands import LifecycleCommands
from headrace.model_log import read_log
from headrace.worker_process import WorkerProcess, isolated_env
from models.dataset import demo_training_set
from models.lifecycle import ModelEvent, fold
from models.registry import MlflowRegistry
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec
from streams.synthetic import VALID, MixSpec, PaymentGenerator, SyntheticMessage

# What the worker is told for the demo: retrain on a concept drift (the error detector),
# on the labels after the alert; decide canaries on 100 labelled outcomes per arm.
DEMO_WORKER_ENV = {
    "HEADRACE_SERVE_REGISTRY": "1",
    "HEADRACE_RETRAIN_ON_DRIFT": "1",
    "HEADRACE_RETRAIN_ALERTS": "model.error",
    "HEADRACE_RETRAIN_SETTLE_S": "15",
    "HEADRACE_RETRAIN_COOLDOWN_S": "60",
    # The stream's error rate creeps up by about 5 points before its concept drift (10.2%
    # -> 15.6% measured); a retraining on that alert mixes the old concept's labels in and
    # its cooldown then holds off the one the drift needs. The drift adds 25 points.
    "HEADRACE_DRIFT_ERROR_MIN_RISE": "0.10",
    "HEADRACE_ROLLOUT_MIN_SAMPLES": "100",
    # A candidate about as good as the champion (a retraining on too few of the new
    # concept's labels) is rolled back after 500 labelled outcomes at a step, not left at
    # 5% for the rest of the run: at 5% of 200/s that is about a minute.
    "HEADRACE_ROLLOUT_MAX_SAMPLES": "500",
    # The shared 2-core machine runs the servers, the worker, a retraining and this
    # process at once: a canary is judged on its errors, its latency only when far off.
    "HEADRACE_ROLLOUT_P99_SLO_MS": "250",
}
EXTRA_S = 90.0  # how long the stream may run past its planned length for the rollout
# The producer holds back while more than this much of the plan's traffic waits for the
# worker on any of its input topics (committed offsets trail by a second or two): a
# machine that cannot keep up with the rate gets a slower stream, not a backlog that
# delays every label, every rollout step and the end of the demo by minutes.
MAX_BACKLOG_S = 5.0
STALLED_S = 30.0  # a backlog not shrinking for this long: the worker has stopped


@dataclass
class DemoPlan:
    count: int
    rate: float
    drift_at: float
    seed: int
    start_ms: int

    @property
    def drift_index(self) -> int:
        return int(self.count * self.drift_at)


@dataclass
class Progress:
    """One status line, redrawn in place on a terminal; lines above it for events."""

    plan: DemoPlan
    produced: int = 0
    started: float = field(default_factory=time.monotonic)
    status: str = ""
    _last_plain: int = -1
    tty: bool = field(default_factory=sys.stdout.isatty)

    def draw(self) -> None:
        total = self.plan.count
        share = min(self.produced / total, 1.0)
        bar = "#" * int(30 * share) + "-" * (30 - int(30 * share))
        phase = "drifted" if self.produced > self.plan.drift_index else "before drift"
        line = (
            f"[{bar}] {self.produced:>7,}/{total:,} payments  "
            f"{time.monotonic() - self.started:5.0f} s  {phase}  {self.status}"
        )
        if self.tty:
            click.echo(f"\r\033[K{line}", nl=False)
        elif int(share * 10) != self._last_plain:  # every tenth of the way
            self._last_plain = int(share * 10)
            click.echo(line)

    def say(self, text: str) -> None:
        if self.tty:
            click.echo("\r\033[K", nl=False)
        click.echo(text)
        self.draw()


def run_demo(*, count: int, rate: float, drift_at: float, keep_running: bool) -> int:
    state_dir = infra.default_state_dir()
    started_servers = not any(s.running for s in infra.status(state_dir))
    worker: WorkerProcess | None = None
    try:
        click.echo("headrace demo: starting Kafka, Redis and the S3 endpoint")
        for service in infra.up(state_dir):
            click.echo(f"  {service.name:<6} {service.address}")
        run_dir = REPO_ROOT / ".headrace" / "demo"
        model_dir = _demo_model(run_dir / "model-v1")
        plan = DemoPlan(
            count=count,
            rate=rate,
            drift_at=drift_at,
            seed=int(time.time()) % 10_000,
            start_ms=int(time.time() * 1000),
        )
        run_name = f"demo-{plan.start_ms // 1000}"
        env = isolated_env(
            run_dir,
            name=run_name,
            HEADRACE_OFFLINE_URL=f"s3://headrace-demo/{run_name}",
            **DEMO_WORKER_ENV,
        )
        settings = Settings.from_env({**os.environ, **env})
        Path(settings.mlflow_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
        champion = asyncio.run(_register_champion(settings, model_dir))
        click.echo(f"registered and promoted {champion} (MLflow registry {settings.mlflow_uri})")
        worker = WorkerProcess(
            env=env, log_path=run_dir / settings.app_id / "worker.log", with_web=True
        )
        worker.start()
        asyncio.run(scenario.wait_until_serving(settings, worker))
        dashboard = f"http://127.0.0.1:{settings.web_port}/dashboard/"
        click.echo(f"worker serving; live dashboard: {dashboard}  (log: {worker.log_path})")
        generator = PaymentGenerator(
            MixSpec(
                count=count + int(rate * EXTRA_S),
                seed=plan.seed,  # event times as in v1's training data; another seed
            )
        )
        click.echo(
            f"streaming {count:,} payments at {rate:.0f}/s (about 10% malformed or duplicate); "
            f"the fraud pattern changes after {plan.drift_index:,}"
        )
        produced, finish = asyncio.run(_stream(settings, plan, generator, champion))
        click.echo("")
        env_file = _write_env(env, run_dir / settings.app_id / "env")
        code = _summary(settings, plan, produced, finish, champion, dashboard, env_file)
        if keep_running:
            click.echo("the worker and its dashboard keep running; Ctrl-C stops them")
            while worker.alive:
                time.sleep(1)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: stopping the worker" + (" and servers" * started_servers))
        _stop(worker, state_dir if started_servers else None)
        return 130
    _stop(worker, state_dir if keep_running and started_servers else None)
    if not keep_running:
        click.echo("the servers keep running (for replay); stop them with: make infra-down")
    return code


def _stop(worker: WorkerProcess | None, servers: Path | None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        if worker is not None:
            worker.stop()
        if servers is not None:
            infra.down(servers)


def _demo_model(directory: Path) -> Path:
    """Train the demo's v1 once (about 15 s) and reuse it on later runs."""
    if (directory / "metadata.json").exists():
        click.echo(f"model v1: reusing {directory}")
        return directory
    click.echo("training v1 (an ensemble of 3 MLPs on 16,000 labelled payments)")
    data = demo_training_set(load_spec(Settings.from_env().spec_path), 16_000, seed=1)
    trained = train_model(data, directory, TrainingConfig(members=3, hidden=32, epochs=6))
    metrics = trained.metadata.metrics
    click.echo(
        f"  held-out accuracy {metrics['accuracy_heldout']:.3f}, "
        f"ECE {metrics['ece_before']:.3f} -> {metrics['ece_after']:.3f} after temperature scaling"
    )
    return directory


async def _register_champion(settings: Settings, model_dir: Path) -> str:
    await scenario.prepare_topics(settings)
    commands = LifecycleCommands(
        settings, MlflowRegistry(settings.mlflow_uri, settings.mlflow_artifacts), actor="demo"
    )
    registered = await commands.register(model_dir, reason="demo v1")
    await commands.promote(registered.version, reason="demo v1")
    return registered.version


async def _stream(
    settings: Settings, plan: DemoPlan, generator: PaymentGenerator, champion: str
) -> tuple[list[SyntheticMessage], ModelEvent | None]:
    """Produce the payments; label them; print lifecycle events and alerts as they come."""
    progress = Progress(plan)
    stop = asyncio.Event()
    labeler = Labeler(settings, plan.drift_index)
    labelling = asyncio.create_task(labeler.run(stop))
    ended: list[ModelEvent] = []
    watching = asyncio.create_task(_watch(settings, plan.start_ms, champion, progress, stop, ended))
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, enable_idempotence=True
    )
    await producer.start()
    stream = Stream(producer, settings.topics.raw, iter(generator))
    measuring = asyncio.create_task(_measure_backlog(settings, stream, stop))
    started = time.monotonic()
    try:
        await _produce(stream, plan, progress, lambda: False)
        if not ended:
            progress.say(
                f"  the rollout is still under way: the stream goes on (at most {EXTRA_S:.0f} s)"
            )
            deadline = time.monotonic() + EXTRA_S
            await _produce(
                stream, plan, progress, lambda: bool(ended) or time.monotonic() > deadline
            )
        await producer.flush()
        progress.draw()
    finally:
        await producer.stop()
        await asyncio.sleep(3)  # the last labels and lifecycle events
        stop.set()
        await asyncio.gather(labelling, watching, measuring, return_exceptions=True)
    elapsed = time.monotonic() - started
    click.echo(
        f"\nproduced {len(stream.produced):,} payments in {elapsed:.0f} s "
        f"({len(stream.produced) / elapsed:.0f}/s; asked {plan.rate:.0f}/s, "
        f"held back {stream.held_s:.0f} s while the worker caught up)"
    )
    click.echo(f"labels sent: {labeler.sent:,} ({labeler.positives:,} fraud)")
    return stream.produced, (ended[0] if ended else None)


@dataclass
class Stream:
    """The payments on their way to ``events.raw``, at the plan's rate."""

    producer: AIOKafkaProducer
    topic: str
    messages: Iterator[SyntheticMessage]
    produced: list[SyntheticMessage] = field(default_factory=list)
    backlog: int = 0  # messages waiting for the worker on its most behind input topic
    held_s: float = 0.0  # time spent waiting for the worker


async def _produce(
    stream: Stream, plan: DemoPlan, progress: Progress, until: Callable[[], bool]
) -> None:
    """Send at the plan's rate: up to the plan's count first, then (once past it) until
    ``until()`` holds or the generator runs out. While more than ``MAX_BACKLOG_S`` of the
    plan's traffic waits for the worker on any of its inputs, hold back: the pace drops to
    what the worker sustains."""
    produced = stream.produced
    limit = plan.count if len(produced) < plan.count else None
    most_waiting = max(int(plan.rate * MAX_BACKLOG_S), 1)
    next_at = time.perf_counter()
    for sent_here, message in enumerate(stream.messages, start=1):
        if stream.backlog > most_waiting:
            held = time.perf_counter()
            await _wait_for_worker(stream, most_waiting)
            stream.held_s += time.perf_counter() - held
            next_at = max(next_at, time.perf_counter())
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        next_at += 1 / plan.rate
        await stream.producer.send(stream.topic, value=message.value, key=message.key)
        produced.append(message)
        if sent_here % max(int(plan.rate) // 4, 1) == 0:
            progress.produced = len(produced)
            progress.draw()
            if limit is None and until():
                return
        if limit is not None and len(produced) >= limit:
            progress.produced = len(produced)
            return


async def _wait_for_worker(stream: Stream, most_waiting: int) -> None:
    """Until the backlog is down to ``most_waiting``, or has not shrunk for ``STALLED_S``
    (a worker that has stopped: the stream goes on and the summary shows what is missing)."""
    least, since = stream.backlog, time.monotonic()
    while stream.backlog > most_waiting and time.monotonic() - since < STALLED_S:
        await asyncio.sleep(0.1)
        if stream.backlog < least:
            least, since = stream.backlog, time.monotonic()


async def _measure_backlog(settings: Settings, stream: Stream, stop: asyncio.Event) -> None:
    """Every half second, the worker's backlog: for each topic its consumer group reads,
    the messages past the group's committed offsets (its most behind topic is kept)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await admin.start()
    await consumer.start()
    warned = False
    try:
        while not stop.is_set():
            try:
                offsets = await admin.list_consumer_group_offsets(settings.app_id)
                ends = await consumer.end_offsets(list(offsets)) if offsets else {}
            except KafkaError as error:  # no measure, no holding back
                if not warned:
                    click.echo(f"\n  the worker's backlog is unknown ({error!r})", err=True)
                    warned = True
                stream.backlog = 0
            else:
                stream.backlog = demo_report.most_behind(
                    {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()},
                    {(tp.topic, tp.partition): end for tp, end in ends.items()},
                )
            await asyncio.sleep(0.5)
    finally:
        stream.backlog = 0  # a measure that has stopped never holds the stream back
        await consumer.stop()
        await admin.close()


async def _watch(  # noqa: PLR0913, PLR0917 - the run's context and where to report
    settings: Settings,
    start_ms: int,
    champion: str,
    progress: Progress,
    stop: asyncio.Event,
    ended: list[ModelEvent],
) -> None:
    """Print each new lifecycle event and drift alert; note the event that ends the rollout."""
    shown = 2  # v1's registration and promotion were reported already
    consumer = AIOKafkaConsumer(
        settings.topics.alerts,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    alerted: set[tuple[str, str]] = set()
    inputs: set[str] = set()  # features with a PSI alert: one line when the count grows
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=1_000)
            shifted = len(inputs)
            for messages in batch.values():
                for message in messages:
                    alert = orjson.loads(message.value or b"{}")
                    key = (str(alert.get("feature")), str(alert.get("statistic")))
                    if key[1] == "psi":
                        inputs.add(key[0])
                    elif key not in alerted:  # the first alert of each kind
                        alerted.add(key)
                        progress.say(f"  alert: {demo_report.alert_text(alert)}")
            if len(inputs) > shifted:
                progress.say(
                    f"  alert: PSI over the threshold on {len(inputs)} inputs so far "
                    "(the stream's windows against v1's training data)"
                )
            events = [logged.event for logged in await read_log(settings)]
            for event in events[shown:]:
                progress.say("  " + demo_report.timeline_line(event, start_ms))
            shown = max(shown, len(events))
            progress.status = _state_text(events)
            finish = demo_report.finished(events, champion)
            if finish is not None and not ended:
                ended.append(finish)
    finally:
        await consumer.stop()


def _state_text(events: list[ModelEvent]) -> str:
    if not events:
        return ""
    state = fold(events).get(events[0].model)
    if state is None:
        return ""
    parts = [f"champion {state.champion}"]
    if state.canary:
        parts.append(f"canary {state.canary} {state.canary_percent:g}%")
    if state.shadow:
        parts.append(f"shadow {state.shadow}")
    return ", ".join(parts)


def _summary(  # noqa: PLR0913, PLR0917 - what the run produced and how it ended
    settings: Settings,
    plan: DemoPlan,
    produced: list[SyntheticMessage],
    finish: ModelEvent | None,
    champion: str,
    dashboard: str,
    env_file: Path,
) -> int:
    """Read the run back from the topics and print what happened."""
    expected = Counter(m.expected for m in produced)
    outputs = asyncio.run(scenario.collect_outputs(settings, len(produced), timeout_s=120))
    reasons = outputs.rejected_by_reason()
    click.echo(f"{'outcome':<28}{'expected':>10}{'observed':>10}")
    click.echo(f"{'valid (scored)':<28}{expected[VALID]:>10,}{len(outputs.valid):>10,}")
    for reason in sorted(set(reasons) | (set(expected) - {VALID})):
        click.echo(f"{'rejected ' + reason:<28}{expected[reason]:>10,}{reasons[reason]:>10,}")
    matches = len(outputs.valid) == expected[VALID] and all(
        reasons[r] == n for r, n in expected.items() if r != VALID
    )
    click.echo("every event accounted for" if matches else "MISMATCH between expected and observed")

    wanted = {orjson.loads(r.value)["event_id"] for r in outputs.valid}
    predictions = asyncio.run(_decisions(settings, wanted))
    raw = asyncio.run(read_topic(settings.bootstrap_servers, settings.topics.raw))
    latency = demo_report.end_to_end_latency(
        ((r.value, r.timestamp_ms) for r in raw), ((r.value, r.timestamp_ms) for r in predictions)
    )
    by_version = demo_report.decisions_by_version(r.value for r in predictions)
    click.echo(
        "decisions: "
        + ", ".join(f"{n:,} by {version}" for version, n in sorted(by_version.items()))
    )
    if latency is not None:
        click.echo(
            f"end-to-end latency (payment produced -> decision on {settings.topics.predictions}, "
            f"{latency.count:,} decisions): "
            f"p50 {latency.p50_ms:.0f} ms, p99 {latency.p99_ms:.0f} ms"
        )

    alerts = asyncio.run(read_topic(settings.bootstrap_servers, settings.topics.alerts))
    counts = demo_report.alert_counts(orjson.loads(r.value) for r in alerts)
    click.echo(f"drift alerts: {sum(counts.values())}")
    for line in demo_report.alert_summary(counts):
        click.echo(f"  {line}")

    outcomes = asyncio.run(read_topic(settings.bootstrap_servers, settings.topics.outcomes))
    rates = demo_report.error_rates(
        (orjson.loads(r.value) for r in outcomes), _drift_time_ms(produced, plan)
    )
    click.echo("error rate on labelled decisions (version, route, before/after the drift):")
    for (version, route, phase), (errors, total) in rates.items():
        click.echo(f"  {version} {route:<9} {phase:<7} {errors / total:6.1%} of {total:,}")

    events = [logged.event for logged in asyncio.run(read_log(settings))]
    click.echo(f"model.events timeline ({settings.topics.model_events}):")
    for event in events:
        click.echo("  " + demo_report.timeline_line(event, plan.start_ms))
    if finish is None:
        click.echo("the rollout did not finish within the run: see the timeline above")
    elif finish.kind == "promoted":
        click.echo(f"{finish.version} replaced {champion} as champion")
    else:
        click.echo(f"{finish.version} was rolled back; {champion} stays champion")
    metrics = dashboard.replace("/dashboard/", "/metrics")
    click.echo(f"dashboard: {dashboard}  (metrics: {metrics})")
    click.echo(f"replay a decision: env $(cat {env_file}) headrace replay --request-id <id>")
    return 0 if matches else 1


async def _decisions(settings: Settings, wanted: set[str]) -> list[Record]:
    def decided(records: list[Record]) -> bool:
        got = {orjson.loads(r.value)["request_id"] for r in records}
        return wanted <= got

    return await collect(
        settings.bootstrap_servers,
        [settings.topics.predictions],
        until=decided,
        timeout_s=120,
        idle_s=20,
    )


def _drift_time_ms(produced: list[SyntheticMessage], plan: DemoPlan) -> int:
    for message in produced[plan.drift_index :]:
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
            event_time = orjson.loads(message.value).get("event_time")
            if isinstance(event_time, int):
                return event_time
    return plan.start_ms


def _write_env(env: dict[str, str], path: Path) -> Path:
    """The run's settings as ``NAME=value`` lines, for commands run against it later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}={value}\n" for name, value in sorted(env.items())))
    return path
