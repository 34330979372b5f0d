"""Feedback through the real broker: labels join, corrections supersede, unsure decisions
reach the review queue, and a candidate retrained on the labels serves in shadow."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from headrace.kafka_io import collect, produce
from headrace.retrain import retrain
from models.dataset import demo_training_set
from models.train_model import train_model
from models.training import TrainingConfig
from streams.settings import Settings
from streams.spec import load_spec
from streams.synthetic import VALID, MixSpec, PaymentGenerator
from tables.offline_store import ParquetOfflineStore
from tests.integration.conftest import IsolatedRun
from tests.integration.registry_run import serve_champion

pytestmark = pytest.mark.integration

CORRECTED = 50


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> Path:
    directory = tmp_path_factory.mktemp("feedback-model")
    data = demo_training_set(load_spec(spec_path), 3_000, seed=41)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=1))
    return directory


def decisions_of(settings: Settings, wanted: set[str]) -> dict[str, dict[str, Any]]:
    def ids(records: list[Any]) -> set[str]:
        return {orjson.loads(r.value)["request_id"] for r in records}

    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.predictions],
            until=lambda got: wanted <= ids(got),
            timeout_s=240,
        )
    )
    found: dict[str, dict[str, Any]] = {}
    for record in records:
        prediction = orjson.loads(record.value)
        if prediction["route"] != "shadow":
            found.setdefault(prediction["request_id"], prediction)
    return found


def label_of(prediction: dict[str, Any]) -> int:
    """Mostly what the model said, a quarter of the time the other class."""
    request = prediction["request_id"]
    flip = sum(request.encode()) % 4 == 0
    return 1 - int(prediction["predicted"]) if flip else int(prediction["predicted"])


def wait_for_offline_rows(settings: Settings, event_ids: set[str]) -> None:
    """The offline writer appends in batches every few seconds: wait for the rows."""
    store = ParquetOfflineStore(settings.offline_location)
    stored: set[str] = set()
    for _ in range(120):
        stored = set(store.read()["event_id"].to_pylist())
        if event_ids <= stored:
            return
        time.sleep(0.5)
    assert event_ids <= stored, f"{len(event_ids - stored)} feature rows never reached Parquet"


def check_review_queue(settings: Settings, decisions: dict[str, dict[str, Any]]) -> None:
    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.review_queue],
            until=bool,  # slots close every 10 s
            timeout_s=60,
        )
    )
    review = [orjson.loads(r.value) for r in records]
    assert review  # the demo model is unsure of some payments
    assert len({i["request_id"] for i in review}) == len(review)
    for item in review:
        assert item["request_id"] in decisions
        assert item["rank"] >= 1
        uncertainty = item["uncertainty"]
        assert (
            uncertainty["confidence"] < 0.7
            or uncertainty["mutual_information"] >= 0.05
            or len(uncertainty["conformal_set"]) > 1
        )


def test_labels_join_corrections_supersede_review_and_retrain_into_shadow(
    isolated: IsolatedRun, model_dir: Path
) -> None:
    settings, commands, v1 = serve_champion(isolated, model_dir, HEADRACE_ROLLOUT_CONTROLLER="0")
    generated = list(PaymentGenerator(MixSpec(count=4_000, seed=43)))
    asyncio.run(
        produce(
            settings.bootstrap_servers, settings.topics.raw, [(m.key, m.value) for m in generated]
        )
    )
    wanted = {m.event_id for m in generated if m.expected == VALID and m.event_id}
    decisions = decisions_of(settings, wanted)

    now = int(time.time() * 1000)
    labels = [
        (
            p["request_id"].encode(),
            orjson.dumps({"request_id": p["request_id"], "label": label_of(p), "label_time": now}),
        )
        for p in decisions.values()
    ]
    corrected = sorted(decisions)[:CORRECTED]
    corrections = [
        (
            r.encode(),
            orjson.dumps(
                {"request_id": r, "label": 1 - label_of(decisions[r]), "label_time": now + 1}
            ),
        )
        for r in corrected
    ]
    bad = [(b"bad", b'{"request_id": "x", "label": "yes"}')]
    asyncio.run(produce(settings.bootstrap_servers, settings.topics.labels, labels + bad))
    asyncio.run(produce(settings.bootstrap_servers, settings.topics.labels, corrections))

    outcomes = [
        orjson.loads(r.value)
        for r in asyncio.run(
            collect(
                settings.bootstrap_servers,
                [settings.topics.outcomes],
                until=lambda got: len(got) >= len(decisions) + CORRECTED,
                timeout_s=240,
            )
        )
    ]
    first = [o for o in outcomes if o["superseded_error"] is None]
    again = [o for o in outcomes if o["superseded_error"] is not None]
    assert {o["request_id"] for o in first} == set(decisions)
    assert len(first) == len(decisions)
    assert sorted(o["request_id"] for o in again) == corrected
    for o in again:
        assert o["error"] is not o["superseded_error"]
        assert o["label"] == 1 - label_of(decisions[o["request_id"]])

    def bad_labels(records: list[Any]) -> list[Any]:
        return [r for r in records if orjson.loads(r.value)["reason"] == "bad_label"]

    rejected = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.rejected],
            until=lambda got: bool(bad_labels(got)),
            timeout_s=60,
        )
    )
    [dead_letter] = [orjson.loads(r.value) for r in bad_labels(rejected)]
    assert "class index" in dead_letter["detail"]

    check_review_queue(settings, decisions)

    wait_for_offline_rows(settings, set(decisions))
    result = asyncio.run(
        retrain(
            settings,
            commands,
            window_ms=None,
            shadow_fraction=1.0,
            min_rows=1_000,
            now_ms=int(time.time() * 1000),
            config=TrainingConfig(members=2, hidden=16, epochs=1),
        )
    )
    candidate = result.registered.version
    assert result.rows >= 1_000
    assert result.shadow.kind == "shadow_started"
    assert candidate != v1

    later = list(PaymentGenerator(MixSpec(count=600, seed=44, start_time_ms=1_767_312_000_000)))
    asyncio.run(
        produce(settings.bootstrap_servers, settings.topics.raw, [(m.key, m.value) for m in later])
    )
    later_ids = {m.event_id for m in later if m.expected == VALID and m.event_id}

    def shadowed(records: list[Any]) -> set[str]:
        return {
            p["request_id"]
            for p in (orjson.loads(r.value) for r in records)
            if p["route"] == "shadow" and p["model"]["version"] == candidate
        }

    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.predictions],
            until=lambda got: len(shadowed(got) & later_ids) >= len(later_ids) // 2,
            timeout_s=240,
        )
    )
    assert len(shadowed(records) & later_ids) >= len(later_ids) // 2
