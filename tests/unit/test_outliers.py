from __future__ import annotations

import random

import numpy as np

from streams.outliers import OutlierScreen, RobustFieldStats
from streams.spec import OutlierTransform


def test_median_and_scale_track_numpy() -> None:
    rng = random.Random(3)
    values = [rng.gauss(10.0, 2.0) for _ in range(20_000)]
    stats = RobustFieldStats()
    for value in values:
        stats.update(value)
    median = float(np.median(values))
    mad = float(np.median(np.abs(np.array(values) - median)))
    assert abs(stats.median - median) < 0.05
    assert abs(stats.scale - 1.4826 * mad) / (1.4826 * mad) < 0.05
    assert abs(stats.scale - 2.0) < 0.1  # 1.4826 * MAD estimates sigma


def screen_with_history(n: int = 1_000) -> OutlierScreen:
    screen = OutlierScreen({"amount": OutlierTransform.LOG1P}, threshold=6.0, warmup=200)
    rng = random.Random(5)
    for _ in range(n):
        screen.learn({"amount": 40.0 * float(np.exp(rng.gauss(0.0, 1.0)))})
    return screen


def test_flags_far_values_and_passes_ordinary_ones() -> None:
    screen = screen_with_history()
    assert screen.screen({"amount": 40.0}) is None
    assert screen.screen({"amount": 1_500.0}) is None  # about 3.6 sigma in log space
    verdict = screen.screen({"amount": 500_000.0})
    assert verdict is not None
    assert verdict.field == "amount"
    assert verdict.zscore > 6.0


def test_no_screening_during_warmup() -> None:
    screen = screen_with_history(n=50)
    assert screen.screen({"amount": 500_000.0}) is None


def test_outliers_do_not_move_the_statistics() -> None:
    screen = screen_with_history()
    before = screen.to_state()
    for _ in range(100):
        assert screen.screen_and_learn({"amount": 900_000.0}) is not None
    restored = OutlierScreen({"amount": OutlierTransform.LOG1P}, threshold=6.0, warmup=200)
    restored.restore(before)
    assert restored.screen({"amount": 40.0}) == screen.screen({"amount": 40.0})
    assert screen._stats["amount"].count == restored._stats["amount"].count


def test_state_round_trip_continues_identically() -> None:
    screen = screen_with_history()
    copy = OutlierScreen({"amount": OutlierTransform.LOG1P}, threshold=6.0, warmup=200)
    copy.restore(screen.to_state())
    for value in (10.0, 55.0, 3.0, 70_000.0, 41.0):
        assert copy.screen_and_learn({"amount": value}) == screen.screen_and_learn(
            {"amount": value}
        )
