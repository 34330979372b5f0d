"""A retraining set: labelled outcomes joined point-in-time to the offline feature store.

Each outcome names a request, its entity and event time, and the label that came back.
The label of a request is its latest one (a correction supersedes). Joined at the
event's own time (``tables.point_in_time``), each label meets the feature row the model
saw for that event, so the candidate is trained on exactly what serving computes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from models.dataset import TrainingSet
from tables.point_in_time import Label

if TYPE_CHECKING:
    import pyarrow as pa


def latest_labels(
    outcomes: Iterable[Mapping[str, Any]], *, since_ms: int | None = None
) -> list[Label]:
    """``(entity_id, event_time, label)`` per request, the latest label of each, for
    events at or after ``since_ms``; shadow outcomes are the same labels and are skipped."""
    latest: dict[str, tuple[int, Label]] = {}
    for outcome in outcomes:
        if outcome.get("route") == "shadow" or outcome.get("entity_id") is None:
            continue
        event_time = int(outcome["event_time"])
        if since_ms is not None and event_time < since_ms:
            continue
        labelled_at = int(outcome.get("labelled_at") or 0)
        known = latest.get(outcome["request_id"])
        if known is None or labelled_at >= known[0]:
            label = (str(outcome["entity_id"]), event_time, int(outcome["label"]))
            latest[outcome["request_id"]] = (labelled_at, label)
    return sorted((label for _, label in latest.values()), key=lambda label: label[1])


def training_set(joined: pa.Table, names: tuple[str, ...], feature_version: str) -> TrainingSet:
    """The joined rows that found their own event's feature row, as a ``TrainingSet`` in
    time order.

    A label's time is its event's, so its own row has that event time. A label whose row
    has not reached the offline store yet (it is written within seconds, in batches) meets
    the entity's row before it instead: an earlier payment's features under this one's
    label. Such a label is left out, not trained on.
    """
    versions = joined["feature_version"].to_pylist()
    feature_times = joined["feature_event_time"].to_pylist()
    label_times = joined["timestamp"].to_pylist()
    found = [
        i
        for i, version in enumerate(versions)
        if version == feature_version and feature_times[i] == label_times[i]
    ]
    columns = {
        name: joined[name].to_pylist() if name in joined.column_names else [None] * len(joined)
        for name in names
    }
    order = sorted(found, key=lambda i: label_times[i])
    features = np.array(
        [[_number(columns[n][i]) for n in names] for i in order],
        dtype=np.float64,
    ).reshape(len(order), len(names))
    labels = joined["label"].to_pylist()
    return TrainingSet(
        features=features,
        labels=np.array([int(labels[i]) for i in order], dtype=np.int64),
        names=names,
        feature_version=feature_version,
        first_event_time=int(label_times[order[0]]) if order else 0,
        last_event_time=int(label_times[order[-1]]) if order else 0,
    )


def _number(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]
