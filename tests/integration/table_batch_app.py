"""A worker app for the ``BatchedTable`` test: every operation is applied twice, to a table
written by faust's own ``table[key] = value`` and to one written through ``BatchedTable``,
so the test can compare their changelogs, their contents and their recovery; and to a
third, written through ``BatchedTable`` as MessagePack (``streams.state_codec``), as the
entity states are.

An operation is JSON on ``events.raw``: ``{"op": "set", "key": k, "value": v}``,
``{"op": "del", "key": k}``, or ``{"op": "dump"}``, which sends the tables' contents and
persisted offsets to ``predictions``.

Run as ``python -m tests.integration.table_batch_app worker`` with a worker's environment.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.types import TP

from streams import state_codec, topics
from streams.app import app, settings, table_options
from streams.event_loop import use_event_loop
from streams.table_batch import BatchedTable, current

plain = app.Table(
    "table-batch-plain", key_type=str, partitions=settings.partitions, options=table_options()
)
batched_table = app.Table(
    "table-batch-batched", key_type=str, partitions=settings.partitions, options=table_options()
)
batched: BatchedTable[Any] = BatchedTable(batched_table)
# Written as the entity states are: through BatchedTable, as MessagePack.
packed_table = state_codec.state_table(
    app,
    "table-batch-packed",
    key_type=str,
    partitions=settings.partitions,
    options=table_options(),
)
packed: BatchedTable[Any] = BatchedTable(packed_table)


def _persisted(table: Any) -> dict[str, int | None]:
    topic = table.changelog_topic.get_topic_name()
    return {str(p): table.data.persisted_offset(TP(topic, p)) for p in range(settings.partitions)}


@app.agent(topics.raw)
async def apply_operations(stream: Any) -> None:
    async for events in stream.take_events(64, within=0.05):
        for event in events:
            operation = orjson.loads(event.value)
            with current(event):
                if operation["op"] == "set":
                    plain[operation["key"]] = operation["value"]
                    batched[operation["key"]] = operation["value"]
                    packed[operation["key"]] = operation["value"]
                elif operation["op"] == "del":
                    plain.pop(operation["key"], None)
                    batched.pop(operation["key"], None)
                    packed.pop(operation["key"], None)
            if operation["op"] == "dump":
                dump = {
                    "plain": dict(plain.items()),
                    "batched": dict(batched.items()),
                    "packed": dict(packed.items()),
                    "persisted_plain": _persisted(plain),
                    "persisted_batched": _persisted(batched_table),
                }
                await topics.predictions.send(key=b"dump", value=orjson.dumps(dump))
        await batched.send()
        await packed.send()


if __name__ == "__main__":
    use_event_loop(settings.event_loop)
    app.finalize()
    app.main()
