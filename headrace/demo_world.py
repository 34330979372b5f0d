"""The world around the demo's system: payments whose meaning drifts, and their labels.

The demo's payments are labelled by a known rule (``models.dataset.fraud_probability``)
until the drift point, and by another one after it
(``models.dataset.drifted_fraud_probability``): a concept drift, the inputs unchanged.
A label is drawn from the rule's probability with a uniform number derived from the
event id, so the same event always gets the same label. ``Labeler`` plays the people who
confirm fraud later: it reads the ``features`` topic and sends each event's label to
``labels`` after a delay.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.dataset import drifted_fraud_probability, fraud_probability
from streams.settings import Settings


def event_index(event_id: str) -> int | None:
    """The generator's index of an event (``ev-<seed>-<index>``), None for another id."""
    tail = event_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def uniform(event_id: str) -> float:
    """A number in [0, 1) fixed by the event id."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def label_of(event_id: str, values: Mapping[str, float | None], drift_index: int) -> int | None:
    """The event's true label under the concept in force at its index."""
    index = event_index(event_id)
    if index is None:
        return None
    rule = drifted_fraud_probability if index >= drift_index else fraud_probability
    return int(uniform(event_id) < rule(values))


@dataclass
class Labeler:
    """Labels each scored event after ``delay_s``, as its true class under the concept."""

    settings: Settings
    drift_index: int
    delay_s: float = 1.0
    sent: int = 0
    positives: int = 0
    _due: deque[tuple[float, bytes, bytes]] = field(default_factory=deque)

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self.settings.topics.features,
            bootstrap_servers=self.settings.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=100,
        )
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, linger_ms=20)
        await consumer.start()
        await producer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=2_000)
                now = time.monotonic()
                for messages in batch.values():
                    for message in messages:
                        self._take(message.value or b"", now)
                await self._send_due(producer, time.monotonic())
            await self._send_due(producer, float("inf"))
            await producer.flush()
        finally:
            await consumer.stop()
            await producer.stop()

    def _take(self, value: bytes, now: float) -> None:
        record = orjson.loads(value)
        if record.get("redelivered"):
            return
        event_id = str(record["event_id"])
        label = label_of(event_id, record["features"], self.drift_index)
        if label is None:
            return
        self._due.append((now + self.delay_s, event_id.encode(), _label_value(event_id, label)))
        self.positives += label

    async def _send_due(self, producer: AIOKafkaProducer, now: float) -> None:
        topic = self.settings.topics.labels
        while self._due and self._due[0][0] <= now:
            _, key, value = self._due.popleft()
            await producer.send(topic, value=value, key=key)
            self.sent += 1


def _label_value(event_id: str, label: int) -> bytes:
    return orjson.dumps(
        {"request_id": event_id, "label": label, "label_time": int(time.time() * 1000)}
    )
