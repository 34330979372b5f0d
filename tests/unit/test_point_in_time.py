"""The point-in-time join against a brute-force oracle, and examples of what must not leak.

The store-backed ``build_training_set`` is part of the offline store contract
(``tests/unit/test_offline_store.py``), which runs on a directory and on S3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.offline_store import BASE_SCHEMA
from tables.point_in_time import point_in_time_join

OUTPUT_HEAD = ["entity_id", "timestamp", "label", "feature_event_time", "feature_version"]


@dataclass(frozen=True)
class Fact:
    """One feature row of the random data: ``x`` identifies it, ``y`` is sometimes null."""

    entity_id: str
    event_time: int
    arrival: int
    x: float
    y: float | None


def features_table(facts: list[Fact], *, with_seq: bool) -> pa.Table:
    columns: dict[str, Any] = {
        "entity_id": pa.array([f.entity_id for f in facts], pa.string()),
        "event_time": pa.array([f.event_time for f in facts], pa.int64()),
        "event_id": pa.array([f"ev-{f.x:g}" for f in facts], pa.string()),
        "feature_version": pa.array(["v1"] * len(facts), pa.string()),
        "x": pa.array([f.x for f in facts], pa.float64()),
        "y": pa.array([f.y for f in facts], pa.float64()),
    }
    if with_seq:
        columns["seq"] = pa.array([f.arrival for f in facts], pa.int64())
    return pa.table(columns)


def oracle(facts: list[Fact], entity_id: str, timestamp: int) -> Fact | None:
    """Scan every row: the entity's last at or before the timestamp, by time then arrival."""
    best: Fact | None = None
    for fact in facts:
        if fact.entity_id != entity_id or fact.event_time > timestamp:
            continue
        if best is None or (fact.event_time, fact.arrival) > (best.event_time, best.arrival):
            best = fact
    return best


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Fact], bool, list[tuple[str, int, int]]]:
    entities = ["a", "b", "c"]
    raw = draw(
        st.lists(
            st.tuples(
                st.sampled_from(entities),
                st.integers(0, 30),  # a narrow range: many ties on event time
                st.one_of(st.none(), st.floats(-1e6, 1e6)),
            ),
            max_size=60,
        )
    )
    with_seq = draw(st.booleans())
    # With a seq column the arrival order is the seq, not the row order of the table.
    arrivals = draw(st.permutations(range(len(raw)))) if with_seq else range(len(raw))
    facts = [
        Fact(entity, time, arrival, float(index), y)
        for index, ((entity, time, y), arrival) in enumerate(zip(raw, arrivals, strict=True))
    ]
    labels = draw(
        st.lists(
            st.tuples(st.sampled_from([*entities, "never-seen"]), st.integers(-5, 35)),
            max_size=30,
        )
    )
    return facts, with_seq, [(entity, ts, index) for index, (entity, ts) in enumerate(labels)]


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_the_join_matches_the_brute_force_oracle(
    scenario: tuple[list[Fact], bool, list[tuple[str, int, int]]],
) -> None:
    facts, with_seq, labels = scenario
    joined = point_in_time_join(features_table(facts, with_seq=with_seq), labels)
    assert joined.column_names == [*OUTPUT_HEAD, "x", "y"]
    assert joined.num_rows == len(labels)
    for (entity_id, timestamp, label), got in zip(labels, joined.to_pylist(), strict=True):
        assert (got["entity_id"], got["timestamp"], got["label"]) == (entity_id, timestamp, label)
        want = oracle(facts, entity_id, timestamp)
        if want is None:
            assert got["feature_event_time"] is None
            assert got["feature_version"] is None
            assert got["x"] is None
            assert got["y"] is None
        else:
            assert got["feature_event_time"] == want.event_time
            assert got["feature_event_time"] <= timestamp
            assert got["x"] == want.x
            assert got["y"] == want.y


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_the_order_of_the_feature_rows_does_not_matter_given_a_seq(
    scenario: tuple[list[Fact], bool, list[tuple[str, int, int]]],
) -> None:
    facts, _, labels = scenario
    table = features_table(facts, with_seq=True)
    reversed_table = table.take(pa.array(range(table.num_rows - 1, -1, -1), pa.int64()))
    assert point_in_time_join(reversed_table, labels) == point_in_time_join(table, labels)


def simple_features(rows: list[tuple[str, int, float]]) -> pa.Table:
    return features_table(
        [Fact(entity, time, index, x, None) for index, (entity, time, x) in enumerate(rows)],
        with_seq=False,
    )


def test_a_row_one_millisecond_after_the_label_is_not_used() -> None:
    features = simple_features([("a", 100, 1.0), ("a", 200, 2.0), ("a", 201, 3.0)])
    joined = point_in_time_join(features, [("a", 99, 0), ("a", 100, 0), ("a", 200, 1)])
    assert joined.column("x").to_pylist() == [None, 1.0, 2.0]
    assert joined.column("feature_event_time").to_pylist() == [None, 100, 200]


def test_another_entity_s_rows_are_not_used() -> None:
    features = simple_features([("a", 100, 1.0), ("b", 10, 2.0)])
    joined = point_in_time_join(features, [("b", 5, 0), ("c", 1_000, 0), ("a", 50, 1)])
    assert joined.column("x").to_pylist() == [None, None, None]


def test_a_tie_goes_to_the_row_that_arrived_last() -> None:
    features = simple_features([("a", 100, 1.0), ("a", 100, 2.0), ("a", 50, 0.5)])
    assert point_in_time_join(features, [("a", 100, 1)]).column("x").to_pylist() == [2.0]
    by_seq = features.append_column("seq", pa.array([2, 1, 0], pa.int64()))
    assert point_in_time_join(by_seq, [("a", 100, 1)]).column("x").to_pylist() == [1.0]


def test_labels_keep_their_order_and_repeat() -> None:
    features = simple_features([("b", 10, 1.0), ("a", 10, 2.0), ("a", 30, 3.0)])
    labels = [("a", 40, 3), ("b", 10, 1), ("a", 20, 2), ("a", 40, 4), ("a", 0, 0)]
    joined = point_in_time_join(features, labels)
    assert joined.column("label").to_pylist() == [3, 1, 2, 4, 0]
    assert joined.column("x").to_pylist() == [3.0, 1.0, 2.0, 3.0, None]


def test_labels_may_be_a_table() -> None:
    features = simple_features([("a", 10, 1.0)])
    labels = [("a", 5, "no"), ("a", 15, "yes")]
    as_table = pa.table(
        {
            "label": pa.array(["no", "yes"]),
            "timestamp": pa.array([5, 15], pa.int32()),
            "entity_id": pa.array(["a", "a"], pa.large_string()),
            "ignored": pa.array([1, 2]),
        }
    )
    assert point_in_time_join(features, as_table) == point_in_time_join(features, labels)


def test_no_feature_rows_gives_null_features() -> None:
    features = pa.concat_tables(
        [BASE_SCHEMA.empty_table().append_column("x", pa.array([], pa.float64()))]
    )
    joined = point_in_time_join(features, [("a", 1, 1)])
    assert joined.to_pylist() == [
        {
            "entity_id": "a",
            "timestamp": 1,
            "label": 1,
            "feature_event_time": None,
            "feature_version": None,
            "x": None,
        }
    ]
    assert joined.schema.field("x").type == pa.float64()


def test_no_labels_gives_an_empty_table_of_the_output_columns() -> None:
    joined = point_in_time_join(simple_features([("a", 1, 1.0)]), [])
    assert joined.num_rows == 0
    assert joined.column_names == [*OUTPUT_HEAD, "x", "y"]


def test_the_output_types() -> None:
    joined = point_in_time_join(simple_features([("a", 1, 1.0)]), [("a", 2, 1.5)])
    types = {field.name: field.type for field in joined.schema}
    assert types == {
        "entity_id": pa.string(),
        "timestamp": pa.int64(),
        "label": pa.float64(),
        "feature_event_time": pa.int64(),
        "feature_version": pa.string(),
        "x": pa.float64(),
        "y": pa.float64(),
    }


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (pa.table({"entity_id": ["a"]}), [("a", 1, 0)], "event_time"),
        (pa.table({"entity_id": ["a"], "event_time": [None]}), [("a", 1, 0)], "event_time"),
        (pa.table({"entity_id": [None], "event_time": [1]}), [("a", 1, 0)], "entity_id"),
        (
            pa.table({"entity_id": ["a"], "event_time": [1]}),
            pa.table({"entity_id": ["a"]}),
            "lacks",
        ),
        (
            pa.table({"entity_id": ["a"], "event_time": [1], "label": [1.0]}),
            [("a", 1, 0)],
            "clash",
        ),
    ],
)
def test_malformed_input_is_refused(features: pa.Table, labels: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        point_in_time_join(features, labels)


def test_a_large_join_is_vectorised() -> None:
    entities = 5_000
    per_entity = 40
    count = entities * per_entity
    features = pa.table(
        {
            "entity_id": pa.array([f"e{i % entities}" for i in range(count)], pa.string()),
            "event_time": pa.array([(i // entities) * 10 for i in range(count)], pa.int64()),
            "x": pa.array([float(i) for i in range(count)], pa.float64()),
        }
    )
    labels = [(f"e{i}", 195, i) for i in range(entities)]
    joined = point_in_time_join(features, labels)
    # event_time 190 is the 20th row of each entity: index 19 * entities + i.
    assert joined.column("x").to_pylist() == [float(19 * entities + i) for i in range(entities)]
