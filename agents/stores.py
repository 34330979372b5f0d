"""Feature sinks: the online store (Redis) and the offline store (Parquet), fed in batches.

The offline writer reads the ``features`` topic, so it can be rebuilt by replaying it;
it writes no table, which is what lets it batch with ``stream.take`` (faust cannot write
tables inside ``take``). Where the ingest agent scores (the default), it writes the
online store from each batch it scores (:func:`put_online`); otherwise an agent reads
``features`` for it. A redelivered record is not written again: its original is already
there, and it must not overwrite a newer vector.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import structlog

from agents.lifecycle import SCORE_IN_INGEST
from streams import topics
from streams.app import app, settings
from streams.codecs import store_rows
from streams.settings import OFFLINE_BATCH_ROWS, OFFLINE_WITHIN_S
from tables.offline_store import ParquetOfflineStore, tables_by_version
from tables.online_store import OnlineStore, RedisOnlineStore
from tables.rows import FeatureRow

if TYPE_CHECKING:
    import pyarrow as pa

log = structlog.get_logger(__name__)

ONLINE_BATCH = 500
ONLINE_WITHIN_S = 0.05
OFFLINE_SLICE_ROWS = 500  # records decoded between two turns of the other agents


def newest_per_entity(rows: list[FeatureRow], newest: dict[str, int]) -> list[FeatureRow]:
    """Rows that are the newest seen for their entity (an out-of-order event is not)."""
    keep = []
    for row in rows:
        if row.event_time >= newest.get(row.entity_id, row.event_time):
            newest[row.entity_id] = row.event_time
            keep.append(row)
    return keep


online_store: OnlineStore | None = None
_newest: dict[str, int] = {}  # the newest event time written per entity


async def put_online(rows: list[FeatureRow]) -> None:
    """Write the rows that are their entity's newest to the online store, if there is one."""
    if online_store is not None:
        newest = newest_per_entity(rows, _newest)
        if newest:
            await online_store.put_many(newest)


if settings.redis_url:
    online_store = RedisOnlineStore(
        settings.redis_url,
        key_prefix=settings.online_key_prefix,
        ttl_s=settings.online_ttl_s,
    )

if online_store is not None and not SCORE_IN_INGEST:  # else ingest writes it per batch

    @app.agent(topics.features)
    async def online_writer(stream: Any) -> None:
        async for batch in stream.take(ONLINE_BATCH, within=ONLINE_WITHIN_S):
            await put_online(store_rows(batch))


offline_store = ParquetOfflineStore(
    settings.offline_location,
    storage_options=settings.offline_storage_options(),
)


async def offline_writer(stream: Any) -> None:
    """A file per batch (up to ``OFFLINE_BATCH_ROWS`` records or ``OFFLINE_WITHIN_S``),
    written before the batch's records are acknowledged. The records are decoded and made
    into columns a slice at a time, the other agents getting a turn between slices: done
    at once, the 5,000 records of 5 s at 1,000 events/s took 25 ms to decode on the event
    loop and 11 ms to make into columns under the interpreter's lock, the worker's slowest
    predictions. Parquet and the upload run in a thread."""
    writer_id = f"{settings.app_id}-{os.getpid()}"
    async for batch in stream.take(OFFLINE_BATCH_ROWS, within=OFFLINE_WITHIN_S):
        tables: list[pa.Table] = []
        rows = 0
        for start in range(0, len(batch), OFFLINE_SLICE_ROWS):
            sliced = store_rows(batch[start : start + OFFLINE_SLICE_ROWS])
            rows += len(sliced)
            tables.extend(tables_by_version(sliced).values())
            await asyncio.sleep(0)
        if rows:
            paths = await asyncio.to_thread(
                offline_store.append_tables, tables, writer_id=writer_id
            )
            log.info("offline.appended", rows=rows, files=len(paths))


if settings.offline_in_worker:  # else `headrace offline-writer` runs beside the worker
    app.agent(topics.features)(offline_writer)
