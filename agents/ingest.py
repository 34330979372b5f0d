"""The ingest agent: events.raw -> features | events.rejected.

Validation and featurization run in one agent: every Kafka hop costs a produce and a
consume, which in a Faust worker is most of an event's cost (measured: about 220 us per
message without table writes), so splitting them would halve throughput for nothing.
The agent is thin: the pipeline decides, the agent writes. Its state lives in
changelogged tables on RocksDB: the ids seen within the dedup horizon, the outlier
statistics, and each entity's windows; a restarted worker resumes where it stopped, and a
message read again after a restart is not counted twice (entity states keep the offset of
the last message they applied).
"""

from __future__ import annotations

import base64
import time
from typing import Any

import structlog

from streams import topics
from streams.app import app, settings, table_options
from streams.codecs import encode_features, encode_rejection, encode_valid
from streams.envelope import Accepted, SourcePosition
from streams.metrics import METRICS
from streams.pipeline import ValidationPipeline
from streams.spec import load_spec

log = structlog.get_logger(__name__)

SCREEN_CHECKPOINT_EVERY = 1_000

spec = load_spec(settings.spec_path)
seen_ids = app.Table(
    "ingest-seen-ids", key_type=str, partitions=settings.partitions, options=table_options()
)
# Outlier statistics per "<partition>:<schema>", base64 text (the changelog is JSON).
screen_state = app.Table(
    "ingest-screen-state",
    key_type=str,
    value_type=str,
    partitions=settings.partitions,
    options=table_options(),
)
entity_states = app.Table(
    "ingest-entity-states", key_type=str, partitions=settings.partitions, options=table_options()
)
# The latest feature row per entity, served by the worker when no Redis is configured.
latest_features = app.Table(
    "ingest-latest-features",
    key_type=str,
    value_type=str,
    partitions=settings.partitions,
    options=table_options(),
)
pipeline = ValidationPipeline(spec, seen_ids, entity_states)
_needs_rebuild = True


@app.on_rebalance_complete.connect  # type: ignore[arg-type]  # mode types receivers narrowly
async def _mark_rebuild(_sender: Any, **_kwargs: Any) -> None:
    global _needs_rebuild  # noqa: PLW0603 - one flag shared with the agent loop
    _needs_rebuild = True


def _rebuild() -> None:
    pipeline.rebuild(
        seen_ids.items(),
        ((key, base64.b64decode(state)) for key, state in screen_state.items()),
        entity_states.items(),
    )
    log.info("ingest.state_rebuilt")


@app.agent(topics.raw)
async def ingest(stream: Any) -> None:
    global _needs_rebuild  # noqa: PLW0603
    since_checkpoint: dict[int, int] = {}
    async for event in stream.events():
        if _needs_rebuild:
            _rebuild()
            _needs_rebuild = False
        began = time.perf_counter()
        message = event.message
        partition = message.partition
        source = SourcePosition(
            message.topic, partition, message.offset, int(message.timestamp * 1000)
        )
        outcome = pipeline.process(event.value, partition, message.offset)
        if not isinstance(outcome, Accepted):
            await topics.rejected.send(
                key=event.key,
                value=encode_rejection(outcome, event.value, source, int(time.time() * 1000)),
            )
            METRICS.ingest_rejected(outcome.reason.value, time.perf_counter() - began)
            continue
        if outcome.features is None:  # a domain without [features]
            await topics.valid.send(key=event.key, value=encode_valid(outcome))
        else:
            await topics.features.send(key=event.key, value=encode_features(outcome, source))
            if not settings.redis_url and not outcome.redelivered:
                latest_features[outcome.envelope.entity_id] = (
                    outcome.features.row.to_json().decode()
                )
        METRICS.ingest_accepted(time.perf_counter() - began)
        if outcome.redelivered:
            continue
        count = since_checkpoint.get(partition, 0) + 1
        if count >= SCREEN_CHECKPOINT_EVERY:
            for key, state in pipeline.partition_states(partition).items():
                screen_state[key] = base64.b64encode(state).decode("ascii")
            count = 0
        since_checkpoint[partition] = count
