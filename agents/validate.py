"""The validation agent: events.raw -> events.valid | events.rejected.

Thin by design: it hands the raw bytes and their partition to the ValidationPipeline and
writes the outcome. Its state (ids seen within the dedup horizon, outlier statistics per
partition) lives in changelogged tables, so a restarted worker resumes where it stopped.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import structlog

from streams import topics
from streams.app import app, settings
from streams.codecs import encode_rejection, encode_valid
from streams.envelope import Accepted, SourcePosition
from streams.pipeline import ValidationPipeline
from streams.spec import load_spec

log = structlog.get_logger(__name__)

SCREEN_CHECKPOINT_EVERY = 1_000

spec = load_spec(settings.spec_path)
seen_ids = app.Table(
    "validate-seen-ids",
    key_type=str,
    value_type=int,
    partitions=settings.partitions,
)
# Outlier statistics per "<partition>:<schema>", base64 text (the changelog is JSON).
screen_state = app.Table(
    "validate-screen-state",
    key_type=str,
    value_type=str,
    partitions=settings.partitions,
)
pipeline = ValidationPipeline(spec, seen_ids)
_needs_rebuild = True


@app.on_rebalance_complete.connect  # type: ignore[arg-type]  # mode types receivers narrowly
async def _mark_rebuild(_sender: Any, **_kwargs: Any) -> None:
    global _needs_rebuild  # noqa: PLW0603 - one flag shared with the agent loop
    _needs_rebuild = True


@app.agent(topics.raw)
async def validate(stream: Any) -> None:
    global _needs_rebuild  # noqa: PLW0603
    since_checkpoint: dict[int, int] = {}
    async for event in stream.events():
        if _needs_rebuild:
            pipeline.rebuild(
                seen_ids.items(),
                ((key, base64.b64decode(state)) for key, state in screen_state.items()),
            )
            _needs_rebuild = False
            log.info("validate.state_rebuilt", seen_ids=len(seen_ids))
        message = event.message
        partition = message.partition
        outcome = pipeline.process(event.value, partition)
        if isinstance(outcome, Accepted):
            await topics.valid.send(key=event.key, value=encode_valid(outcome))
            count = since_checkpoint.get(partition, 0) + 1
            if count >= SCREEN_CHECKPOINT_EVERY:
                for key, state in pipeline.partition_states(partition).items():
                    screen_state[key] = base64.b64encode(state).decode("ascii")
                count = 0
            since_checkpoint[partition] = count
        else:
            await topics.rejected.send(
                key=event.key,
                value=encode_rejection(
                    outcome,
                    event.value,
                    SourcePosition(message.topic, partition, message.offset),
                    int(time.time() * 1000),
                ),
            )
