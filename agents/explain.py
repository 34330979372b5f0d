"""Explanations off the hot path: Shapley values of a sampled share of the decisions.

The scoring agent hands each chunk to :func:`offer`: a decision whose request id is
sampled (``models.explain.explain_sampled`` with ``HEADRACE_EXPLAIN_SHARE``) goes into a
bounded queue with its features record and model. ``offer`` never waits: when the queue
is full the request is dropped, counted and logged (``explain.dropped``, with the total).
A task drains the queue one request at a time, has the attributions computed by a child
process (``models.explainer``; ``HEADRACE_EXPLAIN_PROCESS=0``, or a model with no artifact
directory: in a thread of the worker), and writes one record per explained request to the
``explanations`` topic, keyed by request id. In a thread the explanation shared the
worker's GIL and slowed the event loop well beyond its own cost (BENCHMARKS.md). Shadow
predictions and records that could not be scored are not explained.
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
from models.explainer import ExplainerProcess
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
explainer = ExplainerProcess() if settings.explain_process else None
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


def _explain_here(item: _Item) -> tuple[dict[str, Any], float]:
    model, record, prediction = item
    began = time.perf_counter()
    explanation = explain_prediction(model, record, prediction, computed_at=int(time.time() * 1000))
    return explanation, (time.perf_counter() - began) * 1000.0


async def _explain(item: _Item) -> tuple[dict[str, Any], float]:
    model, record, prediction = item
    if explainer is None or model.directory is None:
        return await asyncio.to_thread(_explain_here, item)
    started = explainer.started
    try:
        return await explainer.explain(
            directory=model.directory,
            version=model.version,
            backend=model.backend.name,
            record=record,
            prediction=prediction,
            computed_at=int(time.time() * 1000),
        )
    finally:
        if explainer.started != started:
            log.info("explain.process_started", pid=explainer.pid, starts=explainer.started)


async def _preload() -> None:
    """Have the explainer load the versions serving now (none yet in registry mode)."""
    serving = None if fleet is None else fleet.current
    if explainer is None or serving is None:
        return
    for scorer in serving.scorers.values():
        model = scorer.model
        if model.directory is not None:
            try:
                await explainer.load(
                    directory=model.directory, version=model.version, backend=model.backend.name
                )
            except Exception as error:  # noqa: BLE001 - it loads on first use instead
                log.warning("explain.preload_failed", version=model.version, error=repr(error))


async def drain_explanations() -> None:
    """Explain the queued requests, one at a time, for as long as the worker runs."""
    global explainer  # noqa: PLW0603 - dropped for the thread if no child can start
    try:
        if explainer is not None:  # its imports now, not on the first sampled decision
            try:
                await explainer.start()
            except OSError as error:
                log.warning("explain.process_unavailable", error=repr(error))
                explainer = None
            else:
                log.info("explain.process_started", pid=explainer.pid, starts=explainer.started)
                await _preload()
        await _drain()
    finally:
        if explainer is not None:
            await explainer.close()


async def _drain() -> None:
    while True:
        item = await _queue.get()
        request_id = str(item[2]["request_id"])
        try:
            explanation, cost_ms = await _explain(item)
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
