"""The arithmetic behind ``headrace bench e2e``: checked against numpy and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.e2e_stats import (
    bracketed_baseline,
    cpu_seconds,
    due_count,
    latency_summary,
    percentile,
    slowest_by_interval,
    steady_rate,
)


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200),
    st.floats(0, 100),
)
def test_percentile_matches_numpy(samples: list[float], q: float) -> None:
    assert percentile(samples, q) == pytest.approx(
        float(np.percentile(np.array(samples), q)), rel=1e-9, abs=1e-6
    )


def test_percentile_refuses_nothing_and_bad_q() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 101)


def test_steady_rate_leaves_out_start_and_tail() -> None:
    # A slow start (10 outputs over 10 s), a steady 1,000/s for 80 s, a slow tail.
    times = list(range(0, 10_000, 1_000))
    times += [10_000 + i for i in range(80_000)]
    times += [90_000 + i * 1_000 for i in range(10)]
    assert steady_rate(times, trim=0.2) == pytest.approx(1_000.0, rel=1e-3)
    # With no trimming the slow ends pull the rate down.
    assert steady_rate(times, trim=0.0) < 900.0


def test_steady_rate_is_a_window_in_time_not_in_count() -> None:
    # Bursts: 500 outputs within 50 ms, then 950 ms of nothing, twenty times over. The
    # sustained rate is 500/s; the middle outputs alone sit inside bursts at 10,000/s.
    times = [second * 1_000 + i // 10 for second in range(20) for i in range(500)]
    assert steady_rate(times, trim=0.2) == pytest.approx(500.0, rel=0.1)


def test_steady_rate_of_too_little() -> None:
    assert steady_rate([]) == 0.0
    assert steady_rate([5]) == 0.0
    assert steady_rate([5, 5, 5]) == 0.0
    with pytest.raises(ValueError, match="trim"):
        steady_rate([1, 2], trim=0.5)


def test_latency_summary_matches_by_id_inside_the_window() -> None:
    sent = {f"e{i}": 1_000 + i * 10 for i in range(100)}  # e0 at 1000 ... e99 at 1990
    out = {key: at + 5 + (i % 10) for i, (key, at) in enumerate(sent.items())}
    del out["e99"]  # never answered
    out["stranger"] = 0  # answered, never sent: ignored
    summary = latency_summary(sent, out, from_ms=1_200, to_ms=2_000)  # e20 .. e99
    assert summary.sent == 80
    assert summary.matched == 79
    assert summary.delivered_fraction == pytest.approx(79 / 80)
    latencies = [5 + (i % 10) for i in range(20, 99)]
    assert summary.p50_ms == pytest.approx(round(float(np.percentile(latencies, 50)), 1))
    assert summary.p99_ms == pytest.approx(round(float(np.percentile(latencies, 99)), 1))
    assert summary.p999_ms == pytest.approx(round(float(np.percentile(latencies, 99.9)), 1))
    assert summary.max_ms == 14.0


def test_latency_summary_with_nothing_delivered() -> None:
    summary = latency_summary({"a": 10}, {}, from_ms=0, to_ms=100)
    assert (summary.matched, summary.sent, summary.p99_ms, summary.p999_ms) == (0, 1, None, None)
    assert summary.delivered_fraction == 0.0


def test_due_count_paces_and_stops_at_the_total() -> None:
    assert due_count(0.0, 1_000, 50) == 0
    assert due_count(0.0105, 1_000, 50) == 11
    assert due_count(10.0, 1_000, 50) == 50


def test_cpu_seconds_reads_utime_and_stime() -> None:
    # Fields 14 and 15 (utime, stime) of proc(5); the command name may hold spaces and ")".
    line = "4242 (python (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0 100 0 0"
    assert cpu_seconds(line, 100) == pytest.approx(3.0)


def test_the_baseline_is_the_mean_of_the_drains_either_side_of_the_worker() -> None:
    before = {
        "baseline_events_per_s": 4_155,
        "baseline_cpu_us_per_event": 257,
        "baseline_predictions": 30_000,
    }
    after = {
        "baseline_events_per_s": 3_172,
        "baseline_cpu_us_per_event": 320,
        "baseline_predictions": 29_990,
    }
    assert bracketed_baseline(before, after) == {
        "baseline_events_per_s": 3_664,  # 3,663.5 rounded to even
        "baseline_cpu_us_per_event": 288,  # 288.5 rounded to even
        "baseline_predictions": 29_990,  # a drain that fell short shows
        "baseline_runs_events_per_s": [4_155, 3_172],
        "baseline_runs_cpu_us_per_event": [257, 320],
    }


def test_the_slowest_of_each_interval_in_time_order() -> None:
    sent = {"a": 1_000, "b": 1_100, "c": 1_300, "d": 1_999, "e": 2_600, "f": 900, "g": 1_050}
    out = {"a": 1_020, "b": 1_190, "c": 1_310, "d": 2_004, "e": 2_640, "f": 2_000}
    # "f" was sent before the window and "g" has no output: neither counts.
    assert slowest_by_interval(sent, out, from_ms=1_000, to_ms=2_600) == [
        (0, 90),
        (250, 10),
        (750, 5),
    ]
    assert slowest_by_interval(sent, out, from_ms=1_000, to_ms=3_000, interval_ms=1_000) == [
        (0, 90),
        (1_000, 40),
    ]
    assert slowest_by_interval({}, {}, from_ms=0, to_ms=10) == []
    with pytest.raises(ValueError, match="interval_ms"):
        slowest_by_interval(sent, out, from_ms=0, to_ms=10, interval_ms=0)
