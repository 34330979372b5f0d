"""Explanations off the hot path: Shapley values of a sampled share of the decisions.

The scoring agent hands each chunk to :func:`offer`: a decision whose request id is
sampled (``models.explain.explain_sampled`` with ``HEADRACE_EXPLAIN_SHARE``) goes into a
bounded queue with its features record and model. ``offer`` never waits: when the queue
is full the request is dropped, counted and logged (``explain.dropped``, with the total).
A task drains the queue one request at a time, computes the attributions in a thread (the
model call releases the GIL, so the event loop keeps scoring), and writes one record per
explained request to the ``explanations`` topic, keyed by request id. Shadow predictions
and records that could not be scored are not explained.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from agents.lifecycle import fleet
from models.explain import explain_prediction, explain_sampled
from models.fleet import ServingSet
from models.scoring import LoadedModel
from streams import topics
from streams.app import app, settings

log = structlog.get_logger(__name__)

QUEUE_SIZE = 256  # requests waiting for an explanation; more are dropped
_DROP_LOG_EVERY = 100  # log the first drop and every 100th after it


@dataclass
class ExplainCounts:
    """What the explainer has done since the worker started."""

    queued: int = 0
    dropped: int = 0  # sampled, but the queue was full
    explained: int = 0
    failed: int = 0
    compute_ms: float = 0.0  # summed over the explained requests


counts = ExplainCounts()
_Item = tuple[LoadedModel, Mapping[str, Any], Mapping[str, Any]]
_queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=QUEUE_SIZE)


def offer(
    serving: ServingSet,
    records: Sequence[Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]],
) -> None:
    """Queue the sampled decisions of one scored chunk; never blocks (module doc)."""
    share = settings.explain_share
    by_id: dict[str, Mapping[str, Any]] | None = None
    for prediction in predictions:
        request_id = str(prediction["request_id"])
        if (
            prediction.get("shadow")
            or "probabilities" not in prediction
            or not explain_sampled(request_id, share)
        ):
            continue
        scorer = serving.scorers.get(str(prediction["model"]["version"]))
        if scorer is None:
            continue
        if by_id is None:
            by_id = {str(r["event_id"]): r for r in records}
        try:
            _queue.put_nowait((scorer.model, by_id[request_id], prediction))
        except asyncio.QueueFull:
            counts.dropped += 1
            if counts.dropped % _DROP_LOG_EVERY == 1:
                log.warning("explain.dropped", request_id=request_id, dropped=counts.dropped)
            continue
        counts.queued += 1


def _explain(item: _Item) -> tuple[dict[str, Any], float]:
    model, record, prediction = item
    began = time.perf_counter()
    explanation = explain_prediction(model, record, prediction, computed_at=int(time.time() * 1000))
    return explanation, (time.perf_counter() - began) * 1000.0


async def drain_explanations() -> None:
    """Explain the queued requests, one at a time, for as long as the worker runs."""
    while True:
        item = await _queue.get()
        request_id = str(item[2]["request_id"])
        try:
            explanation, cost_ms = await asyncio.to_thread(_explain, item)
        except Exception as error:  # noqa: BLE001 - one bad request must not stop the others
            counts.failed += 1
            log.warning("explain.failed", request_id=request_id, error=repr(error))
            continue
        explanation["compute_ms"] = round(cost_ms, 3)
        await topics.explanations.send(key=request_id.encode(), value=orjson.dumps(explanation))
        counts.explained += 1
        counts.compute_ms += cost_ms


if fleet is not None and settings.explain_share > 0:
    app.task(drain_explanations)
