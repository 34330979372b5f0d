"""Scoring through the real broker: raw events in, one prediction per valid event out, in
both shapes of the worker (scoring in the ingest agent, or in an agent reading features)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from headrace import scenario
from headrace.kafka_io import Record, collect, produce, read_topic
from streams.settings import Settings
from streams.synthetic import VALID, MixSpec, PaymentGenerator
from tests.integration.conftest import IsolatedRun

pytestmark = pytest.mark.integration


@pytest.fixture(params=["one_hop", "two_hop"])
def shaped(scoring: IsolatedRun, request: pytest.FixtureRequest) -> IsolatedRun:
    scoring.env["HEADRACE_SCORE_IN_INGEST"] = "1" if request.param == "one_hop" else "0"
    scoring.settings = Settings.from_env({**scoring.settings_env(), **scoring.env})
    return scoring


def predictions_until(
    settings: Settings, wanted: set[str], timeout_s: float
) -> list[dict[str, object]]:
    def ids(records: list[Record]) -> set[str]:
        return {orjson.loads(r.value)["request_id"] for r in records}

    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.predictions],
            until=lambda got: wanted <= ids(got),
            timeout_s=timeout_s,
        ),
    )
    return [orjson.loads(r.value) for r in records]


def check(predictions: list[dict[str, object]], wanted: set[str]) -> None:
    by_request: dict[object, dict[str, object]] = {}
    for prediction in predictions:
        by_request.setdefault(prediction["request_id"], prediction)
    assert set(by_request) == wanted  # every valid event scored, nothing else
    for prediction in by_request.values():
        assert "error" not in prediction, prediction
        probabilities = prediction["probabilities"]
        assert isinstance(probabilities, list)
        assert abs(sum(probabilities) - 1.0) < 1e-6
        uncertainty = prediction["uncertainty"]
        assert isinstance(uncertainty, dict)
        assert uncertainty["conformal_set"]
        assert 0.0 <= uncertainty["mutual_information"] <= uncertainty["entropy"] + 1e-9
        assert prediction["route"] == "champion"
        features_at = prediction["features_at"]  # where the features record it scored is
        assert isinstance(features_at, dict)
        assert features_at["topic"].endswith("features")
        assert features_at["offset"] >= 0


def test_every_valid_event_is_scored(shaped: IsolatedRun) -> None:
    scoring = shaped
    settings = scoring.settings
    generator = PaymentGenerator(MixSpec(count=3_000, seed=41))
    messages = [(m.key, m.value) for m in generator]
    wanted = {
        m.event_id for m in PaymentGenerator(MixSpec(count=3_000, seed=41)) if m.expected == VALID
    }
    asyncio.run(scenario.prepare_topics(settings))
    worker = scoring.start_worker()
    asyncio.run(scenario.wait_until_serving(settings, worker))
    asyncio.run(produce(settings.bootstrap_servers, settings.topics.raw, messages))
    predictions = predictions_until(settings, {w for w in wanted if w}, timeout_s=300)
    check(predictions, {w for w in wanted if w})
    versions = {p["model"]["version"] for p in predictions}  # type: ignore[index]
    assert len(versions) == 1
    check_features_at(settings, predictions)


def check_features_at(settings: Settings, predictions: list[dict[str, object]]) -> None:
    """Each prediction points at the features record of its own event."""
    features = asyncio.run(read_topic(settings.bootstrap_servers, settings.topics.features))
    event_at = {(r.partition, r.offset): orjson.loads(r.value)["event_id"] for r in features}
    for prediction in predictions:
        at = prediction["features_at"]
        assert isinstance(at, dict)
        assert at["topic"] == settings.topics.features
        assert event_at[at["partition"], at["offset"]] == prediction["event_id"]


def test_scored_exactly_once_after_dedup_across_a_restart(shaped: IsolatedRun) -> None:
    scoring = shaped
    settings = scoring.settings
    messages = [(m.key, m.value) for m in PaymentGenerator(MixSpec(count=8_000, seed=42))]
    wanted = {
        m.event_id
        for m in PaymentGenerator(MixSpec(count=8_000, seed=42))
        if m.expected == VALID and m.event_id
    }
    asyncio.run(scenario.prepare_topics(settings))
    worker = scoring.start_worker("worker-1")
    asyncio.run(scenario.wait_until_serving(settings, worker))

    async def produce_and_kill() -> None:
        sending = asyncio.create_task(
            produce(settings.bootstrap_servers, settings.topics.raw, messages, rate=4_000),
        )
        await collect(
            settings.bootstrap_servers,
            [settings.topics.predictions],
            until=lambda got: len(got) >= 3_000,
            timeout_s=120,
        )
        worker.kill()
        await sending

    asyncio.run(produce_and_kill())
    scoring.start_worker("worker-2")
    predictions = predictions_until(settings, wanted, timeout_s=300)
    check(predictions, wanted)
    print(
        f"predictions={len(predictions)} unique={len(wanted)} "
        f"repeated={len(predictions) - len(wanted)}"
    )
