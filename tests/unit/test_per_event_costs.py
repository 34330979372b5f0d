"""python -m bench.per_event_costs: its figures, and a bad argument."""

from __future__ import annotations

import json

import pytest

from bench import per_event_costs


def test_every_figure_is_a_cost_and_the_saving_their_sum(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert per_event_costs.main(["--events", "300", "--rounds", "1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["events"] == 300
    assert 0 < figures["distinct_keys"] <= 300
    pairs = [("feature_hash_row_us", "feature_hash_batch_us")]
    pairs += [("partition_default_us", "partition_cached_us")]
    pairs += [("monitor_faust_us", "monitor_lean_us")]
    for old, new in pairs:
        assert figures[old] > 0
        assert figures[new] > 0
    saved = sum(figures[old] - figures[new] for old, new in pairs)
    assert figures["saved_us_per_event"] == pytest.approx(saved, abs=0.05)


def test_too_few_events_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        per_event_costs.main(["--events", "5"])
    assert exit_info.value.code == 2
    assert "--events must be at least 128" in capsys.readouterr().err
