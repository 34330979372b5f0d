"""Writes to a changelogged faust table, a batch at a time.

``table[key] = value`` costs faust, per key: a ``FutureMessage`` through the producer
buffer for the changelog record, a sensor call, the store write, and, once the broker
acknowledges the record, a second RocksDB put for the table's persisted offset. The ingest
agent writes hundreds of keys a batch (each changed entity's state, each partition's block
of seen ids), so that bookkeeping was a fifth of the worker's time.

``BatchedTable`` writes the same bytes with less of it: each value is encoded once, put
into the store at once, and its changelog record queued; :meth:`BatchedTable.send` hands
the queue straight to the producer (faust flushes it before any offset is committed, as
for every record the agents send) and sets each partition's persisted offset once, from
its last record's acknowledgement. The caller sends before it acknowledges the batch's
messages, so a committed offset never runs ahead of the changelog.

As with faust's own writes, the partition of a write (its RocksDB database and its
changelog partition) is that of the event being processed (``current_event()``); reads
go to the table itself.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, MutableMapping
from typing import Any, TypeVar

import faust.streams as faust_streams
import structlog
from faust.stores.base import SerializedStore
from faust.types import TP

log = structlog.get_logger(__name__)

V = TypeVar("V")


class current:  # noqa: N801 - used as a function: ``with current(event):``
    """Make ``event`` the one faust's tables see while its state is written: a table takes
    the partition of a write (and of its changelog record) from ``current_event()``, which
    ``take_events`` leaves unset (writing a table inside ``take`` raises TypeError,
    faust-streaming #497). A class, not ``contextlib.contextmanager``: entered once an
    event, the generator machinery cost three times as much."""

    __slots__ = ("_event", "_token")

    def __init__(self, event: Any) -> None:
        self._event = event

    def __enter__(self) -> None:
        # as faust's own stream loop sets it
        self._token = faust_streams._current_event.set(weakref.ref(self._event))  # noqa: SLF001

    def __exit__(self, *_exc: object) -> None:
        faust_streams._current_event.reset(self._token)  # noqa: SLF001


class BatchedTable(MutableMapping[str, V]):
    def __init__(self, table: Any) -> None:
        self.table = table
        self._serializers = table.app.serializers
        self._pending: list[tuple[int, bytes, bytes | None]] = []
        self.sent = 0  # changelog records handed to the producer

    def _partition(self, key: str) -> int:
        """The partition of the event being processed, as faust's own write takes it
        (checking once per source topic that the changelog has as many partitions)."""
        partition: int | None = self.table.partition_for_key(key)
        if partition is None:  # a table with use_partitioner: not what this writes
            raise TypeError(f"{self.table.name}: BatchedTable needs the event's partition")
        return partition

    def _key(self, key: str) -> bytes:
        encoded: bytes = self._serializers.dumps_key(
            self.table.key_type, key, serializer=self.table.key_serializer
        )
        return encoded

    def __getitem__(self, key: str) -> V:
        value: V = self.table[key]
        return value

    def __setitem__(self, key: str, value: V) -> None:
        partition = self._partition(key)
        data, encoded_key = self.table.data, self._key(key)
        encoded: bytes = self._serializers.dumps_value(
            self.table.value_type, value, serializer=self.table.value_serializer
        )
        if isinstance(data, SerializedStore):
            data._set(encoded_key, encoded)  # noqa: SLF001 - the store's write, bytes as encoded here
        else:  # the in-memory store keeps objects
            data[key] = value
        self._pending.append((partition, encoded_key, encoded))

    def __delitem__(self, key: str) -> None:
        partition = self._partition(key)
        data, encoded_key = self.table.data, self._key(key)
        if isinstance(data, SerializedStore):
            data._del(encoded_key)  # noqa: SLF001 - as above
        else:
            data.pop(key, None)
        self._pending.append((partition, encoded_key, None))  # a tombstone

    def pop(self, key: str, default: Any = None) -> Any:  # no read first
        """Delete ``key`` without reading it first (a store read and a decode); returns
        ``default`` always: the caller wants the key gone, not its value."""
        del self[key]
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def pending(self) -> int:
        """Changelog records written to the store and not yet handed to the producer."""
        return len(self._pending)

    async def send(self) -> int:
        """Hand the queued changelog records to the producer, in the order written; how
        many were sent. Each partition's persisted offset is set from its last record's
        acknowledgement (records of one partition are acknowledged in order)."""
        pending = self._pending
        if not pending:
            return 0
        self._pending = []
        producer = self.table.app.producer
        topic = self.table.changelog_topic.get_topic_name()
        last: dict[int, Any] = {}
        for partition, key, value in pending:
            last[partition] = await producer.send(topic, key, value, partition, None, None)
        for written in last.values():
            written.add_done_callback(self._on_last_sent)
        self.sent += len(pending)
        return len(pending)

    def _on_last_sent(self, written: Any) -> None:
        if written.cancelled():
            return
        error = written.exception()
        if error is not None:  # faust's own changelog callback raises it into the loop
            log.error("table.changelog_send_failed", table=self.table.name, error=repr(error))
            return
        metadata = written.result()
        self.table.data.set_persisted_offset(
            TP(metadata.topic, metadata.partition), metadata.offset
        )
