"""Feature sinks: the online store (Redis) and the offline store (Parquet), fed in batches.

Both read the ``features`` topic, so they add no cost to the ingest agent and can be
rebuilt by replaying it. They write no table, which is what lets them batch with
``stream.take`` (faust cannot write tables inside ``take``). A redelivered record is not
written again: its original is already there, and it must not overwrite a newer vector.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import structlog

from streams import topics
from streams.app import app, settings
from streams.codecs import decode_features, feature_row_of
from tables.offline_store import ParquetOfflineStore
from tables.online_store import OnlineStore, RedisOnlineStore
from tables.rows import FeatureRow

log = structlog.get_logger(__name__)

ONLINE_BATCH = 500
ONLINE_WITHIN_S = 0.05
OFFLINE_BATCH = 20_000
OFFLINE_WITHIN_S = 5.0


def _rows(batch: list[bytes]) -> list[FeatureRow]:
    rows = []
    for value in batch:
        record = decode_features(value)
        if not record.get("redelivered"):
            rows.append(feature_row_of(record))
    return rows


def newest_per_entity(rows: list[FeatureRow], newest: dict[str, int]) -> list[FeatureRow]:
    """Rows that are the newest seen for their entity (an out-of-order event is not)."""
    keep = []
    for row in rows:
        if row.event_time >= newest.get(row.entity_id, row.event_time):
            newest[row.entity_id] = row.event_time
            keep.append(row)
    return keep


if settings.redis_url:
    online_store: OnlineStore = RedisOnlineStore(
        settings.redis_url,
        key_prefix=settings.online_key_prefix,
        ttl_s=settings.online_ttl_s,
    )

    @app.agent(topics.features)
    async def online_writer(stream: Any) -> None:
        newest: dict[str, int] = {}
        async for batch in stream.take(ONLINE_BATCH, within=ONLINE_WITHIN_S):
            rows = newest_per_entity(_rows(batch), newest)
            if rows:
                await online_store.put_many(rows)


offline_store = ParquetOfflineStore(
    settings.offline_location,
    storage_options=settings.offline_storage_options(),
)


@app.agent(topics.features)
async def offline_writer(stream: Any) -> None:
    writer_id = f"{settings.app_id}-{os.getpid()}"
    async for batch in stream.take(OFFLINE_BATCH, within=OFFLINE_WITHIN_S):
        rows = _rows(batch)
        if rows:
            paths = await asyncio.to_thread(offline_store.append, rows, writer_id=writer_id)
            log.info("offline.appended", rows=len(rows), files=len(paths))
