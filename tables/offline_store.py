"""The offline feature store: every feature row ever produced, as immutable Parquet files.

``ParquetOfflineStore`` keeps rows under a filesystem URL: a local directory (a plain path
or ``file://``) or an object store prefix such as ``s3://bucket/prefix`` through fsspec
(``storage_options`` go to the filesystem, e.g. ``key``, ``secret`` and
``client_kwargs={"endpoint_url": ...}`` for s3fs).

Layout: ``<url>/date=YYYY-MM-DD/hour=HH/part-<writer>-<write ns>-<counter>-<uuid>.parquet``,
partitioned by the UTC date and hour of each row's ``event_time``. Appending never rewrites
a file: each ``append`` writes new files, one per (hour, feature version) of its rows, so
rows of several versions in one call are split into files of one version each. A file's
columns are ``entity_id`` (string), ``event_time`` (int64 epoch ms), ``event_id``,
``feature_version`` (strings), then one nullable float64 column per feature in the order the
rows' values declare; all rows of one version must name the same features in that order.

Arrival order: files are read in the order they were written (the write time and counter in
their names, strictly increasing within one store object; between writers the wall clock
decides) and rows in the order they were appended within a file. ``read`` sorts by
``(entity_id, event_time)`` with a stable sort, so rows with equal keys keep that order,
which ``point_in_time_join`` takes as the arrival order for ties.

``OfflineWriter`` buffers rows and appends them in batches; it knows nothing of timers or
threads (the worker flushes on its own schedule and calls the store from a thread, since
the store is synchronous).
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, Protocol

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tables.rows import FeatureRow

__all__ = [
    "BASE_SCHEMA",
    "DEFAULT_MAX_ROWS",
    "OfflineSink",
    "OfflineWriter",
    "ParquetOfflineStore",
    "partition_of",
    "rows_to_table",
    "tables_by_version",
]

MS_PER_HOUR: Final = 3_600_000
DEFAULT_MAX_ROWS: Final = 10_000
COMPRESSION: Final = "zstd"
# Only the repetitive columns: trying a dictionary on unique ids and measured floats costs
# three times the encoding time and makes the files larger.
DICTIONARY_COLUMNS: Final = ("entity_id", "feature_version")
BASE_SCHEMA: Final = pa.schema(
    [
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("event_time", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("feature_version", pa.string(), nullable=False),
    ]
)
BASE_COLUMNS: Final = tuple(BASE_SCHEMA.names)

_WRITER_ID = re.compile(r"[A-Za-z0-9_.-]+")
_PARTITION = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/[^/]+\.parquet$")
_PART_NAME = re.compile(r"part-.+-(\d+)-(\d+)-[0-9a-f]+\.parquet$")


class OfflineSink(Protocol):
    """Where ``OfflineWriter`` appends its batches."""

    def append(self, rows: Sequence[FeatureRow], *, writer_id: str = "w") -> list[str]:
        """Write the rows as new files and return their paths."""


class _Group(NamedTuple):
    hour: int  # hours since the epoch, UTC
    feature_version: str


def partition_of(event_time_ms: int) -> str:
    """The ``date=YYYY-MM-DD/hour=HH`` partition of an epoch-millisecond time, in UTC."""
    hour = datetime.fromtimestamp((event_time_ms // MS_PER_HOUR) * 3_600, tz=UTC)
    return f"date={hour:%Y-%m-%d}/hour={hour:%H}"


class ParquetOfflineStore:
    """Feature rows in Parquet files under a local or object-store URL; see the module doc."""

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        self.root = str(root).rstrip("/")
        self._local = "file" in _protocols(self.fs)
        self._counter = itertools.count()
        self._last_ns = 0
        self._root_ready = False

    def append(self, rows: Sequence[FeatureRow], *, writer_id: str = "w") -> list[str]:
        """Write the rows as new files, one per (UTC hour, feature version); their paths.

        The paths are those of ``self.fs`` (for s3fs ``bucket/key``, without ``s3://``), in
        order of hour then version. The bucket or directory is made on the first append.

        Raises ValueError, before writing anything, when the writer id is not a plain name or
        rows of one version name different features (or the same ones in another order).
        """
        return self.append_tables(tables_by_version(rows).values(), writer_id=writer_id)

    def append_tables(self, tables: Iterable[pa.Table], *, writer_id: str = "w") -> list[str]:
        """``append`` for rows already made into tables (``tables_by_version``), a slice
        at a time: the tables of one version are written together, in the order given.

        What takes the interpreter's lock (decoding, building the columns) is then done
        by the caller in slices, between which other work gets a turn; what is left here
        (joining the slices, splitting by hour, Parquet, the upload) runs mostly outside it.

        Raises ValueError, before writing anything, when the writer id is not a plain name
        or tables of one version name different features (or the same ones in another order).
        """
        if not _WRITER_ID.fullmatch(writer_id):
            raise ValueError(f"writer_id must match {_WRITER_ID.pattern}, not {writer_id!r}")
        by_version: dict[str, list[pa.Table]] = {}
        for table in tables:
            if table.num_rows:
                by_version.setdefault(table["feature_version"][0].as_py(), []).append(table)
        groups: dict[_Group, pa.Table] = {}
        for version, parts in by_version.items():
            names = parts[0].column_names
            for part in parts[1:]:
                if part.column_names != names:
                    raise ValueError(
                        f"rows of feature version {version!r} name different features: "
                        f"{names[len(BASE_SCHEMA) :]} and {part.column_names[len(BASE_SCHEMA) :]}"
                    )
            table = pa.concat_tables(parts).combine_chunks()
            hours = table["event_time"].to_numpy() // MS_PER_HOUR
            for hour in np.unique(hours).tolist():
                groups[_Group(hour, version)] = table.filter(pa.array(hours == hour))
        if not groups:
            return []
        self._ensure_root()
        paths = []
        for key, table in sorted(groups.items()):
            path = self._new_path(key.hour, writer_id)
            self._put(path, _parquet_bytes(table))
            paths.append(path)
        return paths

    def read(
        self,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        feature_version: str | None = None,
    ) -> pa.Table:
        """The rows with ``start_ms <= event_time < end_ms`` (either bound optional).

        Only rows of ``feature_version`` when given. Sorted by ``(entity_id, event_time)``,
        ties in arrival order. The columns are the base ones, then the features of the files
        read (those of the hours asked that hold the version asked) in the order first met;
        a feature missing from a file is null in its rows. With no such file, an empty table
        of the base columns.
        """
        paths = self.files(start_ms=start_ms, end_ms=end_ms)
        if not paths:
            return BASE_SCHEMA.empty_table()
        contents = self.fs.cat(paths)
        tables = []
        for path in paths:
            table = pq.read_table(pa.BufferReader(contents[path]))
            if feature_version is not None:
                is_version = pc.equal(table["feature_version"], feature_version)
                if not pc.any(is_version).as_py():
                    continue  # nor its feature columns
                table = table.filter(is_version)
            tables.append(_in_range(table, start_ms, end_ms))
        if not tables:
            return BASE_SCHEMA.empty_table()
        table = pa.concat_tables(tables, promote_options="permissive")
        return table.sort_by([("entity_id", "ascending"), ("event_time", "ascending")])

    def files(self, *, start_ms: int | None = None, end_ms: int | None = None) -> list[str]:
        """The data files whose hour may hold rows in ``[start_ms, end_ms)``, oldest first."""
        # All of it: s3fs drops only the path and its parents, and a stale listing of an
        # hour's folder hides files that other writers added since.
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return []
        selected = []
        for raw in found:
            path = str(raw)
            match = _PARTITION.search(path)
            if match is None:
                continue
            day = datetime.strptime(match[1], "%Y-%m-%d").replace(tzinfo=UTC)
            hour_start = int(day.timestamp()) * 1_000 + int(match[2]) * MS_PER_HOUR
            if start_ms is not None and hour_start + MS_PER_HOUR <= start_ms:
                continue
            if end_ms is not None and hour_start >= end_ms:
                continue
            selected.append(path)
        return sorted(selected, key=_arrival_key)

    def _new_path(self, hour: int, writer_id: str) -> str:
        # Never behind the last name of this store, even if the wall clock steps back.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name = (
            f"part-{writer_id}-{self._last_ns:019d}-{next(self._counter):06d}"
            f"-{uuid.uuid4().hex[:12]}.parquet"
        )
        return f"{self.root}/{partition_of(hour * MS_PER_HOUR)}/{name}"

    def _ensure_root(self) -> None:
        if self._root_ready:
            return
        if self._local:
            self.fs.makedirs(self.root, exist_ok=True)
        else:
            bucket = self.root.split("/", 1)[0]
            if not self.fs.exists(bucket):
                self.fs.mkdir(bucket)
        self._root_ready = True

    def _put(self, path: str, data: bytes) -> None:
        if not self._local:
            self.fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
            return
        directory, name = path.rsplit("/", 1)
        self.fs.makedirs(directory, exist_ok=True)
        partial = f"{directory}/.{name}.partial"  # readers skip it: no .parquet suffix
        self.fs.pipe_file(partial, data)
        self.fs.mv(partial, path)


class OfflineWriter:
    """A buffer of feature rows appended to a store in batches of at most ``max_rows``.

    ``add`` appends the buffer once it holds ``max_rows`` rows and returns the new paths (an
    empty list otherwise); ``flush`` appends whatever is buffered. A failed append keeps the
    rows buffered, so the next flush retries them.
    """

    def __init__(
        self, store: OfflineSink, *, max_rows: int = DEFAULT_MAX_ROWS, writer_id: str = "w"
    ) -> None:
        if max_rows <= 0:
            raise ValueError("max_rows must be positive")
        self.store = store
        self.max_rows = max_rows
        self.writer_id = writer_id
        self._rows: list[FeatureRow] = []

    @property
    def pending(self) -> int:
        return len(self._rows)

    def add(self, row: FeatureRow) -> list[str]:
        self._rows.append(row)
        if len(self._rows) >= self.max_rows:
            return self.flush()
        return []

    def flush(self) -> list[str]:
        if not self._rows:
            return []
        paths = self.store.append(self._rows, writer_id=self.writer_id)
        self._rows = []
        return paths


def tables_by_version(rows: Sequence[FeatureRow]) -> dict[str, pa.Table]:
    """The rows as one table per feature version (``rows_to_table``), in order of first
    appearance; ValueError when rows of one version name different features."""
    by_version: dict[str, list[FeatureRow]] = {}
    for row in rows:
        by_version.setdefault(row.feature_version, []).append(row)
    return {version: rows_to_table(version_rows) for version, version_rows in by_version.items()}


def rows_to_table(rows: Sequence[FeatureRow]) -> pa.Table:
    """The rows as one Arrow table: the base columns, then the features of the first row.

    Raises ValueError when a row names other features than the first (or another order).
    A None value is null; a float NaN stays NaN.
    """
    if not rows:
        return BASE_SCHEMA.empty_table()
    names = tuple(rows[0].values)
    for row in rows:
        if tuple(row.values) != names:
            raise ValueError(
                f"rows of feature version {row.feature_version!r} name different features: "
                f"{names} and {tuple(row.values)} (event {row.event_id!r})"
            )
    columns = [
        pa.array([row.entity_id for row in rows], pa.string()),
        pa.array([row.event_time for row in rows], pa.int64()),
        pa.array([row.event_id for row in rows], pa.string()),
        pa.array([row.feature_version for row in rows], pa.string()),
    ]
    # One numpy conversion of all values (None becomes NaN) is many times faster than
    # pyarrow's per-column conversion of lists holding None; the few NaN are then told apart.
    flat = list(itertools.chain.from_iterable(row.values.values() for row in rows))
    matrix = np.array(flat, dtype=np.float64)
    missing = np.zeros(matrix.size, dtype=np.bool_)
    nan_at = np.flatnonzero(np.isnan(matrix))
    missing[nan_at] = [flat[index] is None for index in nan_at]
    by_feature = matrix.reshape(len(rows), len(names)).T.copy()
    missing_by_feature = missing.reshape(len(rows), len(names)).T.copy()
    columns.extend(
        pa.array(values, pa.float64(), mask=mask)
        for values, mask in zip(by_feature, missing_by_feature, strict=True)
    )
    schema = BASE_SCHEMA
    for name in names:
        schema = schema.append(pa.field(name, pa.float64()))
    return pa.Table.from_arrays(columns, schema=schema)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION, use_dictionary=list(DICTIONARY_COLUMNS))
    return bytes(sink.getvalue())


def _in_range(table: pa.Table, start_ms: int | None, end_ms: int | None) -> pa.Table:
    if start_ms is not None:
        table = table.filter(pc.greater_equal(table["event_time"], start_ms))
    if end_ms is not None:
        table = table.filter(pc.less(table["event_time"], end_ms))
    return table


def _arrival_key(path: str) -> tuple[int, int, str]:
    match = _PART_NAME.search(path)
    if match is None:  # a file some other tool wrote: after ours, by name
        return (1 << 63, 0, path)
    return (int(match[1]), int(match[2]), path)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
