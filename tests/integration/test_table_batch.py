"""``BatchedTable`` writes what faust's own table writes would: the same changelog records
in the same order per partition, the same contents, a persisted offset at the last
record, and a table recovered from its changelog by a worker with no local state. A
table with the entity states' codec (``streams.state_codec``) writes the same records
with MessagePack values, and recovers as well."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import ormsgpack
import pytest

from headrace import scenario
from headrace.kafka_io import Record, collect, ensure_topics, produce
from tests.integration.conftest import IsolatedRun

pytestmark = pytest.mark.integration

APP = "tests.integration.table_batch_app"


def _operations(count: int, seed: int) -> tuple[list[tuple[bytes, bytes]], dict[str, Any]]:
    """Sets and deletes of 40 keys (a delete only of a key that is set), keyed by the
    table key so each key stays in one partition; and the contents they leave."""
    rng = random.Random(seed)
    model: dict[str, Any] = {}
    operations = []
    for i in range(count):
        key = f"key-{rng.randrange(40)}"
        if key in model and rng.random() < 0.3:
            operation: dict[str, Any] = {"op": "del", "key": key}
            del model[key]
        else:
            value = {"n": i, "window": [rng.random() for _ in range(rng.randrange(1, 5))]}
            operation = {"op": "set", "key": key, "value": value}
            model[key] = value
        operations.append((key.encode(), orjson.dumps(operation)))
    return operations, model


def _changelog(isolated: IsolatedRun, table: str, records: list[Record]) -> dict[int, list[Any]]:
    name = f"{isolated.settings.app_id}-{table}-changelog"
    by_partition: dict[int, list[Any]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.topic == name:
            by_partition.setdefault(record.partition, []).append((record.key, record.value))
    return by_partition


def _dump(isolated: IsolatedRun, dumps_before: int) -> dict[str, Any]:
    settings = isolated.settings
    dump_operation = [(b"dump", b'{"op": "dump"}')]
    asyncio.run(produce(settings.bootstrap_servers, settings.topics.raw, dump_operation))
    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.predictions],
            until=lambda got: len(got) > dumps_before,
            timeout_s=90.0,
        )
    )
    assert len(records) > dumps_before, "no dump from the worker"
    dump: dict[str, Any] = orjson.loads(records[dumps_before].value)
    return dump


def test_batched_writes_match_faust_and_recover_from_the_changelog(
    isolated: IsolatedRun, tmp_path: Path
) -> None:
    settings = isolated.settings
    asyncio.run(scenario.prepare_topics(settings))
    changelogs = [
        f"{settings.app_id}-table-batch-plain-changelog",
        f"{settings.app_id}-table-batch-batched-changelog",
        f"{settings.app_id}-table-batch-packed-changelog",
    ]
    # Created as the worker would: reading one first would let the broker create it with
    # one partition.
    asyncio.run(ensure_topics(settings.bootstrap_servers, changelogs, settings.partitions))
    isolated.start_worker("first", module=APP)
    operations, model = _operations(600, seed=11)
    asyncio.run(produce(settings.bootstrap_servers, settings.topics.raw, operations))
    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            changelogs,
            until=lambda got: len(got) >= 3 * len(operations),
            timeout_s=120.0,
        )
    )
    plain = _changelog(isolated, "table-batch-plain", records)
    batched = _changelog(isolated, "table-batch-batched", records)
    assert sum(len(v) for v in batched.values()) == len(operations)
    assert batched == plain  # same records, same partitions, same order
    assert any(value is None for log in batched.values() for _, value in log)  # tombstones
    # The MessagePack table: the same keys, partitions and order, its values packed.
    packed = _changelog(isolated, "table-batch-packed", records)
    assert {p: [k for k, _ in log] for p, log in packed.items()} == {
        p: [k for k, _ in log] for p, log in plain.items()
    }
    for partition, log in packed.items():
        for (_, packed_value), (_, json_value) in zip(log, plain[partition], strict=True):
            if json_value is None:
                assert packed_value is None
            else:
                assert packed_value is not None
                assert packed_value[:1] != b"{"
                assert ormsgpack.unpackb(packed_value) == orjson.loads(json_value)

    dump = _dump(isolated, 0)
    assert dump["batched"] == dump["plain"] == dump["packed"] == model
    last = {str(p): len(log) - 1 for p, log in batched.items()}  # fresh topics: from 0
    assert {p: o for p, o in dump["persisted_batched"].items() if o is not None} == last
    assert dump["persisted_batched"] == dump["persisted_plain"]

    # A worker with no local state recovers the table from its changelog alone.
    isolated.workers[0].stop()
    isolated.env["HEADRACE_DATA_DIR"] = str(tmp_path / "fresh")
    isolated.start_worker("fresh", module=APP)
    recovered = _dump(isolated, 1)
    assert recovered["batched"] == recovered["plain"] == recovered["packed"] == model
