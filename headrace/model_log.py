"""The lifecycle log on Kafka: create ``model.events``, read it whole, append to it.

The topic has one partition, so every model's events keep the order they were appended
in, and infinite retention with ``cleanup.policy=delete``: it is never compacted, because
every event, not only the last per key, is part of the history. Records are keyed by the
model name and written with ``acks=all`` and an idempotent producer.

Reading takes the log from its beginning up to the end offset at the time of the call,
with its own consumer and no consumer group. A record that does not decode is skipped
with a warning that names its offset: a log written by someone else never crashes the
reader.

``ModelLog`` is the small protocol the command path writes through: ``KafkaModelLog`` is
the topic (created on the first append), ``InMemoryModelLog`` a list of encoded records
for unit tests, decoded by the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from headrace.kafka_io import ensure_topics
from models.lifecycle import ModelEvent, decode_event, encode_event
from streams.settings import Settings

log = structlog.get_logger(__name__)

LOG_TOPIC_CONFIGS = {"retention.ms": "-1", "cleanup.policy": "delete"}
REQUEST_TIMEOUT_MS = 10_000
READ_TIMEOUT_S = 30.0
_POLL_MS = 200


class ModelLogError(RuntimeError):
    """The lifecycle topic cannot be read or written as the log it must be."""


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    offset: int
    event: ModelEvent


async def ensure_log_topic(settings: Settings) -> None:
    """Create the lifecycle topic (one partition, kept forever) when it does not exist."""
    await ensure_topics(
        settings.bootstrap_servers,
        [settings.topics.model_events],
        partitions=1,
        configs=LOG_TOPIC_CONFIGS,
    )


async def read_log(settings: Settings) -> list[LoggedEvent]:
    """Every decodable event from the beginning to the end offset at the time of the call;
    empty when the topic does not exist (reading never creates it)."""
    topic = settings.topics.model_events
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        fetch_max_wait_ms=100,
    )
    try:
        await consumer.start()
        if topic not in await consumer.topics():
            return []
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        if consumer.partitions_for_topic(topic) != {0}:
            raise ModelLogError(f"{topic} must have exactly one partition")
        # An explicit seek: seek_to_beginning right after end_offsets can lose to the
        # assignment's own offset reset and start at the end.
        consumer.seek(partition, (await consumer.beginning_offsets([partition]))[partition])
        return await _read_until(consumer, partition, end)
    finally:
        await consumer.stop()


async def _read_until(
    consumer: AIOKafkaConsumer, partition: TopicPartition, end: int
) -> list[LoggedEvent]:
    logged: list[LoggedEvent] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    while await consumer.position(partition) < end:
        if time.monotonic() > deadline:
            message = f"{partition.topic} not read to offset {end} within {READ_TIMEOUT_S:g} s"
            raise ModelLogError(message)
        fetched = await consumer.getmany(partition, timeout_ms=_POLL_MS)
        for record in fetched.get(partition, []):
            if record.offset >= end:
                break
            if decoded := _decoded(record.offset, record.value or b""):
                logged.append(decoded)
    return logged


def _decoded(offset: int, raw: bytes) -> LoggedEvent | None:
    try:
        return LoggedEvent(offset, decode_event(raw))
    except ValueError as error:
        log.warning("model_log.undecodable", offset=offset, error=str(error))
        return None


async def append(settings: Settings, event: ModelEvent) -> int:
    """Append ``event`` (keyed by its model) and return its offset once acknowledged."""
    value = encode_event(event)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )
    try:
        await producer.start()
        sent = await producer.send_and_wait(
            settings.topics.model_events, value=value, key=event.model.encode()
        )
    finally:
        await producer.stop()
    offset: int = sent.offset
    return offset


class ModelLog(Protocol):
    async def read(self) -> list[LoggedEvent]:
        """Every decodable event, in log order, up to the end at the time of the call."""
        ...

    async def append(self, event: ModelEvent) -> int:
        """Append the event; its offset, once it is durable."""
        ...


class KafkaModelLog:
    """The ``model.events`` topic of ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._topic_ready = False

    async def read(self) -> list[LoggedEvent]:
        return await read_log(self.settings)

    async def append(self, event: ModelEvent) -> int:
        if not self._topic_ready:  # a producer would have the broker create it otherwise
            await ensure_log_topic(self.settings)
            self._topic_ready = True
        return await append(self.settings, event)


@dataclass
class InMemoryModelLog:
    """Encoded records in a list, offsets from 0; ``append_raw`` writes any bytes."""

    records: list[bytes] = field(default_factory=list)

    async def read(self) -> list[LoggedEvent]:
        decoded = (_decoded(offset, raw) for offset, raw in enumerate(self.records))
        return [entry for entry in decoded if entry is not None]

    async def append(self, event: ModelEvent) -> int:
        return self.append_raw(encode_event(event))

    def append_raw(self, raw: bytes) -> int:
        self.records.append(raw)
        return len(self.records) - 1
