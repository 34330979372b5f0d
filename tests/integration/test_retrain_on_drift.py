"""Retraining on its own: a drift alert on the champion brings a candidate into shadow."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from headrace.kafka_io import produce
from headrace.model_log import read_log
from models.dataset import demo_training_set
from models.train_model import train_model
from models.training import TrainingConfig
from streams.spec import load_spec
from streams.synthetic import VALID, MixSpec, PaymentGenerator
from tests.integration.conftest import IsolatedRun
from tests.integration.registry_run import serve_champion
from tests.integration.test_drift import web_only
from tests.integration.test_feedback import decisions_of, label_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> Path:
    directory = tmp_path_factory.mktemp("retrain-model")
    data = demo_training_set(load_spec(spec_path), 4_000, seed=81)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=1))
    return directory


def test_a_drift_alert_on_the_champion_retrains_a_candidate_into_shadow(
    isolated: IsolatedRun, model_dir: Path
) -> None:
    settings, _, v1 = serve_champion(
        isolated, model_dir, HEADRACE_ROLLOUT_CONTROLLER="0", HEADRACE_RETRAIN_ON_DRIFT="1"
    )

    generated = list(PaymentGenerator(MixSpec(count=9_000, seed=82, malformed_share=0.0)))
    before, after = generated[:4_500], generated[4_500:]
    asyncio.run(
        produce(settings.bootstrap_servers, settings.topics.raw, [(m.key, m.value) for m in before])
    )
    wanted = {m.event_id for m in before if m.expected == VALID and m.event_id}
    now = int(time.time() * 1000)
    labels = [
        (
            p["request_id"].encode(),
            orjson.dumps({"request_id": p["request_id"], "label": label_of(p), "label_time": now}),
        )
        for p in decisions_of(settings, wanted).values()
    ]
    asyncio.run(produce(settings.bootstrap_servers, settings.topics.labels, labels))
    time.sleep(10)  # the offline writer's batch and the label join
    shifted = [(m.key, web_only(m.value) if m.expected == VALID else m.value) for m in after]
    asyncio.run(produce(settings.bootstrap_servers, settings.topics.raw, shifted))

    deadline = time.monotonic() + 300
    events = []
    while time.monotonic() < deadline:
        events = [logged.event for logged in asyncio.run(read_log(settings))]
        if any(e.kind == "shadow_started" for e in events):
            break
        time.sleep(2)
    kinds = [e.kind for e in events]
    assert "shadow_started" in kinds, (kinds, isolated.workers[0].log_tail())
    candidate = next(e for e in events if e.kind == "shadow_started").version
    assert candidate != v1
    assert kinds.count("registered") == 2
