"""Drift through the real broker: a shift in the inputs raises an alert, with its report."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from headrace import scenario
from headrace.kafka_io import collect, produce
from models.dataset import demo_training_set
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import Settings
from streams.spec import load_spec
from streams.synthetic import VALID, MixSpec, PaymentGenerator
from tests.integration.conftest import IsolatedRun

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> Path:
    directory = tmp_path_factory.mktemp("drift-model")
    data = demo_training_set(load_spec(spec_path), 4_000, seed=71)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=1))
    return directory


def web_only(value: bytes) -> bytes:
    """The same payment, made online: a shift in the channel the model never saw."""
    event = orjson.loads(value)
    if event.get("schema_version") == 3:
        event["payload"]["channel"] = "web"
        event["payload"]["card_present"] = False
    return orjson.dumps(event)


def test_a_shift_in_the_inputs_raises_a_drift_alert(isolated: IsolatedRun, model_dir: Path) -> None:
    isolated.env["HEADRACE_MODEL_DIR"] = str(model_dir)
    settings = Settings.from_env({**isolated.settings_env(), **isolated.env})
    asyncio.run(scenario.prepare_topics(settings))
    worker = isolated.start_worker()
    asyncio.run(scenario.wait_until_serving(settings, worker))
    generated = list(PaymentGenerator(MixSpec(count=9_000, seed=72, malformed_share=0.0)))
    before, after = generated[:4_500], generated[4_500:]
    messages = [(m.key, m.value) for m in before]
    messages += [(m.key, web_only(m.value) if m.expected == VALID else m.value) for m in after]
    asyncio.run(produce(settings.bootstrap_servers, settings.topics.raw, messages))

    def channel_alerts(records: list[Any]) -> list[dict[str, Any]]:
        alerts = (orjson.loads(r.value) for r in records if r.topic == settings.topics.alerts)
        return [a for a in alerts if a["feature"].startswith("channel_is_")]

    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.alerts, settings.topics.drift_reports],
            until=lambda got: bool(channel_alerts(got)),
            timeout_s=240,
        )
    )
    [first, *_] = channel_alerts(records)
    assert first["statistic"] == "psi"
    assert first["value"] > first["threshold"] == 0.1
    assert first["version"]
    reports = [orjson.loads(r.value) for r in records if r.topic == settings.topics.drift_reports]
    early = [r for r in reports if r["feature"] == first["feature"] and r["statistic"] == "psi"]
    assert early
    assert early[0]["value"] < 0.1  # before the shift the channel matched its reference
    checkpoints = list((settings.data_dir / settings.app_id / "drift").glob("serving-*.json"))
    assert checkpoints  # the watch's state is on disk for a restart
