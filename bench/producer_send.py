"""What a record costs the producer: aiokafka's ``send`` one record at a time, against its
batch API (``create_batch`` / ``send_batch``) over the same records, on the real broker.

    python -m bench.producer_send [--records 50000] [--rounds 3]

The worker hands each event's records to the producer one ``send`` at a time (its features
record, its prediction, its tables' changelog records), so the CPU a ``send`` costs this
process is paid several times an event. Each round sends the same keyed records both ways
(keys partitioned as aiokafka's default partitioner does, values the size of a
prediction), flushes, and times this process's CPU. One line a round, then one JSON line
with the medians. The topic is its own and is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from streams.settings import Settings

PARTITIONS = 4
VALUE = orjson.dumps(
    {"request_id": "r" * 24, "features": [0.125] * 24, "model": {"version": "a" * 12}}
)


async def _timed(action: Callable[[], Awaitable[None]], records: int) -> float:
    """CPU microseconds of this process per record for ``action``."""
    began = time.process_time()
    await action()
    return (time.process_time() - began) / records * 1e6


async def one_at_a_time(producer: AIOKafkaProducer, topic: str, keys: list[bytes]) -> None:
    for key in keys:
        await producer.send(topic, VALUE, key=key)
    await producer.flush()


async def batched(producer: AIOKafkaProducer, topic: str, keys: list[bytes]) -> None:
    """The same records through the batch API: one batch per partition at a time, a new
    one when it is full."""
    await producer.client._wait_on_metadata(topic)  # noqa: SLF001 - as send() does first
    by_partition: dict[int, list[bytes]] = {}
    for key in keys:
        partition = producer._partition(topic, None, None, VALUE, key, VALUE)  # noqa: SLF001
        by_partition.setdefault(partition, []).append(key)
    for partition, partition_keys in by_partition.items():
        batch = producer.create_batch()
        for key in partition_keys:
            if batch.append(key=key, value=VALUE, timestamp=None) is None:  # full
                batch.close()
                await producer.send_batch(batch, topic, partition=partition)
                batch = producer.create_batch()
                batch.append(key=key, value=VALUE, timestamp=None)
        batch.close()
        await producer.send_batch(batch, topic, partition=partition)
    await producer.flush()


async def measure(settings: Settings, records: int, rounds: int) -> dict[str, Any]:
    topic = f"bench-producer-send-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=settings.producer_linger_ms
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, VALUE, key=b"warm-up")
        keys = [f"req-{i:09d}".encode() for i in range(records)]
        sends, batches = [], []
        for round_ in range(1, rounds + 1):
            sends.append(await _timed(lambda: one_at_a_time(producer, topic, keys), records))
            batches.append(await _timed(lambda: batched(producer, topic, keys), records))
            print(
                f"round {round_}: send {sends[-1]:.1f} µs, batch {batches[-1]:.1f} µs "
                "of CPU a record",
                flush=True,
            )
    finally:
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()
    send_us, batch_us = statistics.median(sends), statistics.median(batches)
    return {
        "records": records,
        "rounds": rounds,
        "send_cpu_us_per_record": round(send_us, 2),
        "batch_cpu_us_per_record": round(batch_us, 2),
        "saved_cpu_us_per_record": round(send_us - batch_us, 2),
        "send_over_batch": round(send_us / batch_us, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.producer_send", description=__doc__)
    parser.add_argument("--records", type=int, default=50_000, help="records a round, each way")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    args = parser.parse_args(argv)
    if args.records < 1_000:
        parser.error("--records must be at least 1000")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    settings = Settings.from_env()
    try:
        figures = asyncio.run(measure(settings, args.records, args.rounds))
    except KafkaConnectionError as error:
        print(f"no broker at {settings.bootstrap_servers}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
