"""python -m bench.explain_cost: its figures, and bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import explain_cost
from models.explain import ROWS_PER_CALL


def test_both_ways_explain_alike_and_their_costs_are_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert explain_cost.main(["--requests", "4", "--rounds", "2"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < figures["requests"] <= 4  # payments the pipeline rejects are not explained
    assert figures["rounds"] == 2
    assert figures["features"] > 0
    assert figures["reference_rows"] > 0
    assert figures["evaluations_median"] > figures["reference_rows"]
    assert figures["rows_per_call"] == ROWS_PER_CALL
    assert figures["max_attribution_difference"] < 1e-12
    for way in ("one_call", "blocked"):
        assert figures[f"{way}_ms"] > 0
        assert figures[f"{way}_page_faults"] >= 0
        per_event = figures[f"{way}_ms"] * 1000 * figures["explain_share"]
        assert figures[f"{way}_us_per_event"] == pytest.approx(per_event, abs=0.01)
    assert figures["speedup"] == pytest.approx(
        figures["one_call_ms"] / figures["blocked_ms"], abs=0.01
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--requests", "0"], "--requests must be at least 1"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--model-dir", "/nonexistent/model"], "holds no trained model (no metadata.json)"),
        (["--model-dir", "{empty}"], "holds no trained model (no metadata.json)"),
    ],
)
def test_a_bad_argument_is_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        explain_cost.main([arg.format(empty=tmp_path) for arg in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
