"""The demo's world (labels under a drifting concept) and its summary figures."""

from __future__ import annotations

import orjson
import pytest

from headrace.demo_report import (
    alert_counts,
    alert_summary,
    alert_text,
    decisions_by_version,
    end_to_end_latency,
    error_rates,
    finished,
    most_behind,
    timeline_line,
)
from headrace.demo_world import event_index, label_of, uniform
from models.dataset import drifted_fraud_probability, fraud_probability
from models.lifecycle import ModelEvent

SKIMMED = {"card_present": 1.0, "channel_is_pos": 1.0, "device_risk": 0.9}
ONLINE = {"card_present": 0.0, "channel_is_web": 1.0, "device_risk": 0.9}


def test_the_drift_changes_what_the_same_inputs_mean() -> None:
    assert fraud_probability(SKIMMED) < 0.2
    assert drifted_fraud_probability(SKIMMED) > 0.8
    assert fraud_probability(ONLINE) == drifted_fraud_probability(ONLINE)


def test_labels_follow_the_concept_of_their_index_and_repeat() -> None:
    ids = [f"ev-7-{i:09d}" for i in range(4_000)]
    before = [label_of(i, SKIMMED, drift_index=10_000) or 0 for i in ids]
    after = [label_of(i, SKIMMED, drift_index=0) or 0 for i in ids]
    assert before == [label_of(i, SKIMMED, drift_index=10_000) or 0 for i in ids]
    assert sum(before) / len(ids) == pytest.approx(fraud_probability(SKIMMED), abs=0.03)
    assert sum(after) / len(ids) == pytest.approx(drifted_fraud_probability(SKIMMED), abs=0.03)
    assert label_of("probe", SKIMMED, drift_index=0) is None
    assert event_index("ev-7-000000123") == 123
    assert 0.0 <= uniform("ev-7-000000123") < 1.0


def prediction(request: str, version: str, route: str = "champion") -> bytes:
    return orjson.dumps({"request_id": request, "route": route, "model": {"version": version}})


def test_end_to_end_latency_matches_first_decisions_to_their_events() -> None:
    raw = [(orjson.dumps({"event_id": f"e{i}"}), 1_000 + i) for i in range(100)]
    raw.append((b"not json", 5))
    predictions = [(prediction(f"e{i}", "v1"), 1_000 + i + (i + 1)) for i in range(100)]
    predictions.append((prediction("e0", "v1"), 9_999))  # a redelivery: the first one counts
    predictions.append((prediction("e1", "v2", route="shadow"), 9_999))
    latency = end_to_end_latency(raw, predictions)
    assert latency is not None
    assert latency.count == 100
    assert latency.p50_ms == pytest.approx(50.5)
    assert latency.p99_ms == pytest.approx(99.01)
    assert end_to_end_latency(raw, []) is None


def test_decisions_are_counted_once_by_version_and_route() -> None:
    values = [prediction("a", "v1"), prediction("a", "v1"), prediction("b", "v2", "canary")]
    values.append(prediction("c", "v2", "shadow"))
    assert decisions_by_version(values) == {"v1 (champion)": 1, "v2 (canary)": 1}


def test_error_rates_split_at_the_drift_and_keep_the_latest_label() -> None:
    def outcome(request: str, time_ms: int, *, error: bool) -> dict[str, object]:
        return {
            "request_id": request,
            "version": "v1",
            "route": "champion",
            "event_time": time_ms,
            "error": error,
        }

    outcomes = [outcome("a", 10, error=True), outcome("a", 10, error=False)]
    outcomes += [outcome("b", 20, error=True), outcome("c", 30, error=False)]
    rates = error_rates(outcomes, drift_time_ms=20)
    assert rates == {("v1", "champion", "after"): (1, 2), ("v1", "champion", "before"): (0, 1)}


def event(kind: str, version: str, sequence: int, **data: object) -> ModelEvent:
    return ModelEvent(
        event_id=f"id-{sequence}",
        model="m",
        kind=kind,  # type: ignore[arg-type]
        version=version,
        sequence=sequence,
        timestamp_ms=5_000 + sequence * 1_000,
        actor="test",
        reason="why",
        data=data,
    )


def test_the_rollout_ends_with_a_new_champion_or_a_rollback() -> None:
    log = [event("registered", "v1", 1), event("promoted", "v1", 2)]
    assert finished(log, "v1") is None
    log.append(event("canary_started", "v2", 3, percent=5.0, evidence={"rule": "non_inferior"}))
    log.append(event("promoted", "v2", 4))
    done = finished(log, "v1")
    assert done is not None
    assert done.version == "v2"
    rolled = finished([*log[:3], event("rolled_back", "v2", 4, evidence={})], "v1")
    assert rolled is not None
    assert rolled.kind == "rolled_back"
    line = timeline_line(log[2], start_ms=5_000)
    assert "+3.0 s" in line
    assert "canary_started" in line
    assert "percent 5.0" in line
    assert "rule non_inferior" in line


def test_alerts_are_counted_by_version_feature_and_statistic() -> None:
    alerts = [{"version": "v1", "feature": "model.error", "statistic": "adwin"}] * 2
    alerts += [{"version": "v1", "feature": f"f{i}", "statistic": "psi"} for i in range(6)]
    counts = alert_counts(alerts)
    assert counts[("v1", "model.error", "adwin")] == 2
    assert alert_summary(counts) == [
        "   2 x adwin on v1: model.error",
        "   6 x psi on v1: f0, f1, f2, f3 and 2 more",
    ]
    error = {"version": "v1", "feature": "model.error", "statistic": "adwin"}
    assert alert_text({**error, "value": 0.4, "threshold": 0.15}).endswith("15.0% -> 40.0%")
    assert alert_text({**error, "value": None, "window": 9}).endswith("(window 9)")


def test_the_backlog_is_the_most_behind_topics_sum_over_its_partitions() -> None:
    committed = {("raw", 0): 100, ("raw", 1): 50, ("outcomes", 0): 10, ("labels", 0): -1}
    ends = {("raw", 0): 130, ("raw", 1): 90, ("outcomes", 0): 60, ("labels", 0): 45}
    assert most_behind(committed, ends) == 70  # raw: 30 + 40; outcomes 50; labels 45
    ends[("labels", 0)] = 80  # never committed: all of it waits
    assert most_behind(committed, ends) == 80


def test_a_partition_without_an_end_or_ahead_of_it_counts_nothing() -> None:
    assert most_behind({("raw", 0): 5}, {}) == 0
    assert most_behind({("raw", 0): 50}, {("raw", 0): 40}) == 0
    assert most_behind({}, {("raw", 0): 40}) == 0
