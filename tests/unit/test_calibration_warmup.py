"""Replays without their warm-up: rows whose windows were still filling are not kept."""

from __future__ import annotations

import numpy as np
import pytest

from models.dataset import demo_training_set, shortest_window_ms
from streams.spec import DomainSpec


def test_warmup_drops_the_first_rows_and_keeps_the_rest_unchanged(
    payments_spec: DomainSpec,
) -> None:
    full = demo_training_set(payments_spec, 2_000, seed=5)
    warm = demo_training_set(payments_spec, 2_000, seed=5, warmup_ms=5_000)
    dropped = len(full.labels) - len(warm.labels)
    assert 0 < dropped < len(full.labels)
    # the kept rows are the tail of the full replay, labels included
    assert np.array_equal(warm.features, full.features[dropped:], equal_nan=True)
    assert np.array_equal(warm.labels, full.labels[dropped:])
    assert warm.first_event_time >= full.first_event_time + 5_000
    assert warm.last_event_time == full.last_event_time


def test_the_payments_warmup_is_its_5m_window(payments_spec: DomainSpec) -> None:
    assert shortest_window_ms(payments_spec) == 300_000


def test_warmup_fills_the_windows_before_rows_are_kept(payments_spec: DomainSpec) -> None:
    # Every card pays about every 20 s in the demo stream: after 5 minutes the 5 m window
    # holds a dozen payments, where a cold replay starts every card at one.
    cold = demo_training_set(payments_spec, 40_000, seed=5)
    warmup_ms = shortest_window_ms(payments_spec)
    warm = demo_training_set(payments_spec, 40_000, seed=5, warmup_ms=warmup_ms)
    count_5m = list(cold.names).index("amount_count_5m")
    assert np.median(cold.features[:2_000, count_5m]) <= 2.0
    assert np.median(warm.features[:2_000, count_5m]) >= 10.0


def test_a_warmup_longer_than_the_replay_keeps_nothing(payments_spec: DomainSpec) -> None:
    data = demo_training_set(payments_spec, 300, seed=5, warmup_ms=10**9)
    assert data.features.shape == (0, len(data.names))
    assert data.labels.shape == (0,)


def test_rejects_a_negative_warmup(payments_spec: DomainSpec) -> None:
    with pytest.raises(ValueError, match="warmup_ms"):
        demo_training_set(payments_spec, 10, seed=5, warmup_ms=-1)
