"""The scoring agent: features -> predictions, in micro-batches.

Batches come from ``stream.take_events(max_batch, within)``: the agent writes no table, which is
what lets it batch (faust cannot write tables inside ``take``). One prediction record per
event, keyed and identified by its request id (the event id), so a prediction written
twice after a restart is the same record twice: consumers de-duplicate by request id.
A redelivered feature record (read again after a restart of the ingest agent) is not
scored again: its first record is on the topic.

Each record's deadline is its features message's timestamp plus ``score_budget_ms``; the
chunk goes to ``models.serving.ChunkScorer`` (prediction cache, micro-batches, fast path
for records past their deadline).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import structlog

from models.artifact import load_model
from models.backends import choose_backend
from models.cache import LruPredictionCache, PredictionCache, RedisPredictionCache
from models.cascade import Cascade
from models.conformal import ConformalPredictor
from models.export import ONNX_FILE_NAME
from models.scoring import LoadedModel, model_version
from models.serving import ChunkScorer
from streams import topics
from streams.app import app, settings

log = structlog.get_logger(__name__)

CACHE_ENTRIES = 100_000


def load(directory: Path) -> LoadedModel:
    model, metadata = load_model(directory)
    return LoadedModel(
        name=metadata.name,
        version=model_version(directory),
        metadata=metadata,
        backend=choose_backend(model, directory / ONNX_FILE_NAME, settings.backend or None),
        conformal=ConformalPredictor.from_state(metadata.conformal["lac_0.1"]),
        cascade=Cascade.from_state(metadata.cascade) if metadata.cascade else None,
    )


def prediction_cache() -> PredictionCache | None:
    if settings.prediction_cache == "redis":
        return RedisPredictionCache(
            settings.redis_url, key_prefix=f"{settings.app_id}:predictions:"
        )
    if settings.prediction_cache == "memory":
        return LruPredictionCache(CACHE_ENTRIES)
    return None


if settings.model_dir:
    loaded = load(Path(settings.model_dir))
    scorer = ChunkScorer(loaded, max_batch=settings.score_max_batch, cache=prediction_cache())
    log.info(
        "score.model_loaded", model=loaded.name, version=loaded.version, backend=loaded.backend.name
    )

    @app.agent(topics.features)
    async def score(stream: Any) -> None:
        within_s = settings.score_within_ms / 1000
        async for batch in stream.take_events(settings.score_max_batch, within=within_s):
            records, deadlines = [], []
            for event in batch:
                record = orjson.loads(event.value)
                if record.get("redelivered"):
                    continue
                message = event.message
                record["features_at"] = {
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                }
                records.append(record)
                deadlines.append(int(message.timestamp * 1000) + settings.score_budget_ms)
            if not records:
                continue
            predictions = await scorer.score(
                records, deadlines_ms=deadlines, now_ms=int(time.time() * 1000)
            )
            for prediction in predictions:
                await topics.predictions.send(
                    key=prediction["request_id"].encode(),
                    value=orjson.dumps(prediction),
                )
