"""Retraining data: the latest label per request, joined to the row the model saw."""

from __future__ import annotations

import math

import pyarrow as pa

from models.retraining import latest_labels, training_set
from tables.point_in_time import point_in_time_join


def outcome(
    request: str, entity: str, at: int, label: int, labelled_at: int, route: str = "champion"
) -> dict[str, object]:
    return {
        "request_id": request,
        "entity_id": entity,
        "event_time": at,
        "label": label,
        "labelled_at": labelled_at,
        "route": route,
    }


def test_the_latest_label_of_each_request_in_the_window_counts() -> None:
    outcomes = [
        outcome("r1", "a", 100, 0, 5),
        outcome("r1", "a", 100, 1, 9),  # a correction
        outcome("r1", "a", 100, 0, 7),  # older than the correction
        outcome("r2", "b", 50, 1, 3),
        outcome("r2", "b", 50, 0, 4, route="shadow"),
        outcome("r3", "c", 10, 1, 1),
    ]
    assert latest_labels(outcomes, since_ms=20) == [("b", 50, 1), ("a", 100, 1)]
    assert len(latest_labels(outcomes)) == 3


def test_each_label_meets_the_feature_row_of_its_own_event() -> None:
    features = pa.table(
        {
            "entity_id": ["a", "a", "b"],
            "event_id": ["e1", "e2", "e3"],
            "event_time": pa.array([100, 200, 150], pa.int64()),
            "feature_version": ["fv", "fv", "fv"],
            "amount": [1.0, 2.0, None],
        }
    )
    # ("a", 250): its event's row is not in the store yet; the join finds the row of
    # "a"'s event at 200, another payment's features, and the label is left out.
    joined = point_in_time_join(
        features, [("a", 200, 1), ("b", 150, 0), ("a", 250, 0), ("a", 100, 0), ("z", 5, 1)]
    )
    assert joined["feature_event_time"].to_pylist()[2] == 200
    data = training_set(joined, ("amount",), "fv")
    assert data.labels.tolist() == [0, 0, 1]  # in time order; "z" found no row
    assert data.features[:, 0].tolist()[0] == 1.0
    assert math.isnan(data.features[1, 0])
    assert data.features[2, 0] == 2.0
    assert (data.first_event_time, data.last_event_time) == (100, 200)
