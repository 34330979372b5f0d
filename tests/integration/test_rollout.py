"""Canary rollouts through the real broker: a bad canary rolls back, a good one is promoted.

The worker serves from ``model.events`` (``HEADRACE_SERVE_REGISTRY=1``). The test is the
labeller: it reads every prediction and answers on ``labels`` at once, wrong for the
canary's predictions in the bad run and right for every prediction in the good run. The
rollout controller in the worker decides from the joined outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from headrace import scenario
from headrace.kafka_io import produce
from headrace.lifecycle_commands import LifecycleCommands
from headrace.model_log import read_log
from models.dataset import demo_training_set
from models.lifecycle import ModelEvent
from models.registry import MlflowRegistry
from models.scoring import model_version
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import Settings
from streams.spec import load_spec
from streams.synthetic import VALID, MixSpec, PaymentGenerator
from tests.integration.conftest import IsolatedRun

pytestmark = pytest.mark.integration

ROUND = 500
MAX_ROUNDS = 40
Labeller = Callable[[dict[str, Any]], int | None]  # None: leave this prediction unlabelled


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> tuple[Path, Path]:
    directories = []
    for seed in (31, 32):
        directory = tmp_path_factory.mktemp(f"rollout-model-{seed}")
        data = demo_training_set(load_spec(spec_path), 3_000, seed=seed)
        train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=1))
        directories.append(directory)
    return directories[0], directories[1]


@pytest.fixture
def serving(isolated: IsolatedRun) -> IsolatedRun:
    isolated.env.update(
        HEADRACE_SERVE_REGISTRY="1",
        HEADRACE_ROLLOUT_MIN_SAMPLES="60",
        HEADRACE_ROLLOUT_MARGIN_PCT="5",
        HEADRACE_ROLLOUT_P99_SLO_MS="2000",
    )
    isolated.settings = Settings.from_env({**isolated.settings_env(), **isolated.env})
    return isolated


async def label_predictions(
    settings: Settings, answer: Labeller, seen: dict[str, dict[str, Any]], stop: asyncio.Event
) -> None:
    """Label every decision as it appears; keep every prediction by request and route."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    await producer.start()
    try:
        topic = settings.topics.predictions
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=200)
            for records in fetched.values():
                for record in records:
                    prediction = orjson.loads(record.value or b"{}")
                    seen[f"{prediction['request_id']}:{prediction['route']}"] = prediction
                    label_value = answer(prediction)
                    if label_value is None or "error" in prediction:
                        continue
                    label = {
                        "request_id": prediction["request_id"],
                        "label": label_value,
                        "label_time": prediction["scored_at"],
                    }
                    await producer.send(
                        topic=settings.topics.labels, key=record.key, value=orjson.dumps(label)
                    )
    finally:
        await producer.stop()
        await consumer.stop()


async def drive(
    settings: Settings, answer: Labeller, until: Callable[[list[ModelEvent]], bool]
) -> tuple[list[ModelEvent], dict[str, dict[str, Any]], set[str]]:
    """Produce rounds of payments until ``until(events)`` holds, then two more rounds."""
    generated = list(PaymentGenerator(MixSpec(count=ROUND * MAX_ROUNDS, seed=51)))
    seen: dict[str, dict[str, Any]] = {}
    stop = asyncio.Event()
    labeller = asyncio.create_task(label_predictions(settings, answer, seen, stop))
    events: list[ModelEvent] = []
    sent = 0
    try:
        extra_rounds = None
        while sent < len(generated) and extra_rounds != 0:
            batch = generated[sent : sent + ROUND]
            await produce(
                settings.bootstrap_servers,
                settings.topics.raw,
                [(m.key, m.value) for m in batch],
                rate=1_000,
            )
            sent += len(batch)
            # Keep the worker's lag to about a round, so decisions follow the traffic.
            valid = sum(1 for m in generated[:sent] if m.expected == VALID and m.event_id)
            for _ in range(300):
                if len(decisions(seen)) >= valid - ROUND:
                    break
                await asyncio.sleep(0.2)
            events = [logged.event for logged in await read_log(settings)]
            if extra_rounds is None and until(events):
                extra_rounds = 2  # traffic after the decision, to see where it goes
            if extra_rounds is not None:
                extra_rounds -= 1
        assert until(events), [(e.kind, e.data.get("percent")) for e in events]
        wanted = {m.event_id for m in generated[:sent] if m.expected == VALID and m.event_id}
        for _ in range(600):
            if wanted <= {key.split(":")[0] for key in seen if not key.endswith(":shadow")}:
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await labeller
    # The log as of the last prediction seen: a prediction names the sequence it was
    # served at, which may be past the log read when ``until`` first held.
    events = [logged.event for logged in await read_log(settings)]
    return events, seen, wanted


def start(
    serving: IsolatedRun,
    model_dirs: tuple[Path, Path],
    *,
    tamper: bool = False,
    shadow: bool = False,
) -> tuple[str, str]:
    settings = serving.settings
    Path(settings.mlflow_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    commands = LifecycleCommands(
        settings, MlflowRegistry(settings.mlflow_uri, settings.mlflow_artifacts), actor="test"
    )
    v1, v2 = (model_version(d) for d in model_dirs)

    async def setup() -> None:
        await scenario.prepare_topics(settings)
        await commands.register(model_dirs[0])
        registered = await commands.register(model_dirs[1])
        if tamper:  # change v2's stored files behind the registry's back
            stored = Path(registered.data["artifact_uri"].removeprefix("file://"))
            with (stored / "model.onnx").open("ab") as graph:
                graph.write(b"\0")
        await commands.promote(v1)
        if shadow:
            await commands.shadow(v2, fraction=1.0)
        else:
            await commands.canary(v2, percent=5)

    asyncio.run(setup())
    worker = serving.start_worker()
    asyncio.run(scenario.wait_until_serving(settings, worker))
    return v1, v2


def decisions(seen: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k.split(":")[0]: p for k, p in seen.items() if not k.endswith(":shadow")}


def test_a_canary_that_errs_is_rolled_back_and_traffic_returns(
    serving: IsolatedRun, model_dirs: tuple[Path, Path]
) -> None:
    v1, v2 = start(serving, model_dirs)

    def answer(prediction: dict[str, Any]) -> int | None:
        if prediction["route"] == "shadow":
            return None
        wrong = prediction["route"] == "canary" or hash(prediction["request_id"]) % 10 == 0
        return 1 - int(prediction["predicted"]) if wrong else int(prediction["predicted"])

    events, seen, wanted = asyncio.run(
        drive(serving.settings, answer, lambda log: any(e.kind == "rolled_back" for e in log))
    )
    rollback = next(e for e in events if e.kind == "rolled_back")
    evidence = rollback.data["evidence"]
    assert rollback.version == v2
    assert evidence["rule"] == "error_ratio"
    assert evidence["canary"]["n"] >= 60
    assert evidence["canary"]["error_rate"] > 2 * evidence["champion"]["error_rate"]
    assert rollback.actor.startswith("worker:")
    by_request = decisions(seen)
    assert set(by_request) >= wanted  # every valid event has its decision: none lost
    after = [p for p in by_request.values() if p["model"]["sequence"] >= rollback.sequence]
    assert after  # traffic after the rollback ...
    assert {(p["route"], p["model"]["version"]) for p in after} == {("champion", v1)}
    before = [p for p in by_request.values() if p["model"]["sequence"] < rollback.sequence]
    assert {p["route"] for p in before} == {"champion", "canary"}


def test_a_good_canary_is_promoted_through_every_step(
    serving: IsolatedRun, model_dirs: tuple[Path, Path]
) -> None:
    v1, v2 = start(serving, model_dirs)
    assert v1 != v2

    def answer(prediction: dict[str, Any]) -> int | None:
        return None if prediction["route"] == "shadow" else int(prediction["predicted"])

    events, seen, wanted = asyncio.run(
        drive(
            serving.settings,
            answer,
            lambda log: any(e.kind == "promoted" and e.version == v2 for e in log),
        )
    )
    steps = [
        (e.kind, e.data.get("percent"))
        for e in events
        if e.version == v2 and e.kind in {"canary_started", "traffic_shifted", "promoted"}
    ]
    assert steps == [
        ("canary_started", 5),
        ("traffic_shifted", 25.0),
        ("traffic_shifted", 100.0),
        ("promoted", None),
    ]
    # v2's promotion (v1's own, at the start, carries no evidence; events such as a
    # calibration change may come after it)
    promoted = next(e for e in reversed(events) if e.kind == "promoted" and e.version == v2)
    assert promoted.data["evidence"]["rule"] == "non_inferior"
    by_request = decisions(seen)
    assert set(by_request) >= wanted
    after = [p for p in by_request.values() if p["model"]["sequence"] >= promoted.sequence]
    assert after
    assert {(p["route"], p["model"]["version"]) for p in after} == {("champion", v2)}
    # Every label is the class predicted, so the sets cover more than 90%: adaptive
    # conformal inference raises the level (smaller sets), and the workers serve it.
    raised = [e for e in events if e.kind == "calibration_changed"]
    assert raised
    assert all(e.data["conformal_alpha"] > 0.1 for e in raised)
    last = raised[-1]
    served_after = [p for p in by_request.values() if p["model"]["sequence"] > last.sequence]
    assert {
        p["uncertainty"]["conformal_alpha"]
        for p in served_after
        if p["model"]["version"] == last.version
    } <= {last.data["conformal_alpha"]}


def test_a_version_whose_files_do_not_verify_is_recorded_and_never_routed_to(
    serving: IsolatedRun, model_dirs: tuple[Path, Path]
) -> None:
    v1, v2 = start(serving, model_dirs, tamper=True)

    def answer(prediction: dict[str, Any]) -> int | None:
        return None if prediction["route"] == "shadow" else int(prediction["predicted"])

    events, seen, wanted = asyncio.run(
        drive(serving.settings, answer, lambda log: any(e.kind == "load_failed" for e in log))
    )
    failed = next(e for e in events if e.kind == "load_failed")
    assert failed.version == v2
    assert "hash" in failed.data["error"]
    by_request = decisions(seen)
    assert set(by_request) >= wanted
    assert {(p["route"], p["model"]["version"]) for p in by_request.values()} == {("champion", v1)}


def test_a_shadow_that_holds_up_is_started_as_a_canary(
    serving: IsolatedRun, model_dirs: tuple[Path, Path]
) -> None:
    v1, v2 = start(serving, model_dirs, shadow=True)

    def answer(prediction: dict[str, Any]) -> int | None:
        # Label by the shadow's answer: the shadow makes no errors, the champion some.
        return int(prediction["predicted"]) if prediction["route"] == "shadow" else None

    events, seen, wanted = asyncio.run(
        drive(serving.settings, answer, lambda log: any(e.kind == "canary_started" for e in log))
    )
    started = next(e for e in events if e.kind == "canary_started")
    assert (started.version, started.data["percent"]) == (v2, 5.0)
    assert started.data["evidence"]["rule"] == "non_inferior"
    assert started.data["evidence"]["shadow"]["n"] >= 60
    assert started.actor.startswith("worker:")
    by_request = decisions(seen)
    assert set(by_request) >= wanted
    assert any(p["route"] == "canary" and p["model"]["version"] == v2 for p in by_request.values())
    assert v1 != v2
