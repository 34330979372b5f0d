"""The yardstick for ``headrace bench e2e``: the same work as a worker, in a plain loop.

One process, one aiokafka consumer reading every partition of ``events.raw`` from the
beginning (manually assigned, no group), the same pure functions the agents call
(``ValidationPipeline.process`` with in-memory state, ``encode_features``, a
``ChunkScorer`` on the same model with the same cache, ``orjson.dumps``) and one aiokafka
producer writing the features record and the prediction record of every valid event to
topics of its own. What it leaves out is what a Faust worker adds: the agents' streams
and their buffers, changelogged tables on RocksDB, a second consumer path for the
``features`` hop, offset commits. Its drain rate is what the worker is compared with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from models.cache import LruPredictionCache
from models.scoring import load_served_model, model_version
from models.serving import ChunkScorer
from streams.codecs import encode_features
from streams.envelope import Accepted, SourcePosition
from streams.pipeline import ValidationPipeline
from streams.spec import load_spec

CACHE_ENTRIES = 100_000  # as the worker's memory cache
PRODUCER_OPTIONS: dict[str, Any] = {"acks": "all", "linger_ms": 5}  # as the worker's producer


def scorer_for(model_dir: Path, backend: str, max_batch: int) -> ChunkScorer:
    """The scorer a worker builds for a fixed model directory."""
    loaded = load_served_model(model_dir, model_version(model_dir), backend or None)
    return ChunkScorer(loaded, max_batch=max_batch, cache=LruPredictionCache(CACHE_ENTRIES))


async def baseline_drain(  # noqa: PLR0913 - the run's inputs, all keyword-only
    *,
    bootstrap: str,
    raw_topic: str,
    partition_count: int,
    features_topic: str,
    predictions_topic: str,
    spec_path: Path,
    model_dir: Path,
    backend: str,
    max_batch: int,
    budget_ms: int,
    expected: int,
    timeout_s: float,
    on_progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Read ``raw_topic`` from the start until ``expected`` predictions are sent (or the
    time runs out); the send time (epoch ms) of every prediction."""
    pipeline = ValidationPipeline(load_spec(spec_path), {}, {})
    scorer = scorer_for(model_dir, backend, max_batch)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_OPTIONS)
    await consumer.start()
    await producer.start()
    sent_at: list[int] = []
    try:
        partitions = [TopicPartition(raw_topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while len(sent_at) < expected and time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=100, max_records=max_batch)
            records: list[dict[str, Any]] = []
            for messages in fetched.values():
                for message in messages:
                    source = SourcePosition(message.topic, message.partition, message.offset)
                    outcome = pipeline.process(
                        message.value or b"", message.partition, message.offset
                    )
                    if not isinstance(outcome, Accepted) or outcome.features is None:
                        continue
                    value = encode_features(outcome, source)
                    await producer.send(features_topic, value, message.key)
                    record = orjson.loads(value)
                    record["features_at"] = None
                    records.append(record)
            for partition in fetched:  # what the batch changed, as the worker writes it
                pipeline.flush(partition.partition)
            if not records:
                continue
            now_ms = int(time.time() * 1000)
            predictions = await scorer.score(
                records, deadlines_ms=[now_ms + budget_ms] * len(records), now_ms=now_ms
            )
            for prediction in predictions:
                await producer.send(
                    predictions_topic,
                    orjson.dumps(prediction),
                    prediction["request_id"].encode(),
                )
            sent_ms = int(time.time() * 1000)
            sent_at.extend([sent_ms] * len(predictions))
            if on_progress is not None:
                on_progress(len(sent_at))
        await producer.flush()
    finally:
        await producer.stop()
        await consumer.stop()
    return sent_at
