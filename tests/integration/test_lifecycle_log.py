"""The lifecycle command path against the real broker and a real MLflow sqlite registry."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from headrace.kafka_io import produce
from headrace.lifecycle_commands import LifecycleCommands, LifecycleError, state_at
from headrace.model_log import KafkaModelLog, ensure_log_topic, read_log
from models.dataset import demo_training_set
from models.lifecycle import ModelEvent, ModelState, encode_event, next_event
from models.registry import AliasDifference, MlflowRegistry
from models.scoring import model_version
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import Settings
from streams.spec import load_spec
from tests.integration.conftest import IsolatedRun

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> tuple[Path, Path]:
    directories = []
    for seed in (21, 22):
        directory = tmp_path_factory.mktemp(f"model-{seed}")
        data = demo_training_set(load_spec(spec_path), 3_000, seed=seed)
        train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=1))
        directories.append(directory)
    first, second = directories
    assert model_version(first) != model_version(second)
    return first, second


@pytest.fixture
def settings(isolated: IsolatedRun) -> Settings:
    return Settings.from_env({**isolated.settings_env(), **isolated.env})


def mlflow_registry(settings: Settings) -> MlflowRegistry:
    Path(settings.mlflow_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowRegistry(settings.mlflow_uri, settings.mlflow_artifacts)


def headrace(isolated: IsolatedRun, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", "model", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **isolated.env},
        check=False,
    )


def test_a_rollout_is_logged_mirrored_and_replayable(
    isolated: IsolatedRun, settings: Settings, model_dirs: tuple[Path, Path]
) -> None:
    registry = mlflow_registry(settings)
    commands = LifecycleCommands(settings, registry, actor="integration")
    model = settings.model_name
    v1, v2 = (model_version(directory) for directory in model_dirs)

    async def rollout() -> None:
        await commands.register(model_dirs[0], reason="baseline")
        await commands.register(model_dirs[1])
        await commands.promote(v1)
        await commands.canary(v2[:6], percent=5)
        assert registry.aliases(model) == {"champion": "1", "challenger": "2"}
        await commands.shift(v2, percent=25)
        await commands.rollback(v2, evidence={"ece": 0.3}, reason="worse calibration")

    asyncio.run(rollout())
    logged = asyncio.run(read_log(settings))
    kinds = ["registered", "registered", "promoted", "canary_started", "traffic_shifted"]
    assert [entry.event.kind for entry in logged] == [*kinds, "rolled_back"]
    assert [entry.event.sequence for entry in logged] == [1, 2, 3, 4, 5, 6]
    assert [entry.offset for entry in logged] == sorted({entry.offset for entry in logged})
    assert registry.aliases(model) == {"champion": "1"}
    assert asyncio.run(commands.reconcile()) == []

    canary_offset = logged[3].offset
    back_then = state_at(logged, model, offset=canary_offset)
    assert (back_then.champion, back_then.canary, back_then.canary_percent) == (v1, v2, 5.0)

    registry.set_alias(model, "challenger", "2")  # behind the log's back
    assert asyncio.run(commands.reconcile()) == [AliasDifference("challenger", None, "2")]

    # The command line, once, as a user runs it.
    history = headrace(isolated, "history", "--json")
    assert history.returncode == 0, history.stderr
    printed = [json.loads(line) for line in history.stdout.splitlines()]
    assert [(p["offset"], p["sequence"], p["kind"]) for p in printed] == [
        (entry.offset, entry.event.sequence, entry.event.kind) for entry in logged
    ]
    assert all(p["applied"] for p in printed)
    state = headrace(isolated, "state", "--offset", str(canary_offset), "--json")
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout)["canary_percent"] == 5.0
    reconcile = headrace(isolated, "reconcile")
    assert reconcile.returncode == 1
    assert reconcile.stdout.strip() == "challenger: log says none, MLflow has 2"
    refused = headrace(isolated, "shift", v2[:6], "--percent", "50")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"headrace: traffic_shifted refused: version {v2} is not the canary"
    )


class RacingLog(KafkaModelLog):
    """Another writer's event reaches the broker just before ours."""

    def __init__(self, settings: Settings, rival: ModelEvent) -> None:
        super().__init__(settings)
        self.rival: ModelEvent | None = rival

    async def append(self, event: ModelEvent) -> int:
        if self.rival is not None:
            await super().append(self.rival)
            self.rival = None
        return await super().append(event)


def test_the_first_writer_of_a_sequence_wins(
    settings: Settings, model_dirs: tuple[Path, Path]
) -> None:
    registry = mlflow_registry(settings)
    first = LifecycleCommands(settings, registry, actor="first")
    asyncio.run(first.register(model_dirs[0]))
    version = model_version(model_dirs[0])
    state = asyncio.run(first.state())
    rival = next_event(
        state, "promoted", version, actor="rival", reason="", now_ms=0, event_id="rival"
    )
    second = LifecycleCommands(settings, registry, actor="second", log=RacingLog(settings, rival))
    with pytest.raises(LifecycleError, match="another change landed first; retry"):
        asyncio.run(second.shadow(version[:8], fraction=0.1))
    entries = asyncio.run(first.history())
    assert [(e.event.actor, e.event.kind, e.applied) for e in entries] == [
        ("first", "registered", True),
        ("rival", "promoted", True),
        ("second", "shadow_started", False),
    ]
    assert registry.aliases(settings.model_name) == {}  # the loser set nothing


def test_the_log_topic_is_one_partition_kept_forever(settings: Settings) -> None:
    topic = settings.topics.model_events
    assert asyncio.run(read_log(settings)) == []  # reading does not create the topic

    async def describe() -> tuple[list[dict[str, object]], dict[str, str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            assert topic not in await admin.list_topics()
            await ensure_log_topic(settings)
            described = await admin.describe_topics([topic])
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        finally:
            await admin.close()
        entries = responses[0].resources[0][4]
        return described, {entry[0]: entry[1] for entry in entries}

    described, configs = asyncio.run(describe())
    assert len(described[0]["partitions"]) == 1  # type: ignore[arg-type]
    assert configs["retention.ms"] == "-1"
    assert configs["cleanup.policy"] == "delete"


def test_an_undecodable_record_is_skipped(settings: Settings) -> None:
    asyncio.run(ensure_log_topic(settings))
    good = next_event(
        ModelState(settings.model_name),
        "registered",
        "abcdef123456",
        data={"artifact_hash": "0" * 64, "artifact_uri": "x", "registry_version": "1"},
        actor="test",
        reason="",
        now_ms=1,
        event_id="good",
    )
    key = settings.model_name.encode()
    messages = [(key, b"not json"), (key, encode_event(good)), (key, b'{"schema_version": 9}')]
    asyncio.run(produce(settings.bootstrap_servers, settings.topics.model_events, messages))
    logged = asyncio.run(read_log(settings))
    assert [(entry.offset, entry.event) for entry in logged] == [(1, good)]
