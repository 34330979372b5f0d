"""The offline writer's pure parts: which rows it keeps, and when it writes."""

from __future__ import annotations

import orjson

from headrace.offline_writer import due
from streams.codecs import store_rows


def record(i: int, *, redelivered: bool | None = None) -> bytes:
    value = {
        "event_id": f"ev-{i}",
        "entity_id": f"card-{i}",
        "event_time": 1_000 + i,
        "feature_version": "v1",
        "features": {"amount": float(i), "count": None},
    }
    if redelivered is not None:
        value["redelivered"] = redelivered
    return orjson.dumps(value)


def test_store_rows_leaves_out_redeliveries_and_keeps_the_order() -> None:
    rows = store_rows([record(2), record(1, redelivered=True), record(3, redelivered=False)])
    assert [row.event_id for row in rows] == ["ev-2", "ev-3"]
    assert rows[0].entity_id == "card-2"
    assert rows[0].event_time == 1_002
    assert rows[0].feature_version == "v1"
    assert rows[0].values == {"amount": 2.0, "count": None}
    assert store_rows([]) == []


def test_a_batch_is_due_when_full_or_when_its_oldest_record_has_waited() -> None:
    assert not due(0, None, 10.0, batch_rows=5, within_s=1.0)
    assert not due(4, 9.5, 10.0, batch_rows=5, within_s=1.0)
    assert due(5, 9.5, 10.0, batch_rows=5, within_s=1.0)
    assert due(1, 9.0, 10.0, batch_rows=5, within_s=1.0)
    assert not due(3, None, 10.0, batch_rows=5, within_s=1.0)
