"""Drift statistics: PSI/KL by hand, the sliding window against numpy, River detectors."""

from __future__ import annotations

import base64
import json
import math
import pickle
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.artifact import Histogram
from models.drift import (
    CONFIDENCE_FEATURE,
    ConfidenceDrift,
    DriftSignal,
    ErrorDrift,
    FeatureDriftMonitor,
    SampledKSWIN,
    SlidingHistogram,
    kl_divergence,
    psi,
)

# ---- PSI and KL by hand ---------------------------------------------------------------


def test_psi_and_kl_of_a_hand_computed_case() -> None:
    # p = (0.5, 0.5), q = (0.25, 0.75)
    # PSI = (0.25 - 0.5) ln(0.5) + (0.75 - 0.5) ln(1.5) = 0.1732868 + 0.1013663
    # KL  =  0.25 ln(0.5) + 0.75 ln(1.5)                  = -0.1732868 + 0.3040988
    assert psi([50, 50], [25, 75]) == pytest.approx(0.2746531, abs=1e-7)
    assert kl_divergence([50, 50], [25, 75]) == pytest.approx(0.1308120, abs=1e-7)


def test_shares_not_counts_matter() -> None:
    assert psi([1, 1], [1, 3]) == pytest.approx(psi([500, 500], [250, 750]))


def test_identical_distributions_score_zero() -> None:
    assert psi([3, 5, 2], [30, 50, 20]) == 0.0
    assert kl_divergence([3, 5, 2], [30, 50, 20]) == 0.0


def test_an_empty_bin_takes_the_share_epsilon() -> None:
    # p = (1, 1e-4) (the empty bin), q = (0.5, 0.5)
    # PSI = (0.5 - 1) ln(0.5 / 1) + (0.5 - 1e-4) ln(0.5 / 1e-4) = 0.3465736 + 4.2577453
    # KL  =  0.5 ln(0.5) + 0.5 ln(5000)                        = -0.3465736 + 4.2585971
    assert psi([10, 0], [5, 5], epsilon=1e-4) == pytest.approx(4.6043189, abs=1e-6)
    assert kl_divergence([10, 0], [5, 5], epsilon=1e-4) == pytest.approx(3.9120230, abs=1e-6)
    # bins empty on both sides add nothing
    assert psi([10, 0, 10], [5, 0, 15]) == pytest.approx(psi([10, 10], [5, 15]))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1_000), st.integers(0, 1_000)), min_size=1, max_size=25
    ).filter(lambda pairs: sum(a for a, _ in pairs) > 0 and sum(b for _, b in pairs) > 0)
)
def test_psi_is_the_symmetrised_kl(pairs: list[tuple[int, int]]) -> None:
    reference = [a for a, _ in pairs]
    serving = [b for _, b in pairs]
    forward = kl_divergence(reference, serving)
    backward = kl_divergence(serving, reference)
    assert psi(reference, serving) == pytest.approx(forward + backward, abs=1e-9)
    assert kl_divergence(reference, serving) <= psi(reference, serving) + 1e-12
    p = np.array(reference) / sum(reference)
    q = np.array(serving) / sum(serving)
    p, q = np.where(p > 0, p, 1e-4), np.where(q > 0, q, 1e-4)  # the documented epsilon
    assert psi(reference, serving) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))


@pytest.mark.parametrize(
    ("reference", "serving", "epsilon", "message"),
    [
        ([1, 2], [1, 2, 3], 1e-4, "same non-zero number of bins"),
        ([], [], 1e-4, "same non-zero number of bins"),
        ([0, 0], [1, 2], 1e-4, "all be zero"),
        ([1, -1], [1, 2], 1e-4, "non-negative"),
        ([1, math.nan], [1, 2], 1e-4, "finite"),
        ([1, 2], [1, 2], 0.0, "epsilon"),
    ],
)
def test_bad_counts_are_refused(
    reference: list[float], serving: list[float], epsilon: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        psi(reference, serving, epsilon=epsilon)


# ---- the sliding histogram --------------------------------------------------------------

THREE_BINS = Histogram(edges=[0.0, 1.0, 2.0, 3.0], counts=[10, 20, 10], missing=0)


def test_values_land_in_the_reference_bins() -> None:
    histogram = SlidingHistogram(THREE_BINS, window=100)
    for value in (-5.0, 0.0, 0.5, 1.0, 2.999, 3.0, 99.0, None, math.nan):
        histogram.add(value)
    # [0, 1): -5 (below the range), 0, 0.5; [1, 2): 1; [2, 3]: 2.999, 3, 99 (above); missing: 2
    assert histogram.counts() == [3, 1, 3, 2]
    assert histogram.reference_counts() == [10, 20, 10, 0]


def test_the_window_keeps_the_last_values() -> None:
    histogram = SlidingHistogram(THREE_BINS, window=3)
    for value in (0.5, 1.5, 2.5, None):
        histogram.add(value)
    assert histogram.counts() == [0, 1, 1, 1]
    assert len(histogram) == 3


@settings(max_examples=50, deadline=None)
@given(
    window=st.integers(1, 50),
    values=st.lists(st.none() | st.just(math.nan) | st.floats(-2, 5), max_size=200),
)
def test_counts_match_numpy_on_the_last_window(window: int, values: list[float | None]) -> None:
    histogram = SlidingHistogram(THREE_BINS, window=window)
    for value in values:
        histogram.add(value)
    last = values[-window:] if values else []
    present = np.array([v for v in last if v is not None and not math.isnan(v)], dtype=float)
    expected, _ = np.histogram(np.clip(present, 0.0, 3.0), bins=THREE_BINS.edges)
    assert histogram.counts() == [*expected.tolist(), len(last) - present.size]


def test_sliding_histogram_state_round_trips_through_json() -> None:
    rng = random.Random(3)
    histogram = SlidingHistogram(THREE_BINS, window=50)
    for _ in range(137):
        histogram.add(rng.uniform(-1, 4))
    restored = SlidingHistogram.from_state(json.loads(json.dumps(histogram.to_state())))
    assert restored.counts() == histogram.counts()
    for _ in range(30):
        value = rng.uniform(-1, 4)
        histogram.add(value)
        restored.add(value)
    assert restored.counts() == histogram.counts()


def test_a_bad_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="edges"):
        SlidingHistogram(Histogram(edges=[0.0, 1.0], counts=[1, 2]), window=10)
    with pytest.raises(ValueError, match="increase"):
        SlidingHistogram(Histogram(edges=[0.0, 1.0, 1.0], counts=[1, 2]), window=10)
    with pytest.raises(ValueError, match="counts nothing"):
        SlidingHistogram(Histogram(edges=[0.0, 1.0], counts=[0]), window=10)


# ---- the feature monitor -----------------------------------------------------------------


def _reference(seed: int = 0) -> tuple[dict[str, Histogram], Histogram]:
    rng = np.random.default_rng(seed)
    features = {
        "amount": Histogram.of(rng.normal(0.0, 1.0, 20_000)),
        "age": Histogram.of(rng.uniform(0.0, 10.0, 20_000)),
    }
    return features, Histogram.of(rng.beta(5.0, 2.0, 20_000))


def _monitor() -> FeatureDriftMonitor:
    features, confidence = _reference()
    return FeatureDriftMonitor(features, confidence, window=1_000, min_count=500, report_every=250)


def test_reports_come_every_report_every_events_once_the_window_is_full_enough() -> None:
    monitor = _monitor()
    rng = np.random.default_rng(1)
    rounds = []
    for i in range(1_000):
        reports = monitor.update(
            {"amount": rng.normal(), "age": rng.uniform(0, 10)}, rng.beta(5, 2), event_time_ms=i
        )
        if reports:
            rounds.append((i + 1, reports))
    assert [events for events, _ in rounds] == [500, 750, 1_000]
    events, reports = rounds[-1]
    assert {(r.feature, r.statistic) for r in reports} == {
        (name, statistic)
        for name in ("amount", "age", CONFIDENCE_FEATURE)
        for statistic in ("psi", "kl")
    }
    assert all(r.window == 1_000 and r.events == events and r.event_time_ms == 999 for r in reports)
    assert not any(r.alert for r in reports)  # same distributions: no alert


def test_a_shifted_feature_alerts_and_the_others_stay_quiet() -> None:
    monitor = _monitor()
    rng = np.random.default_rng(2)
    last: list[Any] = []
    for _ in range(2_000):
        reports = monitor.update(
            {"amount": rng.normal(1.0, 1.0), "age": rng.uniform(0, 10)}, rng.beta(5, 2)
        )
        last = reports or last
    alerts = {(r.feature, r.statistic) for r in last if r.alert}
    assert alerts == {("amount", "psi"), ("amount", "kl")}
    amount_psi = next(r for r in last if r.feature == "amount" and r.statistic == "psi")
    assert amount_psi.value > 0.5
    assert amount_psi.to_dict()["threshold"] == 0.1


def test_missing_values_are_drift_too() -> None:
    monitor = _monitor()
    rng = np.random.default_rng(4)
    last: list[Any] = []
    for i in range(1_000):
        features: dict[str, float | None] = {"age": rng.uniform(0, 10)}
        if i % 5:
            features["amount"] = rng.normal()  # absent one time in five
        last = monitor.update(features, rng.beta(5, 2)) or last
    assert {r.feature for r in last if r.alert} == {"amount"}


def test_monitor_state_round_trips_and_continues_identically() -> None:
    monitor = _monitor()
    rng = np.random.default_rng(5)
    stream = [
        ({"amount": float(rng.normal(0.3, 1.0)), "age": float(rng.uniform(0, 10))}, rng.beta(5, 2))
        for _ in range(1_600)
    ]
    for features, confidence in stream[:1_100]:
        monitor.update(features, confidence)
    restored = FeatureDriftMonitor.from_state(json.loads(json.dumps(monitor.to_state())))
    for features, confidence in stream[1_100:]:
        assert restored.update(features, confidence) == monitor.update(features, confidence)
    assert restored.events == monitor.events == 1_600


def test_the_confidence_name_is_reserved() -> None:
    features, confidence = _reference()
    with pytest.raises(ValueError, match="reserved"):
        FeatureDriftMonitor({CONFIDENCE_FEATURE: confidence, **features}, confidence)


# ---- River detectors ---------------------------------------------------------------------


def _signals(detector: Any, values: list[Any]) -> list[DriftSignal]:
    return [s for s in (detector.update(v) for v in values) if s is not None]


def _confidence_stream(seed: int, quiet: int, shifted: int) -> list[float]:
    rng = random.Random(seed)
    return [min(1.0, max(0.5, rng.gauss(0.85, 0.05))) for _ in range(quiet)] + [
        min(1.0, max(0.5, rng.gauss(0.75, 0.05))) for _ in range(shifted)
    ]


def _error_stream(seed: int, quiet: int, shifted: int, before: float, after: float) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < before for _ in range(quiet)] + [
        rng.random() < after for _ in range(shifted)
    ]


def test_confidence_drift_fires_on_a_shift_and_not_before() -> None:
    signals = _signals(ConfidenceDrift(), _confidence_stream(1, 20_000, 1_000))
    assert signals
    first = signals[0]
    assert 20_000 < first.index <= 20_200
    assert (first.detector, first.stream, first.detections) == ("adwin", "confidence", 1)
    assert first.window > 1_000


def test_confidence_drift_is_quiet_on_a_stationary_stream() -> None:
    assert _signals(ConfidenceDrift(), _confidence_stream(2, 50_000, 0)) == []


@pytest.mark.parametrize("method", ["adwin", "ddm", "hddm_a"])
def test_error_drift_fires_when_the_error_rate_jumps(method: Any) -> None:
    signals = _signals(ErrorDrift(method), _error_stream(3, 5_000, 2_000, 0.1, 0.4))
    assert signals
    assert 5_000 < signals[0].index <= 5_500
    assert signals[0].stream == "error"
    assert signals[0].detector == method


@pytest.mark.parametrize("method", ["adwin", "hddm_a"])
def test_error_drift_is_quiet_on_a_stationary_stream(method: Any) -> None:
    assert _signals(ErrorDrift(method), _error_stream(4, 30_000, 0, 0.1, 0.1)) == []


def test_sampled_kswin_tests_every_kth_value_and_sees_a_change_of_shape() -> None:
    rng = random.Random(5)
    quiet = [rng.gauss(0.8, 0.02) for _ in range(10_000)]
    wider = [rng.gauss(0.8, 0.1) for _ in range(4_000)]  # same mean, five times the spread
    detector = SampledKSWIN(every=10, seed=1)
    signals = _signals(detector, quiet + wider)
    assert signals
    assert all(s.index % 10 == 0 for s in signals)
    assert 10_000 < signals[0].index <= 12_000
    assert signals[0].window == 300
    assert _signals(ConfidenceDrift(), quiet + wider) == []  # the mean did not move
    assert _signals(SampledKSWIN(every=10, seed=1), quiet * 2) == []


@pytest.mark.parametrize(
    ("make", "values"),
    [
        (ConfidenceDrift, _confidence_stream(6, 3_000, 2_000)),
        (lambda: ErrorDrift("ddm"), _error_stream(6, 3_000, 2_000, 0.1, 0.4)),
        (lambda: ErrorDrift("hddm_a"), _error_stream(6, 3_000, 2_000, 0.1, 0.4)),
        (lambda: SampledKSWIN(every=5, seed=2), _confidence_stream(6, 3_000, 2_000)),
    ],
)
def test_detector_state_round_trips_through_json(make: Any, values: list[Any]) -> None:
    original = make()
    head, tail = values[:2_500], values[2_500:]
    _signals(original, head)
    state = json.loads(json.dumps(original.to_state()))
    restored = type(original).from_state(state)
    assert restored.seen == original.seen == 2_500
    after_original = _signals(original, tail)
    assert after_original  # the shift is in the tail
    assert _signals(restored, tail) == after_original


def test_a_state_from_another_river_version_is_refused() -> None:
    state = ConfidenceDrift().to_state()
    state["river_version"] = "0.0.1"
    with pytest.raises(ValueError, match=r"River 0\.0\.1"):
        ConfidenceDrift.from_state(state)


def test_a_state_cannot_name_an_arbitrary_callable() -> None:
    state = ConfidenceDrift().to_state()
    state["pickle"] = base64.b64encode(pickle.dumps(print)).decode("ascii")
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.print"):
        ConfidenceDrift.from_state(state)


def test_a_state_of_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="runs one of"):
        ConfidenceDrift.from_state(ErrorDrift("ddm").to_state())
