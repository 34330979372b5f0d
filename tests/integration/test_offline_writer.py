"""``headrace offline-writer``: the features topic to Parquet in a process of its own.

Against the real broker: every record that is not a redelivery becomes one row, a batch's
offsets are committed after its files are written (a second writer of the same group
writes only what came after), and the command stops on SIGTERM with its counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from headrace.kafka_io import ensure_topics, produce
from headrace.offline_writer import run_offline_writer
from streams.settings import Settings
from tables.offline_store import ParquetOfflineStore
from tests.integration.conftest import IsolatedRun

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def features_message(i: int, *, redelivered: bool = False) -> tuple[bytes, bytes]:
    entity = f"card-{i % 7}"
    record = {
        "event_id": f"ev-{i}",
        "entity_id": entity,
        "event_time": START_MS + i * 60_000,  # one a minute: several hours, several files
        "feature_version": "v-test",
        "features": {"amount_sum_1h": float(i), "count_1h": None if i % 5 == 0 else 1.0},
        "redelivered": redelivered,
    }
    return entity.encode(), orjson.dumps(record)


def store_of(settings: Settings) -> ParquetOfflineStore:
    return ParquetOfflineStore(settings.offline_location)


async def write_until(settings: Settings, rows: int, *, timeout_s: float = 60.0) -> dict[str, int]:
    """Run a writer until the store holds ``rows`` rows (or time runs out), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_offline_writer(settings, stop, batch_rows=40, within_s=0.3))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not task.done():
        if store_of(settings).read().num_rows >= rows:
            break
        await asyncio.sleep(0.2)
    stop.set()
    counts = await task
    return {"records": counts.records, "rows": counts.rows, "files": counts.files}


def test_it_writes_each_new_record_once_and_commits_after_writing(isolated: IsolatedRun) -> None:
    settings = isolated.settings
    topic = settings.topics.features

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        await ensure_topics(settings.bootstrap_servers, [topic], partitions=2)
        first = [features_message(i) for i in range(150)]
        first += [features_message(i, redelivered=True) for i in range(10)]  # read again
        await produce(settings.bootstrap_servers, topic, first)
        one = await write_until(settings, 150)
        await produce(
            settings.bootstrap_servers, topic, [features_message(i) for i in range(150, 180)]
        )
        two = await write_until(settings, 180)  # the same group: from where the first stopped
        return one, two

    one, two = asyncio.run(scenario())
    assert one["records"] == 160
    assert one["rows"] == 150
    assert two == {"records": 30, "rows": 30, "files": two["files"]}
    table = store_of(settings).read()
    ids = table.column("event_id").to_pylist()
    assert sorted(ids) == sorted(f"ev-{i}" for i in range(180))  # each once: no batch twice
    assert len(store_of(settings).files()) == one["files"] + two["files"]
    assert one["files"] >= 3  # 150 minutes: the hours are partitions of their own


def test_the_command_stops_on_sigterm_with_its_counts(isolated: IsolatedRun) -> None:
    settings = isolated.settings
    topic = settings.topics.features

    async def feed() -> None:
        await ensure_topics(settings.bootstrap_servers, [topic], partitions=2)
        await produce(settings.bootstrap_servers, topic, [features_message(i) for i in range(25)])

    asyncio.run(feed())
    process = subprocess.Popen(
        [sys.executable, "-m", "headrace", "offline-writer", "--batch-rows", "1000"],
        env={**os.environ, **isolated.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(6)  # consumer group joined, the 25 records read and held (batch not full)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err.decode()
    counts = json.loads(out.decode().strip().splitlines()[-1])
    assert counts["records"] == 25
    assert counts["rows"] == 25
    assert store_of(settings).read().num_rows == 25  # what was held is written on the way out
