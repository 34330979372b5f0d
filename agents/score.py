"""The scoring agent: features -> predictions, in micro-batches.

Batches come from ``stream.take_events(max_batch, within)``: the agent writes no table, which is
what lets it batch (faust cannot write tables inside ``take``). One prediction record per
event, keyed and identified by its request id (the event id), so a prediction written
twice after a restart is the same record twice: consumers de-duplicate by request id.
A redelivered feature record (read again after a restart of the ingest agent) is not
scored again: its first record is on the topic.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import structlog

from models.artifact import load_model
from models.backends import choose_backend
from models.cascade import Cascade
from models.conformal import ConformalPredictor
from models.export import ONNX_FILE_NAME
from models.scoring import LoadedModel, model_version, score_batch
from streams import topics
from streams.app import app, settings

log = structlog.get_logger(__name__)

MAX_BATCH = 256
WITHIN_S = 0.02


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


if settings.model_dir:
    loaded = load(Path(settings.model_dir))
    log.info(
        "score.model_loaded", model=loaded.name, version=loaded.version, backend=loaded.backend.name
    )

    @app.agent(topics.features)
    async def score(stream: Any) -> None:
        async for batch in stream.take_events(MAX_BATCH, within=WITHIN_S):
            records = []
            for event in batch:
                record = orjson.loads(event.value)
                message = event.message
                record["features_at"] = {
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                }
                records.append(record)
            fresh = [r for r in records if not r.get("redelivered")]
            if not fresh:
                continue
            started = time.perf_counter()
            predictions = score_batch(
                loaded,
                fresh,
                now_ms=int(time.time() * 1000),
                batch_ms=0.0,
            )
            batch_ms = (time.perf_counter() - started) * 1000
            for prediction in predictions:
                prediction["latency_ms"]["batch_score"] = round(batch_ms, 3)
                await topics.predictions.send(
                    key=prediction["request_id"].encode(),
                    value=orjson.dumps(prediction),
                )
