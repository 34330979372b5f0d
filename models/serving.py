"""Scoring one chunk of feature records: prediction cache, deadline-aware micro-batches.

The scoring agent hands each chunk it takes from the ``features`` topic to
``ChunkScorer.score`` and writes the predictions it gets back, one per record, in order.
Within a chunk:

1. Each record is looked up in the prediction cache by model version and feature hash;
   a hit is answered from the cache (``cache: "hit"`` in its latency record).
2. The misses are offered to a ``MicroBatcher`` with their deadlines. Batches of at
   most ``max_batch`` are scored by the model; records already past their deadline come
   out as ``expired`` batches and are answered by the fast path (the cascade's triage
   model alone) and flagged ``deadline_missed``. Nothing is dropped.
3. The batcher is flushed at the end of the chunk: faust acknowledges a chunk's events
   when the agent asks for the next chunk, so no record may wait beyond its chunk. The
   maximum wait is the agent's ``take`` window; the batcher's job here is the deadline
   split and the size cut, and it learns the batch cost from every scored batch.

Time is an argument (``now_ms``); the batch cost is measured with the injected ``timer``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from models.batcher import MicroBatcher
from models.cache import PredictionCache, feature_hashes
from models.scoring import LoadedModel, conformal_for, model_outputs, prediction_record

CHUNK_WAIT_MS = 1 << 40


@dataclass
class ServingCounts:
    """What a scorer has done since it started; the worker's metrics read it."""

    records: int = 0
    batches: int = 0
    ensemble_rows: int = 0
    cache_hits: int = 0
    deadline_missed: int = 0


class ChunkScorer:
    def __init__(
        self,
        model: LoadedModel,
        *,
        max_batch: int,
        cache: PredictionCache | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.model = model
        self.cache = cache
        self.alpha: float | None = None  # the adapted conformal level; None: as trained
        # A cached answer holds a conformal set: it is only good for the same level.
        self._cache_key = model.version
        self.counts = ServingCounts()
        # The chunk is flushed at its end, so the batcher's own wait never runs out first.
        self._batcher: MicroBatcher[int] = MicroBatcher(max_batch, max_wait_ms=CHUNK_WAIT_MS)
        self._timer = timer

    def recalibrated(self, alpha: float | None) -> ChunkScorer:
        """The same model with its conformal sets at level ``alpha`` (None: as trained);
        the cache is shared, under a key of its own."""
        scorer = ChunkScorer(
            replace(self.model, conformal=conformal_for(self.model.metadata, alpha)),
            max_batch=self._batcher.max_batch,
            cache=self.cache,
            timer=self._timer,
        )
        scorer.alpha = alpha
        scorer._cache_key = (
            self.model.version if alpha is None else f"{self.model.version}@{alpha!r}"
        )
        scorer.counts = self.counts
        return scorer

    async def score(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        deadlines_ms: Sequence[int | None],
        now_ms: int,
    ) -> list[dict[str, Any]]:
        """One prediction per record, in order; see the module doc."""
        version = self._cache_key
        hashes = feature_hashes([r["features"] for r in records])
        predictions: list[dict[str, Any] | None] = [None] * len(records)
        released = []
        for i, record in enumerate(records):
            cached = await self.cache.get(version, hashes[i]) if self.cache is not None else None
            if cached is not None:
                hit = prediction_record(
                    self.model,
                    record,
                    orjson.loads(cached),
                    now_ms=now_ms,
                    batch_ms=0.0,
                    batch=0,
                    features_hash=hashes[i],
                )
                hit["latency_ms"]["cache"] = "hit"
                predictions[i] = hit
                self.counts.cache_hits += 1
                continue
            released.extend(self._batcher.offer(i, now_ms, deadlines_ms[i]))
        released.extend(self._batcher.flush(now_ms))
        for batch in released:
            rows = [records[i] for i in batch.items]
            began = self._timer()
            outputs = model_outputs(self.model, rows, fast=batch.expired)
            cost_ms = (self._timer() - began) * 1000.0
            self._batcher.observe(len(rows), cost_ms)
            self.counts.batches += 1
            scored = sum(output is not None for output in outputs)
            for i, output in zip(batch.items, outputs, strict=True):
                prediction = prediction_record(
                    self.model,
                    records[i],
                    output,
                    now_ms=now_ms,
                    batch_ms=cost_ms,
                    batch=scored,
                    features_hash=hashes[i],
                )
                prediction["latency_ms"]["release"] = batch.reason
                if batch.expired:
                    prediction["deadline_missed"] = True
                    self.counts.deadline_missed += 1
                elif output is not None and self.cache is not None:
                    await self.cache.put(version, hashes[i], orjson.dumps(output))
                predictions[i] = prediction
            if not batch.expired:
                self.counts.ensemble_rows += scored
        self.counts.records += len(records)
        return [p for p in predictions if p is not None]
