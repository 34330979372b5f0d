"""The dashboard's figures: quantiles from buckets, rates over the window, the JSON."""

from __future__ import annotations

import bisect
import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.lifecycle import ModelEvent, ModelState, VersionInfo
from streams.dashboard import (
    SnapshotHistory,
    dashboard_data,
    dashboard_html,
    dashboard_url,
    histogram_quantile,
)
from streams.metrics import LATENCY_BOUNDS_S, Histogram, HistogramSnapshot, WorkerMetrics
from streams.settings import Settings


def test_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    snapshot = HistogramSnapshot((1.0, 2.0, 4.0), (0, 10, 10, 0), 0.0)
    assert histogram_quantile(0.5, snapshot) == pytest.approx(2.0)  # rank 10: end of (1, 2]
    assert histogram_quantile(0.25, snapshot) == pytest.approx(1.5)
    assert histogram_quantile(0.75, snapshot) == pytest.approx(3.0)
    assert histogram_quantile(0.0, snapshot) == pytest.approx(1.0)
    overflow = HistogramSnapshot((1.0, 2.0), (1, 0, 9), 0.0)
    assert histogram_quantile(0.99, overflow) == 2.0  # +Inf answers the last bound
    assert histogram_quantile(0.5, HistogramSnapshot((1.0,), (0, 0), 0.0)) is None
    with pytest.raises(ValueError, match="q must be"):
        histogram_quantile(1.5, snapshot)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-5, max_value=20.0), min_size=1, max_size=400),
    st.sampled_from([0.5, 0.9, 0.95, 0.99]),
)
def test_quantile_lies_in_the_bucket_of_the_exact_quantile(values: list[float], q: float) -> None:
    histogram = Histogram(LATENCY_BOUNDS_S)
    for value in values:
        histogram.observe(value)
    estimate = histogram_quantile(q, histogram.snapshot())
    assert estimate is not None
    ordered = np.sort(np.array(values))
    # The smallest value with at least q * n values at or below it (the rank's value).
    exact = float(ordered[max(math.ceil(q * len(values)) - 1, 0)])
    bounds = (0.0, *LATENCY_BOUNDS_S)
    index = bisect.bisect_left(LATENCY_BOUNDS_S, exact)
    if index == len(LATENCY_BOUNDS_S):  # above the last bound: reported as that bound
        assert estimate == LATENCY_BOUNDS_S[-1]
    else:
        assert bounds[index] - 1e-12 <= estimate <= bounds[index + 1] + 1e-12


def test_history_keeps_a_bounded_window() -> None:
    metrics = WorkerMetrics()
    history = SnapshotHistory(keep_s=10.0)
    for second in range(30):
        history.add(metrics.snapshot(float(second)))
    assert history.snapshots[0].at_s == 19.0
    pair = history.window(5.0)
    assert pair is not None
    assert (pair[0].at_s, pair[1].at_s) == (24.0, 29.0)


def served_state() -> ModelState:
    info = VersionInfo("v1", "", "/models/v1", "", 0)
    return ModelState("payments-fraud", versions={"v1": info}, champion="v1")


def test_dashboard_data_rates_latency_and_facts() -> None:
    metrics = WorkerMetrics()
    history = SnapshotHistory()
    history.add(metrics.snapshot(100.0))
    for _ in range(50):  # 50 events in 2 s: 25/s
        metrics.ingest_accepted(0.002)
    metrics.ingest_rejected("late", 0.001)
    records = [{"source": {"timestamp_ms": 1_000}}] * 40
    predictions = [
        {"model": {"version": "v1"}, "route": "champion", "uncertainty": {"confidence": 0.9}}
    ] * 40
    metrics.scored_chunk(records, predictions, seconds=0.01, sent_ms=1_030)
    metrics.outcome({"version": "v1", "route": "champion", "error": True})
    metrics.outcome({"version": "v1", "route": "champion", "error": False})
    metrics.drift_report("v1", "amount", "psi", 0.02)
    metrics.alert({"version": "v1", "feature": "amount", "statistic": "psi", "value": 0.2}, 7)
    metrics.model_state = served_state()
    history.add(metrics.snapshot(102.0))
    data = dashboard_data(history, metrics)
    assert data["window_s"] == 2.0
    assert data["throughput"]["ingest"] == pytest.approx(25.5)
    assert data["throughput"]["features"] == pytest.approx(25.0)
    assert data["throughput"]["scored"] == pytest.approx(20.0)
    assert data["totals"]["predictions"] == 40
    assert data["rejected"] == {"late": 1}
    e2e = data["latency"]["end_to_end"]
    assert e2e["over"] == "recent"
    assert e2e["count"] == 40
    assert 25.0 <= e2e["p50_ms"] <= 50.0  # every sample is 30 ms, in the bucket (25, 50]
    assert data["latency"]["ingest"]["count"] == 51
    assert data["errors"]["v1/champion"]["error_rate"] == 0.5
    assert data["cache_hit_rate"] == 0.0
    assert data["drift"] == [
        {"version": "v1", "feature": "amount", "statistic": "psi", "value": 0.02}
    ]
    assert data["alerts"][0]["feature"] == "amount"
    model = data["model"]
    assert model["champion"] == "v1"
    assert model["traffic"] == [{"version": "v1", "route": "champion", "share": 1.0}]
    assert model["timeline"][0]["version"] == "v1"  # fixed model: the one version
    assert len(data["series"]["ingest"]) == 1
    orjson.dumps(data)  # the page gets it as JSON


def test_idle_window_falls_back_to_all_observations_and_logs_timeline() -> None:
    metrics = WorkerMetrics()
    metrics.ingest_accepted(0.003)
    metrics.model_event(
        ModelEvent("e1", "payments-fraud", "registered", "v1", 1, 10, "me", "trained")
    )
    metrics.model_state = served_state()
    history = SnapshotHistory()
    history.add(metrics.snapshot(1.0))
    history.add(metrics.snapshot(2.0))
    data = dashboard_data(history, metrics)
    assert data["throughput"]["ingest"] == 0.0
    assert data["latency"]["ingest"]["over"] == "all"
    assert data["latency"]["ingest"]["count"] == 1
    assert data["model"]["timeline"] == [
        {
            "sequence": 1,
            "kind": "registered",
            "version": "v1",
            "timestamp_ms": 10,
            "actor": "me",
            "reason": "trained",
        }
    ]
    with pytest.raises(ValueError, match="no snapshot"):
        dashboard_data(SnapshotHistory(), metrics)


def test_the_page_is_self_contained_and_carries_stable_ids() -> None:
    page = dashboard_html()
    assert "http://" not in page
    assert "https://" not in page
    assert "<script src" not in page
    assert "<link" not in page
    for element in (
        'id="rate-ingest"',
        'id="rate-scored"',
        'id="latency-end_to_end-p99"',
        'id="model-version"',
        'id="error-rate"',
        'id="review-queue-size"',
        'id="drift"',
        'id="alerts"',
        'id="model-timeline"',
        'id="traffic"',
    ):
        assert element in page
    assert 'fetch("data.json"' in page
    settings_ = Settings.from_env({"HEADRACE_WEB_PORT": "7001"})
    assert dashboard_url(settings_) == "http://127.0.0.1:7001/dashboard/"
