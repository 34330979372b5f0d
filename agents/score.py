"""The scoring agent: features -> predictions, in micro-batches, routed by model state.

Batches come from ``stream.take_events(max_batch, within)``: the agent writes no table, which is
what lets it batch (faust cannot write tables inside ``take``). One prediction record per
event, keyed and identified by its request id (the event id), so a prediction written
twice after a restart is the same record twice: consumers de-duplicate by request id.
A redelivered feature record (its event read again after a restart of the ingest agent)
is scored too, and its prediction says ``redelivered``: the first features record may never
have reached the topic (the entity's state can be flushed while the record is still in
the producer's buffer when the worker dies), so skipping it could lose a prediction.

What serves comes from ``agents.lifecycle.fleet``: one fixed model directory
(``HEADRACE_MODEL_DIR``), or the versions ``model.events`` routes to
(``HEADRACE_SERVE_REGISTRY=1``). The agent reads the fleet's serving set once per chunk,
so a model swap lands between chunks. Each record is routed by its request id to the
champion or the canary; a shadowed record is scored by the shadow version too, and that
prediction is written flagged ``route: shadow``, never as the decision. Each record's
deadline is its features message's timestamp plus ``score_budget_ms``; each version's
``ChunkScorer`` applies its cache, micro-batches and fast path.

By default (``HEADRACE_SCORE_IN_INGEST=1``) the ingest agent calls :func:`serve_chunk` on
the batches it reads, and this agent is not started; with ``0`` it is, and scoring is a
second Kafka hop.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog

from agents.drift import watch_chunk
from agents.explain import offer as offer_explanations
from agents.lifecycle import SCORE_IN_INGEST, WORKER, fleet
from models.fleet import ModelFleet, ServingSet
from streams import topics
from streams.app import app, settings
from streams.metrics import METRICS

log = structlog.get_logger(__name__)


def decode(batch: list[Any]) -> tuple[list[dict[str, Any]], list[int | None]]:
    """The chunk's feature records, with their deadlines."""
    records: list[dict[str, Any]] = []
    deadlines: list[int | None] = []
    for event in batch:
        record = orjson.loads(event.value)
        message = event.message
        record["features_at"] = {
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
        }
        records.append(record)
        deadlines.append(int(message.timestamp * 1000) + settings.score_budget_ms)
    return records, deadlines


async def score_routed(
    serving: ServingSet,
    records: list[dict[str, Any]],
    deadlines: list[int | None],
    now_ms: int,
) -> list[dict[str, Any]]:
    """Decisions in record order, then shadow predictions."""
    groups: dict[tuple[str, str, bool], list[int]] = defaultdict(list)
    sequences: list[int] = []
    for i, record in enumerate(records):
        chosen = serving.route(record["event_id"])
        if chosen is None:  # the fleet is ready only once a version serves
            raise RuntimeError("no model version serves; the fleet was not ready")
        sequences.append(chosen.state_sequence)
        groups[chosen.decision_version, chosen.route, False].append(i)
        if chosen.shadow_version is not None:
            groups[chosen.shadow_version, "shadow", True].append(i)
    decisions: list[dict[str, Any] | None] = [None] * len(records)
    shadows: list[dict[str, Any]] = []
    for (version, route, shadow), rows in groups.items():
        predictions = await serving.scorers[version].score(
            [records[i] for i in rows],
            deadlines_ms=[deadlines[i] for i in rows],
            now_ms=now_ms,
        )
        for i, prediction in zip(rows, predictions, strict=True):
            prediction["route"] = route
            prediction["model"]["sequence"] = sequences[i]
            prediction["worker"] = WORKER
            if records[i].get("redelivered"):
                prediction["redelivered"] = True
            if shadow:
                prediction["shadow"] = True
                shadows.append(prediction)
            else:
                decisions[i] = prediction
    return [p for p in decisions if p is not None] + shadows


async def serve_chunk(
    serving_fleet: ModelFleet,
    records: list[dict[str, Any]],
    deadlines: list[int | None],
    before_send: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Score one chunk of feature records as the fleet routes them, watch and explain it,
    and hand every prediction to the producer; ``before_send`` is awaited once the chunk
    is scored, before anything reads or sends its predictions."""
    await serving_fleet.ready.wait()
    serving = serving_fleet.current
    if serving is None:  # pragma: no cover - ready is set only with a serving set
        raise RuntimeError("the fleet is ready without a serving set")
    began = time.perf_counter()
    predictions = await score_routed(serving, records, deadlines, now_ms=int(time.time() * 1000))
    scoring_s = time.perf_counter() - began
    if before_send is not None:
        await before_send()
    if settings.drift:
        await watch_chunk(serving, records, predictions)
    if settings.explain_share > 0:  # queued for agents.explain; never waits
        offer_explanations(serving, records, predictions)
    # Straight to the producer: faust flushes it before committing any offset, so
    # at-least-once holds, without Topic.send's per-message bookkeeping.
    producer = app.producer
    prediction_topic = settings.topics.predictions
    for prediction in predictions:
        await producer.send(
            prediction_topic,
            prediction["request_id"].encode(),
            orjson.dumps(prediction),
            None,
            None,
            None,
        )
    METRICS.scored_chunk(records, predictions, seconds=scoring_s, sent_ms=int(time.time() * 1000))


if fleet is not None and not SCORE_IN_INGEST:
    serving_fleet = fleet

    @app.agent(topics.features)
    async def score(stream: Any) -> None:
        within_s = settings.score_within_ms / 1000
        async for batch in stream.take_events(settings.score_max_batch, within=within_s):
            records, deadlines = decode(batch)
            if records:
                await serve_chunk(serving_fleet, records, deadlines)
