"""Benchmark of the offline store on S3: Parquet rows appended per second, bytes per row.

``python -m bench.offline_store`` runs it against ``headrace.infra.s3_endpoint_url()`` and
prints the figures as JSON. The rows go to a bucket of their own, removed at the end.
"""

from __future__ import annotations

import random
import time
import uuid

import orjson
import s3fs

from headrace import infra
from tables.offline_store import ParquetOfflineStore
from tables.rows import FeatureRow

START_MS = 1_767_225_600_000
EVENTS_PER_S = 100  # one hour of events per 360,000 rows: a batch spans one or two hours
ENTITIES = 10_000


def synthetic_rows(count: int, features: int, seed: int = 7) -> list[FeatureRow]:
    """``count`` rows in event-time order with ``features`` values each, a few of them None."""
    rng = random.Random(seed)
    names = [f"feature_{index:02d}" for index in range(features)]
    rows = []
    for index in range(count):
        values: dict[str, float | None] = {
            name: None if rng.random() < 0.05 else round(rng.lognormvariate(3.0, 1.0), 6)
            for name in names
        }
        rows.append(
            FeatureRow(
                entity_id=f"card-{rng.randrange(ENTITIES):06d}",
                event_time=START_MS + index * 1_000 // EVENTS_PER_S,
                event_id=f"ev-{index}",
                feature_version="bench-v1",
                values=values,
            )
        )
    return rows


def parquet_rows_per_s(
    s3_endpoint_url: str, *, rows: int = 200_000, batch: int = 20_000, features: int = 30
) -> dict[str, float]:
    """The rate of ``append`` to a fresh bucket, in batches of ``batch`` rows, one at a time.

    The clock runs over the appends only (building the Arrow table, encoding Parquet with
    zstd and one PUT per file), not over making the rows. Bytes per row are those of the
    objects written, over all rows.
    """
    if rows <= 0 or batch <= 0 or features <= 0:
        raise ValueError("rows, batch and features must be positive")
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": s3_endpoint_url},
    }
    bucket = f"bench-offline-{uuid.uuid4().hex}"
    data = synthetic_rows(rows, features)
    store = ParquetOfflineStore(f"s3://{bucket}/features", storage_options=options)
    fs = s3fs.S3FileSystem(**options)
    try:
        started = time.perf_counter_ns()
        for offset in range(0, rows, batch):
            store.append(data[offset : offset + batch], writer_id="bench")
        elapsed_s = (time.perf_counter_ns() - started) / 1e9
        fs.invalidate_cache()
        written = sum(int(size) for size in fs.du(bucket, total=False).values())
        if store.read().num_rows != rows:
            raise RuntimeError("the store does not hold every row written")
    finally:
        fs.invalidate_cache()
        if fs.exists(bucket):
            fs.rm(bucket, recursive=True)
    return {
        "parquet_rows_per_s": round(rows / elapsed_s),
        "parquet_bytes_per_row": round(written / rows, 2),
    }


if __name__ == "__main__":
    print(
        orjson.dumps(
            parquet_rows_per_s(infra.s3_endpoint_url()), option=orjson.OPT_INDENT_2
        ).decode()
    )
