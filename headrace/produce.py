"""The producer behind ``headrace produce``: synthetic payments or a JSONL file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from headrace.kafka_io import ensure_topics, produce
from streams.settings import Settings
from streams.synthetic import MixSpec, PaymentGenerator


async def produce_synthetic(
    settings: Settings,
    topic: str,
    mix: MixSpec,
    *,
    rate: float | None,
) -> dict[str, Any]:
    generator = PaymentGenerator(mix)
    await ensure_topics(settings.bootstrap_servers, [topic], settings.partitions)
    report = await produce(
        settings.bootstrap_servers,
        topic,
        ((m.key, m.value) for m in generator),
        rate=rate,
    )
    return {
        "topic": topic,
        "sent": report.sent,
        "seconds": round(report.seconds, 3),
        "events_per_s": round(report.events_per_s),
        "expected": dict(sorted(generator.expected.items())),
    }


def _jsonl_messages(path: Path) -> Iterator[tuple[bytes | None, bytes]]:
    """Each non-empty line as a message, keyed by its entity_id when that can be read.

    Lines are sent as they are, even when they are not JSON: the validator, not the
    producer, decides what is malformed, and the dead-letter topic says why.
    """
    with path.open("rb") as lines:
        for line in lines:
            value = line.rstrip(b"\r\n")
            if not value:
                continue
            key: bytes | None = None
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict) and isinstance(doc.get("entity_id"), str):
                key = doc["entity_id"].encode()
            yield key, value


async def produce_file(
    settings: Settings, topic: str, path: Path, *, rate: float | None
) -> dict[str, Any]:
    await ensure_topics(settings.bootstrap_servers, [topic], settings.partitions)
    report = await produce(settings.bootstrap_servers, topic, _jsonl_messages(path), rate=rate)
    return {
        "topic": topic,
        "file": str(path),
        "sent": report.sent,
        "seconds": round(report.seconds, 3),
        "events_per_s": round(report.events_per_s),
    }
