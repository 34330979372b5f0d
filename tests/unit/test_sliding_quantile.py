"""SlidingQuantile against numpy over the same window, whatever the values and window."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.feedback import SlidingQuantile


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([1.0, 2.0, 5.0]) | st.floats(0, 1e4), min_size=1, max_size=300),
    st.integers(1, 50),
    st.sampled_from([0.0, 50.0, 90.0, 99.0, 100.0]),
)
def test_each_read_is_numpys_percentile_of_the_latest_values(
    values: list[float], size: int, q: float
) -> None:
    quantile = SlidingQuantile(size, q)
    for seen, value in enumerate(values, start=1):
        quantile.add(value)
        window = values[max(seen - size, 0) : seen]
        assert len(quantile) == len(window)
        assert quantile.value() == pytest.approx(float(np.percentile(window, q)), rel=1e-12)


def test_an_empty_window_has_no_value_and_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        SlidingQuantile(10, 99).value()
    with pytest.raises(ValueError, match="size"):
        SlidingQuantile(0, 99)
    with pytest.raises(ValueError, match="q in"):
        SlidingQuantile(10, 101)
