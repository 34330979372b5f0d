"""Benchmark of the online store on Redis: read latency by key and batch, write rate.

``python -m bench.online_store`` runs it against ``headrace.infra.redis_url()`` and prints
the figures as JSON. The keys go under a prefix of their own and are deleted at the end.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import numpy as np
import orjson

from headrace import infra
from tables.online_store import RedisOnlineStore
from tables.rows import FeatureRow

FEATURES_PER_ROW = 30
PUT_BATCH = 500
GET_BATCH = 100
MIN_BATCH_READS = 2_000
START_MS = 1_767_225_600_000
NS_PER_MS = 1_000_000


def synthetic_rows(entities: int, seed: int = 7) -> list[FeatureRow]:
    """One row per entity with ``FEATURES_PER_ROW`` values, a few of them None."""
    rng = random.Random(seed)
    names = [f"feature_{index:02d}" for index in range(FEATURES_PER_ROW)]
    rows = []
    for index in range(entities):
        values: dict[str, float | None] = {
            name: None if rng.random() < 0.05 else round(rng.lognormvariate(3.0, 1.0), 6)
            for name in names
        }
        rows.append(
            FeatureRow(
                entity_id=f"card-{index:06d}",
                event_time=START_MS + index,
                event_id=f"ev-{index}",
                feature_version="bench-v1",
                values=values,
            )
        )
    return rows


def _percentiles_ms(samples_ns: list[int]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(samples_ns, dtype=np.float64), [50, 99])
    return round(float(p50) / NS_PER_MS, 4), round(float(p99) / NS_PER_MS, 4)


async def _measure(redis_url: str, entities: int, reads: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    prefix = f"bench-online:{uuid.uuid4().hex}:"
    rows = synthetic_rows(entities, seed)
    ids = [row.entity_id for row in rows]
    store = RedisOnlineStore(redis_url, key_prefix=prefix, ttl_s=3_600)
    try:
        started = time.perf_counter_ns()
        for offset in range(0, entities, PUT_BATCH):
            await store.put_many(rows[offset : offset + PUT_BATCH])
        put_s = (time.perf_counter_ns() - started) / 1e9

        for entity_id in rng.sample(ids, min(200, entities)):  # warm the connection pool
            await store.get(entity_id)

        single_ns = []
        for _ in range(reads):
            entity_id = rng.choice(ids)
            began = time.perf_counter_ns()
            row = await store.get(entity_id)
            single_ns.append(time.perf_counter_ns() - began)
            if row is None:
                raise RuntimeError(f"the row of {entity_id} is missing")

        batch_ns = []
        for _ in range(max(MIN_BATCH_READS, reads // GET_BATCH)):
            asked = rng.sample(ids, min(GET_BATCH, entities))
            began = time.perf_counter_ns()
            found = await store.get_many(asked)
            batch_ns.append(time.perf_counter_ns() - began)
            if None in found:
                raise RuntimeError("a row of the batch is missing")
    finally:
        await _delete_prefix(store, prefix)
        await store.close()

    p50, p99 = _percentiles_ms(single_ns)
    batch_p50, batch_p99 = _percentiles_ms(batch_ns)
    return {
        "online_get_p50_ms": p50,
        "online_get_p99_ms": p99,
        "online_get_batch100_p50_ms": batch_p50,
        "online_get_batch100_p99_ms": batch_p99,
        "online_put_rows_per_s": round(entities / put_s),
    }


async def _delete_prefix(store: RedisOnlineStore, prefix: str) -> None:
    batch: list[bytes] = []
    async for key in store.client.scan_iter(match=f"{prefix}*", count=1_000):
        batch.append(key)
        if len(batch) >= 1_000:
            await store.client.unlink(*batch)
            batch.clear()
    if batch:
        await store.client.unlink(*batch)


def online_get_latency(
    redis_url: str, *, entities: int = 10_000, reads: int = 20_000, seed: int = 11
) -> dict[str, float]:
    """Latency of sequential single and 100-entity reads, and the batched write rate.

    Fills Redis with ``entities`` rows of 30 features in batches of ``PUT_BATCH``, then
    times ``reads`` single ``get`` calls and at least 2,000 ``get_many`` calls of 100 random
    entities, one at a time, each with ``perf_counter_ns`` around the await. Percentiles are
    over all samples; the write rate includes encoding.
    """
    if entities <= 0 or reads <= 0:
        raise ValueError("entities and reads must be positive")
    return asyncio.run(_measure(redis_url, entities, reads, seed))


if __name__ == "__main__":
    print(orjson.dumps(online_get_latency(infra.redis_url()), option=orjson.OPT_INDENT_2).decode())
