"""The point-in-time training-set builder: each label joined to the features known then.

For each label ``(entity_id, timestamp, label)`` the join takes the entity's latest feature
row with ``event_time <= timestamp``: what the online store held for the entity at that
moment. A row with a later event time is never used, so nothing leaks from the future; a
label before the entity's first row gets null features.

Ties on ``event_time`` go to the row that arrived last. The arrival order is the ``seq``
column when the features table has one (larger is later), otherwise the table's row order
(``ParquetOfflineStore.read`` keeps ties in the order the rows were appended).

The join is one sort-merge: feature rows and labels go into one array ordered by
``(entity, time, feature before label, arrival)``; a running maximum of feature positions
gives, at each label, the last feature row before it, which counts only when it is of the
same entity. ``O((n + m) log(n + m))`` in numpy, whatever the number of entities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tables.offline_store import BASE_COLUMNS, ParquetOfflineStore

__all__ = ["LABEL_COLUMNS", "Label", "build_training_set", "point_in_time_join"]

Label = tuple[str, int, Any]
LABEL_COLUMNS: Final = ("entity_id", "timestamp", "label")
OUTPUT_FEATURE_KEYS: Final = ("feature_event_time", "feature_version")
SEQ_COLUMN: Final = "seq"
_NOT_FEATURES: Final = frozenset((*BASE_COLUMNS, SEQ_COLUMN))


def point_in_time_join(features: pa.Table, labels: Sequence[Label] | pa.Table) -> pa.Table:
    """One output row per label, in the labels' order; see the module doc.

    ``features`` needs ``entity_id`` and ``event_time`` (int64 epoch ms); ``labels`` is a
    sequence of ``(entity_id, timestamp_ms, label)`` or a table with those three columns.
    The output columns are ``entity_id``, ``timestamp``, ``label``, ``feature_event_time``
    and ``feature_version`` (null where no row qualifies), then every other column of
    ``features`` except ``event_id`` and ``seq``.
    """
    label_table = _labels_table(labels)
    feature_times, arrival = _feature_keys(features)
    label_entities = label_table["entity_id"].cast(pa.string())
    label_times = _int64_numpy(label_table["timestamp"], "timestamp")

    n, m = len(feature_times), len(label_times)
    codes = _entity_codes(features["entity_id"].cast(pa.string()), label_entities)
    kinds = np.concatenate([np.zeros(n, np.int8), np.ones(m, np.int8)])
    order = np.lexsort(
        (
            np.concatenate([arrival, np.zeros(m, np.int64)]),
            kinds,
            np.concatenate([feature_times, label_times]),
            codes,
        )
    )
    is_feature = order < n
    last_feature = np.maximum.accumulate(np.where(is_feature, np.arange(n + m), -1))
    at_labels = ~is_feature
    label_index = order[at_labels] - n
    previous = last_feature[at_labels]
    found = previous >= 0
    picked = np.full(m, -1, np.int64)
    candidate = order[np.where(found, previous, 0)]
    same_entity = found & (codes[candidate] == codes[order[at_labels]])
    picked[label_index[same_entity]] = candidate[same_entity]

    indices = pa.array(picked, pa.int64(), mask=picked < 0)
    chosen = features.take(indices) if n else None
    columns: dict[str, Any] = {
        "entity_id": label_entities,
        "timestamp": label_table["timestamp"].cast(pa.int64()),
        "label": label_table["label"],
    }
    sources = [("feature_event_time", "event_time"), ("feature_version", "feature_version")]
    sources += [(name, name) for name in features.column_names if name not in _NOT_FEATURES]
    clashing = [name for name, _ in sources[2:] if name in (*LABEL_COLUMNS, *OUTPUT_FEATURE_KEYS)]
    if clashing:
        raise ValueError(f"feature columns {clashing} clash with the output's own columns")
    for name, source in sources:
        if source not in features.column_names:
            columns[name] = pa.nulls(m, pa.string())
        elif chosen is None:
            columns[name] = pa.nulls(m, features.schema.field(source).type)
        else:
            columns[name] = chosen[source]
    return pa.table(columns)


def build_training_set(
    store: ParquetOfflineStore,
    labels: Sequence[Label] | pa.Table,
    feature_version: str | None = None,
) -> pa.Table:
    """Read the rows the labels can see (all up to the latest label) and join them.

    Pass ``feature_version`` for a training set of one feature definition; without it the
    latest row of any version is taken and the feature columns are those of all versions.
    """
    label_table = _labels_table(labels)
    if label_table.num_rows == 0:
        return point_in_time_join(store.read(end_ms=0, feature_version=feature_version), labels)
    latest = int(pc.max(label_table["timestamp"]).as_py())
    features = store.read(end_ms=latest + 1, feature_version=feature_version)
    return point_in_time_join(features, label_table)


def _labels_table(labels: Sequence[Label] | pa.Table) -> pa.Table:
    if isinstance(labels, pa.Table):
        missing = [name for name in LABEL_COLUMNS if name not in labels.column_names]
        if missing:
            raise ValueError(f"the labels table lacks the columns {missing}")
        return labels.select(list(LABEL_COLUMNS))
    entities, timestamps, values = [], [], []
    for entity_id, timestamp, label in labels:
        entities.append(entity_id)
        timestamps.append(timestamp)
        values.append(label)
    return pa.table(
        {
            "entity_id": pa.array(entities, pa.string()),
            "timestamp": pa.array(timestamps, pa.int64()),
            "label": pa.array(values),
        }
    )


def _feature_keys(features: pa.Table) -> tuple[Any, Any]:
    """The event times and the arrival order of the feature rows, as int64 numpy arrays."""
    for name in ("entity_id", "event_time"):
        if name not in features.column_names:
            raise ValueError(f"the features table lacks the column {name!r}")
    times = _int64_numpy(features["event_time"], "event_time")
    if SEQ_COLUMN in features.column_names:
        arrival = _int64_numpy(features[SEQ_COLUMN], SEQ_COLUMN)
    else:
        arrival = np.arange(features.num_rows, dtype=np.int64)
    return times, arrival


def _entity_codes(feature_entities: pa.ChunkedArray, label_entities: pa.ChunkedArray) -> Any:
    """One integer per entity id, the same for features (first) and labels (after)."""
    both = pa.chunked_array(
        [*feature_entities.chunks, *label_entities.chunks], type=pa.string()
    ).combine_chunks()
    if both.null_count:
        raise ValueError("entity_id must not be null")
    return both.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _int64_numpy(column: pa.ChunkedArray, name: str) -> Any:
    if column.null_count:
        raise ValueError(f"{name} must not be null")
    return column.cast(pa.int64()).to_numpy()
