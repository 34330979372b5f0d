"""Replay of a run recorded through the real broker: a worker serving from ``model.events``
(v1 champion, v2 canary at 50 percent) scores payments; replaying the run as served
reproduces every decision, pinning v1 differs exactly on the canary's records, and one
request id is explained."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from headrace import scenario
from headrace.cli import replay_command
from headrace.kafka_io import collect, produce
from headrace.lifecycle_commands import LifecycleCommands
from headrace.replay import explain, run_replay
from models.dataset import demo_training_set
from models.registry import MlflowRegistry
from models.scoring import model_version
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import Settings
from streams.spec import load_spec
from streams.synthetic import VALID, MixSpec, PaymentGenerator
from tests.integration.conftest import IsolatedRun

pytestmark = pytest.mark.integration

EVENTS = 2_000


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> tuple[Path, Path]:
    directories = []
    for seed in (61, 62):
        directory = tmp_path_factory.mktemp(f"replay-model-{seed}")
        # Enough data and epochs that the cascade escalates about a tenth of the records
        # to the ensemble (ONNX Runtime): replay must reproduce both paths.
        data = demo_training_set(load_spec(spec_path), 6_000, seed=seed)
        train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=3))
        directories.append(directory)
    return directories[0], directories[1]


def registry_of(settings: Settings) -> MlflowRegistry:
    Path(settings.mlflow_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowRegistry(settings.mlflow_uri, settings.mlflow_artifacts)


def record_run(
    isolated: IsolatedRun, model_dirs: tuple[Path, Path]
) -> tuple[str, str, int, int, dict[str, dict[str, Any]]]:
    """v1 champion, v2 canary at 50 percent; EVENTS payments scored. Returns the versions,
    the run's time range and the decisions by request id."""
    isolated.env.update(
        HEADRACE_SERVE_REGISTRY="1",
        HEADRACE_ROLLOUT_CONTROLLER="0",
        HEADRACE_SCORE_BUDGET_MS="5000",  # most records in time: triage and ensemble answers
    )
    settings = isolated.settings = Settings.from_env({**isolated.settings_env(), **isolated.env})
    commands = LifecycleCommands(settings, registry_of(settings), actor="test")
    v1, v2 = (model_version(d) for d in model_dirs)

    async def setup() -> None:
        await scenario.prepare_topics(settings)
        await commands.register(model_dirs[0])
        await commands.register(model_dirs[1])
        await commands.promote(v1)
        await commands.canary(v2, percent=50)

    asyncio.run(setup())
    worker = isolated.start_worker()
    asyncio.run(scenario.wait_until_serving(settings, worker))
    generated = list(PaymentGenerator(MixSpec(count=EVENTS, seed=71)))
    wanted = {m.event_id for m in generated if m.expected == VALID and m.event_id}
    from_ms = time.time_ns() // 1_000_000
    asyncio.run(
        produce(
            settings.bootstrap_servers,
            settings.topics.raw,
            [(m.key, m.value) for m in generated],
            rate=2_000,
        )
    )

    def decided(records: list[Any]) -> set[str]:
        return {
            r.key.decode() for r in records if r.key and not orjson.loads(r.value).get("shadow")
        }

    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.predictions],
            until=lambda got: wanted <= decided(got),
            timeout_s=180,
        )
    )
    to_ms = time.time_ns() // 1_000_000
    decisions = {
        r.key.decode(): orjson.loads(r.value)
        for r in records
        if r.key and not orjson.loads(r.value).get("shadow")
    }
    assert wanted <= set(decisions), f"{len(wanted - set(decisions))} predictions missing"
    return v1, v2, from_ms, to_ms, decisions


def test_a_recorded_run_replays_identically_as_served(
    isolated: IsolatedRun, model_dirs: tuple[Path, Path]
) -> None:
    v1, v2, from_ms, to_ms, decisions = record_run(isolated, model_dirs)
    settings = isolated.settings
    registry = registry_of(settings)
    routes = {d["route"] for d in decisions.values()}
    assert routes == {"champion", "canary"}
    answered_by = {d["answered_by"] for d in decisions.values()}
    assert {"triage", "ensemble"} <= answered_by

    report = asyncio.run(run_replay(settings, registry, from_ms=from_ms, to_ms=to_ms))
    assert report.total == len(decisions)
    assert (report.identical, report.differing, report.missing_predictions) == (report.total, 0, 0)
    assert report.first_differences == []
    assert set(report.versions) == {v1, v2}
    canary = {rid for rid, d in decisions.items() if d["route"] == "canary"}
    assert report.versions[v2] == len(canary)

    # Once as a user runs it, as a subprocess.
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "headrace",
            "replay",
            "--from",
            str(from_ms),
            "--to",
            str(to_ms),
            "--as-served",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **isolated.env},
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout.strip().splitlines()[-1])
    assert printed["total"] == printed["identical"] == len(decisions)
    assert printed["differing"] == 0
    assert set(printed["versions"]) == {v1, v2}

    # Pinned to v1: every record the canary answered differs, and only those.
    pinned = CliRunner().invoke(
        replay_command,
        ["--from", str(from_ms), "--to", str(to_ms), "--model", v1[:6], "--json"],
        env=isolated.env,
    )
    assert pinned.exit_code == 1, pinned.output
    pinned_report = json.loads(pinned.stdout.strip().splitlines()[-1])
    assert pinned_report["differing"] == len(canary)
    assert pinned_report["identical"] == len(decisions) - len(canary)
    assert pinned_report["versions"] == {v1: len(decisions)}
    assert pinned_report["first_differences"]
    for entry in pinned_report["first_differences"]:
        assert entry["request_id"] in canary
        assert {"field": "model.version", "logged": v2, "replayed": v1} in entry["differences"]

    # One request, explained.
    request_id = min(canary)
    explained = asyncio.run(explain(settings, registry, request_id))
    assert explained["model"]["version"] == v2
    assert explained["route"] == "canary"
    assert explained["state"]["canary"] == v2
    assert explained["state"]["champion"] == v1
    assert explained["replay"]["identical"]
    text = CliRunner().invoke(replay_command, ["--request-id", request_id], env=isolated.env)
    assert text.exit_code == 0, text.output
    for fragment in (request_id, v2, "via canary", f"champion {v1}", "canary", "amount"):
        assert fragment in text.stdout
