"""The offline store contract on a local directory, and the writer's buffering.

``OfflineStoreContract`` is the suite every backend passes: this module runs it on a
temporary directory, ``tests/integration/test_offline_store_s3.py`` on the real S3 endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tables.offline_store import (
    BASE_SCHEMA,
    OfflineWriter,
    ParquetOfflineStore,
    partition_of,
    tables_by_version,
)
from tables.point_in_time import build_training_set
from tables.rows import FeatureRow

HOUR = 3_600_000
MIDNIGHT = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def make_row(
    entity_id: str,
    event_time: int,
    values: dict[str, float | None] | None = None,
    *,
    version: str = "v1",
    event_id: str | None = None,
) -> FeatureRow:
    return FeatureRow(
        entity_id=entity_id,
        event_time=event_time,
        event_id=event_id or f"{entity_id}@{event_time}",
        feature_version=version,
        values={"amount_mean": 1.0, "count_1h": 2.0} if values is None else values,
    )


def as_record(row: FeatureRow) -> dict[str, Any]:
    return {
        "entity_id": row.entity_id,
        "event_time": row.event_time,
        "event_id": row.event_id,
        "feature_version": row.feature_version,
        **row.values,
    }


def in_store_order(rows: Sequence[FeatureRow]) -> list[dict[str, Any]]:
    """What ``read`` returns: by entity and time, ties in the order appended."""
    return [as_record(row) for row in sorted(rows, key=lambda row: (row.entity_id, row.event_time))]


class OfflineStoreContract:
    def create_store(self) -> ParquetOfflineStore:
        raise NotImplementedError

    def partitions(self, store: ParquetOfflineStore, paths: Sequence[str]) -> list[str]:
        prefix = store.root + "/"
        assert all(path.startswith(prefix) for path in paths)
        return [path[len(prefix) :].rsplit("/", 1)[0] for path in paths]

    def test_rows_read_back_as_written(self) -> None:
        store = self.create_store()
        rows = [
            make_row("card-2", MIDNIGHT + 5, {"amount_mean": 3.5, "count_1h": None}),
            make_row("card-1", MIDNIGHT + 9, {"amount_mean": -1.25, "count_1h": 4.0}),
            make_row("card-1", MIDNIGHT + 2, {"amount_mean": None, "count_1h": 1.0}),
            make_row("card-3", MIDNIGHT - 3 * HOUR, {"amount_mean": 1e300, "count_1h": 0.0}),
        ]
        store.append(rows, writer_id="unit")
        table = store.read()
        assert table.column_names == [*BASE_SCHEMA.names, "amount_mean", "count_1h"]
        assert table.schema.field("event_time").type == pa.int64()
        assert table.schema.field("amount_mean").type == pa.float64()
        assert table.to_pylist() == in_store_order(rows)

    def test_files_are_partitioned_by_utc_date_and_hour_across_midnight(self) -> None:
        store = self.create_store()
        rows = [
            make_row("card-1", MIDNIGHT + HOUR + 1),
            make_row("card-1", MIDNIGHT - 1),
            make_row("card-2", MIDNIGHT),
            make_row("card-3", MIDNIGHT + HOUR - 1),
        ]
        paths = store.append(rows, writer_id="night")
        assert self.partitions(store, paths) == [
            "date=2025-12-31/hour=23",
            "date=2026-01-01/hour=00",
            "date=2026-01-01/hour=01",
        ]
        assert all(path.rsplit("/", 1)[1].startswith("part-night-") for path in paths)
        assert all(path.endswith(".parquet") for path in paths)
        assert sorted(store.files()) == sorted(paths)
        table = store.read()
        assert "date" not in table.column_names
        assert "hour" not in table.column_names
        assert table.to_pylist() == in_store_order(rows)

    def test_appends_add_files_and_never_overwrite(self) -> None:
        store = self.create_store()
        first = store.append([make_row("card-1", MIDNIGHT, event_id="a")], writer_id="w")
        second = store.append([make_row("card-1", MIDNIGHT + 1, event_id="b")], writer_id="w")
        assert len(first) == len(second) == 1
        assert first != second
        assert self.partitions(store, first) == self.partitions(store, second)
        assert store.read().column("event_id").to_pylist() == ["a", "b"]

    def test_an_empty_append_writes_nothing(self) -> None:
        store = self.create_store()
        assert store.append([]) == []
        assert store.files() == []

    def test_rows_appended_as_tables_a_slice_at_a_time_read_as_appended_at_once(self) -> None:
        rows = [
            make_row(f"card-{i % 3}", MIDNIGHT - HOUR + i * 600_000, {"a": float(i), "b": None})
            for i in range(12)
        ]
        rows[5] = make_row("card-9", MIDNIGHT + 1, {"c": 5.0}, version="v2")
        store = self.create_store()
        tables = [
            table
            for start in range(0, len(rows), 5)
            for table in tables_by_version(rows[start : start + 5]).values()
        ]
        assert len(tables) == 4  # the first slice holds both versions
        paths = store.append_tables(tables)
        # One file per (hour, version), as one call of append writes them: slices are joined.
        assert self.partitions(store, paths) == [
            "date=2025-12-31/hour=23",
            "date=2026-01-01/hour=00",
            "date=2026-01-01/hour=00",
        ]
        old = [row for row in rows if row.feature_version == "v1"]
        assert store.read(feature_version="v1").to_pylist() == in_store_order(old)
        assert store.read(feature_version="v2").to_pylist() == [as_record(rows[5])]

    def test_slices_of_one_version_must_name_the_same_features(self) -> None:
        store = self.create_store()
        first = tables_by_version([make_row("card-1", MIDNIGHT, {"a": 1.0, "b": 2.0})])
        second = tables_by_version([make_row("card-2", MIDNIGHT, {"b": 2.0, "a": 1.0})])
        with pytest.raises(ValueError, match="name different features"):
            store.append_tables([*first.values(), *second.values()])
        assert store.files() == []

    def test_empty_tables_write_nothing(self) -> None:
        store = self.create_store()
        assert store.append_tables([]) == []
        assert store.append_tables(tables_by_version([]).values()) == []
        assert store.files() == []

    def test_none_values_survive_even_a_column_of_none(self) -> None:
        store = self.create_store()
        rows = [
            make_row("card-1", MIDNIGHT + i, {"amount_mean": None, "count_1h": [None, 2.0][i % 2]})
            for i in range(4)
        ]
        store.append(rows)
        table = store.read()
        assert table.schema.field("amount_mean").type == pa.float64()
        assert table.column("amount_mean").null_count == 4
        assert table.column("count_1h").to_pylist() == [None, 2.0, None, 2.0]

    def test_nan_stays_nan_and_none_stays_null(self) -> None:
        store = self.create_store()
        store.append([make_row("card-1", MIDNIGHT, {"a": math.nan, "b": None, "c": 0})])
        (record,) = store.read().to_pylist()
        assert math.isnan(record["a"])
        assert record["b"] is None
        assert record["c"] == 0.0

    def test_versions_in_one_call_go_to_separate_files(self) -> None:
        store = self.create_store()
        old = make_row("card-1", MIDNIGHT, {"a": 1.0}, version="v1")
        new = make_row("card-1", MIDNIGHT + 1, {"a": 2.0, "b": 3.0}, version="v2")
        paths = store.append([old, new])
        assert len(paths) == 2
        assert store.read(feature_version="v1").to_pylist() == [as_record(old)]
        assert store.read(feature_version="v2").to_pylist() == [as_record(new)]
        assert store.read(feature_version="v3").num_rows == 0
        both = store.read()
        assert both.column_names == [*BASE_SCHEMA.names, "a", "b"]
        assert both.column("b").to_pylist() == [None, 3.0]

    def test_rows_of_one_version_must_name_the_same_features(self) -> None:
        store = self.create_store()
        rows = [
            make_row("card-1", MIDNIGHT, {"a": 1.0, "b": 2.0}),
            make_row("card-2", MIDNIGHT, {"b": 2.0, "a": 1.0}),
        ]
        with pytest.raises(ValueError, match="name different features"):
            store.append(rows)
        assert store.files() == []

    def test_time_range_is_start_inclusive_end_exclusive(self) -> None:
        store = self.create_store()
        times = [MIDNIGHT - 1, MIDNIGHT, MIDNIGHT + 1, MIDNIGHT + HOUR - 1, MIDNIGHT + HOUR]
        store.append([make_row("card-1", t) for t in times])

        def read_times(start: int | None, end: int | None) -> list[int]:
            table = store.read(start_ms=start, end_ms=end)
            return [int(t) for t in table.column("event_time").to_pylist()]

        assert read_times(MIDNIGHT, MIDNIGHT + HOUR) == times[1:4]
        assert read_times(MIDNIGHT + 1, None) == times[2:]
        assert read_times(None, MIDNIGHT + 1) == times[:2]
        assert read_times(MIDNIGHT + HOUR, MIDNIGHT + HOUR + 1) == times[4:]
        assert read_times(MIDNIGHT + 2, MIDNIGHT + 3) == []
        assert store.read(start_ms=MIDNIGHT + 2, end_ms=MIDNIGHT + 3).schema.names[-1] == (
            "count_1h"
        )

    def test_the_version_and_time_filters_combine(self) -> None:
        store = self.create_store()
        rows = [
            make_row("card-1", MIDNIGHT + i, version=f"v{i % 2}", event_id=str(i)) for i in range(6)
        ]
        store.append(rows)
        table = store.read(start_ms=MIDNIGHT + 1, end_ms=MIDNIGHT + 5, feature_version="v1")
        assert table.column("event_id").to_pylist() == ["1", "3"]

    def test_an_empty_store_reads_as_an_empty_table_of_the_base_columns(self) -> None:
        store = self.create_store()
        assert store.files() == []
        table = store.read(start_ms=0, end_ms=MIDNIGHT, feature_version="v1")
        assert table.num_rows == 0
        assert table.schema == BASE_SCHEMA

    def test_ties_keep_the_order_of_arrival(self) -> None:
        store = self.create_store()
        store.append([make_row("card-1", MIDNIGHT, {"a": 1.0}, event_id="first")])
        store.append([make_row("card-1", MIDNIGHT, {"a": 2.0}, event_id="second")])
        store.append(
            [
                make_row("card-1", MIDNIGHT, {"a": 3.0}, event_id="third"),
                make_row("card-1", MIDNIGHT, {"a": 4.0}, event_id="fourth"),
            ]
        )
        assert store.read().column("event_id").to_pylist() == ["first", "second", "third", "fourth"]

    def test_another_store_on_the_same_url_sees_the_rows(self) -> None:
        writer = self.create_store()
        reader = self.create_store()
        assert reader.read().num_rows == 0
        writer.append([make_row("card-1", MIDNIGHT)])
        assert reader.read().num_rows == 1
        writer.append([make_row("card-1", MIDNIGHT + 1)])
        assert reader.read().num_rows == 2

    def test_the_training_set_sees_only_the_past(self) -> None:
        store = self.create_store()
        store.append(
            [
                make_row("card-1", MIDNIGHT + 10, {"a": 1.0}),
                make_row("card-1", MIDNIGHT + 20, {"a": 2.0}),
                make_row("card-2", MIDNIGHT + HOUR, {"a": 5.0}),
            ]
        )
        store.append([make_row("card-1", MIDNIGHT + 20, {"a": 3.0}, event_id="late")])
        labels = [
            ("card-1", MIDNIGHT + 5, 0),
            ("card-1", MIDNIGHT + 15, 1),
            ("card-1", MIDNIGHT + 20, 0),
            ("card-2", MIDNIGHT + HOUR - 1, 1),
            ("card-2", MIDNIGHT + 2 * HOUR, 0),
            ("card-9", MIDNIGHT + 2 * HOUR, 1),
        ]
        joined = build_training_set(store, labels)
        assert joined.column_names == [
            "entity_id",
            "timestamp",
            "label",
            "feature_event_time",
            "feature_version",
            "a",
        ]
        assert joined.column("a").to_pylist() == [None, 1.0, 3.0, None, 5.0, None]
        assert joined.column("label").to_pylist() == [0, 1, 0, 1, 0, 1]
        assert joined.column("feature_event_time").to_pylist() == [
            None,
            MIDNIGHT + 10,
            MIDNIGHT + 20,
            None,
            MIDNIGHT + HOUR,
            None,
        ]

    def test_the_training_set_of_one_version(self) -> None:
        store = self.create_store()
        store.append(
            [
                make_row("card-1", MIDNIGHT, {"a": 1.0}, version="v1"),
                make_row("card-1", MIDNIGHT + 1, {"a": 9.0, "b": 9.0}, version="v2"),
            ]
        )
        labels = [("card-1", MIDNIGHT + 2, 1)]
        assert build_training_set(store, labels, feature_version="v1").to_pylist() == [
            {
                "entity_id": "card-1",
                "timestamp": MIDNIGHT + 2,
                "label": 1,
                "feature_event_time": MIDNIGHT,
                "feature_version": "v1",
                "a": 1.0,
            }
        ]
        assert build_training_set(store, labels).column("b").to_pylist() == [9.0]

    def test_the_training_set_of_no_labels_is_empty(self) -> None:
        store = self.create_store()
        store.append([make_row("card-1", MIDNIGHT)])
        joined = build_training_set(store, [])
        assert joined.num_rows == 0
        assert joined.column_names[:5] == [
            "entity_id",
            "timestamp",
            "label",
            "feature_event_time",
            "feature_version",
        ]


class TestLocalOfflineStore(OfflineStoreContract):
    @pytest.fixture(autouse=True)
    def own_directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path / "offline" / "features"

    def create_store(self) -> ParquetOfflineStore:
        return ParquetOfflineStore(str(self.directory))

    def test_a_file_url_names_the_same_directory(self) -> None:
        self.create_store().append([make_row("card-1", MIDNIGHT)])
        via_url = ParquetOfflineStore(self.directory.as_uri())
        assert via_url.read().num_rows == 1

    def test_files_are_plain_parquet_on_disk_with_no_partial_files_left(self) -> None:
        paths = self.create_store().append([make_row("card-1", MIDNIGHT)], writer_id="disk")
        on_disk = sorted(str(p) for p in self.directory.rglob("*") if p.is_file())
        assert on_disk == paths
        assert Path(paths[0]).parent == self.directory / "date=2026-01-01" / "hour=00"

    def test_foreign_files_are_ignored(self) -> None:
        store = self.create_store()
        store.append([make_row("card-1", MIDNIGHT)])
        (self.directory / "README.txt").write_text("not data")
        (self.directory / "date=2026-01-01" / "hour=00" / "_SUCCESS").write_text("")
        assert store.read().num_rows == 1

    @pytest.mark.parametrize("writer_id", ["", "a/b", "a b", "x\n"])
    def test_writer_ids_are_plain_names(self, writer_id: str) -> None:
        with pytest.raises(ValueError, match="writer_id"):
            self.create_store().append([make_row("card-1", MIDNIGHT)], writer_id=writer_id)
        tables = tables_by_version([make_row("card-1", MIDNIGHT)]).values()
        with pytest.raises(ValueError, match="writer_id"):
            self.create_store().append_tables(tables, writer_id=writer_id)

    def test_the_writer_flushes_at_max_rows_and_on_demand(self) -> None:
        store = self.create_store()
        writer = OfflineWriter(store, max_rows=3, writer_id="buffered")
        assert writer.add(make_row("card-1", MIDNIGHT)) == []
        assert writer.add(make_row("card-1", MIDNIGHT + 1)) == []
        assert writer.pending == 2
        assert store.files() == []
        assert len(writer.add(make_row("card-1", MIDNIGHT + 2))) == 1
        assert writer.pending == 0
        assert writer.add(make_row("card-1", MIDNIGHT + 3)) == []
        assert len(writer.flush()) == 1
        assert writer.flush() == []
        assert store.read().num_rows == 4
        assert all("part-buffered-" in path for path in store.files())


class FailingSink:
    def __init__(self) -> None:
        self.fail = True
        self.appended: list[list[FeatureRow]] = []

    def append(self, rows: Sequence[FeatureRow], *, writer_id: str = "w") -> list[str]:
        if self.fail:
            raise OSError("the store is away")
        self.appended.append(list(rows))
        return [f"{writer_id}-{len(self.appended)}"]


def test_a_failed_flush_keeps_the_rows_for_the_next() -> None:
    sink = FailingSink()
    writer = OfflineWriter(sink, max_rows=10)
    rows = [make_row("card-1", MIDNIGHT + i) for i in range(3)]
    for row in rows:
        writer.add(row)
    with pytest.raises(OSError, match="away"):
        writer.flush()
    assert writer.pending == 3
    sink.fail = False
    assert writer.flush() == ["w-1"]
    assert sink.appended == [rows]
    assert writer.pending == 0


def test_the_writer_needs_a_positive_batch() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        OfflineWriter(FailingSink(), max_rows=0)


@pytest.mark.parametrize(
    ("event_time", "partition"),
    [
        (0, "date=1970-01-01/hour=00"),
        (MIDNIGHT - 1, "date=2025-12-31/hour=23"),
        (MIDNIGHT, "date=2026-01-01/hour=00"),
        (MIDNIGHT + 13 * HOUR + 59 * 60_000, "date=2026-01-01/hour=13"),
        (-1, "date=1969-12-31/hour=23"),
    ],
)
def test_partition_of(event_time: int, partition: str) -> None:
    assert partition_of(event_time) == partition
