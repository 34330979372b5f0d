"""The feedback agent: predictions and late labels joined by request id -> outcomes.

One agent reads both topics (co-partitioned by request id) and keeps a table entry per
request with its predictions and latest label; ``models.feedback`` decides what to emit.
Outcomes go to ``outcomes`` keyed by model name, so one partition carries a model's
outcomes in order, for the rollout controller. A label that cannot be used goes to the
dead-letter topic with the reason ``bad_label``. Entries idle for longer than the join's
time to live are swept every ``SWEEP_EVERY`` messages per worker. The same agent picks
the decisions a person should label for ``review.queue`` (``models.review``). It runs in
workers that score, unless ``HEADRACE_FEEDBACK=0``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import structlog

from agents.lifecycle import fleet
from models.feedback import expired, join_label, join_prediction, parse_label
from models.review import ReviewSelector
from streams import topics
from streams.app import app, settings, table_options
from streams.codecs import encode_rejection
from streams.envelope import Reason, Rejected, SourcePosition
from streams.metrics import METRICS

log = structlog.get_logger(__name__)

JOIN_TTL_MS = 7 * 24 * 3_600_000
SWEEP_EVERY = 10_000

review = ReviewSelector()
joins = app.Table(
    "feedback-joins", key_type=str, partitions=settings.partitions, options=table_options()
)


async def feedback(stream: Any) -> None:
    seen = 0
    async for event in stream.events():
        message = event.message
        now_ms = int(time.time() * 1000)
        if message.topic == settings.topics.labels:
            label = parse_label(event.value)
            if isinstance(label, str):
                source = SourcePosition(message.topic, message.partition, message.offset)
                rejected = Rejected(Reason.BAD_LABEL, label)
                await topics.rejected.send(
                    key=event.key, value=encode_rejection(rejected, event.value, source, now_ms)
                )
                continue
            key = label["request_id"]
            METRICS.label(key)
            entry, outcomes = join_label(joins.get(key), label, now_ms)
        else:
            prediction = orjson.loads(event.value)
            key = prediction["request_id"]
            entry, outcomes = join_prediction(joins.get(key), prediction, now_ms)
            for item in review.offer(prediction, int(prediction.get("scored_at", now_ms))):
                await topics.review_queue.send(
                    key=item["request_id"].encode(), value=orjson.dumps(item)
                )
                METRICS.review_queued(item["request_id"])
        joins[key] = entry
        for outcome in outcomes:
            await topics.outcomes.send(key=outcome["model"].encode(), value=orjson.dumps(outcome))
            METRICS.outcome(outcome)
        seen += 1
        if seen % SWEEP_EVERY == 0:
            stale = [k for k, v in joins.items() if expired(v, now_ms, JOIN_TTL_MS)]
            for stale_key in stale:
                del joins[stale_key]
            log.info("feedback.swept", removed=len(stale))


async def release_review_slot() -> None:
    """Close a review slot on time even when no prediction arrives to close it."""
    for item in review.poll(int(time.time() * 1000)):
        await topics.review_queue.send(key=item["request_id"].encode(), value=orjson.dumps(item))
        METRICS.review_queued(item["request_id"])


if fleet is not None and settings.feedback:
    app.agent(topics.feedback, name="feedback")(feedback)
    app.timer(review.policy.slot_ms / 2000)(release_review_slot)
