"""The offline writer as a process of its own: ``features`` records to Parquet, beside the worker.

By default a worker's agent writes the offline store (``agents/stores.py``). The Parquet
encoding and the writes then share the worker's one Python thread with validation, the
tables and scoring. ``headrace offline-writer`` (with ``HEADRACE_OFFLINE_IN_WORKER=0`` for
the workers) reads the same topic in a consumer group of its own, ``<app_id>-offline-writer``,
so it takes another core, restarts and scales on its own, and a slow S3 endpoint cannot hold
scoring back. Same rows as the agent (``streams.codecs.store_rows``: a redelivered record is
left out), and at least once: a batch's offsets are committed after its files are written,
so a writer killed in between writes that batch again when it comes back.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError

from streams.codecs import store_rows
from streams.settings import OFFLINE_BATCH_ROWS, OFFLINE_WITHIN_S, Settings
from tables.offline_store import OfflineSink, ParquetOfflineStore

log = structlog.get_logger(__name__)

POLL_MS = 200


@dataclass
class WriterCounts:
    records: int = 0  # features records read
    rows: int = 0  # rows written (redelivered records are not)
    files: int = 0
    batches: int = 0
    commit_failures: int = 0  # a rebalance took the partitions first: the batch comes again


def due(
    pending: int, first_at: float | None, now: float, *, batch_rows: int, within_s: float
) -> bool:
    """Whether the records held are to be written now: a full batch, or the oldest has waited
    ``within_s``."""
    if pending == 0 or first_at is None:
        return False
    return pending >= batch_rows or now - first_at >= within_s


def group_id(settings: Settings) -> str:
    return f"{settings.app_id}-offline-writer"


async def run_offline_writer(
    settings: Settings,
    stop: asyncio.Event,
    *,
    batch_rows: int = OFFLINE_BATCH_ROWS,
    within_s: float = OFFLINE_WITHIN_S,
    store: OfflineSink | None = None,
) -> WriterCounts:
    """Write ``features`` to the offline store until ``stop`` is set, then write what is held,
    commit, and return the counts."""
    if batch_rows < 1 or within_s <= 0:
        raise ValueError("batch_rows must be at least 1 and within_s positive")
    sink = store or ParquetOfflineStore(
        settings.offline_location, storage_options=settings.offline_storage_options()
    )
    consumer = AIOKafkaConsumer(
        settings.topics.features,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a new writer writes the topic from its start
        max_poll_records=5_000,
        fetch_max_wait_ms=POLL_MS,
    )
    await consumer.start()
    writer_id = f"{settings.app_id}-offline-{os.getpid()}"
    counts = WriterCounts()
    pending: list[bytes] = []
    first_at: float | None = None

    async def write() -> None:
        rows = store_rows(pending)
        if rows:
            paths = await asyncio.to_thread(sink.append, rows, writer_id=writer_id)
            counts.files += len(paths)
            counts.rows += len(rows)
        counts.records += len(pending)
        counts.batches += 1
        try:
            await consumer.commit()  # the positions reached: every record held was written
        except CommitFailedError:
            counts.commit_failures += 1
            log.warning("offline.commit_failed", records=len(pending))
        log.info("offline.appended", records=len(pending), rows=len(rows))
        pending.clear()

    try:
        while not stop.is_set():
            fetched = await consumer.getmany(
                timeout_ms=POLL_MS, max_records=max(batch_rows - len(pending), 1)
            )
            for messages in fetched.values():
                pending.extend(m.value for m in messages if m.value is not None)
            if pending and first_at is None:
                first_at = time.monotonic()
            if due(
                len(pending), first_at, time.monotonic(), batch_rows=batch_rows, within_s=within_s
            ):
                await write()
                first_at = None
        if pending:
            await write()
    finally:
        await consumer.stop()
    return counts
