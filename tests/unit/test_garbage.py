"""The worker's collector tuning: frozen start-up objects and the first threshold."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.garbage import tune_collector


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("collector")
def test_zero_leaves_the_collector_as_it_is() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert tune_collector(0) == before
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


@pytest.mark.usefixtures("collector")
def test_a_threshold_freezes_what_is_alive_and_sets_the_first_generation() -> None:
    _, older, oldest = gc.get_threshold()
    alive: list[list[int]] = [[] for _ in range(1_000)]  # tracked by the collector
    gc.unfreeze()
    assert tune_collector(50_000) == (50_000, older, oldest)
    assert gc.get_threshold() == (50_000, older, oldest)
    assert gc.get_freeze_count() >= len(alive)


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        tune_collector(-1)
