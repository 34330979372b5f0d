"""Plain aiokafka producing and collecting, for the producer command, tests and benchmarks.

These talk to the real broker directly, outside any Faust app, the way a user's producer
or a debugging session would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    received_ns: int


@dataclass
class ProduceReport:
    sent: int = 0
    seconds: float = 0.0
    first_send_ns: int = 0
    send_times_ns: dict[int, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet; ``configs`` are topic configs for those."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=1,
                topic_configs=dict(configs or {}),
            )
            for name in names
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
            await _wait_for_leaders(admin, [t.name for t in wanted], partitions)
    finally:
        await admin.close()


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient,
    names: list[str],
    partitions: int,
    timeout_s: float = 30.0,
) -> None:
    """Wait until every new partition has a leader, so the first sends are not refused."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = await admin.describe_topics(names)
        led = [
            p
            for topic in described
            if topic.get("error_code") == 0
            for p in topic.get("partitions", [])
            if p.get("leader", -1) >= 0
        ]
        if len(led) >= partitions * len(names):
            return
        await asyncio.sleep(0.1)


async def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    *,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Send (key, value) pairs in order; ``rate`` caps events per second when given."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    report = ProduceReport()
    started = time.perf_counter()
    report.first_send_ns = time.time_ns()
    try:
        pending: list[asyncio.Future[object]] = []
        for index, (key, value) in enumerate(messages):
            if rate:
                due = started + index / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topic, value=value, key=key))
            report.sent += 1
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
            if on_progress is not None and report.sent % 1_000 == 0:
                on_progress(report.sent)
        await producer.flush()
        if pending:
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    report.seconds = time.perf_counter() - started
    return report


async def collect(
    bootstrap: str,
    topic_names: Iterable[str],
    *,
    until: Callable[[list[Record]], bool],
    timeout_s: float,
    idle_s: float | None = None,
) -> list[Record]:
    """Read the topics from the beginning until ``until(records)`` holds or time runs out.

    With ``idle_s``, also stop once nothing new has arrived for that long.
    """
    consumer = AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=100,
        max_poll_records=5_000,
    )
    await consumer.start()
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline and not until(records):
            batch = await consumer.getmany(timeout_ms=200)
            now_ns = time.time_ns()
            for messages in batch.values():
                for message in messages:
                    records.append(
                        Record(
                            topic=message.topic,
                            partition=message.partition,
                            offset=message.offset,
                            key=message.key,
                            value=message.value,
                            timestamp_ms=message.timestamp,
                            received_ns=now_ns,
                        ),
                    )
                    last_new = time.monotonic()
            if idle_s is not None and time.monotonic() - last_new > idle_s:
                break
    finally:
        await consumer.stop()
    return records


async def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> list[Record]:
    """Every record of ``topic`` up to its end at call time, partition by partition; an
    empty list when the topic does not exist. No consumer group, nothing committed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code") != 0:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[Record] = []
    try:
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        # Explicit seeks: seek_to_beginning right after end_offsets can start at the end.
        for partition, offset in (await consumer.beginning_offsets(partitions)).items():
            consumer.seek(partition, offset)
        pending = {p for p in partitions if ends[p] > 0}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            now_ns = time.time_ns()
            for partition, messages in batch.items():
                records.extend(
                    Record(
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        key=message.key,
                        value=message.value or b"",
                        timestamp_ms=message.timestamp,
                        received_ns=now_ns,
                    )
                    for message in messages
                    if message.offset < ends[partition]
                )
                if await consumer.position(partition) >= ends[partition]:
                    pending.discard(partition)
        if pending:
            raise TimeoutError(f"{topic} could not be read to its end within {timeout_s} s")
    finally:
        await consumer.stop()
    return records
