"""What the worker's app spares faust's per-message path: LeanMonitor keeps what faust reads
while it runs and counts nothing per message; the app uses it, the cached partitioner,
a buffer size and an event factory that read no settings a message, and topics whose
schema hands keys and values on without faust's serializer registry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.sensors.monitor import Monitor
from faust.types import TP, Message

from streams.bytes_schema import BytesSchema
from streams.lean_monitor import LeanMonitor

TP0 = TP("events.raw", 0)


class Task:
    """A stream's owner: faust's monitor keys its counts by it (weakly)."""


class Stream:
    """A stream, keyed weakly by faust's monitor too."""

    def __init__(self) -> None:
        self.task_owner = Task()


def every_per_message_call(monitor: Monitor) -> None:
    """What faust calls for one message, its event, three sends and a table read."""
    message = SimpleNamespace(time_in=None, time_out=None, time_total=None)
    stream = Stream()
    monitor.on_message_in(TP0, 7, message)  # type: ignore[arg-type]
    state = monitor.on_stream_event_in(TP0, 7, stream, None)  # type: ignore[arg-type]
    monitor.on_stream_event_out(TP0, 7, stream, None, state)  # type: ignore[arg-type]
    monitor.on_message_out(TP0, 7, message)  # type: ignore[arg-type]
    for _ in range(3):
        sent = monitor.on_send_initiated(None, "predictions", None, 3, 9)  # type: ignore[arg-type]
        monitor.on_send_completed(None, sent, None)  # type: ignore[arg-type]
    monitor.on_table_get(SimpleNamespace(name="entity_state"), "card-1")  # type: ignore[arg-type]


def test_the_stall_check_still_sees_when_a_stream_took_an_event() -> None:
    monitor = LeanMonitor()
    before = time.monotonic()
    every_per_message_call(monitor)
    assert before <= monitor.stream_inbound_time[TP0] <= time.monotonic()


def test_nothing_is_counted_per_message_event_send_or_read() -> None:
    lean, full = LeanMonitor(), Monitor()
    every_per_message_call(lean)
    every_per_message_call(full)
    assert full.messages_received_total == 1  # what the full monitor pays for
    assert full.messages_sent == 3
    assert full.tables["entity_state"].keys_retrieved == 1
    assert lean.messages_received_total == 0
    assert lean.events_total == 0
    assert lean.messages_sent == 0
    assert not lean.tables
    assert not lean.send_latency
    assert not lean.events_runtime


def test_offsets_per_fetch_and_commit_are_still_kept() -> None:
    monitor = LeanMonitor()
    monitor.track_tp_end_offset(TP0, 120)
    monitor.on_tp_commit({TP0: 100})
    assert monitor.tp_end_offsets[TP0] == 120
    assert monitor.tp_committed_offsets[TP0] == 100


PROBE = """
import faust
from faust.transport.producer import ProducerBuffer
from streams.app import app
print(type(app.monitor).__name__, type(app.conf.producer_partitioner).__name__)
print(app.conf.producer_threaded)
buffer = ProducerBuffer()
buffer.app = app
sizes = [buffer.size]
buffer.pending.put_nowait(object())
buffer.pending.put_nowait(object())
sizes.append(buffer.size)
print(*sizes)
message = type("Message", (), {"headers": ()})()
event = app.create_event(b"k", b"v", (), message)
print(type(event) is app.conf.Event, event.key, event.value, event.app is app)
from streams import topics
print(*sorted({type(topic.schema).__name__ for topic in vars(topics).values()
               if isinstance(topic, faust.TopicT)}))
"""


def test_the_worker_app_and_its_two_settings_reads(tmp_path: Path) -> None:
    """The app uses LeanMonitor and CachedPartitioner; the buffer's size and the event
    factory read no settings a message, and answer as faust's would; every topic decodes
    with BytesSchema."""
    env = {**os.environ, "HEADRACE_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == [
        "LeanMonitor CachedPartitioner",
        "False",  # the buffer is the producer's own queue
        "0 2",
        "True b'k' b'v' True",
        "BytesSchema",  # every topic of the worker's
    ]


@pytest.mark.parametrize("key", [b"card-1", b"", None])
@pytest.mark.parametrize("value", [b'{"amount": 1}', b"\xff\x00 not json", b"", None])
def test_bytes_schema_decodes_as_faust_raw_codec(key: bytes | None, value: bytes | None) -> None:
    """BytesSchema hands on what faust's raw codec gives, without the registry."""
    app = faust.App("bytes-schema-test")
    message = Message("events.raw", 3, 17, 1.0, 0, [], key, value, None)
    raw: faust.Schema[bytes | None, bytes | None] = faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    for schema in (raw, BytesSchema()):
        assert schema.loads_key(app, message) == key
        assert schema.loads_value(app, message) == value

    async def decoded(schema: faust.Schema[bytes | None, bytes | None]) -> Any:
        return await schema.compile(app)(message, propagate=True)

    faust_event = asyncio.run(decoded(raw))
    event = asyncio.run(decoded(BytesSchema()))
    assert (event.key, event.value) == (faust_event.key, faust_event.value)
    assert event.message is message
