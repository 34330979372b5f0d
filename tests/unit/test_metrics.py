"""The worker's metrics: cheap counting, and what a Prometheus scrape shows."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from models.lifecycle import ModelState, VersionInfo
from streams.metrics import (
    CONFIDENCE_BOUNDS,
    Histogram,
    WorkerCollector,
    WorkerMetrics,
    exposed_names,
    exposition,
    traffic_shares,
)


def registry_of(metrics: WorkerMetrics) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(metrics))
    return registry


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(registry_of(metrics)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_histogram_buckets_follow_prometheus_le() -> None:
    histogram = Histogram((1.0, 2.0, 5.0))
    for value in (0.5, 1.0, 1.5, 2.0, 5.0, 7.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.counts == (2, 2, 1, 1)  # le=1 holds 1.0 itself; 7.0 goes to +Inf
    assert snapshot.cumulative() == [("1.0", 2.0), ("2.0", 4.0), ("5.0", 5.0), ("+Inf", 6.0)]
    assert snapshot.sum == pytest.approx(17.0)
    with pytest.raises(ValueError, match="increasing"):
        Histogram((2.0, 1.0))


def prediction(version: str, route: str, confidence: float, *, hit: bool = False) -> dict:  # type: ignore[type-arg]
    latency: dict[str, object] = {"batch_score": 1.0}
    if hit:
        latency["cache"] = "hit"
    return {
        "model": {"version": version},
        "route": route,
        "latency_ms": latency,
        "uncertainty": {"confidence": confidence},
    }


def test_a_scored_chunk_is_counted_once_per_record_and_prediction() -> None:
    metrics = WorkerMetrics()
    records = [{"source": {"timestamp_ms": 1_000}}, {"source": {"timestamp_ms": 1_900}}, {}]
    predictions = [
        prediction("v1", "champion", 0.9),
        prediction("v1", "champion", 0.6, hit=True),
        prediction("v2", "canary", 0.99),
        prediction("v3", "shadow", 0.51),
    ]
    metrics.scored_chunk(records, predictions, seconds=0.004, sent_ms=2_000)
    got = samples(metrics)
    assert got["headrace_scored_total", ()] == 3
    assert got["headrace_predictions_total", (("route", "champion"), ("version", "v1"))] == 2
    assert got["headrace_predictions_total", (("route", "shadow"), ("version", "v3"))] == 1
    assert got["headrace_cache_hits_total", ()] == 1
    assert got["headrace_cache_misses_total", ()] == 3
    # End to end: 1.0 s and 0.1 s (the third record carries no raw timestamp).
    assert got["headrace_end_to_end_seconds_count", ()] == 2
    assert got["headrace_end_to_end_seconds_sum", ()] == pytest.approx(1.1)
    assert got["headrace_end_to_end_seconds_bucket", (("le", "0.1"),)] == 1
    # Confidence of decisions only: the shadow's is not a decision.
    assert got["headrace_confidence_count", ()] == 3
    assert got["headrace_confidence_bucket", (("le", "0.6"),)] == 1
    assert got["headrace_score_chunk_size_sum", ()] == 3
    assert got["headrace_score_chunk_seconds_count", ()] == 1


def test_ingest_outcomes_review_and_alerts() -> None:
    metrics = WorkerMetrics()
    metrics.ingest_accepted(0.0002)
    metrics.ingest_rejected("duplicate", 0.0001)
    metrics.ingest_rejected("duplicate", 0.0001)
    metrics.ingest_rejected("not_json", 0.0001)
    metrics.outcome({"version": "v1", "route": "champion", "error": True})
    metrics.outcome({"version": "v1", "route": "champion", "error": False})
    # A corrected label re-emits the outcome: it is not counted twice.
    metrics.outcome(
        {"version": "v1", "route": "champion", "error": False, "superseded_error": True}
    )
    metrics.review_queued("r1")
    metrics.review_queued("r2")
    metrics.label("r1")
    metrics.label("unqueued")
    metrics.alert({"version": "v1", "feature": "amount", "statistic": "psi", "value": 0.3}, 5)
    metrics.drift_report("v1", "amount", "psi", 0.3)
    metrics.online_metrics({"v1": {"champion": {"accuracy": 0.75, "roc_auc": None}}})
    got = samples(metrics)
    assert got["headrace_ingest_events_total", ()] == 4
    assert got["headrace_features_total", ()] == 1
    assert got["headrace_rejected_total", (("reason", "duplicate"),)] == 2
    assert got["headrace_ingest_seconds_count", ()] == 4
    assert got["headrace_outcomes_total", (("route", "champion"), ("version", "v1"))] == 2
    assert got["headrace_outcome_errors_total", (("route", "champion"), ("version", "v1"))] == 1
    assert got["headrace_labels_total", ()] == 2
    assert got["headrace_review_items_total", ()] == 2
    assert got["headrace_review_queue_size", ()] == 1
    key = (("feature", "amount"), ("statistic", "psi"), ("version", "v1"))
    assert got["headrace_alerts_total", key] == 1
    assert got["headrace_drift", key] == pytest.approx(0.3)
    online = (("metric", "accuracy"), ("route", "champion"), ("version", "v1"))
    assert got["headrace_online_metric", online] == 0.75
    assert not any(
        name == "headrace_online_metric" and ("metric", "roc_auc") in labels for name, labels in got
    )
    assert metrics.recent_alerts[-1]["at_ms"] == 5


def state(**slots: object) -> ModelState:
    versions = {v: VersionInfo(v, "", "", "", 0) for v in ("a", "b", "c")}
    return ModelState("m", sequence=7, versions=versions, **slots)  # type: ignore[arg-type]


def test_traffic_shares_and_serving_gauges() -> None:
    assert traffic_shares(state(champion="a")) == {("a", "champion"): 1.0}
    shares = traffic_shares(
        state(champion="a", canary="b", canary_percent=25.0, shadow="c", shadow_fraction=0.1)
    )
    assert shares == {("a", "champion"): 0.75, ("b", "canary"): 0.25, ("c", "shadow"): 0.1}
    assert traffic_shares(state(canary="b", canary_percent=5.0)) == {("b", "canary"): 1.0}
    metrics = WorkerMetrics()
    metrics.model_state = state(champion="a", canary="b", canary_percent=25.0)
    metrics.consumer_lag = {("events.raw", 0): 12}
    got = samples(metrics)
    assert got["headrace_model_traffic_share", (("route", "canary"), ("version", "b"))] == 0.25
    assert got["headrace_model_sequence", (("model", "m"),)] == 7
    info = (("model", "m"), ("status", "registered"), ("version", "c"))
    assert got["headrace_model_version_info", info] == 1
    assert got["headrace_consumer_lag", (("partition", "0"), ("topic", "events.raw"))] == 12


def test_every_family_is_named_even_before_anything_happened() -> None:
    names = exposed_names(registry_of(WorkerMetrics()))
    for name in (
        "headrace_ingest_events_total",
        "headrace_rejected_total",
        "headrace_predictions_total",
        "headrace_end_to_end_seconds_bucket",
        "headrace_drift",
        "headrace_consumer_lag",
        "headrace_model_traffic_share",
        "headrace_review_queue_size",
    ):
        assert name in names
    assert "headrace_drift_total" not in names
    assert math.isclose(CONFIDENCE_BOUNDS[-1], 1.0)


def test_the_worker_info_names_its_event_loop_once_known() -> None:
    metrics = WorkerMetrics()
    assert not any(name == "headrace_worker_info" for name, _ in samples(metrics))
    metrics.event_loop = "uvloop"
    got = samples(metrics)
    assert got["headrace_worker_info", (("event_loop", "uvloop"),)] == 1
