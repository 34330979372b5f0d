"""The ingest agent: events.raw -> features | events.rejected (and, in one-hop mode,
predictions).

Validation and featurization run in one agent: every Kafka hop costs a produce and a
consume, so splitting them would cost throughput for nothing. The agent is thin: the
pipeline decides, the agent writes. Its state lives in changelogged tables on RocksDB:
the ids seen within the dedup horizon (one block of them per partition per batch, see
``streams.dedup``), the outlier statistics, and each entity's windows, written once a
batch in an order that survives a crash between any two writes (``streams.pipeline``);
a restarted worker resumes where it stopped, and a message read again after a restart is
not counted twice (entity states keep the offset of the last message they applied).

Where a model serves (and unless ``HEADRACE_SCORE_IN_INGEST=0``), the agent reads
micro-batches (``take_events``, as the scoring agent does) and scores each batch itself
while its features records are written, sending the predictions once the records'
offsets are known: the same ``serve_chunk`` as the scoring agent, one Kafka hop fewer
per event than reading ``features`` back. The batch's offsets are
acknowledged only after it is scored, so at-least-once holds as in the two-hop shape.
The ``features`` topic stays the record of what the model saw (each prediction points at
its record); the offline writer still reads it, the online store is written from the
batch.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable
from typing import Any, NamedTuple

import orjson
import structlog

from agents.lifecycle import SCORE_IN_INGEST, fleet
from agents.score import serve_chunk
from agents.stores import put_online
from streams import state_codec, topics
from streams.app import app, settings, table_options
from streams.codecs import encode_rejection, encode_valid, features_record
from streams.envelope import Accepted, SourcePosition
from streams.metrics import METRICS
from streams.pipeline import ValidationPipeline
from streams.spec import load_spec
from streams.table_batch import BatchedTable, current
from tables.read_cache import ReadCachedMapping
from tables.rows import FeatureRow

log = structlog.get_logger(__name__)

# Accepted events per partition between checkpoints of its outlier statistics (about
# 650 bytes a schema). A restarted worker resumes from the last one, so it must come
# often enough that a screen which had warmed up (200 values) is warm again after a crash:
# at 1,000 a worker killed early restarted its screens cold and let outliers through.
SCREEN_CHECKPOINT_EVERY = 100
# Events of a one-hop batch between two turns of the event loop (about 20 ms of work):
# a turn per event cost a loop cycle and a selector poll each.
YIELD_EVERY = 32
ENTITY_CACHE_ENTRIES = 20_000  # entity states kept decoded (a few kB each)

spec = load_spec(settings.spec_path)
# The seen ids in blocks, "<partition>:<block>" -> entries (``streams.dedup``).
seen_ids = app.Table(
    "ingest-seen-id-blocks",
    key_type=str,
    partitions=settings.partitions,
    options=table_options(),
)
# Outlier statistics per "<partition>:<schema>", base64 text (the changelog is JSON).
screen_state = app.Table(
    "ingest-screen-state",
    key_type=str,
    value_type=str,
    partitions=settings.partitions,
    options=table_options(),
)
# Each entity's windows (``tables.entity_state``), as MessagePack (``streams.state_codec``).
entity_states = state_codec.state_table(
    app,
    "ingest-entity-states",
    key_type=str,
    partitions=settings.partitions,
    options=table_options(),
)
# The latest feature row per entity, served by the worker when no Redis is configured.
latest_features = app.Table(
    "ingest-latest-features",
    key_type=str,
    value_type=str,
    partitions=settings.partitions,
    options=table_options(),
)
# The states last read or written, so most reads skip RocksDB and the decode; cleared on a
# rebalance (another worker may have written them) and after a failed event (a state may
# have changed in place without being written).
# Written a batch at a time: the store at once, the changelog records at the batch's end.
seen_id_writes: BatchedTable[Any] = BatchedTable(seen_ids)
entity_state_writes: BatchedTable[Any] = BatchedTable(entity_states)
latest_feature_writes: BatchedTable[str] = BatchedTable(latest_features)
entity_cache = ReadCachedMapping(entity_state_writes, max_entries=ENTITY_CACHE_ENTRIES)
pipeline = ValidationPipeline(spec, seen_id_writes, entity_cache)
_needs_rebuild = True
_since_checkpoint: dict[int, int] = {}  # accepted events per partition since its checkpoint


@app.on_rebalance_complete.connect  # type: ignore[arg-type]  # mode types receivers narrowly
async def _mark_rebuild(_sender: Any, **_kwargs: Any) -> None:
    global _needs_rebuild  # noqa: PLW0603 - one flag shared with the agent loop
    _needs_rebuild = True


def _rebuild() -> None:
    entity_cache.clear_cache()
    pipeline.rebuild(
        seen_ids.items(),
        ((key, base64.b64decode(state)) for key, state in screen_state.items()),
        entity_states.items(),
    )
    log.info("ingest.state_rebuilt")


class Sent(NamedTuple):
    """A features record handed to the producer, to be scored in its batch."""

    record: dict[str, Any]
    written: Awaitable[Any]  # the producer's RecordMetadata: where the record landed
    deadline_ms: int
    row: FeatureRow | None  # for the online store; None for a redelivered message


async def ingest_one(event: Any) -> Sent | None:
    """Validate, featurize and write one message; in one-hop mode, the features record it
    sent, to be scored with its batch."""
    began = time.perf_counter()
    message = event.message
    partition = message.partition
    source = SourcePosition(message.topic, partition, message.offset, int(message.timestamp * 1000))
    try:
        outcome = pipeline.process(event.value, partition, message.offset)
    except Exception:
        entity_cache.clear_cache()
        raise
    if not isinstance(outcome, Accepted):
        await topics.rejected.send(
            key=event.key,
            value=encode_rejection(outcome, event.value, source, int(time.time() * 1000)),
        )
        METRICS.ingest_rejected(outcome.reason.value, time.perf_counter() - began)
        return None
    sent = None
    if outcome.features is None:  # a domain without [features]
        await topics.valid.send(key=event.key, value=encode_valid(outcome))
    else:
        record = features_record(outcome, source)
        # Straight to the producer, as predictions are: faust flushes it before any offset
        # is committed, without Topic.send's per-message bookkeeping.
        written = await app.producer.send(
            settings.topics.features, event.key, orjson.dumps(record), None, None, None
        )
        if SCORE_IN_INGEST:  # else the scoring agent reads the record back
            deadline_ms = int(time.time() * 1000) + settings.score_budget_ms
            row = None if outcome.redelivered else outcome.features.row
            sent = Sent(record, written, deadline_ms, row)
        if not settings.redis_url and not outcome.redelivered:
            row_json = outcome.features.row.to_json().decode()
            latest_feature_writes[outcome.envelope.entity_id] = row_json
    METRICS.ingest_accepted(time.perf_counter() - began)
    if not outcome.redelivered:
        _since_checkpoint[partition] = _since_checkpoint.get(partition, 0) + 1
    return sent


def flush(partition: int) -> None:
    """Write what the partition's messages changed (seen ids, then entity states), then
    its outlier statistics when a checkpoint is due: a checkpoint never holds what a
    message taught the screen unless the message's outcome is stored too."""
    pipeline.flush(partition)
    if _since_checkpoint.get(partition, 0) >= SCREEN_CHECKPOINT_EVERY:
        for key, state in pipeline.partition_states(partition).items():
            screen_state[key] = base64.b64encode(state).decode("ascii")
        _since_checkpoint[partition] = 0


async def send_writes() -> None:
    """Hand the batch's changelog records to the producer, before its messages are
    acknowledged (``streams.table_batch``)."""
    for table in (seen_id_writes, entity_state_writes, latest_feature_writes):
        await table.send()


def _rebuild_if_needed() -> None:
    global _needs_rebuild  # noqa: PLW0603 - one flag shared with the rebalance hook
    if _needs_rebuild:
        _rebuild()
        _needs_rebuild = False


async def score_sent(sent: list[Sent]) -> None:
    """Score a batch's features records, each prediction pointing at its features record
    (``features_at``) as one scored from the topic does. The batch is scored while the
    broker acknowledges the records: each record's ``features_at`` is an empty dict that
    its predictions share (``models.scoring.prediction_record`` takes it as it is), filled
    in place once the record's offset is known, before any prediction is read or sent.
    Then the batch's rows go to the online store (``agents.stores`` reads no
    ``features`` for it in this mode)."""
    if fleet is None:  # pragma: no cover - ingest scores only where a fleet serves
        raise RuntimeError("no fleet to score with")
    records = []
    for item in sent:
        item.record["features_at"] = {}
        records.append(item.record)

    async def locate() -> None:
        for item in sent:
            written = await item.written
            item.record["features_at"].update(
                topic=written.topic, partition=written.partition, offset=written.offset
            )

    await serve_chunk(fleet, records, [item.deadline_ms for item in sent], before_send=locate)
    await put_online([item.row for item in sent if item.row is not None])


@app.agent(topics.raw)
async def ingest(stream: Any) -> None:
    if not SCORE_IN_INGEST:
        async for event in stream.events():
            _rebuild_if_needed()
            await ingest_one(event)
            flush(event.message.partition)
            await send_writes()
        return
    within_s = settings.score_within_ms / 1000
    async for events in stream.take_events(settings.score_max_batch, within=within_s):
        _rebuild_if_needed()
        sent = []
        last_of: dict[int, Any] = {}  # partition -> the batch's last event from it
        for position, event in enumerate(events, start=1):
            with current(event):
                item = await ingest_one(event)
            if item is not None:
                sent.append(item)
            last_of[event.message.partition] = event
            if position % YIELD_EVERY == 0:  # the producer and the web server get a turn
                await asyncio.sleep(0)
        for partition, event in last_of.items():  # one write per changed key and partition
            with current(event):
                flush(partition)
        await send_writes()
        if sent:
            await score_sent(sent)
