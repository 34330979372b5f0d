"""Scoring a chunk: the cache answers repeats, late records take the fast path, none is lost."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.artifact import load_model
from models.backends import OnnxRuntimeBackend
from models.cache import LruPredictionCache
from models.cascade import Cascade
from models.dataset import TrainingSet, demo_training_set
from models.export import ONNX_FILE_NAME
from models.scoring import LoadedModel, conformal_for, score_batch
from models.serving import ChunkScorer
from models.train_model import train_model
from models.training import TrainingConfig
from streams.spec import DomainSpec

NOW = 1_000_000


@pytest.fixture(scope="module")
def trained(
    payments_spec: DomainSpec, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LoadedModel, TrainingSet]:
    directory = tmp_path_factory.mktemp("serving-model")
    data = demo_training_set(payments_spec, 3_000, seed=8)
    train_model(data, directory, TrainingConfig(members=2, hidden=16, epochs=2))
    _, metadata = load_model(directory)
    assert metadata.cascade is not None
    model = LoadedModel(
        name=metadata.name,
        version="v-test",
        metadata=metadata,
        backend=OnnxRuntimeBackend(Path(directory) / ONNX_FILE_NAME),
        conformal=conformal_for(metadata),
        cascade=Cascade.from_state(metadata.cascade),
    )
    return model, data


def records_of(data: TrainingSet, rows: range, prefix: str = "e") -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{prefix}{i}",
            "entity_id": "card",
            "event_time": i,
            "feature_version": data.feature_version,
            "features": {
                n: (None if np.isnan(v) else float(v))
                for n, v in zip(data.names, data.features[i], strict=True)
            },
        }
        for i in rows
    ]


def score(
    scorer: ChunkScorer, records: list[dict[str, Any]], deadlines: list[int | None]
) -> list[dict[str, Any]]:
    return asyncio.run(scorer.score(records, deadlines_ms=deadlines, now_ms=NOW))


def test_on_time_records_score_as_score_batch_in_batches_of_at_most_max_batch(
    trained: tuple[LoadedModel, TrainingSet],
) -> None:
    model, data = trained
    records = records_of(data, range(10))
    scorer = ChunkScorer(model, max_batch=4)
    predictions = score(scorer, records, [NOW + 100] * 10)
    reference = score_batch(model, records, now_ms=NOW, batch_ms=0.0)
    assert [p["request_id"] for p in predictions] == [r["event_id"] for r in records]
    assert [p["latency_ms"]["batch_size"] for p in predictions] == [4] * 8 + [2] * 2
    for got, want in zip(predictions, reference, strict=True):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-9)
        assert got["answered_by"] == want["answered_by"]
        assert "deadline_missed" not in got
    assert scorer.counts.batches == 3
    assert scorer.counts.records == 10


def test_records_past_their_deadline_take_the_fast_path_and_are_flagged(
    trained: tuple[LoadedModel, TrainingSet],
) -> None:
    model, data = trained
    records = records_of(data, range(6))
    deadlines: list[int | None] = [NOW + 50, NOW - 1, NOW - 5, None, NOW, NOW - 100]
    predictions = score(ChunkScorer(model, max_batch=256), records, deadlines)
    assert [p["request_id"] for p in predictions] == [r["event_id"] for r in records]
    late = [p.get("deadline_missed", False) for p in predictions]
    assert late == [False, True, True, False, False, True]  # the deadline itself is on time
    for prediction, missed in zip(predictions, late, strict=True):
        assert (prediction["answered_by"] == "fast_path") == missed
        assert prediction["uncertainty"]["conformal_set"]
        assert sum(prediction["probabilities"]) == pytest.approx(1.0)


def test_a_repeated_feature_vector_is_answered_from_the_cache(
    trained: tuple[LoadedModel, TrainingSet],
) -> None:
    model, data = trained
    cache = LruPredictionCache(100)
    scorer = ChunkScorer(model, max_batch=64, cache=cache)
    first = score(scorer, records_of(data, range(5)), [None] * 5)
    again = score(scorer, records_of(data, range(5), prefix="r"), [None] * 5)
    assert scorer.counts.cache_hits == 5
    assert cache.hit_rate == pytest.approx(0.5)
    for cached, original in zip(again, first, strict=True):
        assert cached["latency_ms"]["cache"] == "hit"
        assert cached["request_id"] != original["request_id"]
        assert cached["probabilities"] == original["probabilities"]
        assert cached["uncertainty"] == original["uncertainty"]


def test_a_fast_path_answer_is_not_cached(trained: tuple[LoadedModel, TrainingSet]) -> None:
    model, data = trained
    scorer = ChunkScorer(model, max_batch=64, cache=LruPredictionCache(100))
    score(scorer, records_of(data, range(3)), [NOW - 1] * 3)
    later = score(scorer, records_of(data, range(3), prefix="r"), [None] * 3)
    assert scorer.counts.cache_hits == 0
    assert {p["answered_by"] for p in later} <= {"triage", "ensemble"}


def test_a_record_of_another_feature_version_gets_an_error_not_a_score(
    trained: tuple[LoadedModel, TrainingSet],
) -> None:
    model, data = trained
    records = records_of(data, range(3))
    records[1] = {**records[1], "feature_version": "other"}
    predictions = score(ChunkScorer(model, max_batch=8), records, [None] * 3)
    assert ["error" in p for p in predictions] == [False, True, False]


def test_the_batch_cost_is_learned_from_the_timer(trained: tuple[LoadedModel, TrainingSet]) -> None:
    model, data = trained
    ticks = itertools.count()
    scorer = ChunkScorer(model, max_batch=4, timer=lambda: next(ticks) * 0.002)  # 2 ms a batch
    predictions = score(scorer, records_of(data, range(8)), [None] * 8)
    assert {p["latency_ms"]["batch_score"] for p in predictions} == {2.0}


def test_a_recalibrated_scorer_widens_its_sets_and_keeps_its_own_cache_entries(
    trained: tuple[LoadedModel, TrainingSet],
) -> None:
    model, data = trained
    cache = LruPredictionCache(1_000)
    scorer = ChunkScorer(model, max_batch=64, cache=cache)
    records = records_of(data, range(200))
    narrow = score(scorer, records, [None] * 200)
    wider = scorer.recalibrated(0.01)  # 99% sets
    wide = score(wider, records_of(data, range(200), prefix="w"), [None] * 200)
    assert wider.alpha == 0.01
    assert sum(len(p["uncertainty"]["conformal_set"]) for p in wide) > sum(
        len(p["uncertainty"]["conformal_set"]) for p in narrow
    )
    assert {p["uncertainty"]["conformal_alpha"] for p in wide} == {0.01}
    assert not any(p["latency_ms"].get("cache") == "hit" for p in wide)  # not the 90% sets
